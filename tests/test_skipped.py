"""Every file a codebase leaves out is in `skipped`, with its reason (issue #22, the first hour):
the README promises it, and the defaults (`.git`, `node_modules`, `__pycache__/*.pyc`,
virtualenvs, build output, lock files), `.gitignore` rules and --include/--exclude used to drop
files without a word. Judged against the disk: the files actually there, minus those kept, are
exactly the files `skipped` names; a folder left out whole is named once, with how many files
it holds, and that number is the number on disk."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sparkdocs.ingest import IngestOptions
from sparkdocs.ingest.code import codebase_sections
from sparkdocs.sources import walk_codebase

FOLDER_COUNT = re.compile(r"\b(\d[\d,]*) files?\b")

TREE = {
    "README.md": "# Repo\n",
    "src/app.py": "def main():\n    return 42\n",
    "src/__pycache__/app.cpython-311.pyc": "\x00compiled",
    "stray.pyc": "\x00compiled",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/objects/ab/cdef": "blob",
    ".git/refs/heads/main": "abc\n",
    "node_modules/left-pad/index.js": "module.exports = 1\n",
    "node_modules/left-pad/package.json": "{}\n",
    ".venv/lib/python3.11/site.py": "x = 1\n",
    "build/out.js": "var a;\n",
    "web/app.min.js": "var b;\n",
    "poetry.lock": "[[package]]\n",
    ".env": "TOKEN=abc\n",
    ".gitignore": "*.log\ntmp/\n",
    "debug.log": "noise\n",
    "tmp/scratch.txt": "scratch\n",
    "docs/guide.md": "# Guide\n",
    "logo.png": "\x89PNG\r\n\x1a\n\x00\x00",
}


def _write(root: Path, tree: dict[str, str]) -> None:
    for path, text in tree.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, newline="")


def _on_disk(root: Path) -> set[str]:
    found = set()
    for directory, _, filenames in os.walk(root):
        rel = Path(directory).relative_to(root).as_posix()
        found |= {name if rel == "." else f"{rel}/{name}" for name in filenames}
    return found


def _judge(on_disk: set[str], kept: set[str], skipped: list[str]) -> None:
    """kept + the files `skipped` names (a folder: every file under it) = the files on disk,
    with no file twice; every entry has a reason; a folder's count is the count on disk."""
    named: list[str] = []
    for entry in skipped:
        path, sep, reason = entry.partition(": ")
        assert sep and reason.strip(), f"no reason: {entry!r}"
        if path.endswith("/"):
            inside = {p for p in on_disk if p.startswith(path)}
            assert inside, f"a folder with no file in it is listed: {entry!r}"
            count = FOLDER_COUNT.search(reason)
            assert count, f"a folder without its number of files: {entry!r}"
            assert int(count.group(1).replace(",", "")) == len(inside), (entry, sorted(inside))
            named += inside
        else:
            named.append(path)
    assert len(named) == len(set(named)), f"a file listed twice: {sorted(named)}"
    assert not set(named) & kept, f"kept and skipped: {set(named) & kept}"
    assert kept | set(named) == on_disk, {"missing from skipped": on_disk - kept - set(named),
                                          "not on disk": (kept | set(named)) - on_disk}


@pytest.mark.integration
def test_count_json_lists_every_file_left_out_of_a_folder_with_its_reason(tmp_path: Path):
    root = tmp_path / "repo"
    _write(root, TREE)
    result = subprocess.run(
        [sys.executable, "-m", "sparkdocs", "count", str(root), "--exclude", "docs/", "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    kept = {s["title"] for s in report["sections"] if s["kind"] == "file"}
    assert kept == {".gitignore", "README.md", "src/app.py"}
    _judge(_on_disk(root), kept, report["skipped"])
    reasons = dict(entry.split(": ", 1) for entry in report["skipped"])
    # a folder left out whole is one entry, with the rule that left it out
    assert "node_modules/" in reasons["node_modules/"] and "2 files" in reasons["node_modules/"]
    assert ".git/" in reasons and "3 files" in reasons[".git/"]
    assert "default" in reasons["src/__pycache__/"] and "default" in reasons["stray.pyc"]
    assert ".gitignore" in reasons["debug.log"] and "*.log" in reasons["debug.log"]
    assert ".gitignore" in reasons["tmp/"]
    assert "--exclude" in reasons["docs/"] and "lock file" in reasons["poetry.lock"]
    assert "secret" in reasons[".env"] and "binary" in reasons["logo.png"]


@pytest.mark.integration
def test_count_json_lists_every_member_left_out_of_an_archive_with_its_reason(tmp_path: Path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in TREE.items():
            archive.writestr(f"repo/{path}", text)
    (tmp_path / "repo.zip").write_bytes(buffer.getvalue())
    result = subprocess.run(
        [sys.executable, "-m", "sparkdocs", "count", str(tmp_path / "repo.zip"), "--include",
         "*.md", "--include", "*.py", "--include", ".gitignore", "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    kept = {s["title"] for s in report["sections"] if s["kind"] == "file"}
    assert kept == {".gitignore", "README.md", "src/app.py", "docs/guide.md"}
    _judge(set(TREE), kept, report["skipped"])
    reasons = dict(entry.split(": ", 1) for entry in report["skipped"])
    assert "--include" in reasons["logo.png"] and "node_modules/" in reasons["node_modules/"]
    assert "default" in reasons["build/"] and ".gitignore" in reasons["tmp/"]


# Generated trees: default-ignored folders and names, .gitignore rules (negations too) and
# --exclude, at several depths. Whatever the rules, no file on disk goes unaccounted for.
_DIRS = ("", "src", "src/__pycache__", "node_modules", "node_modules/p", ".git", ".git/objects",
         "build", "d", "d/e", ".venv/lib", "pkg.egg-info")
_NAMES = ("a.py", "b.pyc", "c.txt", "x.log", "keep.log", "poetry.lock", ".env", "m.min.js",
          "y.md")
_RULES = ("*.log", "!keep.log", "d/", "e/", "*.txt", "src/", "/c.txt", "build/")


@st.composite
def _trees(draw: st.DrawFn) -> tuple[dict[str, str], tuple[str, ...]]:
    files = draw(st.sets(st.tuples(st.sampled_from(_DIRS), st.sampled_from(_NAMES)),
                         min_size=1, max_size=14))
    tree = {f"{folder}/{name}".lstrip("/"): "x = 1\n" for folder, name in files}
    tree["main.py"] = "print(1)\n"  # never left out by any rule here: something is kept
    for folder in draw(st.lists(st.sampled_from(("", "d", "src")), max_size=2, unique=True)):
        rules = draw(st.lists(st.sampled_from(_RULES), min_size=1, max_size=3))
        tree[f"{folder}/.gitignore".lstrip("/")] = "\n".join(rules) + "\n"
    exclude = tuple(draw(st.lists(st.sampled_from(("*.md", "d/e/", "m.min.js")), max_size=2)))
    return tree, exclude


@pytest.mark.integration
@hypothesis_settings(max_examples=60, deadline=None)
@given(_trees())
def test_every_file_on_disk_is_kept_or_skipped_with_its_reason(case):
    tree, exclude = case
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "repo"
        _write(root, tree)
        source = walk_codebase(root, IngestOptions(exclude=exclude))
        sections, _, skipped = codebase_sections(source.files, notes=source.notes)
        kept = {s.title for s in sections[1:]}
        assert "main.py" in kept
        _judge(_on_disk(root), kept, skipped)
