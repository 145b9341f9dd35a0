"""The entry point's guess of the command (to start the tokenizer early) is the command click
runs for the same arguments (the judge), over generated command lines."""

from __future__ import annotations

import warnings

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdocs.cli import app
from sparkdocs.launch import command_name

WORDS = st.sampled_from(["count", "prompt", "diff", "ask", "sessions", "user", "doc.pdf",
                         "--json", "--user", "--pages", "1-3", "-", "--", "--user=bob", "bob",
                         "ünïcode.txt", "-q"])


def _clicks_command(argv: list[str]) -> str | None:
    """The command click runs for `argv`, or None when it runs none (a usage error)."""
    try:
        ctx = app.make_context("sparkdocs", list(argv))
    except (click.UsageError, click.exceptions.Exit):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        words = [*ctx.protected_args, *ctx.args]
    return words[0] if words and app.get_command(ctx, words[0]) is not None else None


@settings(max_examples=400, deadline=None)
@given(user=st.one_of(st.just([]), st.lists(WORDS, min_size=1, max_size=1).map(lambda v: ["--user", *v]),
                      st.just(["--user=bob"])),
       rest=st.lists(WORDS, max_size=5))
def test_the_command_guessed_is_the_one_click_runs(user: list[str], rest: list[str]) -> None:
    argv = [*user, *rest]
    if "--" in argv:
        return  # "--" ends the options for click; no command of sparkdocs takes it first
    runs = _clicks_command(argv)
    if runs is not None:  # a usage error runs no command: any guess costs only an early start
        assert command_name(argv) == runs, argv


def test_a_counting_command_that_ends_at_once_leaves_its_output_and_store_whole(tmp_path):
    """`python -m sparkdocs count` ends its process without tearing it down (sparkdocs.launch
    `run`): its output, larger than a pipe holds, arrives whole (json is the judge); the store
    it wrote passes SQLite's own integrity check and serves the next command; a short table,
    still in the output's buffer at the end, arrives too."""
    import json
    import os
    import sqlite3
    import subprocess
    import sys

    tree = tmp_path / "repo"
    (tree / "src").mkdir(parents=True)
    for number in range(600):
        (tree / "src" / f"module_{number:03}.py").write_text(f"def f{number}(x):\n    return x\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    env["SPARKDOCS_CACHE_DIR"] = str(tmp_path / "cache")  # output buffered, as a user has it

    def count() -> dict:
        done = subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(tree), "--json"],
                              capture_output=True, text=True, env=env, timeout=180)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout) > 65_536  # more than a pipe holds: flushed before the end
        return json.loads(done.stdout)

    first = count()
    assert len([s for s in first["sections"] if s["kind"] == "file"]) == 600
    databases = sorted((tmp_path / "cache").rglob("*.sqlite3")) + sorted(
        (tmp_path / "cache").rglob("cache.db"))
    assert databases
    for path in databases:
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert count()["sections"] == first["sections"]
    note = tmp_path / "note.md"
    note.write_text("# Note\nPayment is due in thirty days.\n")
    short = subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(note), "--json"],
                           capture_output=True, text=True, env=env, timeout=180)
    assert short.returncode == 0 and json.loads(short.stdout)["name"] == "note.md"


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
@pytest.mark.parametrize("exists", [True, False])
def test_a_command_started_with_a_stream_closed_ends_as_the_command_says(tmp_path, closed,
                                                                        exists):
    """A closed stream is None in Python: the fast end's flush skips it, so the exit code is
    the command's own (0, or 2 for a missing file), with no traceback."""
    import os
    import subprocess
    import sys

    note = tmp_path / "note.md"
    if exists:
        note.write_text("# Note\nDue in thirty days.\n")
    fd = 1 if closed == "stdout" else 2
    shell = f'"$0" -m sparkdocs count "$1" --json {fd}>&-; echo "exit $?" >&{3 - fd}'
    done = subprocess.run(["sh", "-c", shell, sys.executable, str(note)], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")})
    told = done.stdout + done.stderr
    assert f"exit {0 if exists else 2}" in told, told
    assert "Traceback" not in told


@pytest.mark.parametrize("as_json", [True, False])
def test_output_to_a_full_disk_is_one_error_line(tmp_path, as_json):
    import os
    import subprocess
    import sys

    note = tmp_path / "note.md"
    note.write_text("# Note\nDue in thirty days.\n")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(note),
                               *(["--json"] if as_json else [])], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: cannot write the output (No space left on device)" in done.stderr
