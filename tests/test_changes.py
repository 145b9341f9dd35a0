"""What changed between two versions: judged by the generator's own record of the edits it
made (kinds and the pages each edited clause is on in each version), never by the diff's output."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus import contract_sentence
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdocs.changes import ChangeKind, Comparison, compare, render_changes
from sparkdocs.documents import Document, DocumentKind, Section, SectionKind

# -- the generator: clause lists, known edits, pages ------------------------------------------

Expected = tuple[str, str | None, str | None]  # (kind, old page, new page)


@dataclass(frozen=True)
class Edit:
    kind: str  # changed, removed, added, moved
    at: int  # old clause index (for added and moved: the new clause goes after it)
    text: str = ""  # the changed, added text
    source: int = -1  # moved: the old index of the clause that moves


def apply_edits(clauses: list[str], edits: list[Edit]) -> tuple[list[str], list[tuple[str, int | None, int | None]]]:
    """The new clause list and, for each edit, (kind, old index, new index)."""
    by_site = {e.at: e for e in edits if e.kind in ("changed", "removed")}
    after = {e.at: e for e in edits if e.kind in ("added", "moved")}
    moved_from = {e.source for e in edits if e.kind == "moved"}
    new: list[str] = []
    record: list[tuple[str, int | None, int | None]] = []
    for i, clause in enumerate(clauses):
        edit = by_site.get(i)
        if edit and edit.kind == "removed":
            record.append(("removed", i, None))
        elif edit and edit.kind == "changed":
            record.append(("changed", i, len(new)))
            new.append(edit.text)
        elif i not in moved_from:
            new.append(clause)
        insert = after.get(i)
        if insert and insert.kind == "added":
            record.append(("added", None, len(new)))
            new.append(insert.text)
        elif insert:
            record.append(("moved", insert.source, len(new)))
            new.append(clauses[insert.source])
    return new, record


def numbered(clauses: list[str]) -> list[str]:
    """Clause numbers by position: a removed clause renumbers every one below it."""
    return [f"{n}. {text}" for n, text in enumerate(clauses, 1)]


def paged(clauses: list[str], sizes: list[int], *, joiner: str = "\n") -> tuple[list[str], list[int]]:
    """Pages of `sizes[k]` clauses each (the last takes the rest); and each clause's page."""
    pages, where, k = [], [], 0
    for size in sizes:
        pages.append(joiner.join(clauses[k:k + size]))
        where += [len(pages)] * len(clauses[k:k + size])
        k += size
    if k < len(clauses):
        pages.append(joiner.join(clauses[k:]))
        where += [len(pages)] * (len(clauses) - k)
    return pages, where


def pdf_document(pages: list[str], name: str) -> Document:
    return Document(name, DocumentKind.PDF, f"hash-{name}", tuple(
        Section(SectionKind.PAGE, str(n), text) for n, text in enumerate(pages, 1)))


def expected(record: list[tuple[str, int | None, int | None]], old_pages: list[int],
             new_pages: list[int]) -> list[Expected]:
    return sorted((kind, None if i is None else str(old_pages[i]), None if j is None else str(new_pages[j]))
                  for kind, i, j in record)


def found(comparison: Comparison) -> list[Expected]:
    return sorted((c.kind.value, c.old_place.title if c.old_place else None,
                   c.new_place.title if c.new_place else None) for c in comparison.changes)


# -- the judge: a 40-page contract with 6 known changes -------------------------------

PER_PAGE = 3


def contract_versions() -> tuple[list[str], list[str], list[tuple[str, int | None, int | None]]]:
    rng = random.Random(2026)
    clauses = [contract_sentence(rng, 100 + i) for i in range(40 * PER_PAGE)]
    serial_clause = clauses[100]
    edits = [
        Edit("changed", 10, clauses[10].replace(" within ", " no later than ", 1)),
        Edit("changed", 45, clauses[45].replace(" office.", " office, unless the parties agree otherwise.")),
        Edit("removed", 30),
        Edit("added", 70, "The Auditor may inspect the tooling within 14 days of each delivery, and the "
             "Customer will keep 4 copies at the Oslo office."),
        Edit("moved", 20, source=85),
        Edit("changed", 100, serial_clause.replace("within 200 days", "within 260 days")),
    ]
    assert "within 200 days" in serial_clause
    new, record = apply_edits(clauses, edits)
    return numbered(clauses), numbered(new), record


def judge(comparison: Comparison, record: list[tuple[str, int | None, int | None]],
          old_count: int, new_count: int) -> None:
    old_pages = [i // PER_PAGE + 1 for i in range(old_count)]
    new_pages = [j // PER_PAGE + 1 for j in range(new_count)]
    assert found(comparison) == expected(record, old_pages, new_pages)
    assert len(comparison.changes) == 6
    number = next(c for c in comparison.changes if c.old and "200 days" in c.old)
    assert number.kind is ChangeKind.CHANGED and '"200" → "260"' in number.detail


def test_a_40_page_contract_with_6_known_changes_lists_exactly_those_6():
    old, new, record = contract_versions()
    old_doc = pdf_document(paged(old, [PER_PAGE] * 40)[0], "contract-2025.pdf")
    new_doc = pdf_document(paged(new, [PER_PAGE] * 40)[0], "contract-2026.pdf")
    assert len(old_doc.sections) == 40
    comparison = compare(old_doc, new_doc)
    judge(comparison, record, len(old), len(new))
    assert compare(old_doc, new_doc) == comparison  # deterministic
    listing = render_changes(comparison, old_name="contract-2025.pdf", new_name="contract-2026.pdf")
    assert listing.startswith("6 changes from contract-2025.pdf to contract-2026.pdf")
    assert len(listing.splitlines()) == 7
    assert json.loads(json.dumps(comparison.as_dict()))["counts"] == {
        "changed": 3, "removed": 1, "added": 1, "moved": 1}


@pytest.mark.integration
def test_the_same_contract_as_real_pdfs_through_the_ingester():
    from builders import make_pdf

    from sparkdocs.ingest import ingest_bytes

    old, new, record = contract_versions()
    old_doc = ingest_bytes("contract-2025.pdf", make_pdf(paged(old, [PER_PAGE] * 40)[0]))
    new_doc = ingest_bytes("contract-2026.pdf", make_pdf(paged(new, [PER_PAGE] * 40)[0]))
    assert [s.title for s in old_doc.sections] == [str(n) for n in range(1, 41)]
    assert "\n" in old_doc.sections[0].text  # wrapped lines, as extracted
    judge(compare(old_doc, new_doc), record, len(old), len(new))


# -- properties -------------------------------------------------------------------------------

SYLLABLES = ("ka", "lo", "mi", "ne", "pu", "ri", "sa", "te", "vo", "zu", "bre", "dov", "gal")


def random_clause(rng: random.Random, serial: int) -> str:
    words = ["".join(rng.choices(SYLLABLES, k=rng.randint(2, 3))) for _ in range(rng.randint(7, 12))]
    words.insert(rng.randint(1, len(words)), str(serial))
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def changed_clause(text: str, rng: random.Random, serial: int) -> str:
    """One word or one number of the clause changed."""
    words = text[:-1].split(" ")
    k = rng.randrange(len(words))
    replacement = str(serial) if words[k].isdigit() or rng.random() < 0.3 else "".join(
        rng.choices(SYLLABLES, k=4))
    if k == 0:
        replacement = replacement.capitalize()
    words[k] = replacement
    return " ".join(words) + "."


@st.composite
def edited_versions(draw: st.DrawFn) -> tuple[list[str], list[str], list[tuple[str, int | None, int | None]]]:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(8, 60))
    clauses = [random_clause(rng, 1000 + i) for i in range(n)]
    kinds = draw(st.lists(st.sampled_from(["changed", "removed", "added", "moved"]), min_size=1, max_size=6))
    slots = list(range(n // 4))  # edit sites 4 clauses apart: each edit stands on its own
    rng.shuffle(slots)
    edits: list[Edit] = []
    for serial, kind in enumerate(kinds, 5000):
        need = 2 if kind == "moved" else 1
        if len(slots) < need:
            break
        site = 4 * slots.pop() + 1
        if kind == "moved":
            edits.append(Edit("moved", 4 * slots.pop() + 1, source=site))
        elif kind == "changed":
            edits.append(Edit("changed", site, changed_clause(clauses[site], rng, serial)))
        else:
            edits.append(Edit(kind, site, random_clause(rng, serial)))
    new, record = apply_edits(clauses, edits)
    return numbered(clauses), numbered(new), record


def random_sizes(rng: random.Random, n: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(rng.randint(0, 4))
    return sizes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions=edited_versions(), seed=st.integers(0, 2**32 - 1))
def test_k_known_edits_are_found_exactly_on_any_page_layout(versions, seed):
    old, new, record = versions
    rng = random.Random(seed)
    old_pages, old_where = paged(old, random_sizes(rng, len(old)), joiner=rng.choice([" ", "\n"]))
    new_pages, new_where = paged(new, random_sizes(rng, len(new)), joiner=rng.choice([" ", "\n", "\n\n"]))
    comparison = compare(pdf_document(old_pages, "old.pdf"), pdf_document(new_pages, "new.pdf"))
    assert found(comparison) == expected(record, old_where, new_where)


def reflowed(text: str, rng: random.Random) -> list[str]:
    """`text` cut into pages at random places between words, or inside a long word with a
    line-end hyphen; spaces turned into line breaks here and there."""
    words = text.split(" ")
    pages, current = [], []
    for word in words:
        if rng.random() < 0.06 and len(word) >= 6 and word.isalpha():
            cut = rng.randint(2, len(word) - 2)
            pages.append(" ".join([*current, word[:cut] + "-"]))
            current = [word[cut:]]
            continue
        if rng.random() < 0.08:
            pages.append(" ".join(current))
            current = []
        current.append(word)
    pages.append(" ".join(current))
    return [page.replace(" ", "\n", 1) if rng.random() < 0.5 else page for page in pages]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_the_same_clauses_on_other_page_breaks_are_no_change(seed, n):
    rng = random.Random(seed)
    text = " ".join(numbered([random_clause(rng, 1000 + i) for i in range(n)]))
    first = pdf_document(reflowed(text, rng), "a.pdf")
    second = pdf_document(reflowed(text, rng), "b.pdf")
    assert compare(first, second).changes == ()


page_texts = st.lists(st.text(max_size=300), max_size=8)


@settings(max_examples=150, deadline=None)
@given(pages=page_texts, kind=st.sampled_from([SectionKind.PAGE, SectionKind.HEADING, SectionKind.FILE]))
def test_a_document_compared_with_itself_has_no_changes(pages, kind):
    document = Document("a", DocumentKind.TEXT, "h", tuple(
        Section(kind, str(n), text) for n, text in enumerate(pages, 1)))
    comparison = compare(document, document)
    assert comparison.changes == ()
    assert render_changes(comparison, old_name="a", new_name="a").startswith("No changes")


def test_whitespace_and_spacing_alone_are_no_change():
    old = pdf_document(["1. The Supplier shall deliver, within 30 days, the Goods."], "a")
    new = pdf_document(["1.   The Supplier\nshall deliver ,within 30\tdays , the Goods ."], "b")
    assert compare(old, new).changes == ()


def test_the_listing_is_bounded_and_neutralised():
    words = "says alpha beta gamma delta epsilon zeta eta"
    old = pdf_document([" ".join(f"Clause {i} {words} theta {i}." for i in range(100))], "a")
    new = pdf_document([" ".join(f"Clause {i} {words} <|eot_id|> {i}." for i in range(100))], "b")
    comparison = compare(old, new)
    assert len(comparison.changes) == 100
    listing = render_changes(comparison, old_name="a", new_name="b", max_changes=5, max_chars=60)
    lines = listing.splitlines()
    assert len(lines) == 7 and lines[-1] == "… and 95 more changes not listed."
    assert "<|eot_id|>" not in listing and "eot_id" in listing


def test_a_rewritten_block_is_one_removed_and_one_added_change():
    rng = random.Random(3)
    clauses = [random_clause(rng, 100 + i) for i in range(12)]
    new = clauses[:4] + [random_clause(rng, 900), random_clause(rng, 901)] + clauses[7:]
    old_doc = pdf_document(paged(clauses, [2] * 6)[0], "a")
    new_doc = pdf_document(paged(new, [2] * 6)[0], "b")
    removed, added = compare(old_doc, new_doc).changes
    assert (removed.kind, removed.old, removed.old_place and removed.old_place.title) == (
        ChangeKind.REMOVED, " ".join(clauses[4:7]), "3")
    assert (added.kind, added.new, added.new_place and added.new_place.title) == (
        ChangeKind.ADDED, " ".join(new[4:6]), "3")


def test_a_clause_across_a_page_break_is_placed_where_it_starts():
    old = pdf_document(["1. Payment is due net 45 days.", "2. The Supplier shall deliver the",
                        "Goods to Leeds within 30 days. 3. Notices are in writing."], "a")
    new = pdf_document(["1. Payment is due net 45 days. 2. The Supplier shall deliver",
                        "the Goods to Leeds within 60 days.", "3. Notices are in writing."], "b")
    [change] = compare(old, new).changes
    assert change.old_place and change.new_place
    assert (change.old_place.label, change.new_place.label, change.detail) == ("p. 2", "p. 1", '"30" → "60"')


def test_sections_are_named_by_their_titles():
    def document(text: str) -> Document:
        return Document("t.md", DocumentKind.TEXT, text, (
            Section(SectionKind.HEADING, "Scope", "The Services are described in Annex A."),
            Section(SectionKind.HEADING, "Payment", f"Invoices are due within {text} days of receipt.")))

    [change] = compare(document("45"), document("30")).changes
    assert change.old_place and change.old_place.label == 'section "Payment"'


def test_files_are_compared_line_by_line_with_their_line_numbers():
    old = Document("r", DocumentKind.CODEBASE, "h1", (
        Section(SectionKind.TREE, "files", ".\n└── a.py"),
        Section(SectionKind.FILE, "a.py", "def f(x):\n    return x + 1\n\n\ndef g():\n    pass\n")))
    new = Document("r", DocumentKind.CODEBASE, "h2", (
        Section(SectionKind.TREE, "files", ".\n└── a.py"),
        Section(SectionKind.FILE, "a.py", "def f(x):\n  return x + 2\n\n\ndef g():\n    pass\n")))
    [change] = compare(old, new).changes
    assert change.kind is ChangeKind.CHANGED and change.old_place and change.new_place
    assert (change.old_place.label, change.new_place.label) == ("a.py:2", "a.py:2")
    assert change.detail == '"1" → "2"'


# -- the command ------------------------------------------------------------------------------

def _text_versions(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(5)
    clauses = [random_clause(rng, 100 + i) for i in range(30)]
    new = list(clauses)
    new[12] = changed_clause(clauses[12], rng, 999)
    del new[20]
    old_path, new_path = tmp_path / "terms-v1.txt", tmp_path / "terms-v2.txt"
    old_path.write_text("\n\n".join(clauses) + "\n")
    new_path.write_text("\n\n".join(new) + "\n")
    return old_path, new_path


@pytest.mark.integration
def test_cli_diff_prints_and_emits_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    from sparkdocs.cli import app

    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    old_path, new_path = _text_versions(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["diff", str(old_path), str(new_path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "2 changes from terms-v1.txt to terms-v2.txt: 1 changed, 1 removed."
    assert lines[1].startswith("changed: line 25 → line 25: ")  # clause 13 of 30, a blank line apart
    assert lines[2].startswith("removed: line 41: ")
    data = json.loads(runner.invoke(app, ["diff", str(old_path), str(new_path), "--json"]).output)
    assert data["counts"] == {"changed": 1, "removed": 1, "added": 0, "moved": 0}
    assert [(c["kind"], (c["old_place"] or {}).get("line"), (c["new_place"] or {}).get("line"))
            for c in data["changes"]] == [("changed", 25, 25), ("removed", 41, None)]


@pytest.mark.integration
def test_cli_diff_errors_are_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    from sparkdocs.cli import main

    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    old_path, _ = _text_versions(tmp_path)
    missing = tmp_path / "nowhere.txt"
    assert main(["diff", str(old_path), str(missing)]) == 2
    said = capsys.readouterr().err
    assert "nowhere.txt" in said and "Traceback" not in said
    assert main(["diff", str(old_path), str(old_path)]) == 2
    assert "the same file" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_diff_opens_an_encrypted_version_with_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]):
    from builders import make_pdf

    from sparkdocs.cli import main

    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "old.pdf").write_bytes(make_pdf(["1. Payment is due net 45 days of invoice."], password="pw"))
    (tmp_path / "new.pdf").write_bytes(make_pdf(["1. Payment is due net 30 days of invoice."]))
    args = ["diff", str(tmp_path / "old.pdf"), str(tmp_path / "new.pdf"), "--json"]
    assert main(args) == 2
    assert "old.pdf" in capsys.readouterr().err
    assert main([*args, "--password", "pw"]) == 0
    [change] = json.loads(capsys.readouterr().out)["changes"]
    assert (change["kind"], change["detail"]) == ("changed", '"45" → "30"')


def test_cli_diff_tells_same_named_versions_apart_and_prints_their_text_literally(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    from sparkdocs.cli import app

    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    clauses = [f"Clause {n}. The parties agree to term number {n} of this agreement."
               for n in range(1, 11)]
    (tmp_path / "2024").mkdir()
    (tmp_path / "2025").mkdir()
    (tmp_path / "2024" / "contract.txt").write_text("\n\n".join(clauses))
    clauses[4] = "Clause 5. The parties agree to [bold]term number 50[/bold] of this agreement."
    (tmp_path / "2025" / "contract.txt").write_text("\n\n".join(clauses))
    shown = CliRunner().invoke(app, ["diff", str(tmp_path / "2024" / "contract.txt"),
                                     str(tmp_path / "2025" / "contract.txt")])
    assert shown.exit_code == 0, shown.output
    assert "from 2024/contract.txt to 2025/contract.txt" in shown.output
    assert "[bold]term number 50[/bold]" in shown.output


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 6), kind=st.sampled_from(["added", "removed"]))
def test_a_block_of_clauses_is_one_change_that_names_every_page_it_spans(seed, k, kind):
    """Consecutive clauses added (or removed) together are one change; the judge is the layout
    the generator chose: the change runs from the first clause's page to the last one's."""
    rng = random.Random(seed)
    clauses = [random_clause(rng, 100 + i) for i in range(rng.randint(8, 20))]
    block = [random_clause(rng, 900 + i) for i in range(k)]
    at = rng.randint(1, len(clauses) - 1)
    shorter, longer = clauses, clauses[:at] + block + clauses[at:]
    old, new = (shorter, longer) if kind == "added" else (longer, shorter)
    old_pages, old_where = paged(numbered(old), random_sizes(rng, len(old)))
    new_pages, new_where = paged(numbered(new), random_sizes(rng, len(new)))
    [change] = compare(pdf_document(old_pages, "old.pdf"), pdf_document(new_pages, "new.pdf")).changes
    where = new_where if kind == "added" else old_where
    first, last = str(where[at]), str(where[at + k - 1])
    place, end = ((change.new_place, change.new_end) if kind == "added"
                  else (change.old_place, change.old_end))
    assert change.kind.value == kind and place is not None
    assert (place.title, (end or place).title) == (first, last)
    shown = change.as_dict()[f"{'new' if kind == 'added' else 'old'}_place"]["label"]
    assert shown == (f"p. {first}" if first == last else f"pp. {first}-{last}")
