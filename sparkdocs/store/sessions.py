"""Sessions and their turns. A turn is an appended row (one INSERT in one transaction) and a
session's other fields change only by targeted UPDATEs: nothing is ever written back from a copy
that may be stale."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..config import LOCAL_USER
from ..documents import Document
from ..errors import SessionChangedError, SessionNotFoundError, StoreError
from .database import Database
from .records import _BAD_ROW, Session, SessionDocument, Turn, turn_from_json, turn_to_json

log = logging.getLogger(__name__)


class SessionRows(Database):
    def new_session(self, document: Document, *, owner: str = LOCAL_USER,
                    kept_sections: Sequence[int] | None = None) -> Session:
        return self._insert_session(document.content_hash, document.name, owner=owner,
                                    kept_sections=kept_sections)

    def new_set_session(self, documents: Sequence[SessionDocument], *, key: str, name: str,
                        owner: str = LOCAL_USER,
                        kept_sections: Sequence[int] | None = None) -> Session:
        """A new session over several documents, in this order (`key` and `name` are the
        set's, see `documents.combine_documents`)."""
        now = time.time()
        kept = tuple(kept_sections) if kept_sections is not None else None
        session = Session(uuid.uuid4().hex[:12], key, name, name, kept, (), now, now, owner,
                          tuple(documents))
        with self._write() as db:
            db.execute("INSERT INTO sessions (id, document_key, document_name, title, "
                       "kept_sections, created_at, updated_at, owner) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (session.id, key, name, name, _kept_json(kept), now, now, owner))
            db.executemany("INSERT INTO session_documents (session_id, position, document_key, "
                           "name, sections) VALUES (?, ?, ?, ?, ?)",
                           [(session.id, position, d.key, d.name, d.sections)
                            for position, d in enumerate(documents)])
        return session

    def add_session_document(self, session_id: str, document: SessionDocument, *, key: str,
                             name: str, kept_sections: Sequence[int] | None,
                             first: SessionDocument, expected_key: str,
                             owner: str = LOCAL_USER) -> Session:
        """Append a document to a session, after those it has (one transaction): the set's new
        `key`, `name` and kept sections go with it. A session of one document becomes a set of
        two, `first` (its document as the prompt named it) first. The session must still be
        about `expected_key` (what the caller saw): two adds from one view of a session would
        otherwise each write a set the other does not know."""
        kept = tuple(kept_sections) if kept_sections is not None else None
        with self._write() as db:
            row = db.execute("SELECT document_key, document_name, title FROM sessions "
                             "WHERE id = ? AND owner = ?", (session_id, owner)).fetchone()
            if row is None:
                raise self._missing(session_id)
            if row[0] != expected_key:
                raise SessionChangedError(
                    f"Session {session_id} changed while the document was being added (another "
                    "tab or command added one); open it again and add the document again.")
            (count,) = db.execute("SELECT COUNT(*) FROM session_documents WHERE session_id = ?",
                                  (session_id,)).fetchone()
            if count == 0:
                db.execute("INSERT INTO session_documents (session_id, position, document_key, "
                           "name, sections) VALUES (?, 0, ?, ?, ?)",
                           (session_id, first.key, first.name, first.sections))
                count = 1
            db.execute("INSERT INTO session_documents (session_id, position, document_key, name, "
                       "sections) VALUES (?, ?, ?, ?, ?)",
                       (session_id, count, document.key, document.name, document.sections))
            title = name if row[2] == row[1] else row[2]  # a title given by hand stays
            db.execute("UPDATE sessions SET document_key = ?, document_name = ?, title = ?, "
                       "kept_sections = ?, updated_at = ? WHERE id = ?",
                       (key, name, title, _kept_json(kept), time.time(), session_id))
            return self._load_session(db, session_id, owner=owner)

    def new_session_for_key(self, key: str, *, owner: str = LOCAL_USER) -> Session:
        """A new session on one of the owner's stored documents without reading it: for an
        encrypted PDF, whose text needs the password, which the session then asks for."""
        rows = self._read("SELECT name FROM document_owners WHERE key = ? AND owner = ?",
                          (key, owner))
        if not rows:
            raise StoreError(f"No stored document {key[:12]}; it may have been evicted "
                             "(upload it again).")
        return self._insert_session(key, rows[0][0], owner=owner, kept_sections=None)

    def _insert_session(self, key: str, name: str, *, owner: str,
                        kept_sections: Sequence[int] | None) -> Session:
        now = time.time()
        kept = tuple(kept_sections) if kept_sections is not None else None
        session = Session(uuid.uuid4().hex[:12], key, name, name, kept, (), now, now, owner)
        with self._write() as db:
            db.execute("INSERT INTO sessions (id, document_key, document_name, title, "
                       "kept_sections, created_at, updated_at, owner) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (session.id, session.document_key, session.document_name, session.title,
                        _kept_json(session.kept_sections), now, now, owner))
        return session

    def append_turn(self, session_id: str, turn: Turn) -> Session:
        """Append one turn (one INSERT, one transaction) and return the session as stored right
        after it, so its last turn is this one. Turns keep their commit order. The id comes
        from a session its owner already got, so no owner is checked again here."""
        with self._write() as db:
            row = db.execute("SELECT owner FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if not row:
                raise self._missing(session_id)
            db.execute("INSERT INTO turns (session_id, status, body) VALUES (?, ?, ?)",
                       (session_id, turn.status.value, turn_to_json(turn)))
            db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), session_id))
            return self._load_session(db, session_id, owner=row[0])

    def append_turn_once(self, session_id: str, turn: Turn) -> bool:
        """Append a turn kept elsewhere while the store was unavailable, unless the session
        already holds the same turn (stored before its recovery file could be removed).
        Returns whether it was appended."""
        body = turn_to_json(turn)
        with self._write() as db:
            if not db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone():
                raise self._missing(session_id)
            if db.execute("SELECT 1 FROM turns WHERE session_id = ? AND body = ?",
                          (session_id, body)).fetchone():
                return False
            db.execute("INSERT INTO turns (session_id, status, body) VALUES (?, ?, ?)",
                       (session_id, turn.status.value, body))
            db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), session_id))
            return True

    def set_kept_sections(self, session_id: str, kept_sections: Sequence[int] | None, *,
                          owner: str = LOCAL_USER, pages_chosen: bool | None = None) -> Session:
        """Change which parts of the document the session keeps, and whether the user chose
        them (`pages_chosen`; None: not recorded, as by a caller that does not know), and
        nothing else."""
        kept = tuple(kept_sections) if kept_sections is not None else None
        chosen = None if pages_chosen is None else int(pages_chosen)
        with self._write() as db:
            changed = db.execute(
                "UPDATE sessions SET kept_sections = ?, pages_chosen = ?, updated_at = ? "
                "WHERE id = ? AND owner = ?",
                (_kept_json(kept), chosen, time.time(), session_id, owner)).rowcount
            if not changed:
                raise self._missing(session_id)
            return self._load_session(db, session_id, owner=owner)

    def rename_session(self, session_id: str, title: str, *, owner: str = LOCAL_USER) -> None:
        with self._write() as db:
            if not db.execute("SELECT 1 FROM sessions WHERE id = ? AND owner = ?",
                              (session_id, owner)).fetchone():
                raise self._missing(session_id)
            if title.strip():
                db.execute("UPDATE sessions SET title = ? WHERE id = ?",
                           (title.strip(), session_id))

    def get_session(self, session_id: str, *, owner: str = LOCAL_USER) -> Session:
        """The owner's session; another owner's is "not found", exactly like a missing one."""
        with self._lock:
            try:
                return self._load_session(self._db, session_id, owner=owner)
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc

    def list_sessions(self, *, owner: str = LOCAL_USER, document_key: str | None = None
                      ) -> list[Session]:
        where, params = "WHERE owner = ?", [owner]
        if document_key:  # sessions about it, alone or with other documents
            where += (" AND (document_key = ? OR id IN (SELECT session_id FROM session_documents"
                      " WHERE document_key = ?))")
            params = [owner, document_key, document_key]
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, document_key, document_name, title, kept_sections, created_at, "
                    f"updated_at, owner, pages_chosen FROM sessions {where} "
                    "ORDER BY updated_at DESC",
                    params).fetchall()
                ids = [row[0] for row in rows]
                turns = self._turns_by_session(self._db, ids)
                members = self._documents_by_session(self._db, ids)
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc
        return [_session(row, turns.get(row[0], ()), members.get(row[0], ())) for row in rows]

    def delete_session(self, session_id: str, *, owner: str = LOCAL_USER) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE id = ? AND owner = ?", (session_id, owner))

    def _load_session(self, db: sqlite3.Connection, session_id: str, *, owner: str) -> Session:
        row = db.execute("SELECT id, document_key, document_name, title, kept_sections, "
                         "created_at, updated_at, owner, pages_chosen FROM sessions "
                         "WHERE id = ? AND owner = ?",
                         (session_id, owner)).fetchone()
        if row is None:
            raise self._missing(session_id)
        return _session(row, self._turns_by_session(db, [session_id]).get(session_id, ()),
                        self._documents_by_session(db, [session_id]).get(session_id, ()))

    @staticmethod
    def _documents_by_session(db: sqlite3.Connection, ids: Sequence[str]
                              ) -> dict[str, tuple[SessionDocument, ...]]:
        found: dict[str, list[SessionDocument]] = {}
        for start in range(0, len(ids), 500):  # under SQLite's bound on parameters
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for session_id, key, name, sections in db.execute(
                    "SELECT session_id, document_key, name, sections FROM session_documents "
                    f"WHERE session_id IN ({marks}) ORDER BY session_id, position", tuple(chunk)):
                found.setdefault(session_id, []).append(SessionDocument(key, name, sections))
        return {key: tuple(value) for key, value in found.items()}

    @staticmethod
    def _turns_by_session(db: sqlite3.Connection, ids: Sequence[str]
                          ) -> dict[str, tuple[Turn, ...]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        found: dict[str, list[Turn]] = {}
        for session_id, seq, body in db.execute(
                f"SELECT session_id, seq, body FROM turns WHERE session_id IN ({marks}) "
                "ORDER BY seq", tuple(ids)):
            try:
                found.setdefault(session_id, []).append(turn_from_json(body))
            except _BAD_ROW as exc:
                log.warning("skipping unreadable turn %d of session %s: %s", seq, session_id, exc)
        return {key: tuple(value) for key, value in found.items()}

    @staticmethod
    def _missing(session_id: str) -> SessionNotFoundError:
        return SessionNotFoundError(
            f"No session {session_id!r} in the store; open one from the Library page, or start a "
            "new one (leave out --follow-up-of).")


def _kept_json(kept: tuple[int, ...] | None) -> str | None:
    return None if kept is None else json.dumps(list(kept))


def _session(row: tuple[Any, ...], turns: tuple[Turn, ...],
             documents: tuple[SessionDocument, ...] = ()) -> Session:
    (session_id, document_key, document_name, title, kept, created_at, updated_at, owner,
     chosen) = row
    kept_sections = None
    if kept is not None:
        try:
            kept_sections = tuple(int(i) for i in json.loads(kept))
        except _BAD_ROW as exc:  # unreadable choice: fall back to the whole document
            log.warning("session %s: unreadable kept sections (%s); keeping all", session_id, exc)
    return Session(session_id, document_key, document_name, title, kept_sections, turns,
                   created_at, updated_at, owner, documents,
                   None if chosen is None else bool(chosen))
