"""The CLI as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builders import make_contract_pdf, make_zip

pytestmark = pytest.mark.integration


def run(*args: str, cache: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache), "SPARKDOCS_BASE_URL": "http://127.0.0.1:9/v1"}
    result = subprocess.run([sys.executable, "-m", "sparkdocs", *args], capture_output=True,
                            text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_count_json_has_sections_budget_and_warnings(tmp_path: Path):
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(make_contract_pdf(3))
    report = json.loads(run("count", str(pdf), "--json", cache=tmp_path / "cache").stdout)
    assert report["kind"] == "pdf" and len(report["sections"]) == 3
    assert report["tokens"] == sum(s["tokens"] for s in report["sections"])
    assert report["budget"]["context"] == 65_536 and report["budget"]["fits"]
    assert set(report["budget"]) >= {"answer_reserve", "prompt_overhead", "available", "free"}


def test_count_codebase_with_include_and_directories(tmp_path: Path):
    archive = tmp_path / "repo.zip"
    archive.write_bytes(make_zip({"r/src/a.py": b"a = 1\n", "r/docs/b.md": b"# b\n"}))
    report = json.loads(run("count", str(archive), "--include", "src/", "--json",
                            cache=tmp_path / "cache").stdout)
    assert [s["title"] for s in report["sections"]] == ["files", "src/a.py"]
    assert set(report["directories"]) == {".", "src"}


def test_prompt_json_shape_and_many_paths_form_one_document(tmp_path: Path):
    (tmp_path / "a.txt").write_text("Alpha text.")
    (tmp_path / "b.md").write_text("# Beta\nbody")
    result = json.loads(run("prompt", str(tmp_path / "a.txt"), str(tmp_path / "b.md"), "-q",
                            "What is alpha?", "--json", cache=tmp_path / "cache").stdout)
    assert [m["role"] for m in result["messages"]] == ["system", "user"]
    user = result["messages"][1]["content"]
    assert user.index('<file path="a.txt">') < user.index('<file path="b.md">')
    assert user.endswith("Question: What is alpha?") and result["prompt_tokens"] > 100


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path: Path):
    bad = tmp_path / "fake.docx"
    bad.write_bytes(b"not a zip")
    result = run("count", str(bad), cache=tmp_path / "cache", check=False)
    assert result.returncode == 2
    assert "not a valid .docx" in result.stderr and "Traceback" not in result.stderr
