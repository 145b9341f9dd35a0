"""Parsed documents' bodies in diskcache (the design card's cache library): a size limit and
least-recently-used eviction of its own, one share per user in team mode so that one user's
uploads never evict another's documents. Values are JSON text stored as bytes and keys are
strings: nothing is ever pickled or unpickled, so whoever can write the cache folder can
spoil a cached document (it is parsed again) but cannot make sparkdocs run code."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE, UNKNOWN

from ..errors import StoreError

log = logging.getLogger(__name__)

FOLDER = "documents-v2"
SHARED = "shared"


class JSONDisk(diskcache.Disk):
    """diskcache's serialiser with pickle refused both ways."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"document cache keys are strings, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise ValueError("a pickled key in the document cache: refused")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[Any, ...]:
        if type(value) is not bytes:
            raise TypeError(f"document cache values are bytes, not {type(value).__name__}")
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise ValueError("a pickled value in the document cache: refused")
        return super().fetch(mode, filename, value, read)


class DocumentBodies:
    """The JSON bodies of parsed documents, by content hash, in the owner's share."""

    def __init__(self, directory: Path, *, size_limit_bytes: int, per_owner: bool) -> None:
        self.directory = directory / FOLDER
        self.size_limit_bytes = size_limit_bytes
        self.per_owner = per_owner
        self._caches: dict[str, diskcache.Cache] = {}
        self._lock = threading.Lock()

    def share(self, owner: str) -> str:
        """The share's folder name: a digest, so a user name never becomes a path."""
        if not self.per_owner:
            return SHARED
        return hashlib.sha256(owner.encode()).hexdigest()[:24]

    def _cache(self, owner: str) -> diskcache.Cache:
        share = self.share(owner)
        with self._lock:
            cache = self._caches.get(share)
            if cache is None:
                cache = diskcache.Cache(str(self.directory / share), disk=JSONDisk,
                                        size_limit=self.size_limit_bytes,
                                        eviction_policy="least-recently-used",
                                        # one document out per write while over the limit
                                        # (diskcache's default of ten would empty a small cache)
                                        cull_limit=1, disk_min_file_size=0)
                self._caches[share] = cache
            return cache

    def get(self, key: str, *, owner: str) -> str | None:
        """The body, or None when it is not there (evicted, or unreadable: parsed again)."""
        try:
            data = self._cache(owner).get(key)
        except (ValueError, TypeError, OSError, sqlite3.Error) as exc:
            log.warning("cached document %s unreadable (%s); it will be parsed again",
                        key[:12], exc)
            return None
        if not isinstance(data, bytes):
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def put(self, key: str, body: str, *, owner: str) -> None:
        try:
            self._cache(owner).set(key, body.encode("utf-8"))
        except (OSError, sqlite3.Error) as exc:  # a full disk, a read-only folder
            raise StoreError(
                f"Cannot write the store {self.directory} ({exc}); check the disk and its "
                "permissions, or set SPARKDOCS_CACHE_DIR to another folder.") from exc

    def has(self, key: str, *, owner: str) -> bool:
        try:
            return key in self._cache(owner)
        except (OSError, sqlite3.Error):
            return False

    def delete(self, key: str, *, owner: str) -> None:
        try:
            self._cache(owner).delete(key)
        except (OSError, sqlite3.Error) as exc:  # gone already, or the disk: it is only a cache
            log.warning("could not delete cached document %s: %s", key[:12], exc)

    def volume(self, *, owner: str) -> int:
        """Bytes the owner's share takes on disk (what its size limit bounds)."""
        return int(self._cache(owner).volume())

    def close(self) -> None:
        with self._lock:
            for cache in self._caches.values():
                cache.close()
            self._caches.clear()
