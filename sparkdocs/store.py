"""The disk store: one SQLite file (stdlib sqlite3, WAL, busy timeout) whose rows hold plain
data — columns and JSON, never pickles — so whoever can write the cache folder can corrupt
what sparkdocs shows but cannot make it run code.

Parsed documents are a size-limited LRU cache keyed by content hash: re-ingesting the same bytes
costs a lookup, and the least recently used documents go when the total passes the limit.
Sessions live apart and are never evicted. A turn is an appended row (one INSERT in one
transaction) and a session's other fields change only by targeted UPDATEs, so two tabs, the CLI
beside the app, or several `sparkdocs ask --follow-up-of` at once each keep their turn: nothing
ever writes a whole session back from a copy that may be stale.

The schema carries an explicit version (`PRAGMA user_version`). The diskcache folders of the
previous version (`documents-v1/`, `sessions-v1/`) hold pickles and are never read: documents
are parsed again on their next upload, and a log line says the old sessions were left behind.

Every document and session has an owner (issue #12, team mode): a parsed body is stored once per
content hash, but who may see it is a row of `document_owners`, so the same bytes uploaded by two
users are two owners' documents, each with its own name. A session of another owner is "not
found" with the message of a missing one. An encrypted PDF's body is served only with a password
that matches the owner's verifier (a salted slow hash), never from the content hash alone.
Schema version 2 stores become the `local` user's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shlex
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from .citations import Citation, citations_from_records
from .config import LOCAL_USER
from .documents import Document, DocumentKind, Section, SectionKind
from .errors import PasswordRequiredError, SessionNotFoundError, StoreError
from .literal import whole_characters
from .passwords import hash_password, verify_password
from .tokens import count_document

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 1 was the diskcache (pickle) store; 2 had no owners
DATABASE_NAME = "sparkdocs.sqlite3"
LEGACY_FOLDERS = ("documents-v1", "sessions-v1")
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    sections INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    accessed_at REAL NOT NULL,
    body TEXT NOT NULL,               -- JSON: the Document with its sections
    locked INTEGER NOT NULL DEFAULT 0 -- an encrypted PDF: served only with its password
);
CREATE INDEX IF NOT EXISTS documents_by_access ON documents (accessed_at);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    document_key TEXT NOT NULL,       -- no foreign key: documents are evicted, sessions are not
    document_name TEXT NOT NULL,
    title TEXT NOT NULL,
    kept_sections TEXT,               -- JSON list of section indices, or NULL for all
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT 'local'
);
CREATE INDEX IF NOT EXISTS sessions_by_document ON sessions (document_key);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (owner, updated_at);
CREATE TABLE IF NOT EXISTS document_owners (
    key TEXT NOT NULL,                -- documents.key, the row goes when the body is evicted
    owner TEXT NOT NULL,
    name TEXT NOT NULL,               -- each owner names their copy
    verifier TEXT,                    -- Argon2id hash of a locked document's password, or NULL
    stored_at REAL NOT NULL,
    PRIMARY KEY (key, owner)
);
CREATE INDEX IF NOT EXISTS document_owners_by_owner ON document_owners (owner, stored_at);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,      -- Argon2id, salted, never the password
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- commit order across every process
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    body TEXT NOT NULL                -- JSON: the Turn
);
CREATE INDEX IF NOT EXISTS turns_by_session ON turns (session_id, seq);
"""


class TurnStatus(StrEnum):
    """How an answer ended. Each is shown as what it was, so a failure is never mistaken for an
    empty answer and a stop never for a broken connection."""

    FINISHED = "finished"    # the model ended the answer itself
    CUT = "cut"              # cut at the answer limit (max_tokens)
    STOPPED = "stopped"      # the user stopped it (Stop, Ctrl-C, SIGTERM); partial text kept
    BROKE_OFF = "broke off"  # the stream broke off mid-answer; partial text kept
    FAILED = "failed"        # the request failed before an answer (401, 404, 400, 503, timeout)

    @property
    def complete(self) -> bool:
        """The model gave this answer in full (or up to the limit): fit for follow-up history."""
        return self in (TurnStatus.FINISHED, TurnStatus.CUT)


@dataclass(frozen=True)
class Turn:
    """One question and how its answer ended, with the stats shown under it."""

    question: str
    answer: str
    _: KW_ONLY
    status: TurnStatus = TurnStatus.FINISHED
    error: str | None = None  # what stopped or failed it, in words a user can act on
    follow_up: bool = False
    finish_reason: str | None = None
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    asked_at: float = 0.0
    # The answer's quotes with their verdicts, checked once when the turn was recorded; None
    # for a turn stored before verdicts were kept (checked when it is shown).
    citations: tuple[Citation, ...] | None = None
    # An answer from every part of a document beyond the context: what was read, in words
    # ("all 300 pages, in 4 parts", or the parts that were not); None for one request.
    read: str | None = None
    parts: tuple[PartRecord, ...] = ()

    @property
    def interrupted(self) -> bool:
        """The answer did not end by itself (stopped, broke off or failed)."""
        return self.status in (TurnStatus.STOPPED, TurnStatus.BROKE_OFF, TurnStatus.FAILED)


@dataclass(frozen=True)
class PartRecord:
    """One part of an answer read from every page: what it covered and what it answered (kept
    with the turn, so nothing a part answered is lost if the merge fails)."""

    number: int
    label: str
    status: str  # "read" or "not read"
    answer: str = ""
    error: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Session:
    id: str
    document_key: str
    document_name: str
    title: str
    kept_sections: tuple[int, ...] | None = None
    turns: tuple[Turn, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    owner: str = LOCAL_USER

    def with_turn(self, turn: Turn) -> Session:
        """A copy with one more turn, for display only: the store appends with `append_turn`."""
        return replace(self, turns=self.turns + (turn,), updated_at=time.time())


@dataclass(frozen=True)
class DocumentInfo:
    key: str
    name: str
    kind: str
    tokens: int
    sections: int
    stored_at: float = field(default=0.0)


# -- rows <-> values: plain data only ---------------------------------------------------------

def document_to_json(document: Document) -> str:
    return json.dumps({
        "name": document.name, "kind": document.kind.value, "content_hash": document.content_hash,
        "sections": [{"kind": s.kind.value, "title": s.title, "text": s.text, "tokens": s.tokens}
                     for s in document.sections],
        "warnings": list(document.warnings), "source_bytes": document.source_bytes,
        "counted": document.counted, "skipped": list(document.skipped),
    }, ensure_ascii=False, separators=(",", ":"))


def document_from_json(text: str) -> Document:
    data = json.loads(text)
    return Document(
        name=str(data["name"]), kind=DocumentKind(data["kind"]),
        content_hash=str(data["content_hash"]),
        sections=tuple(Section(SectionKind(s["kind"]), str(s["title"]), str(s["text"]),
                               int(s["tokens"])) for s in data["sections"]),
        warnings=tuple(str(w) for w in data["warnings"]), source_bytes=int(data["source_bytes"]),
        counted=bool(data["counted"]), skipped=tuple(str(w) for w in data.get("skipped", ())))


_DAMAGED = re.compile(r"not a database|malformed|file is encrypted|disk image", re.I)
_TURN_FIELDS = {f.name for f in fields(Turn)} - {"_"}


def turn_to_json(turn: Turn) -> str:
    record = {**asdict(replace(turn, citations=None)), "status": turn.status.value,
              "citations": (None if turn.citations is None
                            else [c.as_dict(full=True) for c in turn.citations])}
    # text from a user, a file name or a server may hold half of a character: stored whole
    return whole_characters(json.dumps(record, ensure_ascii=False, separators=(",", ":")))


def turn_from_json(text: str) -> Turn:
    """A stored turn. Its verdicts and parts are extras: when they cannot be read (a newer or
    damaged row) the turn is still read, its verdicts checked again when shown."""
    data = json.loads(text)
    known = {k: v for k, v in data.items() if k in _TURN_FIELDS}  # a newer version may add some
    known["status"] = TurnStatus(known.get("status", TurnStatus.FINISHED.value))
    known["citations"] = _extra(lambda: citations_from_records(known["citations"])
                                if known.get("citations") is not None else None, None)
    no_parts: tuple[PartRecord, ...] = ()
    known["parts"] = _extra(lambda: tuple(PartRecord(**part) for part in known.get("parts") or ()),
                            no_parts)
    return Turn(**known)


def _extra(read: Callable[[], _T], fallback: _T) -> _T:
    try:
        return read()
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        log.warning("a stored turn's extra fields could not be read (%s); left out", exc)
        return fallback


_T = TypeVar("_T")
_BAD_ROW = (ValueError, KeyError, TypeError)  # json.JSONDecodeError is a ValueError


class Store:
    """Documents, sessions and turns in `directory/sparkdocs.sqlite3`, safe across threads (one
    connection behind a lock) and processes (SQLite's own locking, WAL, a busy timeout)."""

    def __init__(self, directory: Path, *, size_limit_bytes: int,
                 busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.directory = directory
        self.path = directory / DATABASE_NAME
        self.size_limit_bytes = size_limit_bytes
        self._lock = threading.RLock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses no commit when a process dies (only, at worst, the last
            # commits on a power cut), at far less fsync cost than FULL.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise self._error("open", exc) from exc
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"Cannot open the store {self.path} ({exc}); check that the folder is writable "
                "or set SPARKDOCS_CACHE_DIR to another folder.") from exc
        try:
            self._migrate()
            self._note_legacy_store()
        except StoreError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Create or check the schema. Most opens find it current and take no write lock."""
        if self._read("PRAGMA user_version")[0][0] == SCHEMA_VERSION:
            return
        with self._write() as db:  # re-read under the lock: another process may have done it
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"The store {self.path} has schema version {version}, newer than this "
                    f"sparkdocs understands ({SCHEMA_VERSION}); upgrade sparkdocs, or set "
                    "SPARKDOCS_CACHE_DIR to another folder.")
            if version < SCHEMA_VERSION:
                if version == 2:  # one person's store: it becomes the local user's
                    db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL "
                               "DEFAULT 'local'")
                    db.execute("ALTER TABLE documents ADD COLUMN locked INTEGER NOT NULL "
                               "DEFAULT 0")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                if version == 2:
                    # Version 2 served a decrypted PDF by content hash alone and kept nothing to
                    # check its password against: PDF bodies go (parsed again on next upload,
                    # with the password when there is one); their sessions stay.
                    dropped = db.execute("DELETE FROM documents WHERE kind = 'pdf'").rowcount
                    db.execute("INSERT OR IGNORE INTO document_owners (key, owner, name, "
                               "verifier, stored_at) SELECT key, ?, name, NULL, stored_at FROM "
                               "documents", (LOCAL_USER,))
                    log.info("schema 3: the stored documents and sessions are now user %r's; "
                             "%d stored PDF(s) will be parsed again on their next upload",
                             LOCAL_USER, dropped)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _note_legacy_store(self) -> None:
        """Say once per folder that the pickle store of the previous version is not read
        (reading it could run code planted in it) and what that means for the user."""
        legacy = [name for name in LEGACY_FOLDERS if (self.directory / name).exists()]
        if not legacy:
            return
        with self._write() as db:
            if db.execute("SELECT 1 FROM meta WHERE key = 'legacy_store_noted'").fetchone():
                return
            db.execute("INSERT INTO meta (key, value) VALUES ('legacy_store_noted', ?)",
                       (json.dumps({"folders": legacy, "at": time.time()}),))
        log.warning(
            "Found the store of an earlier sparkdocs in %s (%s). It holds Python pickles, which "
            "can run code when read, so it is not read: documents are parsed again on their next "
            "upload, and the sessions in it are not carried over. Delete %s to free the space.",
            self.directory, ", ".join(legacy), " and ".join(legacy))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock first, so concurrent
        writers queue (up to the busy timeout) instead of failing half-way."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._error("lock", exc) from exc
            try:
                yield self._db
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error("write", exc) from exc
            except BaseException:  # rolled back, then raised as it was
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error("write", exc) from exc

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already: on a full disk (or a file
        size limit) it rolls back by itself, and a ROLLBACK then would raise instead of the
        StoreError that says what happened."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("rollback of the store failed: %s", exc)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc

    def _error(self, action: str, exc: sqlite3.Error) -> StoreError:
        if _DAMAGED.search(str(exc)):
            # pasted into a shell as given: quoted, as the folder may hold a space
            here, aside = shlex.quote(str(self.path)), shlex.quote(f"{self.path}.broken")
            return StoreError(
                f"The store {self.path} is damaged ({exc}): it is not a readable SQLite database. "
                f"Move it aside (`mv {here} {aside}`) and sparkdocs starts an empty store; "
                f"sessions in the old one may be saved with `sqlite3 {aside} .recover`.")
        if "locked" in str(exc) or "busy" in str(exc):
            return StoreError(
                f"The store {self.path} stayed locked by another sparkdocs process for longer "
                f"than the busy timeout; try again, or stop the process that holds it ({exc}).")
        return StoreError(f"Cannot {action} the store {self.path} ({exc}); check the disk and "
                          "its permissions, or set SPARKDOCS_CACHE_DIR to another folder.")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # documents -------------------------------------------------------------------------------
    def get_document(self, key: str, *, owner: str = LOCAL_USER, password: str | None = None
                     ) -> Document | None:
        """The owner's document, or None when they have none with this key (evicted, or never
        theirs). A locked document (an encrypted PDF) needs its password again, every time:
        raises PasswordRequiredError when it is missing or does not match."""
        rows = self._read("SELECT o.name, d.body, d.locked, o.verifier FROM document_owners o "
                          "JOIN documents d ON d.key = o.key WHERE o.key = ? AND o.owner = ?",
                          (key, owner))
        if not rows:
            return None
        name, body, locked, verifier = rows[0]
        if locked and (verifier is None or not verify_password(verifier, password or "")):
            raise PasswordRequiredError(
                f"{name} is an encrypted PDF: give its password "
                + ("again" if password is None else "(the one given does not match)")
                + " to open it (--password, or the field on the page). Its text is only shown "
                "to whoever proves the password.")
        try:
            document = replace(document_from_json(body), name=name)
        except _BAD_ROW as exc:
            log.warning("dropping unreadable stored document %s: %s", key[:12], exc)
            with self._write() as db:
                db.execute("DELETE FROM documents WHERE key = ?", (key,))
                db.execute("DELETE FROM document_owners WHERE key = ?", (key,))
            return None
        with self._write() as db:  # least recently *used*: a read counts
            db.execute("UPDATE documents SET accessed_at = ? WHERE key = ?", (time.time(), key))
        return document

    def document_is_locked(self, key: str) -> bool:
        """Whether the stored document is an encrypted PDF (served only with its password)."""
        rows = self._read("SELECT locked FROM documents WHERE key = ?", (key,))
        return bool(rows and rows[0][0])

    def put_document(self, document: Document, *, owner: str = LOCAL_USER,
                     password: str | None = None, locked: bool = False) -> None:
        """Store the body (once per content hash) and make it the owner's. A locked document
        keeps a verifier of `password` for this owner, never the password."""
        body = document_to_json(document)
        size = len(body.encode("utf-8"))
        now = time.time()
        key = document.content_hash
        verifier = hash_password(password or "") if locked else None
        with self._write() as db:
            db.execute(
                "INSERT INTO documents (key, name, kind, tokens, sections, size_bytes, stored_at, "
                "accessed_at, body, locked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE "
                "SET name = excluded.name, kind = excluded.kind, tokens = excluded.tokens, "
                "sections = excluded.sections, size_bytes = excluded.size_bytes, "
                "accessed_at = excluded.accessed_at, body = excluded.body, "
                "locked = MAX(documents.locked, excluded.locked)",
                (key, document.name, document.kind.value, document.section_tokens,
                 len(document.sections), size, now, now, body, int(locked)))
            db.execute(
                "INSERT INTO document_owners (key, owner, name, verifier, stored_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key, owner) DO UPDATE "
                "SET verifier = COALESCE(excluded.verifier, document_owners.verifier)",
                (key, owner, document.name, verifier, now))
            self._evict(db, keep=key)

    def _evict(self, db: sqlite3.Connection, *, keep: str) -> None:
        """Least recently used documents go until the total fits the limit (the one just
        stored stays, even alone over the limit). Their sessions stay: they are never evicted."""
        total = db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM documents").fetchone()[0]
        if total <= self.size_limit_bytes:
            return
        victims = db.execute("SELECT key, size_bytes FROM documents WHERE key != ? "
                             "ORDER BY accessed_at", (keep,)).fetchall()
        for victim, size in victims:
            if total <= self.size_limit_bytes:
                break
            db.execute("DELETE FROM documents WHERE key = ?", (victim,))
            db.execute("DELETE FROM document_owners WHERE key = ?", (victim,))
            total -= size
            log.info("evicted stored document %s (%d bytes) to stay under %d bytes",
                     victim[:12], size, self.size_limit_bytes)

    def get_or_ingest(self, key: str, ingest: Callable[[], Document], *,
                      owner: str = LOCAL_USER, password: str | None = None,
                      locked: bool = False) -> Document:
        """The owner's cached, counted document for `key`, or ingest, count and store it.

        A locked document (an encrypted PDF) comes from the store only when
        `password` matches the verifier this owner stored; otherwise the PDF itself is opened
        with it, so a wrong or missing password fails as it would the first time."""
        if locked:
            try:
                cached = self.get_document(key, owner=owner, password=password)
            except PasswordRequiredError:
                cached = None
            if cached is not None:
                return cached
            document = count_document(ingest())  # raises EncryptedDocumentError when wrong
            self.put_document(document, owner=owner, password=password, locked=True)
            return document
        cached = self.get_document(key, owner=owner)
        if cached is not None:
            return cached
        # Another owner's copy is not reused: its name (and so a hint of what they read) is
        # theirs, and parsing again costs this owner only their first upload.
        document = count_document(ingest())
        self.put_document(document, owner=owner)
        return document

    def list_documents(self, *, owner: str = LOCAL_USER) -> list[DocumentInfo]:
        rows = self._read("SELECT d.key, o.name, d.kind, d.tokens, d.sections, o.stored_at "
                          "FROM document_owners o JOIN documents d ON d.key = o.key "
                          "WHERE o.owner = ? ORDER BY o.stored_at DESC", (owner,))
        return [DocumentInfo(*row) for row in rows]

    def rename_document(self, key: str, name: str, *, owner: str = LOCAL_USER) -> None:
        with self._write() as db:
            if not db.execute("SELECT 1 FROM document_owners WHERE key = ? AND owner = ?",
                              (key, owner)).fetchone():
                raise StoreError(f"No stored document {key[:12]}; it may have been evicted "
                                 "(upload it again).")
            if name.strip():
                db.execute("UPDATE document_owners SET name = ? WHERE key = ? AND owner = ?",
                           (name.strip(), key, owner))

    def delete_document(self, key: str, *, owner: str = LOCAL_USER) -> None:
        """The owner's document and every session of theirs about it (their turns go with
        them). The body goes too once no one owns it."""
        with self._write() as db:
            db.execute("DELETE FROM document_owners WHERE key = ? AND owner = ?", (key, owner))
            db.execute("DELETE FROM sessions WHERE document_key = ? AND owner = ?", (key, owner))
            if not db.execute("SELECT 1 FROM document_owners WHERE key = ?", (key,)).fetchone():
                db.execute("DELETE FROM documents WHERE key = ?", (key,))

    # sessions --------------------------------------------------------------------------------
    def new_session(self, document: Document, *, owner: str = LOCAL_USER,
                    kept_sections: Sequence[int] | None = None) -> Session:
        return self._insert_session(document.content_hash, document.name, owner=owner,
                                    kept_sections=kept_sections)

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

    def set_kept_sections(self, session_id: str, kept_sections: Sequence[int] | None, *,
                          owner: str = LOCAL_USER) -> Session:
        """Change which parts of the document the session keeps, and nothing else."""
        kept = tuple(kept_sections) if kept_sections is not None else None
        with self._write() as db:
            changed = db.execute(
                "UPDATE sessions SET kept_sections = ?, updated_at = ? WHERE id = ? AND owner = ?",
                (_kept_json(kept), time.time(), session_id, owner)).rowcount
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
        if document_key:
            where, params = where + " AND document_key = ?", [owner, document_key]
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, document_key, document_name, title, kept_sections, created_at, "
                    f"updated_at, owner FROM sessions {where} ORDER BY updated_at DESC",
                    params).fetchall()
                turns = self._turns_by_session(self._db, [row[0] for row in rows])
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc
        return [_session(row, turns.get(row[0], ())) for row in rows]

    def delete_session(self, session_id: str, *, owner: str = LOCAL_USER) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE id = ? AND owner = ?", (session_id, owner))

    # users (password mode; the logic is in auth.py) ------------------------------------------
    def add_user(self, name: str, password_hash: str) -> bool:
        """False when the name is taken."""
        with self._write() as db:
            return db.execute("INSERT OR IGNORE INTO users (name, password_hash, created_at) "
                              "VALUES (?, ?, ?)", (name, password_hash, time.time())).rowcount == 1

    def remove_user(self, name: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def user_names(self) -> list[str]:
        return [row[0] for row in self._read("SELECT name FROM users ORDER BY name")]

    def user_hash(self, name: str) -> str | None:
        rows = self._read("SELECT password_hash FROM users WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def login_generation(self, name: str) -> str:
        """Changes each time the user logs out (`end_logins`): signed into their login cookies,
        so a logout ends every copy of them. Empty until the first logout."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (f"logins:{name}",))
        return rows[0][0] if rows else ""

    def end_logins(self, name: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       (f"logins:{name}", uuid.uuid4().hex))

    def _load_session(self, db: sqlite3.Connection, session_id: str, *, owner: str) -> Session:
        row = db.execute("SELECT id, document_key, document_name, title, kept_sections, "
                         "created_at, updated_at, owner FROM sessions WHERE id = ? AND owner = ?",
                         (session_id, owner)).fetchone()
        if row is None:
            raise self._missing(session_id)
        return _session(row, self._turns_by_session(db, [session_id]).get(session_id, ()))

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


def _session(row: tuple[Any, ...], turns: tuple[Turn, ...]) -> Session:
    session_id, document_key, document_name, title, kept, created_at, updated_at, owner = row
    kept_sections = None
    if kept is not None:
        try:
            kept_sections = tuple(int(i) for i in json.loads(kept))
        except _BAD_ROW as exc:  # unreadable choice: fall back to the whole document
            log.warning("session %s: unreadable kept sections (%s); keeping all", session_id, exc)
    return Session(session_id, document_key, document_name, title, kept_sections, turns,
                   created_at, updated_at, owner)
