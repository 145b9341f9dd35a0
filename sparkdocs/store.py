"""The disk cache (diskcache: SQLite + files, safe across threads and processes). Parsed
documents live in a size-limited LRU cache keyed by content hash, so re-ingesting the same
bytes costs a lookup; sessions live apart and are never evicted."""

from __future__ import annotations

import logging
import pickle
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import diskcache

from .documents import Document
from .errors import SessionNotFoundError, StoreError
from .tokens import count_document

log = logging.getLogger(__name__)
SCHEMA = "v1"


@dataclass(frozen=True)
class Turn:
    """One question and its answer, with the stats shown under it."""

    question: str
    answer: str
    follow_up: bool = False
    finish_reason: str | None = None
    interrupted: bool = False
    error: str | None = None
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    asked_at: float = 0.0


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

    def with_turn(self, turn: Turn) -> "Session":
        return replace(self, turns=self.turns + (turn,), updated_at=time.time())

    def replace_last_turn(self, turn: Turn) -> "Session":
        return replace(self, turns=self.turns[:-1] + (turn,), updated_at=time.time())


@dataclass(frozen=True)
class DocumentInfo:
    key: str
    name: str
    kind: str
    tokens: int
    sections: int
    stored_at: float = field(default=0.0)


class Store:
    def __init__(self, directory: Path, *, size_limit_bytes: int) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._documents = diskcache.Cache(
                str(directory / f"documents-{SCHEMA}"), size_limit=size_limit_bytes,
                eviction_policy="least-recently-used")
        except Exception as exc:
            raise StoreError(
                f"Cannot open the cache at {directory} ({exc}); check that it is writable or set "
                "SPARKDOCS_CACHE_DIR to another folder."
            ) from exc
        self.directory = directory
        self._sessions_cache: diskcache.Cache | None = None

    @property
    def _sessions(self) -> diskcache.Cache:
        """Opened on first use: commands that only count never pay for it."""
        if self._sessions_cache is None:
            try:
                self._sessions_cache = diskcache.Cache(
                    str(self.directory / f"sessions-{SCHEMA}"), eviction_policy="none")
            except Exception as exc:
                raise StoreError(
                    f"Cannot open the session store in {self.directory} ({exc}); check that it is "
                    "writable or set SPARKDOCS_CACHE_DIR to another folder.") from exc
        return self._sessions_cache

    def close(self) -> None:
        self._documents.close()
        if self._sessions_cache is not None:
            self._sessions_cache.close()

    # documents -------------------------------------------------------------------------------
    def get_document(self, key: str) -> Document | None:
        try:
            value = self._documents.get(f"doc:{key}")
        except (pickle.UnpicklingError, AttributeError, ImportError, EOFError) as exc:
            log.warning("dropping unreadable cached document %s: %s", key, exc)
            self._documents.delete(f"doc:{key}")
            return None
        return value if isinstance(value, Document) else None

    def put_document(self, document: Document) -> None:
        with self._documents.transact():
            self._documents.set(f"doc:{document.content_hash}", document)
            self._documents.set(f"info:{document.content_hash}", self._info(document))

    def get_or_ingest(self, key: str, ingest: Callable[[], Document]) -> Document:
        """The cached, counted document for `key`, or ingest, count and store it."""
        cached = self.get_document(key)
        if cached is not None:
            return cached
        document = count_document(ingest())
        self.put_document(document)
        return document

    @staticmethod
    def _info(document: Document) -> DocumentInfo:
        return DocumentInfo(document.content_hash, document.name, document.kind.value,
                            document.section_tokens, len(document.sections), time.time())

    def list_documents(self) -> list[DocumentInfo]:
        infos = []
        for key in list(self._documents.iterkeys()):
            if isinstance(key, str) and key.startswith("info:"):
                info = self._documents.get(key)
                if isinstance(info, DocumentInfo) and f"doc:{info.key}" in self._documents:
                    infos.append(info)
        return sorted(infos, key=lambda i: -i.stored_at)

    def rename_document(self, key: str, name: str) -> None:
        document = self.get_document(key)
        if document is None:
            raise StoreError(f"No stored document {key[:12]}; it may have been evicted.")
        self.put_document(replace(document, name=name.strip() or document.name))

    def delete_document(self, key: str) -> None:
        self._documents.delete(f"doc:{key}")
        self._documents.delete(f"info:{key}")
        for session in self.list_sessions(document_key=key):
            self.delete_session(session.id)

    # sessions --------------------------------------------------------------------------------
    def new_session(self, document: Document, *, kept_sections: Sequence[int] | None = None
                    ) -> Session:
        now = time.time()
        session = Session(uuid.uuid4().hex[:12], document.content_hash, document.name,
                          document.name, tuple(kept_sections) if kept_sections is not None else None,
                          (), now, now)
        self.save_session(session)
        return session

    def save_session(self, session: Session) -> None:
        self._sessions.set(f"session:{session.id}", session)

    def get_session(self, session_id: str) -> Session:
        value = self._sessions.get(f"session:{session_id}")
        if not isinstance(value, Session):
            raise SessionNotFoundError(
                f"No session {session_id!r}; list them with `sparkdocs sessions` or in the Library page."
            )
        return value

    def list_sessions(self, *, document_key: str | None = None) -> list[Session]:
        sessions = []
        for key in list(self._sessions.iterkeys()):
            value = self._sessions.get(key)
            if isinstance(value, Session) and (document_key is None or value.document_key == document_key):
                sessions.append(value)
        return sorted(sessions, key=lambda s: -s.updated_at)

    def delete_session(self, session_id: str) -> None:
        self._sessions.delete(f"session:{session_id}")

    def rename_session(self, session_id: str, title: str) -> None:
        session = self.get_session(session_id)
        self.save_session(replace(session, title=title.strip() or session.title))
