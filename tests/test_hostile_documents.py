"""Hostile tests of several documents in one session (issue #19). Each test states a finding;
they fail while the finding stands. Judged by the prompt text, the SQLite rows and the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from builders import counted_pdf, counted_text, make_pdf
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdocs.citations import Status, verify_answer
from sparkdocs.config import Settings
from sparkdocs.documents import (
    combine_documents,
    name_line,
    unique_names,
)
from sparkdocs.prompts import prepare_document

LOREM = "The supplier shall deliver the goods within thirty days of each written order."



# F1: names that render the same in the prompt are not told apart ------------------------------
@pytest.mark.parametrize("pair", [
    (unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "café.txt")),
    ("a  b.txt", "a b.txt"),
    ("a\tb.txt", "a b.txt"),
    ("x.txt ", "x.txt"),
    ("a\x01b.txt", "ab.txt"),
])
def test_unique_names_give_distinct_name_lines(pair):
    names = unique_names(list(pair))
    lines = [name_line(n) for n in names]
    assert len(set(lines)) == len(lines), lines


# F2: a citation naming the document exactly as the prompt shows it -----------------------------
def test_a_citation_with_the_name_as_shown_in_the_prompt_is_verified():
    first = counted_text("a b.txt", "Beta clause: the deposit is five hundred pounds held by the agent.")
    second = counted_text("new\nline.txt", "Gamma clause: pets are allowed with written consent "
                                     "from the landlord.")
    whole = combine_documents([first, second], names=["a b.txt", "new\nline.txt"])
    prepared = prepare_document(whole)
    assert "<name>new line.txt</name>" in prepared.block
    answer = ('Deposit: "the deposit is five hundred pounds held by the agent" (a b.txt). Pets: '
              '"pets are allowed with written consent from the landlord" (new line.txt).')
    statuses = [c.status for c in verify_answer(answer, prepared)]
    assert statuses == [Status.VERIFIED, Status.VERIFIED]


# F4: --pages with several PDFs ------------------------------------------------------------------
def test_pages_with_several_pdfs_is_not_silently_the_last_documents(tmp_path: Path):
    from sparkdocs.workspace import LoadRequest, Workspace

    for name, word in (("one.pdf", "first"), ("two.pdf", "second")):
        (tmp_path / name).write_bytes(make_pdf([f"The {word} document, page {n}." for n in (1, 2)]))
    workspace = Workspace(Settings(cache_dir=tmp_path / "cache"))
    whole = workspace.load_each(LoadRequest((str(tmp_path / "one.pdf"),
                                             str(tmp_path / "two.pdf")))).document
    try:
        keep = workspace.select(whole, pages="2")
    except Exception:  # refusing an ambiguous page number is fine too
        return
    assert keep is not None and 1 in keep, "page 2 of one.pdf was left out"


# F5: two --add on one session at once ----------------------------------------------------------
def test_two_adds_from_the_same_view_of_a_session_keep_names_unique(tmp_path: Path):
    from sparkdocs.client import ModelClient
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.workspace import LoadRequest, Workspace

    for folder, text in (("2024", "thirty"), ("2025", "fourteen"), ("x", "painting"),
                         ("y", "cleaning")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "contract.txt").write_text(f"A contract about {text} days.")
    settings = Settings(cache_dir=tmp_path / "cache")
    workspace = Workspace(settings)
    qa = QuestionAnswering(workspace, ModelClient(settings))
    given = workspace.load_each(LoadRequest((str(tmp_path / "2024/contract.txt"),
                                             str(tmp_path / "2025/contract.txt"))))
    session = qa.session_for(given.document, whole=True)
    for folder in ("x", "y"):  # two tabs or processes, each with the session as it was
        added = workspace.load(LoadRequest((str(tmp_path / folder / "contract.txt"),)))
        with contextlib.suppress(Exception):  # refusing the stale add is fine
            qa.add_document(session, given.document, added, folder=str(tmp_path / folder),
                            whole=True)
    stored = workspace.store.get_session(session.id)
    names = [d.name for d in stored.documents]
    assert len(set(names)) == len(names), names
    reopened = qa.follow_up(session.id)
    assert reopened.document.content_hash == stored.document_key


# F6: a session's title after --add -------------------------------------------------------------
def test_adding_a_document_keeps_the_first_question_as_the_title(tmp_path: Path):
    from sparkdocs.client import ModelClient
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.store.records import Turn
    from sparkdocs.views import session_title
    from sparkdocs.workspace import LoadRequest, Workspace

    (tmp_path / "a.txt").write_text("Alpha text about rent.")
    (tmp_path / "b.txt").write_text("Beta text about deposits.")
    settings = Settings(cache_dir=tmp_path / "cache")
    workspace = Workspace(settings)
    qa = QuestionAnswering(workspace, ModelClient(settings))
    first = workspace.load(LoadRequest((str(tmp_path / "a.txt"),)))
    session = qa.session_for(first, whole=True)
    session = workspace.store.append_turn(session.id, Turn("What is the rent?", "Ten."))
    added = workspace.load(LoadRequest((str(tmp_path / "b.txt"),)))
    stored = qa.add_document(session, first, added, whole=True).session
    assert session_title(workspace.store.get_session(stored.id)) == "What is the rent?"


# F7: the Library's "Delete X and its N sessions" -------------------------------------------------
def test_deleting_a_document_deletes_the_sessions_the_library_counted(tmp_path: Path):
    from sparkdocs.store.records import Turn
    from sparkdocs.views import library_entries
    from sparkdocs.workspace import LoadRequest, Workspace, new_session

    (tmp_path / "a.txt").write_text("Alpha text about rent.")
    (tmp_path / "b.txt").write_text("Beta text about deposits.")
    workspace = Workspace(Settings(cache_dir=tmp_path / "cache"))
    store = workspace.store
    one = workspace.load(LoadRequest((str(tmp_path / "a.txt"),)))
    both = workspace.load_each(LoadRequest((str(tmp_path / "a.txt"),
                                            str(tmp_path / "b.txt")))).document
    for document in (one, both):
        session = new_session(store, document, owner="local", keep=None)
        store.append_turn(session.id, Turn("q", "a"))
    entries, _ = library_entries(store.list_documents(owner="local"),
                                 store.list_sessions(owner="local"))
    (variant,) = [v for e in entries for v in e.variants if v.info.key == one.content_hash]
    promised = {s.id for s in variant.sessions}
    store.delete_document(one.content_hash, owner="local")
    left = {s.id for s in store.list_sessions(owner="local")}
    assert not promised & left, "the Library said these sessions would be deleted"


# F9: names from relative paths ----------------------------------------------------------------
def test_a_file_in_the_current_folder_is_named_by_its_folder(tmp_path: Path):
    from sparkdocs.workspace import LoadRequest, Workspace

    for folder, text in (("2024", "thirty"), ("2025", "fourteen")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "contract.txt").write_text(f"A contract about {text} days.")
    workspace = Workspace(Settings(cache_dir=tmp_path / "cache"))
    here = os.getcwd()
    os.chdir(tmp_path / "2025")
    try:
        loaded = workspace.load_each(LoadRequest(("contract.txt", "../2024/contract.txt")))
    finally:
        os.chdir(here)
    assert [m.name for m in loaded.document.members] == ["2025/contract.txt",
                                                         "2024/contract.txt"]


# F3: an encrypted PDF's password on a follow-up without paths ----------------------------------
@pytest.mark.integration
def test_follow_up_without_paths_takes_the_password(tmp_path: Path):
    sys.path.insert(0, str(Path(__file__).parent))
    from fakeserver import FakeServer

    (tmp_path / "secret.pdf").write_bytes(make_pdf(["The code word is pineapple today."],
                                                   password="pw"))
    (tmp_path / "annex.txt").write_text("Annex A lists the goods covered.")
    with FakeServer() as server:
        env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
               "SPARKDOCS_BASE_URL": server.base_url}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "sparkdocs", *args],
                                  capture_output=True, text=True, env=env, timeout=300)

        first = run("ask", str(tmp_path / "secret.pdf"), str(tmp_path / "annex.txt"), "Q?",
                    "--documents", "--password", "pw", "--json")
        assert first.returncode == 0, first.stderr
        session = json.loads(first.stdout)["session"]
        again = run("ask", "Again?", "--follow-up-of", session, "--password", "pw")
        assert again.returncode == 0, again.stderr
    with sqlite3.connect(tmp_path / "cache" / "sparkdocs.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM turns WHERE session_id = ?",
                          (session,)).fetchone()[0] == 2


# F2b: document names with spaces shift every citation onto the next quote --------------------

def test_citations_naming_documents_with_spaces_are_verified():
    a, b = "Annual Report.pdf", "Other Doc.pdf"
    whole = combine_documents([
        counted_pdf(a, ["The company made a profit of ten million pounds this year.",
                 "The board met four times during the year under review."]),
        counted_pdf(b, ["The auditors found no material weakness in the controls.",
                 "The auditors were paid two hundred thousand pounds in fees."])], names=[a, b])
    answer = (f'Profit: "The company made a profit of ten million pounds this year" ({a}, p. 1).\n'
              f'Audit: "The auditors found no material weakness in the controls" ({b}, p. 1).\n'
              f'Board: "The board met four times during the year under review" ({a}, p. 2).\n')
    statuses = [c.status for c in verify_answer(answer, prepare_document(whole))]
    assert statuses == [Status.VERIFIED] * 3


# F16: the name in the prompt is whatever name the bytes were first stored under ----------------
def test_a_document_is_named_as_given_not_as_first_stored(tmp_path: Path):
    from sparkdocs.workspace import LoadRequest, Workspace

    data = make_pdf(["The company made a profit of ten million pounds this year."])
    (tmp_path / "scratch.pdf").write_bytes(data)
    (tmp_path / "Annual Report.pdf").write_bytes(data)
    (tmp_path / "annex.txt").write_text("Annex A lists the goods covered.")
    workspace = Workspace(Settings(cache_dir=tmp_path / "cache"), lists_documents=False)
    workspace.load(LoadRequest((str(tmp_path / "scratch.pdf"),)))  # `sparkdocs count scratch.pdf`
    loaded = workspace.load_each(LoadRequest((str(tmp_path / "Annual Report.pdf"),
                                              str(tmp_path / "annex.txt"))))
    assert "<name>Annual Report.pdf</name>" in prepare_document(loaded.document).block


# F17: a document renamed in the Library, then a second one added to its session ---------------
def test_adding_after_a_rename_stores_the_name_the_prompt_used(tmp_path: Path):
    from sparkdocs.client import ModelClient
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.store.records import Turn
    from sparkdocs.workspace import LoadRequest, Workspace

    (tmp_path / "a.txt").write_text("Alpha text about rent.")
    (tmp_path / "b.txt").write_text("Beta text about deposits.")
    settings = Settings(cache_dir=tmp_path / "cache")
    workspace = Workspace(settings)
    qa = QuestionAnswering(workspace, ModelClient(settings))
    first = workspace.load(LoadRequest((str(tmp_path / "a.txt"),)))
    session = qa.session_for(first, whole=True)
    workspace.store.append_turn(session.id, Turn("q", "a"))
    workspace.store.rename_document(first.content_hash, "Renamed.txt", owner="local")
    opened = qa.follow_up(session.id)
    added = qa.add_document(workspace.store.get_session(session.id), opened.document,
                            workspace.load(LoadRequest((str(tmp_path / "b.txt"),))), whole=True)
    reopened = qa.follow_up(session.id)
    assert [m.name for m in reopened.document.members] == [m.name for m in
                                                           added.document.members]
    assert reopened.document.content_hash == workspace.store.get_session(session.id).document_key


# F18: --json "documents" of a reopened session whose first document left the store -----------
@pytest.mark.integration
def test_json_kept_parts_are_those_sent_after_a_document_left(tmp_path: Path):
    from fakeserver import FakeServer

    (tmp_path / "one.pdf").write_bytes(make_pdf([f"First document page {n}." for n in (1, 2, 3)]))
    (tmp_path / "two.pdf").write_bytes(make_pdf([f"Second document page {n} text." for n in
                                                 range(1, 8)]))
    cache = tmp_path / "cache"
    with FakeServer() as server:
        env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache),
               "SPARKDOCS_BASE_URL": server.base_url}

        def run(*args: str) -> dict:
            done = subprocess.run([sys.executable, "-m", "sparkdocs", *args],
                                  capture_output=True, text=True, env=env, timeout=300)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        first = run("ask", str(tmp_path / "one.pdf"), str(tmp_path / "two.pdf"), "Q?",
                    "--documents", "--parts", "2,6", "--json")
        assert [d["kept"] for d in first["documents"]] == [[2], [3]]
        with sqlite3.connect(cache / "sparkdocs.sqlite3") as db:
            (key,) = db.execute("SELECT document_key FROM session_documents WHERE position = 0"
                                ).fetchone()
            db.execute("DELETE FROM document_owners WHERE key = ?", (key,))
            db.execute("DELETE FROM documents WHERE key = ?", (key,))
        again = run("ask", "Again?", "--follow-up-of", first["session"], "--json")
        sent = server.behaviour.requests[-1]["messages"][1]["content"]
    assert '<page number="3">' in sent and '<page number="2">' not in sent
    assert [d["kept"] for d in again["documents"]] == [[3]]


# F2c: with the document named in each citation, a quote takes the citation of the short quoted
# code before it instead of its own ---------------------------------------------------------------
def test_each_quote_keeps_its_own_citation_when_documents_are_named():
    from sparkdocs.citations.quotes import find_quotes

    answer = ('The code: "return compute(request)" (code.zip, src/app.py:2).\n'
              'The readme: "The service computes the total price of a basket for each request" '
              '(code.zip, README.md).')
    (mention,) = find_quotes(answer, names=["code.zip"])
    texts = {r.text for r in (mention.reference, *mention.alternatives) if r is not None}
    assert "src/app.py:2" not in texts, texts


# F14: a citation that names several documents ---------------------------------------------------
SENTENCES = ["the deposit is five hundred pounds held by the agent",
             "pets are allowed with written consent from the landlord",
             "the tenant pays for the repair of any broken window glass",
             "rent is reviewed once a year on the anniversary of the lease"]
SET_NAMES = ["lease.txt", "annex.txt", "Schedule 2.md", "2024/lease.txt"]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_citation_naming_several_documents_is_checked_in_each(data):
    """The judge is the generator: it knows which document holds the quoted sentence and which
    documents the citation names."""
    count = data.draw(st.integers(2, 4))
    documents = [counted_text(SET_NAMES[i], f"Clause {i}: {SENTENCES[i]}.") for i in range(count)]
    prepared = prepare_document(combine_documents(documents, names=SET_NAMES[:count]))
    holder = data.draw(st.integers(0, count - 1))
    named = data.draw(st.lists(st.integers(0, count - 1), min_size=2, max_size=count, unique=True))
    with_lines = data.draw(st.booleans())
    separator = data.draw(st.sampled_from(["; ", ", ", " and ", " & ", " / "]))
    places = [SET_NAMES[i] + (", lines 1-1" if with_lines else "") for i in named]
    opening, closing = data.draw(st.sampled_from([("(", ")"), ("[", "]"), ("— ", "")]))
    answer = f'Found: "{SENTENCES[holder]}" {opening}{separator.join(places)}{closing}.'
    (citation,) = verify_answer(answer, prepared)
    assert citation.found is not None and citation.found.document == SET_NAMES[holder]
    if holder in named:
        assert citation.status is Status.VERIFIED, (answer, citation.note)
        assert citation.cited is not None and citation.cited.document == SET_NAMES[holder]
    else:
        assert citation.status is Status.MOVED, (answer, citation.note)
        assert citation.cited is not None and citation.cited.document in {SET_NAMES[i] for i in named}
        assert SET_NAMES[holder] in citation.note


# F18: a follow-up's paths are read as its session was made, whatever --documents says ------------
@pytest.mark.integration
@pytest.mark.parametrize("made_as_set", [False, True])
def test_a_follow_up_reads_its_paths_as_its_session_was_made(tmp_path: Path, made_as_set: bool):
    """Judged by the prompts the server received: the follow-up sends the same document blocks
    as the first question, with or without --documents."""
    from fakeserver import FakeServer
    from test_cli import run

    first_path, second_path = tmp_path / "a.txt", tmp_path / "b.txt"
    first_path.write_text(LOREM)
    second_path.write_text("Either party may end this agreement with ninety days written notice.")
    paths = [str(first_path), str(second_path)] if made_as_set else [str(first_path)]
    cache = tmp_path / "cache"
    with FakeServer() as server:
        env = {"SPARKDOCS_BASE_URL": server.base_url}
        first = json.loads(run("ask", *paths, "First?", *(["--documents"] if made_as_set else []),
                               "--json", cache=cache, **env).stdout)
        sent = server.behaviour.requests[-1]["messages"][1]["content"]
        blocks = sent[:sent.rindex("</document>") + len("</document>")]
        for flags in ([], ["--documents"]):
            again = run("ask", *paths, "Again?", "--follow-up-of", first["session"], *flags,
                        "--json", cache=cache, check=False, **env)
            assert again.returncode == 0, (flags, again.stderr)
            assert server.behaviour.requests[-1]["messages"][1]["content"].startswith(blocks)
            assert json.loads(again.stdout)["session"] == first["session"]
        if not made_as_set:
            extra = run("ask", str(first_path), str(second_path), "More?", "--follow-up-of",
                        first["session"], "--documents", cache=cache, check=False, **env)
            assert extra.returncode == 2 and "--add" in extra.stderr, extra.stderr
