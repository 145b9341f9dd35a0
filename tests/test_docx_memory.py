"""DOCX bodies are streamed (issue #20): a million one-word paragraphs (4 MB on disk, 37 MB of
XML) are read within a stated memory budget, judged by the peak RSS of a child process, and
the text of ordinary documents is what python-docx itself reads from them, judged over the
repo's fixtures and over generated documents with headings, lists and tables."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from builders import add_footnotes, make_docx, make_docx_of_paragraphs, make_hostile_docx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdocs.documents import clean_text
from sparkdocs.ingest.docx import docx_sections

# The budget for reading the million-paragraph body: the interpreter with lxml and python-docx
# loaded (~60 MB), the 4 MB upload and its 6.5 MB of text, a few batches of lines. Building
# python-docx's whole tree took ~750 MB.
BODY_BUDGET_MB = 250

MEASURE = """
import sys, time
from pathlib import Path
from sparkdocs.documents import clean_text
from sparkdocs.ingest.docx import docx_sections
data = Path(sys.argv[1]).read_bytes()
sections, warnings = docx_sections(data, name="million.docx")
words = sum(len(s.text.split()) for s in sections)
# VmHWM is this process's own high-water mark: ru_maxrss would also carry the RSS the parent
# (a long pytest run) had when it forked this child, since Linux keeps it across exec.
status = Path("/proc/self/status").read_text()
print(int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:"))) // 1024, words)
"""


@pytest.mark.integration
def test_a_million_one_word_paragraphs_are_read_within_the_memory_budget(tmp_path: Path):
    path = tmp_path / "million.docx"
    path.write_bytes(make_docx_of_paragraphs(1_000_000))
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    peak_mb, words = (int(x) for x in done.stdout.split())
    assert words == 1_000_000  # every paragraph read
    assert peak_mb < BODY_BUDGET_MB, f"peak RSS {peak_mb} MB, budget {BODY_BUDGET_MB} MB"


# the text is python-docx's own ------------------------------------------------------------------
def _words(text: str) -> Counter[str]:
    return Counter(w for w in re.findall(r"[A-Za-z]+", text.replace("<br>", " ")) if w != "br")


def _python_docx_body(data: bytes) -> tuple[list[str], Counter[str]]:
    """The body's paragraphs in order and every word of the body with its tables, as
    python-docx reads them."""
    import docx

    document = docx.Document(io.BytesIO(data))
    # clean_text is the one cleaning every document gets (special tokens broken, controls out)
    paragraphs = [clean_text(p.text).strip() for p in document.paragraphs if p.text.strip()]
    words = _words("\n".join(paragraphs))
    for table in document.tables:
        cells = {id(cell._tc): cell for row in table.rows for cell in row.cells}
        for cell in cells.values():
            words += _words(cell.text)
    return paragraphs, words


def _assert_same_text(data: bytes, *, body_only: bool) -> None:
    sections, _ = docx_sections(data, name="a.docx")
    body = [s for s in sections if s.title not in ("Headers and footers", "Footnotes")] \
        if body_only else sections
    text = "\n".join(s.text for s in body)
    paragraphs, words = _python_docx_body(data)
    at = 0
    for paragraph in paragraphs:  # every paragraph, in order
        found = text.find(paragraph, at)
        assert found >= 0, f"{paragraph!r} missing or out of order"
        at = found + len(paragraph)
    if body_only:
        assert _words(text) == words  # nothing lost, nothing added


@pytest.mark.parametrize("build", [make_docx, lambda: add_footnotes(make_docx()), make_hostile_docx],
                         ids=["msa", "footnotes", "hostile"])
def test_the_repos_docx_fixtures_read_as_python_docx_reads_them(build):
    _assert_same_text(build(), body_only=False)


WORD = st.from_regex(r"[a-z]{3,9}", fullmatch=True).filter(lambda w: w != "br")
TEXT = st.lists(WORD, min_size=1, max_size=6).map(" ".join)
BLOCK = st.one_of(
    st.tuples(st.just("heading"), TEXT, st.integers(1, 4)),
    st.tuples(st.just("paragraph"), TEXT, st.sampled_from(["Normal", "List Bullet", "List Number",
                                                             "List Bullet 2", "Quote"])),
    st.tuples(st.just("table"), st.lists(st.lists(TEXT, min_size=2, max_size=2), min_size=1,
                                         max_size=3), st.booleans()),
)


def _build(blocks) -> bytes:
    import docx

    document = docx.Document()
    for kind, value, extra in blocks:
        if kind == "heading":
            document.add_heading(value, level=extra)
        elif kind == "paragraph":
            document.add_paragraph(value, style=extra)
        else:
            table = document.add_table(rows=len(value), cols=2)
            for r, row in enumerate(value):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
            if extra and len(value) > 1:  # a merged column: its text once
                table.cell(0, 1).merge(table.cell(1, 1)).text = value[0][1]
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(BLOCK, min_size=1, max_size=12))
def test_generated_documents_read_as_python_docx_reads_them(blocks):
    _assert_same_text(_build(blocks), body_only=True)


# uploads at once wait their turn ---------------------------------------------------------------
@pytest.mark.integration
def test_uploads_at_once_are_read_at_most_the_limit_at_a_time_and_the_others_wait(
        tmp_path: Path, monkeypatch):
    import threading
    import time

    import sparkdocs.workspace as workspace_module
    from sparkdocs.config import Settings
    from sparkdocs.ingest import Upload
    from sparkdocs.workspace import Workspace

    real = workspace_module.ingest_uploads
    active, most, lock = [0], [0], threading.Lock()

    def watched(*args, **kwargs):  # the real reader, with how many run at once counted
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.3)
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(workspace_module, "ingest_uploads", watched)
    workspace = Workspace(Settings(cache_dir=tmp_path / "cache", max_concurrent_ingests=2))
    waited: list[float] = []
    results: list[object] = []

    def upload(number: int) -> None:
        document = workspace.load_uploads(
            [Upload(f"d{number}.docx", make_docx_of_paragraphs(2000, seed=number))],
            workspace.ingest_options(), waiting=waited.append)
        results.append(document)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 5  # every upload read in the end
    assert most[0] == 2  # never more than the limit at once, and the limit used
    assert waited  # the ones beyond it were told they wait
