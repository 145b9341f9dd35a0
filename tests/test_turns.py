"""One turn runner and one group of streams: the verdicts on an answer's quotes are checked once,
when the turn is recorded, and every face shows the stored ones; a group of streams cancels every
member, also one that joins after the cancel."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakeserver import FakeServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdocs.store import DATABASE_NAME
from sparkdocs.streams import StreamGroup

ROOT = Path(__file__).resolve().parent.parent
CLAUSE = "The supplier shall deliver the goods within thirty days of the order"
DOCUMENT = f"# Terms\n\n{CLAUSE}.\n\nPayment is due within 45 days of the invoice.\n"
ANSWER = f'The contract says "{CLAUSE}" (section "Terms"), and "the moon is made of cheese".'


def _env(cache: Path, base_url: str) -> dict[str, str]:
    return {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache), "SPARKDOCS_BASE_URL": base_url,
            "SPARKDOCS_MAX_RETRIES": "0", "SPARKDOCS_WARM_UP": "false"}


def _stored_turns(cache: Path) -> list[dict]:
    """The turns as the SQLite file holds them: the judge, not the store's own reader."""
    db = sqlite3.connect(cache / DATABASE_NAME)
    try:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM turns ORDER BY seq")]
    finally:
        db.close()


def _rewrite_turn(cache: Path, change) -> None:
    db = sqlite3.connect(cache / DATABASE_NAME)
    try:
        seq, body = db.execute("SELECT seq, body FROM turns ORDER BY seq DESC").fetchone()
        record = json.loads(body)
        change(record)
        db.execute("UPDATE turns SET body = ? WHERE seq = ?", (json.dumps(record), seq))
        db.commit()
    finally:
        db.close()


# -- a group of streams ---------------------------------------------------------------------------

class _Stream:
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


def test_a_group_cancels_every_member_and_every_late_joiner():
    group = StreamGroup()
    first, second, late = _Stream(), _Stream(), _Stream()
    with group.member(first), group.member(second):
        assert len(group) == 2 and not group.cancelled
        group.cancel()
        assert (first.cancelled, second.cancelled) == (1, 1) and group.cancelled
    assert len(group) == 0
    with group.member(late):  # its thread sent the request after the cancel
        assert late.cancelled == 1
    assert first.cancelled == 1  # a member that left is not cancelled again


def test_cancel_races_with_joining_from_many_threads():
    """Whatever the interleaving, no member that joined escapes the cancel."""
    for _ in range(50):
        group = StreamGroup()
        streams = [_Stream() for _ in range(8)]
        gate = threading.Barrier(9)

        def join(stream: _Stream, group: StreamGroup, gate: threading.Barrier) -> None:
            gate.wait()
            with group.member(stream):
                pass

        threads = [threading.Thread(target=join, args=(s, group, gate)) for s in streams]
        for thread in threads:
            thread.start()
        gate.wait()
        group.cancel()
        for thread in threads:
            thread.join()
        # a stream either left before the cancel or was cancelled exactly once
        assert all(s.cancelled <= 1 for s in streams)
        with group.member(extra := _Stream()):
            assert extra.cancelled == 1


# -- verdicts checked once, stored with the turn -----------------------------------------------

@pytest.mark.integration
def test_ask_stores_each_quotes_verdict_with_its_turn(tmp_path):
    doc = tmp_path / "terms.md"
    doc.write_text(DOCUMENT)
    cache = tmp_path / "cache"
    with FakeServer() as server:
        server.behaviour.answer = ANSWER
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), "When?",
                              "--json"], capture_output=True, text=True, timeout=120,
                             check=False, env=_env(cache, server.base_url))
    assert run.returncode == 0, run.stderr
    [stored] = _stored_turns(cache)
    verdicts = [(c["quote"], c["status"]) for c in stored["citations"]]
    assert verdicts == [(CLAUSE, "verified"), ("the moon is made of cheese", "not_found")]
    # the CLI prints the stored verdicts
    printed = json.loads(run.stdout)["citations"]
    assert [(c["quote"], c["status"]) for c in printed] == verdicts


@pytest.mark.integration
def test_the_app_shows_the_stored_verdicts_and_checks_only_turns_stored_without(tmp_path,
                                                                            monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    cache = tmp_path / "cache"
    with FakeServer() as server:
        for name, value in _env(cache, server.base_url).items():
            monkeypatch.setenv(name, value)
        server.behaviour.answer = ANSWER
        st.cache_resource.clear()
        try:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
            at.sidebar.file_uploader[0].set_value(
                ("terms.md", DOCUMENT.encode(), "text/markdown")).run()
            at.chat_input[0].set_value("When?").run()
            assert not at.exception

            def sources_line() -> str:
                return next(c.value for c in at.caption if c.value.startswith("Sources:"))

            assert sources_line().startswith("Sources: 1 ✓ · 1 ✗")
            # The stored verdict is what is shown: change it in the file and the page follows
            # (had the page checked the answer again, it would still say 1 ✓).
            _rewrite_turn(cache, lambda r: r["citations"][0].update(status="not_found"))
            at.run()
            assert sources_line().startswith("Sources: 2 ✗")
            # A turn stored before verdicts were kept is checked when shown.
            _rewrite_turn(cache, lambda r: r.pop("citations"))
            at.run()
            assert sources_line().startswith("Sources: 1 ✓ · 1 ✗")
        finally:
            st.cache_resource.clear()


# -- found by the hostile pass: each a class ------------------------------------------------------

def _qa_over(tmp_path, base_url: str, text: str = DOCUMENT):
    from sparkdocs.client import ModelClient
    from sparkdocs.config import Settings
    from sparkdocs.ingest import Upload
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.workspace import Workspace

    settings = Settings(base_url=base_url, cache_dir=tmp_path / "cache", max_retries=0,  # type: ignore[call-arg]
                        warm_up=False)
    workspace = Workspace(settings)
    qa = QuestionAnswering(workspace, ModelClient(settings))
    document = workspace.load_uploads([Upload("terms.md", text.encode())],
                                      workspace.ingest_options())
    return qa, document, qa.session_for(document)


@pytest.mark.integration
def test_a_group_given_to_the_runner_is_the_one_a_stop_cancels(tmp_path):
    """An empty group is falsy (it has a length): `streams or StreamGroup()` dropped it."""
    with FakeServer() as server:
        server.behaviour.answer = " ".join(f"w{i}" for i in range(200))
        server.behaviour.token_delay_s = 0.02
        qa, document, session = _qa_over(tmp_path, server.base_url)
        group = StreamGroup()
        timer = threading.Timer(0.5, group.cancel)
        timer.start()
        outcome = qa.run_turn(document, session, "When?", streams=group)
        timer.cancel()
    assert outcome.turn.status.value == "stopped", outcome.turn
    assert "w199" not in outcome.turn.answer


@pytest.mark.integration
def test_a_bug_is_recorded_as_a_failure_not_as_the_users_stop(tmp_path):
    with FakeServer() as server:
        qa, document, session = _qa_over(tmp_path, server.base_url)

        def broken(text: str) -> None:
            raise ValueError("a bug in a callback")

        with pytest.raises(ValueError):
            qa.run_turn(document, session, "When?", on_text=broken)
    [stored] = _stored_turns(tmp_path / "cache")
    assert stored["status"] == "failed" and "ValueError" in stored["error"]


@pytest.mark.integration
@pytest.mark.parametrize("chunks", [["Due ", "\ud83d", "\ude00", " ok"], ["lone \udc80 half"],
                                    ["end \ud83d"]])
def test_halves_of_a_character_never_lose_the_turn(tmp_path, chunks):
    """A server's JSON may split a surrogate pair over two chunks, or send half of one: the
    pair is joined, a lone half becomes U+FFFD, and the turn is stored."""
    with FakeServer() as server:
        server.behaviour.chunks = chunks
        qa, document, session = _qa_over(tmp_path, server.base_url)
        outcome = qa.run_turn(document, session, "When?")
    [stored] = _stored_turns(tmp_path / "cache")
    assert stored["answer"] == outcome.turn.answer
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in stored["answer"])
    if chunks[1:3] == ["\ud83d", "\ude00"]:
        assert "\U0001F600" in stored["answer"]


@pytest.mark.integration
def test_a_question_longer_than_a_file_name_is_asked(tmp_path):
    doc = tmp_path / "terms.md"
    doc.write_text(DOCUMENT)
    question = "Who pays? " + "really " * 400
    with FakeServer() as server:
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), question,
                              "--json"], capture_output=True, text=True, timeout=120,
                             check=False, env=_env(tmp_path / "cache", server.base_url))
    assert run.returncode == 0, run.stderr
    assert _stored_turns(tmp_path / "cache")[0]["question"].startswith("Who pays?")


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(
                            ["quote", "status", "cited", "found", "kind", "title", "label",
                             "lines", "sections", "span", "occurrences", "source_offsets",
                             "similarity", "note", "last"]), inner, max_size=6),
                        max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(verdicts=_JSONISH)
def test_any_stored_verdicts_keep_the_turn_and_never_break_a_reader(tmp_path_factory, verdicts):
    """Whatever a writable store holds in a turn's verdicts, the turn is read (its question
    and answer kept), and what the faces show of its verdicts is produced without an error."""
    from sparkdocs.citation_views import answers_sources_markdown, sources_text
    from sparkdocs.ingest import IngestOptions, Upload, ingest_uploads
    from sparkdocs.prompts import prepare_document
    from sparkdocs.qa import valid_citations
    from sparkdocs.store import Turn, turn_from_json, turn_to_json
    from sparkdocs.tokens import count_document

    record = json.loads(turn_to_json(Turn("Q?", ANSWER)))
    record["citations"] = verdicts
    turn = turn_from_json(json.dumps(record))
    assert (turn.question, turn.answer) == ("Q?", ANSWER)
    prepared = prepare_document(count_document(ingest_uploads(
        [Upload("terms.md", DOCUMENT.encode())], options=IngestOptions())))
    shown = valid_citations(turn.citations, prepared)
    if shown is not None:
        sources_text(shown)
        answers_sources_markdown([shown])
        from sparkdocs.citations import source_excerpt

        for citation in shown:
            source_excerpt(prepared, citation)
