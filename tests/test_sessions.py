"""Sessions as data: every turn kept however many processes append at once, every ending stored
as what it was (a failed request keeps its question and the server's error; SIGTERM and Ctrl-C
keep the partial answer), and nothing in the store folder is a pickle or is read as one."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakeserver import FakeServer

from sparkdocs.client import AnswerResult
from sparkdocs.errors import ServiceUnavailableError, SessionNotFoundError, StoreError
from sparkdocs.ingest import IngestOptions, Upload, ingest_uploads
from sparkdocs.qa import turn_from
from sparkdocs.store import (
    DATABASE_NAME,
    SCHEMA_VERSION,
    Store,
    Turn,
    TurnStatus,
    document_to_json,
)
from sparkdocs.tokens import count_document
from sparkdocs.views import status_counts, turn_status

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def _document(text: str, name: str = "a.txt"):
    return count_document(ingest_uploads([Upload(name, text.encode())], options=IngestOptions()))


def _env(cache: Path, base_url: str, **more: str) -> dict[str, str]:
    return {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache), "SPARKDOCS_BASE_URL": base_url,
            "SPARKDOCS_MAX_RETRIES": "0", "SPARKDOCS_WARM_UP": "false", **more}


# -- turns are appended, never rewritten from a copy -------------------------------------------

APPENDER = """
import sys
from pathlib import Path
from sparkdocs.store import Store, Turn
store = Store(Path(sys.argv[1]), size_limit_bytes=64 * 2**20)
session_id, name, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
stale = store.get_session(session_id)  # a copy that every other process makes stale
for i in range(count):
    stored = store.append_turn(stale.id, Turn(f"{name}-{i}", f"answer {name}-{i}"))
    # the returned session is the store right after this commit: our turn is its last
    assert stored.turns[-1].question == f"{name}-{i}"
    print(f"{name}-{i} {len(stored.turns)}", flush=True)
"""


def test_turns_from_many_processes_are_all_kept_in_commit_order(tmp_path: Path):
    store = Store(tmp_path, size_limit_bytes=64 * 2**20)
    store.put_document(document := _document("shared document"))
    session = store.new_session(document)
    writers, turns_each = 4, 15
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), session.id,
                               f"p{n}", str(turns_each)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
             for n in range(writers)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    final = store.get_session(session.id).turns
    assert len(final) == writers * turns_each
    # in order of commit: the position each writer saw right after its commit is where it is
    for output in outputs:
        for line in output.split("\n"):
            if line:
                question, position = line.split()
                assert final[int(position) - 1].question == question
    for n in range(writers):  # and each writer's own turns in the order it wrote them
        mine = [t.question for t in final if t.question.startswith(f"p{n}-")]
        assert mine == [f"p{n}-{i}" for i in range(turns_each)]


def test_concurrent_follow_ups_from_the_cli_keep_every_turn(tmp_path: Path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\nThe supplier delivers within thirty days.")
    with FakeServer() as server:
        env = _env(tmp_path / "cache", server.base_url)

        def ask(*extra: str) -> subprocess.Popen[str]:
            return subprocess.Popen([sys.executable, "-m", "sparkdocs", "ask", str(doc), *extra,
                                     "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)

        first = ask("Who delivers?")
        out, errors = first.communicate(timeout=120)
        assert first.returncode == 0, errors
        session_id = json.loads(out)["session"]
        server.behaviour.latency_s = 2.0  # every follow-up reads the session before any saves
        followers = [ask(f"Follow-up {n}?", "--follow-up-of", session_id) for n in range(3)]
        for follower in followers:
            out, errors = follower.communicate(timeout=180)
            assert follower.returncode == 0, errors
    turns = Store(tmp_path / "cache", size_limit_bytes=2**30).get_session(session_id).turns
    assert turns[0].question == "Who delivers?"
    assert sorted(t.question for t in turns[1:]) == ["Follow-up 0?", "Follow-up 1?", "Follow-up 2?"]
    assert all(t.status is TurnStatus.FINISHED and t.follow_up for t in turns[1:])


def test_session_fields_change_only_by_targeted_updates(tmp_path: Path):
    one = Store(tmp_path, size_limit_bytes=64 * 2**20)
    other = Store(tmp_path, size_limit_bytes=64 * 2**20)  # the CLI beside the app
    session = one.new_session(_document("text"))
    one.append_turn(session.id, Turn("q1", "a1"))
    other.set_kept_sections(session.id, (0,))
    other.rename_session(session.id, "Renamed")
    one.append_turn(session.id, Turn("q2", "a2"))
    again = other.get_session(session.id)
    assert [t.question for t in again.turns] == ["q1", "q2"]
    assert again.kept_sections == (0,) and again.title == "Renamed"
    assert one.set_kept_sections(session.id, None).kept_sections is None
    with pytest.raises(SessionNotFoundError):
        one.append_turn("nope", Turn("q", "a"))


# -- every ending is stored as what it was ------------------------------------------------------

def _result(**overrides) -> AnswerResult:
    base = {"answer": "partial", "finish_reason": "stop", "ttft_s": 0.1, "total_s": 1.0,
            "decode_tokens_per_s": 3.0, "prompt_tokens": 10, "completion_tokens": 2,
            "cached_tokens": 0, "model": "m"}
    return AnswerResult(**{**base, **overrides})


def test_each_ending_has_its_own_status_and_words():
    finished = turn_from("q", _result(), follow_up=False)
    cut = turn_from("q", _result(finish_reason="length"), follow_up=False)
    stopped = turn_from("q", _result(finish_reason=None, interrupted=True,
                                     error="stopped by the user"), follow_up=False)
    broke = turn_from("q", _result(finish_reason=None, interrupted=True,
                                   error="the answer stream broke off: reset"), follow_up=False)
    failed = turn_from("q", None, follow_up=False,
                       failure=ServiceUnavailableError("HTTP 503: engine overloaded"))
    terminated = turn_from("q", None, follow_up=True, partial="some text",
                           stopped="stopped: sparkdocs was terminated (SIGTERM)")
    assert [t.status for t in (finished, cut, stopped, broke, failed, terminated)] == [
        TurnStatus.FINISHED, TurnStatus.CUT, TurnStatus.STOPPED, TurnStatus.BROKE_OFF,
        TurnStatus.FAILED, TurnStatus.STOPPED]
    assert failed.question == "q" and failed.error == "HTTP 503: engine overloaded"
    assert terminated.answer == "some text" and "SIGTERM" in terminated.error
    assert turn_status(finished) is None
    assert turn_status(cut).startswith("Cut off at the answer limit")
    assert turn_status(stopped) == "Stopped by the user. The partial answer is kept."
    assert turn_status(broke).startswith("Broke off: the answer stream broke off: reset")
    assert turn_status(failed) == "Failed: HTTP 503: engine overloaded."
    assert not finished.interrupted and not cut.interrupted and failed.interrupted


@pytest.mark.parametrize("status, body, expected", [
    (400, {"error": {"message": "temperature must be at most 2 (marker-400)",
                     "type": "BadRequestError", "code": 400}}, "marker-400"),
    (503, {"error": {"message": "engine is draining (marker-503)", "code": 503}}, "marker-503"),
    (404, {"error": {"message": "model m does not exist (marker-404)", "code": 404}},
     "marker-404"),
])
def test_a_failed_request_keeps_its_question_and_the_servers_error(tmp_path, status, body,
                                                                   expected):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\nPayment within 45 days.")
    with FakeServer() as server:
        server.behaviour.status, server.behaviour.status_times = status, 1
        server.behaviour.error_body = body
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc),
                              "When is payment due?"], capture_output=True, text=True,
                             timeout=120, check=False,
                             env=_env(tmp_path / "cache", server.base_url))
    assert run.returncode == 2 and expected in run.stderr
    sessions = Store(tmp_path / "cache", size_limit_bytes=2**30).list_sessions()
    assert len(sessions) == 1 and len(sessions[0].turns) == 1
    turn = sessions[0].turns[0]
    assert turn.question == "When is payment due?" and turn.status is TurnStatus.FAILED
    assert expected in turn.error and turn.answer == ""
    assert status_counts(sessions[0]) == "1 question(s) (1 failed)"


def test_a_request_that_timed_out_is_stored_as_failed_with_the_timeout(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\nPayment within 45 days.")
    with FakeServer() as server:
        server.behaviour.latency_s = 4.0  # no response headers within the timeout
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), "Q?"],
                             capture_output=True, text=True, timeout=120, check=False,
                             env=_env(tmp_path / "cache", server.base_url,
                                      SPARKDOCS_REQUEST_TIMEOUT_S="1"))
    assert run.returncode == 2
    turn = Store(tmp_path / "cache", size_limit_bytes=2**30).list_sessions()[0].turns[0]
    assert turn.status is TurnStatus.FAILED and "did not answer within 1 s" in turn.error


def test_a_refused_api_key_is_stored_as_the_error_shown(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\nPayment within 45 days.")
    with FakeServer() as server:
        server.behaviour.api_key = "right-key"
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), "Q?",
                              "--api-key", "wrong-key"], capture_output=True, text=True,
                             timeout=120, check=False,
                             env=_env(tmp_path / "cache", server.base_url))
    assert run.returncode == 2
    turn = Store(tmp_path / "cache", size_limit_bytes=2**30).list_sessions()[0].turns[0]
    # stored as the very error the user was shown (its wording is the client's business)
    assert turn.status is TurnStatus.FAILED and turn.question == "Q?" and turn.error
    assert " ".join(turn.error.split()) in " ".join(run.stderr.split())


def test_a_question_that_was_never_sent_is_kept_with_its_reason(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\nPayment within 45 days.")
    with FakeServer() as server:
        env = _env(tmp_path / "cache", server.base_url)

        def ask(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), *extra],
                                  capture_output=True, text=True, timeout=120, check=False,
                                  env=env)

        first = ask("When?", "--json")
        assert first.returncode == 0, first.stderr
        session_id = json.loads(first.stdout)["session"]
        over = ask("And then?", "--follow-up-of", session_id, "--max-tokens", "70000")
    assert over.returncode == 2 and "over the served context" in " ".join(over.stderr.split())
    turns = Store(tmp_path / "cache", size_limit_bytes=2**30).get_session(session_id).turns
    assert [(t.question, t.status) for t in turns] == [("When?", TurnStatus.FINISHED),
                                                       ("And then?", TurnStatus.FAILED)]
    assert "over the served context" in turns[1].error and len(server.behaviour.requests) == 1


def test_the_app_keeps_a_failed_question_in_the_history(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    with FakeServer() as server:
        for name, value in _env(tmp_path / "cache", server.base_url,
                                SPARKDOCS_CONTEXT_LENGTH="6000",
                                SPARKDOCS_ANSWER_TOKENS="48").items():
            monkeypatch.setenv(name, value)
        st.cache_resource.clear()
        try:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
            at.sidebar.file_uploader[0].set_value(
                ("n.md", b"# Notes\nPayment within 45 days.", "text/markdown")).run()
            server.behaviour.status, server.behaviour.status_times = 503, 1
            server.behaviour.error_body = {"error": {"message": "engine draining (marker-app)"}}
            at.chat_input[0].set_value("When is payment due?").run()
            assert not at.exception
            assert any("marker-app" in e.value for e in at.error)
            at.run()  # a rerun reads the history from the store
            assert "When is payment due?" in [m.markdown[0].value for m in at.chat_message]
            assert any(w.value.startswith("Failed:") and "marker-app" in w.value
                       for w in at.warning)
        finally:
            st.cache_resource.clear()


def _read_until(pipe, marker: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        chunk = os.read(pipe.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.mark.parametrize("sig, words", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_a_signal_during_ask_keeps_the_partial_answer(tmp_path, sig, words):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\nThe supplier delivers within thirty days.")
    with FakeServer() as server:
        server.behaviour.answer = " ".join(f"word{i}" for i in range(400))
        server.behaviour.token_delay_s = 0.05
        process = subprocess.Popen([sys.executable, "-m", "sparkdocs", "ask", str(doc), "When?"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=_env(tmp_path / "cache", server.base_url))
        timer = threading.Timer(120, process.kill)
        timer.start()
        try:
            seen = _read_until(process.stdout, b"word5 ", timeout=120)
            assert b"word5 " in seen, process.stderr.read().decode()
            process.send_signal(sig)
            process.communicate(timeout=60)
        finally:
            timer.cancel()
    assert process.returncode == (143 if sig == signal.SIGTERM else 3)
    sessions = Store(tmp_path / "cache", size_limit_bytes=2**30).list_sessions()
    assert len(sessions) == 1 and len(sessions[0].turns) == 1
    turn = sessions[0].turns[0]
    assert turn.status is TurnStatus.STOPPED and words in turn.error
    assert turn.answer.startswith("word0 word1 word2 word3 word4 word5")
    assert "word399" not in turn.answer


# -- data, not pickles --------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates the marker file: proof that a pickle was read."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant_legacy_store(folder: Path, key: str, payload: bytes) -> None:
    """A diskcache folder of the previous version (its table layout) holding `payload` under
    `key` as a pickled value (mode 4), where the old Store would read it."""
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "cache.db")
    db.execute("CREATE TABLE Cache (rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER, "
               "store_time REAL, expire_time REAL, access_time REAL, access_count INTEGER "
               "DEFAULT 0, tag BLOB, size INTEGER DEFAULT 0, mode INTEGER DEFAULT 0, "
               "filename TEXT, value BLOB)")
    db.execute("CREATE UNIQUE INDEX Cache_key_raw ON Cache(key, raw)")
    db.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, tag, size, "
               "mode, filename, value) VALUES (?, 1, 0, NULL, 0, NULL, ?, 4, NULL, ?)",
               (key, len(payload), sqlite3.Binary(payload)))
    db.commit()
    db.close()


def test_the_store_holds_no_pickles_and_never_reads_the_old_one(tmp_path: Path, caplog):
    document = _document("Payment within 45 days.")
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Payload(marker))
    cache = tmp_path / "cache"
    _plant_legacy_store(cache / "documents-v1", f"doc:{document.content_hash}", payload)
    _plant_legacy_store(cache / "sessions-v1", "session:abc", payload)

    with caplog.at_level("WARNING", logger="sparkdocs.store"):
        store = Store(cache, size_limit_bytes=64 * 2**20)
    assert store.get_document(document.content_hash) is None
    assert store.list_documents() == [] and store.list_sessions() == []
    with pytest.raises(SessionNotFoundError):
        store.get_session("abc")
    assert not marker.exists(), "a pickle planted in the old store was executed"
    assert any("pickles" in r.message and "not read" in r.message for r in caplog.records)

    store.put_document(document)
    session = store.new_session(document, kept_sections=(0,))
    store.append_turn(session.id, Turn("Q?", "A.", status=TurnStatus.CUT, finish_reason="length"))
    assert store.get_document(document.content_hash) == document
    store.close()

    assert sorted(p.name for p in cache.iterdir() if p.is_file()) <= sorted(
        [DATABASE_NAME, f"{DATABASE_NAME}-wal", f"{DATABASE_NAME}-shm"])
    db = sqlite3.connect(cache / DATABASE_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    [(body,)] = db.execute("SELECT body FROM documents").fetchall()
    assert body == ""  # the parsed body lives in the document cache, as JSON:
    cached = sqlite3.connect(cache / "documents-v2" / "shared" / "cache.db")
    [(mode, filename)] = cached.execute("SELECT mode, filename FROM Cache").fetchall()
    cached.close()
    assert mode != 4  # diskcache's MODE_PICKLE
    stored = json.loads((cache / "documents-v2" / "shared" / filename).read_text())
    assert stored["sections"][0]["text"] == document.sections[0].text
    [(turn_body, status)] = db.execute("SELECT body, status FROM turns").fetchall()
    assert json.loads(turn_body)["question"] == "Q?" and status == "cut"
    [(kept,)] = db.execute("SELECT kept_sections FROM sessions").fetchall()
    assert json.loads(kept) == [0]
    for table in ("documents", "sessions", "turns", "meta"):  # every cell: text or number
        for row in db.execute(f"SELECT * FROM {table}"):
            assert not any(isinstance(cell, bytes) for cell in row), (table, row)


def test_a_store_with_a_migration_this_version_does_not_know_is_refused(tmp_path: Path):
    Store(tmp_path, size_limit_bytes=2**20).close()
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    db.execute("INSERT INTO migrations (name, applied_at) VALUES ('9999_from_the_future', 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="9999_from_the_future.*upgrade sparkdocs"):
        Store(tmp_path, size_limit_bytes=2**20)


def test_a_store_of_the_previous_version_is_read_and_its_migrations_named(tmp_path: Path):
    """A store written before migrations had names (schema version 3 in PRAGMA user_version):
    its sessions are read as they were, and both migrations it already has are recorded."""
    from sparkdocs.store.database import _DOCUMENTS_SESSIONS_TURNS, _owners_and_users

    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    db.executescript(_DOCUMENTS_SESSIONS_TURNS)
    _owners_and_users(db, None)  # type: ignore[arg-type]  # it moves no bodies
    db.execute("INSERT INTO sessions (id, document_key, document_name, title, kept_sections, "
               "created_at, updated_at, owner) VALUES ('s1', 'k', 'a.txt', 'a.txt', NULL, 1, 1, "
               "'local')")
    db.execute("INSERT INTO turns (session_id, status, body) VALUES ('s1', 'finished', ?)",
               (json.dumps({"question": "Q?", "answer": "A.", "status": "finished"}),))
    document = _document("Payment is due within 45 days.", "terms.txt")
    db.execute("INSERT INTO documents (key, name, kind, tokens, sections, size_bytes, stored_at, "
               "accessed_at, body) VALUES (?, 'terms.txt', 'text', 1, 1, 1, 1, 1, ?)",
               (document.content_hash, document_to_json(document)))
    db.execute("INSERT INTO document_owners (key, owner, name, stored_at) "
               "VALUES (?, 'local', 'terms.txt', 1)", (document.content_hash,))
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = Store(tmp_path, size_limit_bytes=2**20)
    [turn] = store.get_session("s1").turns
    assert (turn.question, turn.answer) == ("Q?", "A.")
    assert store.get_session("s1").pages_chosen is None  # not recorded then
    assert store.get_document(document.content_hash) == document  # moved into the cache
    store.close()
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    names = [row[0] for row in db.execute("SELECT name FROM migrations ORDER BY name")]
    bodies = [row[0] for row in db.execute("SELECT body FROM documents")]
    db.close()
    assert names == ["0001_documents_sessions_turns", "0002_owners_users_locked_pdfs",
                     "0003_document_bodies_in_diskcache", "0004_session_documents",
                     "0005_listed_documents", "0006_sessions_pages_chosen"]
    assert bodies == [""]


@pytest.mark.parametrize("chosen", [True, False, None])
def test_whether_the_user_chose_the_pages_survives_reopening_the_store(tmp_path: Path, chosen):
    """Kept with the session (a reload reads it from there), as the database row says; a later
    change of pages by a caller that does not say who chose them leaves it unknown."""
    store = Store(tmp_path, size_limit_bytes=2**20)
    document = _document("Payment is due within 45 days.\n\nNotice is 30 days.")
    session = store.new_session(document)
    assert session.pages_chosen is None and store.get_session(session.id).pages_chosen is None
    store.set_kept_sections(session.id, (0,), pages_chosen=chosen)
    store.close()
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    (raw,) = db.execute("SELECT pages_chosen FROM sessions WHERE id = ?", (session.id,)).fetchone()
    db.close()
    assert raw == (None if chosen is None else int(chosen))
    store = Store(tmp_path, size_limit_bytes=2**20)
    assert store.get_session(session.id).pages_chosen is chosen
    assert [s.pages_chosen for s in store.list_sessions()] == [chosen]
    assert store.set_kept_sections(session.id, None).pages_chosen is None


def test_a_pickle_planted_in_the_document_cache_is_never_read(tmp_path: Path):
    import diskcache

    document = _document("Payment is due within 45 days.", "terms.txt")
    store = Store(tmp_path, size_limit_bytes=2**24)
    store.put_document(document)
    store.close()
    marker = tmp_path / "pwned"
    planted = diskcache.Cache(str(tmp_path / "documents-v2" / "shared"))  # the pickling Disk
    planted.set(document.content_hash, _Payload(marker))
    planted.close()
    store = Store(tmp_path, size_limit_bytes=2**24)
    assert store.get_document(document.content_hash) is None  # parsed again next time
    assert not marker.exists(), "a pickle planted in the document cache was executed"
    assert store.list_documents() == []


def test_one_users_uploads_never_evict_another_users_documents(tmp_path: Path):
    """Team mode: each user has a share of the document cache with its own limit."""
    docs = [_document(f"{name} " + "filler text " * 2000, f"{name}.txt") for name in "abcdef"]
    size = len(document_to_json(docs[0]).encode())
    store = Store(tmp_path, size_limit_bytes=3 * size, per_owner_shares=True)
    store.put_document(docs[0], owner="bob")
    for doc in docs[1:]:  # alice fills her share many times over
        store.put_document(doc, owner="alice")
    assert store.get_document(docs[0].content_hash, owner="bob") == docs[0]
    assert len(store.list_documents(owner="alice")) < len(docs) - 1  # hers were evicted


def test_a_store_from_a_newer_version_is_refused_with_the_fix(tmp_path: Path):
    Store(tmp_path, size_limit_bytes=2**20).close()
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="upgrade sparkdocs.*SPARKDOCS_CACHE_DIR"):
        Store(tmp_path, size_limit_bytes=2**20)


def test_least_recently_used_documents_go_first_and_sessions_stay(tmp_path: Path):
    docs = [_document(f"{name} " + "filler text " * 2000, f"{name}.txt") for name in "abc"]
    size = len(document_to_json(docs[0]).encode())
    store = Store(tmp_path, size_limit_bytes=2**30)  # learn what one document takes on disk
    store.put_document(docs[0])
    one = store.bodies.volume(owner="local")
    store.close()
    store = Store(tmp_path, size_limit_bytes=one + size * 3 // 2)  # room for two, not three
    store.put_document(docs[1])
    session = store.new_session(docs[1])
    store.append_turn(session.id, Turn("q", "a"))
    assert store.get_document(docs[0].content_hash) is not None  # a is now used more recently
    store.put_document(docs[2])
    kept = {info.key for info in store.list_documents()}
    assert kept == {docs[0].content_hash, docs[2].content_hash}
    assert store.get_session(session.id).turns[0].answer == "a"  # sessions are never evicted


def _cache_db(tmp_path: Path) -> Path:
    return tmp_path / "documents-v2" / "shared" / "cache.db"


def test_a_planted_row_pointing_outside_the_cache_is_neither_read_nor_deleted(tmp_path: Path):
    document = _document("Payment is due within 45 days.", "terms.txt")
    victim = tmp_path / "elsewhere" / "deep" / "victim.txt"
    victim.parent.mkdir(parents=True)
    victim.write_text("not yours")
    store = Store(tmp_path / "cache", size_limit_bytes=2**24)
    store.put_document(document)
    store.close()
    for planted in (str(victim), "../../elsewhere/deep/victim.txt"):
        db = sqlite3.connect(_cache_db(tmp_path / "cache"))
        db.execute("UPDATE Cache SET mode = 2, filename = ?", (planted,))
        db.commit()
        db.close()
        store = Store(tmp_path / "cache", size_limit_bytes=2**24)
        assert store.get_document(document.content_hash) is None  # parsed again next time
        store.put_document(document)  # and stored again: the planted row is replaced
        store.close()
        assert victim.read_text() == "not yours", planted


def test_a_damaged_document_cache_is_moved_aside_and_started_anew(tmp_path: Path):
    document = _document("Payment is due within 45 days.", "terms.txt")
    store = Store(tmp_path, size_limit_bytes=2**24)
    store.put_document(document)
    session = store.new_session(document)
    store.close()
    _cache_db(tmp_path).write_bytes(b"this is not a database" * 100)
    store = Store(tmp_path, size_limit_bytes=2**24)
    assert store.get_document(document.content_hash) is None
    store.put_document(document)
    assert store.get_document(document.content_hash) == document
    assert store.get_session(session.id).id == session.id  # sessions are untouched
    assert list((tmp_path / "documents-v2").glob("shared.damaged-*"))


def test_the_local_users_documents_are_the_same_in_both_modes(tmp_path: Path):
    document = _document("Payment is due within 45 days.", "terms.txt")
    team = Store(tmp_path, size_limit_bytes=2**24, per_owner_shares=True)
    team.put_document(document)  # owner: local
    team.close()
    single = Store(tmp_path, size_limit_bytes=2**24)
    assert single.get_document(document.content_hash) == document


def test_a_document_larger_than_the_cache_is_refused_with_the_limit(tmp_path: Path):
    document = _document("filler text " * 20_000, "big.txt")
    store = Store(tmp_path, size_limit_bytes=100_000)
    with pytest.raises(StoreError, match="SPARKDOCS_CACHE_SIZE_LIMIT_MB"):
        store.put_document(document)
