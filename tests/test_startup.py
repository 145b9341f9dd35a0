"""A command imports only what it uses (the interpreter's module table is the judge), and the
cheap "is this PDF encrypted?" path agrees with pypdf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_contract_pdf, make_pdf

from sparkdocs.passwords import pdf_is_encrypted

# Libraries `count` never needs: the UI, the model client, passwords, metrics, DOCX/PDF parsing
# in this process (PDFs are read in a child), Rich for JSON output, pydantic-settings (Settings
# reads its variables itself: config.py says why), Typer (the command line is plain click).
NOT_FOR_COUNT = {"streamlit", "openai", "httpx", "pypdfium2", "pypdf", "docx", "argon2",
                 "prometheus_client", "rich", "typer", "jinja2", "pydantic_settings",
                 "pydantic",  # Settings are validated by pydantic-core alone (config.py says why)
                 # sparkdocs' own parts for answers and sets of documents
                 "sparkdocs.citations", "sparkdocs.changes", "sparkdocs.client", "sparkdocs.qa"}

PROBE = """
import json, sys
from sparkdocs.cli import main
code = main(sys.argv[1:])
sys.stderr.write(json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def imported_by(*args: str, cache: Path) -> set[str]:
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tokens"] > 0  # it counted (the tokenizer may be in a child)
    names = json.loads(result.stderr.strip().splitlines()[-1])
    return {*names, *(name.split(".")[0] for name in names)}  # packages and their modules


@pytest.mark.parametrize("kind", ["text", "pdf", "codebase"])
def test_count_json_imports_nothing_it_does_not_use(tmp_path: Path, kind: str):
    if kind == "text":
        target = tmp_path / "note.md"
        target.write_text("# Terms\nPayment is due in thirty days.\n")
    elif kind == "pdf":
        target = tmp_path / "contract.pdf"
        target.write_bytes(make_contract_pdf(3))
    else:
        target = tmp_path / "repo"
        (target / "src").mkdir(parents=True)
        (target / "src" / "a.py").write_text("a = 1\n")
        (target / "README.md").write_text("# repo\n")
    modules = imported_by("count", str(target), "--json", cache=tmp_path / "cache")
    assert "sparkdocs" in modules
    unused = NOT_FOR_COUNT | ({"pathspec"} if kind != "codebase" else set())  # ignore rules
    assert not modules & unused, sorted(modules & unused)


def test_plain_pdfs_are_not_encrypted_without_pypdf_and_encrypted_ones_are_found():
    import io

    from pypdf import PdfReader

    plain = make_contract_pdf(2)
    locked = make_pdf(["Secret page."], password="pw")
    # the /Encrypt key spelt with a #xx escape: still a name pypdf reads as /Encrypt
    escaped = locked.replace(b"/Encrypt", b"/Encr#79pt")
    assert escaped != locked
    for data in (plain, locked, escaped):
        assert pdf_is_encrypted(data) == PdfReader(io.BytesIO(data)).is_encrypted
    assert [pdf_is_encrypted(d) for d in (plain, locked, escaped)] == [False, True, True]
    assert not pdf_is_encrypted(b"%PDF-1.7\n" + bytes(range(256)) * 100)
