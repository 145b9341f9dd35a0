"""Team mode, item 1 in the store: a user sees only their own documents and sessions; another
user's session id is 'not found' with the very message of a missing one; the same bytes uploaded
by two users are two owners' documents."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from sparkdocs.client import ModelClient
from sparkdocs.config import Settings
from sparkdocs.errors import SessionNotFoundError
from sparkdocs.ingest import IngestOptions, Upload
from sparkdocs.qa import QuestionAnswering
from sparkdocs.store import Store, Turn
from sparkdocs.views import session_markdown
from sparkdocs.workspace import LoadRequest, Workspace

pytestmark = pytest.mark.integration

NOTE = Upload("note.md", b"# Note\nThe supplier delivers within thirty days.")


def _load(store: Store, owner: str, upload: Upload = NOTE):
    workspace = Workspace(Settings(cache_dir=store.directory, user=owner), store=store)
    return workspace.load_uploads([upload], IngestOptions(), owner=owner)


def _message(exc_info: pytest.ExceptionInfo[BaseException], session_id: str) -> str:
    return str(exc_info.value).replace(session_id, "ID")


def test_another_users_session_is_not_found_like_a_missing_one(store: Store):
    document = _load(store, "alice")
    session = store.new_session(document, owner="alice")
    store.append_turn(session.id, Turn("When?", "Within thirty days."))
    assert store.get_session(session.id, owner="alice").turns[0].answer == "Within thirty days."
    with pytest.raises(SessionNotFoundError) as foreign:
        store.get_session(session.id, owner="bob")
    with pytest.raises(SessionNotFoundError) as missing:
        store.get_session("0123456789ab", owner="bob")
    assert _message(foreign, session.id) == _message(missing, "0123456789ab")
    assert store.list_sessions(owner="bob") == []
    assert [s.id for s in store.list_sessions(owner="alice")] == [session.id]
    for attempt in (lambda: store.rename_session(session.id, "mine now", owner="bob"),
                    lambda: store.set_kept_sections(session.id, [0], owner="bob")):
        with pytest.raises(SessionNotFoundError):
            attempt()
    store.delete_session(session.id, owner="bob")  # nothing to delete for bob
    kept = store.get_session(session.id, owner="alice")
    assert kept.title == document.name and kept.kept_sections is None
    assert "thirty days" in session_markdown(kept)  # the export is of a session alice can get


def test_the_same_bytes_are_two_owners_documents(store: Store):
    alice_doc = _load(store, "alice")
    assert [d.name for d in store.list_documents(owner="alice")] == ["note.md"]
    assert store.list_documents(owner="bob") == []
    assert store.get_document(alice_doc.content_hash, owner="bob") is None
    bob_doc = _load(store, "bob", Upload("bobs-copy.md", NOTE.data))
    assert bob_doc.content_hash == alice_doc.content_hash
    store.rename_document(bob_doc.content_hash, "renamed by bob", owner="bob")
    assert [d.name for d in store.list_documents(owner="alice")] == ["note.md"]
    assert [d.name for d in store.list_documents(owner="bob")] == ["renamed by bob"]
    alice_session = store.new_session(alice_doc, owner="alice")
    store.delete_document(bob_doc.content_hash, owner="bob")
    assert store.list_documents(owner="bob") == []
    assert store.get_document(alice_doc.content_hash, owner="alice") is not None
    assert store.get_session(alice_session.id, owner="alice").document_key == alice_doc.content_hash


def test_the_cli_user_continues_only_their_own_sessions(tmp_path: Path):
    settings = Settings(cache_dir=tmp_path / "cache", base_url="http://127.0.0.1:9/v1")
    note = tmp_path / "note.md"
    note.write_bytes(NOTE.data)
    alice = Workspace(dataclasses.replace(settings, user="alice"))
    document = alice.load(LoadRequest((str(note),)))
    session = alice.store.new_session(document, owner="alice")
    bob = Workspace(dataclasses.replace(settings, user="bob"))
    bob_document = bob.load(LoadRequest((str(note),)))
    qa = QuestionAnswering(bob, ModelClient(bob.settings))
    with pytest.raises(SessionNotFoundError):
        qa.session_for(bob_document, follow_up_of=session.id)
    assert [d.name for d in bob.store.list_documents(owner="bob")] == ["note.md"]


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (key TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
    tokens INTEGER NOT NULL, sections INTEGER NOT NULL, size_bytes INTEGER NOT NULL,
    stored_at REAL NOT NULL, accessed_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE sessions (id TEXT PRIMARY KEY, document_key TEXT NOT NULL,
    document_name TEXT NOT NULL, title TEXT NOT NULL, kept_sections TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE turns (seq INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL
    REFERENCES sessions (id) ON DELETE CASCADE, status TEXT NOT NULL, body TEXT NOT NULL);
"""


def test_a_single_user_store_of_the_previous_version_becomes_the_local_users(tmp_path: Path):
    from sparkdocs.ingest import ingest_uploads
    from sparkdocs.store import DATABASE_NAME, document_to_json
    from sparkdocs.tokens import count_document

    document = count_document(ingest_uploads([NOTE]))
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO documents VALUES (?, 'note.md', 'text', 5, 1, 10, 1.0, 1.0, ?)",
               (document.content_hash, document_to_json(document)))
    db.execute("INSERT INTO sessions VALUES ('abc123abc123', ?, 'note.md', 'note.md', NULL, "
               "1.0, 1.0)", (document.content_hash,))
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = Store(tmp_path, size_limit_bytes=2**24)
    assert [d.name for d in store.list_documents(owner="local")] == ["note.md"]
    assert store.get_session("abc123abc123", owner="local").document_name == "note.md"
    assert store.list_documents(owner="alice") == []
    with pytest.raises(SessionNotFoundError):
        store.get_session("abc123abc123", owner="alice")


def test_the_cli_acts_as_the_user_given_with_user(tmp_path: Path, monkeypatch, capsys):
    from sparkdocs import cli

    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARKDOCS_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SPARKDOCS_MAX_RETRIES", "0")
    note = tmp_path / "note.md"
    note.write_bytes(NOTE.data)
    store = Store(tmp_path / "cache", size_limit_bytes=2**24)
    document = _load(store, "alice")
    session = store.new_session(document, owner="alice")
    store.close()
    assert cli.main(["--user", "bob", "ask", str(note), "When?", "--follow-up-of",
                     session.id]) == 2
    assert f"No session {session.id!r}" in capsys.readouterr().err
    cli.main(["--user", "alice", "ask", str(note), "When?", "--follow-up-of", session.id])
    assert "No session" not in capsys.readouterr().err  # alice's own: it went on to the server
    assert cli.main(["--user", "not a name", "count", str(note)]) == 2
    assert "not a valid user name" in capsys.readouterr().err
