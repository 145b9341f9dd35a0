"""Nothing seen is lost: an answer is stored after a write lock held past the busy timeout goes,
kept in a recovery file (CLI) when the lock outlasts the retries or the disk is full, and stored
from that file on the next run. Judges: the SQLite rows (read with a connection of their own)
and the files on disk."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdocs.errors import StoreFullError
from sparkdocs.store import DATABASE_NAME, Store, Turn, turn_to_json
from sparkdocs.store.recovery import (
    TurnNotStoredError,
    append_kept,
    store_recovered,
    write_recovery_file,
)

pytestmark = pytest.mark.integration

HOLDER = """
import sqlite3, sys, time, pathlib
path, ready, seconds = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])
db = sqlite3.connect(path, timeout=60, isolation_level=None)
deadline = time.monotonic() + 120
while not db.execute("SELECT 1 FROM sessions").fetchone():  # the session exists: answer next
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.02)
db.execute("BEGIN EXCLUSIVE")
ready.write_text("locked")
time.sleep(seconds)
db.execute("ROLLBACK")
"""


def hold_lock(database: Path, seconds: float, ready: Path) -> subprocess.Popen[bytes]:
    """Another process takes the store's write lock (BEGIN EXCLUSIVE) once a session exists,
    holds it `seconds`, then lets go."""
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(database), str(ready),
                             str(seconds)])


def wait_for(path: Path, *, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def stored_answers(database: Path) -> list[tuple[str, str]]:
    """(session, answer) of every stored turn, read with a connection of the judge's own."""
    db = sqlite3.connect(database)
    try:
        return [(session, json.loads(body)["answer"]) for session, body in
                db.execute("SELECT session_id, body FROM turns ORDER BY seq")]
    finally:
        db.close()


def new_session(store: Store):
    from sparkdocs.documents import Document, DocumentKind, Section, SectionKind

    document = Document("a.txt", DocumentKind.TEXT, "k" * 64,
                        (Section(SectionKind.PAGE, "p. 1", "Alpha."),))
    return store.new_session(document)


def test_a_lock_held_past_the_busy_timeout_is_waited_out(tmp_path: Path):
    store = Store(tmp_path / "store", size_limit_bytes=2**24, busy_timeout_s=0.2)
    session = new_session(store)
    ready = tmp_path / "ready"
    holder = hold_lock(store.path, 1.5, ready)
    try:
        wait_for(ready)
        stored = append_kept(store, session, Turn("Q?", "The answer seen."), retry_s=20)
    finally:
        holder.wait(timeout=30)
    assert stored.turns[-1].answer == "The answer seen."
    assert stored_answers(store.path) == [(session.id, "The answer seen.")]


def test_a_lock_past_the_retries_hands_the_turn_back_and_a_file_brings_it_in(tmp_path: Path):
    store = Store(tmp_path / "store", size_limit_bytes=2**24, busy_timeout_s=0.1)
    session = new_session(store)
    ready = tmp_path / "ready"
    holder = hold_lock(store.path, 3.0, ready)
    try:
        wait_for(ready)
        with pytest.raises(TurnNotStoredError) as caught:
            append_kept(store, session, Turn("Q?", "Kept answer."), retry_s=0.5)
    finally:
        holder.wait(timeout=30)
    assert stored_answers(store.path) == []
    assert caught.value.session.turns[-1].answer == "Kept answer."
    path = write_recovery_file(caught.value.unstored, [tmp_path / "recovered"])
    assert json.loads(path.read_text())["turn"]["answer"] == "Kept answer."
    report = store_recovered(store, [tmp_path / "recovered"])
    assert [p for p, _ in report.stored] == [path] and not path.exists()
    assert stored_answers(store.path) == [(session.id, "Kept answer.")]
    again = write_recovery_file(caught.value.unstored, [tmp_path / "recovered"])
    store_recovered(store, [tmp_path / "recovered"])  # stored, then its file left: once only
    assert not again.exists() and stored_answers(store.path) == [(session.id, "Kept answer.")]


def test_a_full_database_is_sqlite_full_and_the_turn_is_handed_back(tmp_path: Path):
    store = Store(tmp_path / "store", size_limit_bytes=2**24)
    session = new_session(store)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL from here
    with pytest.raises(TurnNotStoredError) as caught:
        append_kept(store, session, Turn("Q?", "x" * 200_000), retry_s=30)
    assert isinstance(caught.value.__cause__, StoreFullError)
    assert "full" in str(caught.value)
    assert stored_answers(store.path) == []


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def test_a_full_disk_is_caught_on_a_real_small_filesystem(tmp_path: Path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "600k"):
        pytest.skip("needs root and tmpfs mounts for a real small disk (the page-limit test "
                    "above covers SQLITE_FULL)")
    try:
        store = Store(disk / "store", size_limit_bytes=2**20)
        session = new_session(store)
        (disk / "filler").write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 4096))
        with pytest.raises(TurnNotStoredError) as caught:
            append_kept(store, session, Turn("Q?", "y" * 300_000), retry_s=5)
        assert "full" in str(caught.value)
        store.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# the CLI: answer shown, then kept in a file, then stored on the next run ----------------------
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_cli_keeps_an_unstored_answer_in_a_file_and_stores_it_next_run(tmp_path: Path,
                                                                          as_json: bool):
    from fakeserver import FakeServer

    doc = tmp_path / "a.txt"
    doc.write_text("Alpha text about forty-two.")
    cache = tmp_path / "cache"
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache), "SPARKDOCS_STORE_BUSY_TIMEOUT_S": "0.2",
           "SPARKDOCS_STORE_RETRY_S": "1", "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    ready = tmp_path / "ready"
    with FakeServer() as server:
        server.behaviour.latency_s = 3.0  # the lock is taken while the answer is awaited
        server.behaviour.answer = "The unstored answer is forty-two."
        env["SPARKDOCS_BASE_URL"] = server.base_url
        asking = subprocess.Popen([sys.executable, "-m", "sparkdocs", "ask", str(doc), "What?",
                                   *(["--json"] if as_json else [])],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        wait_for(cache / DATABASE_NAME)
        holder = hold_lock(cache / DATABASE_NAME, 12.0, ready)
        try:
            out, err = asking.communicate(timeout=120)
        finally:
            holder.wait(timeout=60)
    assert ready.exists(), "the lock was never taken"
    assert "forty-two" in out and "Traceback" not in err
    assert asking.returncode == 75, err
    kept = sorted((cache / "recovered").glob("*.json"))
    assert len(kept) == 1 and str(kept[0]) in " ".join(err.split()).replace("\n", "")
    assert json.loads(kept[0].read_text())["turn"]["answer"] == "The unstored answer is forty-two."
    if as_json:
        printed = json.loads(out)
        assert printed["stored"] is False and printed["recovery_file"] == str(kept[0])
    assert stored_answers(cache / DATABASE_NAME) == []

    listing = subprocess.run([sys.executable, "-m", "sparkdocs", "sessions", "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "recovered:" in listing.stderr and not kept[0].exists()
    [(session, answer)] = stored_answers(cache / DATABASE_NAME)
    assert answer == "The unstored answer is forty-two."
    assert json.loads(listing.stdout)[0]["id"] == session


# the app: answer shown, kept in the tab, stored on the next rerun ------------------------------
def test_the_app_keeps_an_unstored_answer_in_the_tab_and_stores_it_when_the_lock_goes(
        tmp_path: Path, monkeypatch):
    import streamlit as st
    from fakeserver import FakeServer
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "app.py")
    cache = tmp_path / "cache"
    ready = tmp_path / "ready"
    with FakeServer() as server:
        server.behaviour.answer = "The tab keeps forty-two."
        for name, value in {"BASE_URL": server.base_url, "CACHE_DIR": str(cache),
                            "CONTEXT_LENGTH": "6000", "ANSWER_TOKENS": "48", "MAX_RETRIES": "0",
                            "WARM_UP": "false", "STORE_BUSY_TIMEOUT_S": "0.2",
                            "STORE_RETRY_S": "0.5"}.items():
            monkeypatch.setenv(f"SPARKDOCS_{name}", value)
        monkeypatch.setattr(st, "get_option", lambda key, real=st.get_option: (
            "127.0.0.1" if key == "server.address" else real(key)))
        st.cache_resource.clear()
        try:
            at = AppTest.from_file(app, default_timeout=60).run()
            at = at.sidebar.file_uploader[0].set_value(
                ("a.txt", b"Alpha text about forty-two.", "text/plain")).run()
            assert not at.exception
            holder = hold_lock(cache / DATABASE_NAME, 8.0, ready)
            try:
                wait_for(ready)
                at.chat_input[0].set_value("What is kept?").run()
                assert not at.exception
                warned = " ".join(w.value for w in at.warning)
                assert "kept in this browser tab" in warned, warned
                shown = [m.markdown[0].value for m in at.chat_message if m.markdown]
                assert any("forty-two" in text for text in shown), shown
                assert stored_answers(cache / DATABASE_NAME) == []
            finally:
                holder.wait(timeout=60)
            at.run()  # the next rerun, the lock gone: stored, and said
            assert not at.exception
            assert any("Stored 1 answer" in s.value for s in at.success)
            assert [a for _, a in stored_answers(cache / DATABASE_NAME)] == [
                "The tab keeps forty-two."]
            at.run()  # stored once, shown once
            assert [a for _, a in stored_answers(cache / DATABASE_NAME)] == [
                "The tab keeps forty-two."]
            assert sum("forty-two" in m.markdown[0].value for m in at.chat_message
                       if m.name == "assistant" and m.markdown) == 1
        finally:
            st.cache_resource.clear()


def test_a_recovery_folder_others_can_write_is_neither_written_nor_read(tmp_path: Path,
                                                                      monkeypatch):
    import tempfile

    from sparkdocs.store.recovery import UnstoredTurn, private_temp_folder

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    assert private_temp_folder() == tmp_path / f"sparkdocs-recovered-{os.getuid()}"
    planted = tmp_path / f"sparkdocs-recovered-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # as another user's folder would let anyone write it
    assert private_temp_folder() is None
    store = Store(tmp_path / "store", size_limit_bytes=2**24)
    session = new_session(store)
    unstored = UnstoredTurn(session.id, "local", "a.txt", Turn("Q?", "Planted."), "test")
    (planted / "x.json").write_text(json.dumps({"session": session.id,
                                                "turn": json.loads(turn_to_json(unstored.turn))}))
    with pytest.raises(OSError, match="not this user's own"):
        write_recovery_file(unstored, [planted])
    assert store_recovered(store, [planted]).stored == ()
    assert stored_answers(store.path) == []


# the class: whatever the store does between answers, each one seen is stored once -------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states=st.lists(st.sampled_from(["ok", "locked", "full"]), min_size=1, max_size=7),
       in_the_tab=st.booleans())
def test_every_answer_seen_is_stored_exactly_once_whatever_the_store_does(
        tmp_path_factory, states, in_the_tab):
    """Each step is one run (the CLI's next `ask`, the app's next rerun) under a store that is
    fine, write-locked by another connection, or full (SQLite's own SQLITE_FULL): kept answers
    are stored first if the store takes them, then a new answer is appended or kept. Once the
    store is back, every answer is in its session exactly once."""
    from sparkdocs.store.recovery import store_pending

    base = tmp_path_factory.mktemp("run")
    store = Store(base / "store", size_limit_bytes=2**24, busy_timeout_s=0.05)
    session = new_session(store)
    folder = base / "recovered"
    pending: list = []
    seen: list[str] = []

    def recover() -> None:
        nonlocal pending
        if in_the_tab:
            _, pending = store_pending(store, pending)
        else:
            store_recovered(store, [folder])

    for number, state in enumerate(states):
        other = None
        if state == "locked":
            other = sqlite3.connect(store.path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
        elif state == "full":
            pages = store._db.execute("PRAGMA page_count").fetchone()[0]
            store._db.execute(f"PRAGMA max_page_count = {pages}")
        try:
            recover()
            answer = f"answer {number} " + "x" * 6000  # needs pages of its own
            seen.append(answer)
            try:
                append_kept(store, session, Turn(f"Q{number}?", answer), retry_s=0)
            except TurnNotStoredError as exc:
                if in_the_tab:
                    pending.append(exc.unstored)
                else:
                    write_recovery_file(exc.unstored, [folder])
        finally:
            if other is not None:
                other.execute("ROLLBACK")
                other.close()
            store._db.execute("PRAGMA max_page_count = 1073741823")
    recover()  # the store is back
    assert sorted(a for _, a in stored_answers(store.path)) == sorted(seen)
    assert not pending and not list(folder.glob("*.json"))
    store.close()
