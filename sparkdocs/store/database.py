"""The database handle: one SQLite file (WAL, a busy timeout), one write transaction at a
time, errors that say what to do, and named, append-only migrations."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import LOCAL_USER
from ..errors import StoreError, StoreFullError, StoreLockedError
from .bodies import DocumentBodies

log = logging.getLogger(__name__)

DATABASE_NAME = "sparkdocs.sqlite3"
LEGACY_FOLDERS = ("documents-v1", "sessions-v1")  # the pickle store of sparkdocs 0.1: never read
BUSY_TIMEOUT_S = 30.0

SCHEMA_VERSION = 3  # PRAGMA user_version as the last unnamed schema left it; names since

_DOCUMENTS_SESSIONS_TURNS = """
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
    body TEXT NOT NULL                -- JSON: the Document with its sections
);
CREATE INDEX IF NOT EXISTS documents_by_access ON documents (accessed_at);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    document_key TEXT NOT NULL,       -- no foreign key: documents are evicted, sessions are not
    document_name TEXT NOT NULL,
    title TEXT NOT NULL,
    kept_sections TEXT,               -- JSON list of section indices, or NULL for all
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_document ON sessions (document_key);
CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- commit order across every process
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    body TEXT NOT NULL                -- JSON: the Turn
);
CREATE INDEX IF NOT EXISTS turns_by_session ON turns (session_id, seq);
"""

_OWNERS_AND_USERS = """
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
"""


def _script(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _documents_sessions_turns(db: sqlite3.Connection, bodies: DocumentBodies) -> None:
    _script(db, _DOCUMENTS_SESSIONS_TURNS)


def _owners_and_users(db: sqlite3.Connection, bodies: DocumentBodies) -> None:
    """Team mode: every document and session gets an owner (what there was becomes the local
    user's), users with password hashes, and encrypted PDFs served only with their password.
    The stores before this served a decrypted PDF by content hash alone and kept nothing to
    check its password against: PDF bodies go (parsed again on their next upload); their
    sessions stay."""
    db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT 'local'")
    db.execute("ALTER TABLE documents ADD COLUMN locked INTEGER NOT NULL DEFAULT 0")
    _script(db, _OWNERS_AND_USERS)
    dropped = db.execute("DELETE FROM documents WHERE kind = 'pdf'").rowcount
    db.execute("INSERT OR IGNORE INTO document_owners (key, owner, name, verifier, stored_at) "
               "SELECT key, ?, name, NULL, stored_at FROM documents", (LOCAL_USER,))
    if dropped:
        log.info("the stored documents and sessions are now user %r's; %d stored PDF(s) will "
                 "be parsed again on their next upload", LOCAL_USER, dropped)


def _bodies_to_diskcache(db: sqlite3.Connection, bodies: DocumentBodies) -> None:
    """Parsed documents move into diskcache, in their owners' shares; their rows keep what
    lists and checks need (name, counts, owners, password verifiers)."""
    owned = db.execute("SELECT o.key, o.owner FROM document_owners o JOIN documents d "
                       "ON d.key = o.key WHERE d.body != ''").fetchall()
    for key, owner in owned:  # one body in memory at a time
        (body,) = db.execute("SELECT body FROM documents WHERE key = ?", (key,)).fetchone()
        try:
            bodies.put(key, body, owner=owner)
        except StoreError as exc:  # over the limit or the disk: parsed again on next upload
            log.warning("stored document %s not moved (%s)", key[:12], exc)
    db.execute("UPDATE documents SET body = ''")
    if owned:
        log.info("moved %d stored document(s) into %s", len(owned), bodies.directory)


def _session_documents(db: sqlite3.Connection, bodies: DocumentBodies) -> None:
    """A session may hold several documents, in the order they were added; a
    session of one document has no rows here."""
    _script(db, """
CREATE TABLE IF NOT EXISTS session_documents (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,        -- 0, 1, …: the order of the blocks in the prompt
    document_key TEXT NOT NULL,       -- no foreign key: documents are evicted, sessions are not
    name TEXT NOT NULL,               -- as the prompt and citations name it, fixed once added
    sections INTEGER NOT NULL,        -- its number of sections, to map the kept ones without it
    PRIMARY KEY (session_id, position)
);
CREATE INDEX IF NOT EXISTS session_documents_by_document ON session_documents (document_key)
""")


def _listed_documents(db: sqlite3.Connection, bodies: DocumentBodies) -> None:
    """An owner's document is listed (the Library, the reopen list) once they opened it to
    read in the app or the CLI; one only counted (`sparkdocs count`) stays a parse cache,
    and a listed one can be taken off the list without losing its sessions."""
    db.execute("ALTER TABLE document_owners ADD COLUMN listed INTEGER NOT NULL DEFAULT 1")


def _pages_chosen(db: sqlite3.Connection, bodies: DocumentBodies) -> None:
    """Whether the user chose the session's kept sections (1) or the app fitted them (0): an
    answer from every page is the default only for pages the user did not choose, and that
    must hold after a reload. NULL (sessions from before, and choices nobody recorded): not
    known, inferred from the pages (`warmup.chosen_elsewhere`)."""
    db.execute("ALTER TABLE sessions ADD COLUMN pages_chosen INTEGER")


@dataclass(frozen=True)
class Migration:
    """One change to the schema, applied once per store and recorded by name. Append new ones
    at the end; never edit or reorder one that has shipped."""

    name: str
    apply: Callable[[sqlite3.Connection, DocumentBodies], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_documents_sessions_turns", _documents_sessions_turns),
    Migration("0002_owners_users_locked_pdfs", _owners_and_users),
    Migration("0003_document_bodies_in_diskcache", _bodies_to_diskcache),
    Migration("0004_session_documents", _session_documents),
    Migration("0005_listed_documents", _listed_documents),
    Migration("0006_sessions_pages_chosen", _pages_chosen),
)
# A store from before names were kept: what its PRAGMA user_version says it already has.
_APPLIED_BY_VERSION = {2: 1, 3: 2}
_HAS_MIGRATIONS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"

_DAMAGED = re.compile(r"not a database|malformed|file is encrypted|disk image", re.I)


class Database:
    """One connection behind a lock, safe across threads; SQLite's own locking, WAL and a busy
    timeout across processes."""

    def __init__(self, directory: Path, *, size_limit_bytes: int,
                 busy_timeout_s: float = BUSY_TIMEOUT_S, per_owner_shares: bool = False) -> None:
        """`size_limit_bytes` bounds the parsed documents kept (each user's, with
        `per_owner_shares`: team mode, where one user's uploads must not evict another's)."""
        self.directory = directory
        self.path = directory / DATABASE_NAME
        self.size_limit_bytes = size_limit_bytes
        self.bodies = DocumentBodies(directory, size_limit_bytes=size_limit_bytes,
                                     per_owner=per_owner_shares)
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
        """Apply the migrations this store has not had, each recorded by name in the same
        transaction. Most opens find none to do and take no write lock."""
        if self._up_to_date():
            return
        with self._write() as db:  # again under the lock: another process may have done them
            applied = self._applied(db)
            for migration in MIGRATIONS:
                if migration.name not in applied:
                    migration.apply(db, self.bodies)
                    db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                               (migration.name, time.time()))
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # what earlier versions read

    def _up_to_date(self) -> bool:
        version = self._read("PRAGMA user_version")[0][0]
        if version > SCHEMA_VERSION:
            raise self._newer(f"schema version {version}")
        if not self._read(_HAS_MIGRATIONS):
            return False
        applied = self._known({row[0] for row in self._read("SELECT name FROM migrations")})
        return all(m.name in applied for m in MIGRATIONS)

    def _applied(self, db: sqlite3.Connection) -> set[str]:
        """The names applied to this store; a store from before names were kept is given
        those its user_version stands for."""
        if not db.execute(_HAS_MIGRATIONS).fetchone():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise self._newer(f"schema version {version}")
            db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
            for migration in MIGRATIONS[:_APPLIED_BY_VERSION.get(version, 0)]:
                db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                           (migration.name, time.time()))
        return self._known({row[0] for row in db.execute("SELECT name FROM migrations")})

    def _known(self, applied: set[str]) -> set[str]:
        unknown = applied - {m.name for m in MIGRATIONS}
        if unknown:
            raise self._newer(f"migration {sorted(unknown)[-1]!r}")
        return applied

    def _newer(self, what: str) -> StoreError:
        return StoreError(
            f"The store {self.path} has {what}, newer than this sparkdocs understands; upgrade "
            "sparkdocs, or set SPARKDOCS_CACHE_DIR to another folder.")

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
            return StoreLockedError(
                f"The store {self.path} stayed locked by another sparkdocs process for longer "
                f"than the busy timeout; try again, or stop the process that holds it ({exc}).")
        if "full" in str(exc):  # SQLITE_FULL: the disk, or a page limit on the database
            return StoreFullError(
                f"Cannot {action} the store {self.path}: the database or disk is full ({exc}); "
                "free space on that disk, or set SPARKDOCS_CACHE_DIR to another folder.")
        return StoreError(f"Cannot {action} the store {self.path} ({exc}); check the disk and "
                          "its permissions, or set SPARKDOCS_CACHE_DIR to another folder.")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.bodies.close()
