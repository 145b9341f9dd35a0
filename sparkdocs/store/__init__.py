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

Every document and session has an owner (team mode): a parsed body is stored once per
content hash, but who may see it is a row of `document_owners`, so the same bytes uploaded by two
users are two owners' documents, each with its own name. A session of another owner is "not
found" with the message of a missing one. An encrypted PDF's body is served only with a password
that matches the owner's verifier (a salted slow hash), never from the content hash alone.
Schema version 2 stores become the `local` user's.
"""

from __future__ import annotations

from .database import BUSY_TIMEOUT_S, DATABASE_NAME, LEGACY_FOLDERS, SCHEMA_VERSION
from .documents import DocumentRows
from .records import (
    DocumentInfo,
    PartRecord,
    Session,
    SessionDocument,
    Turn,
    TurnStatus,
    document_from_json,
    document_to_json,
    turn_from_json,
    turn_to_json,
)
from .sessions import SessionRows
from .users import UserRows


class Store(DocumentRows, SessionRows, UserRows):
    """Documents, sessions and turns in `directory/sparkdocs.sqlite3`, safe across threads (one
    connection behind a lock) and processes (SQLite's own locking, WAL, a busy timeout)."""


__all__ = ["BUSY_TIMEOUT_S", "DATABASE_NAME", "LEGACY_FOLDERS", "SCHEMA_VERSION", "DocumentInfo",
           "PartRecord", "Session", "SessionDocument", "Store", "Turn", "TurnStatus", "document_from_json",
           "document_to_json", "turn_from_json", "turn_to_json"]
