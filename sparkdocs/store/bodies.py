"""Parsed documents' bodies in diskcache (the design card's cache library): a size limit and
least-recently-used eviction of its own, one share per user in team mode so that one user's
uploads never evict another's documents. Values are JSON text stored as bytes, keys are
strings, and every value file must lie inside its share: whoever can write the cache folder
can spoil a cached document (it is parsed again) but cannot make sparkdocs run code, nor read
or delete a file elsewhere. A damaged share is moved aside and started anew: it is a cache."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE, UNKNOWN

from ..config import LOCAL_USER
from ..errors import StoreError

log = logging.getLogger(__name__)

FOLDER = "documents-v2"
SHARED = "shared"
_DAMAGED = ("not a database", "malformed", "disk image", "file is encrypted")


def _damaged(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(sign in str(exc) for sign in _DAMAGED)


def _move_aside(folder: str, exc: BaseException) -> None:
    aside = f"{folder}.damaged-{int(time.time())}"
    os.replace(folder, aside)
    log.warning("the document cache %s was damaged (%s): moved to %s and started anew; "
                "documents are parsed again on their next upload", folder, exc, aside)


class JSONDisk(diskcache.Disk):
    """diskcache's serialiser with pickle refused both ways, and value files only inside the
    share (a planted row naming `/etc/…` or `../…` is refused, never read or removed)."""

    def __init__(self, directory: str, **settings: Any) -> None:
        super().__init__(directory, **settings)
        self._root = os.path.realpath(directory)

    def _inside(self, filename: str | None) -> bool:
        if not filename:
            return False
        path = os.path.realpath(os.path.join(self._root, filename))
        return os.path.commonpath([path, self._root]) == self._root and path != self._root

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
        if filename is not None and not self._inside(filename):
            raise ValueError(f"a document cache row points outside the cache ({filename!r})")
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path: str) -> None:
        if not self._inside(file_path):
            log.warning("not removing %r: outside the document cache", file_path)
            return
        super().remove(file_path)


SOURCE_SUFFIX = ".source"  # a body's key with this: its original file (PDFs), bytes as given


class DocumentBodies:
    """The JSON bodies of parsed documents, by content hash, in the owner's share."""

    def __init__(self, directory: Path, *, size_limit_bytes: int, per_owner: bool) -> None:
        self.directory = directory / FOLDER
        self.size_limit_bytes = size_limit_bytes
        self.per_owner = per_owner
        self._caches: dict[str, diskcache.Cache] = {}
        self._lock = threading.Lock()

    def share(self, owner: str) -> str:
        """The share's folder name: a digest, so a user name never becomes a path. The local
        user's documents are the shared ones in either mode."""
        if not self.per_owner or owner == LOCAL_USER:
            return SHARED
        return hashlib.sha256(owner.encode()).hexdigest()[:24]

    def _cache(self, owner: str) -> diskcache.Cache:
        share = self.share(owner)
        with self._lock:
            cache = self._caches.get(share)
            if cache is None:
                cache = self._open(share)
                self._caches[share] = cache
            return cache

    def _open(self, share: str) -> diskcache.Cache:
        folder = str(self.directory / share)
        settings = {"disk": JSONDisk, "size_limit": self.size_limit_bytes,
                    "eviction_policy": "least-recently-used",
                    # one document out per write while over the limit (diskcache's default of
                    # ten would empty a small cache at once)
                    "cull_limit": 1, "disk_min_file_size": 0}
        try:
            return diskcache.Cache(folder, **settings)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            _move_aside(folder, exc)
            return diskcache.Cache(folder, **settings)

    def _busy(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"The document cache {self.directory} stayed locked by another sparkdocs process "
            f"({exc}); try again, or stop the process that holds it.")

    def _recover(self, owner: str, exc: BaseException) -> bool:
        """A damaged share is moved aside and reopened empty; True if that was the trouble."""
        if not _damaged(exc):
            return False
        share = self.share(owner)
        with self._lock:
            cache = self._caches.pop(share, None)
            if cache is not None:
                cache.close()
            _move_aside(str(self.directory / share), exc)
        return True

    def get(self, key: str, *, owner: str) -> str | None:
        """The body, or None when it is not there (evicted, damaged or refused: parsed again).
        A share locked by another process is a StoreError, not a missing document."""
        try:
            data = self._cache(owner).get(key)
        except (diskcache.Timeout, sqlite3.OperationalError) as exc:
            if "locked" in str(exc) or isinstance(exc, diskcache.Timeout):
                raise self._busy(exc) from exc
            self._recover(owner, exc)
            return None
        except (ValueError, TypeError, OSError, sqlite3.Error) as exc:
            if not self._recover(owner, exc):
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
        data = body.encode("utf-8")
        if len(data) > self.size_limit_bytes:
            raise StoreError(
                f"This document's parsed text is {len(data) / 2**20:,.1f} MB, over the document "
                f"cache's limit of {self.size_limit_bytes / 2**20:,.1f} MB; raise "
                "SPARKDOCS_CACHE_SIZE_LIMIT_MB.")
        for attempt in (1, 2):
            try:
                self._cache(owner).set(key, data)
                return
            except diskcache.Timeout as exc:
                raise self._busy(exc) from exc
            except (OSError, sqlite3.Error) as exc:  # a full disk, a read-only or damaged folder
                if attempt == 1 and self._recover(owner, exc):
                    continue
                if "locked" in str(exc):
                    raise self._busy(exc) from exc
                raise StoreError(
                    f"Cannot write the store's document cache {self.directory} ({exc}); check the disk "
                    "and its permissions, or set SPARKDOCS_CACHE_DIR to another folder."
                ) from exc

    def put_source(self, key: str, data: bytes, *, owner: str,
                   suffix: str = SOURCE_SUFFIX) -> None:
        """Keep a document's original file (a PDF, to draw its cited pages) beside its body,
        or with another `suffix` something made from it (a drawn page); one over the cache's
        limit, or a cache that will not take it, is simply not kept (it is only a cache)."""
        if len(data) > self.size_limit_bytes // 4:
            return
        try:
            if key + suffix not in self._cache(owner):
                self._cache(owner).set(key + suffix, bytes(data))
        except (diskcache.Timeout, OSError, sqlite3.Error) as exc:
            log.info("%s of %s not kept (%s)", suffix, key[:12], exc)

    def get_source(self, key: str, *, owner: str, suffix: str = SOURCE_SUFFIX) -> bytes | None:
        """The bytes kept with `put_source` (the same `suffix`), or None."""
        try:
            data = self._cache(owner).get(key + suffix)
        except (diskcache.Timeout, ValueError, TypeError, OSError, sqlite3.Error) as exc:
            log.info("original of %s unreadable (%s)", key[:12], exc)
            return None
        return data if isinstance(data, bytes) else None

    def has(self, key: str, *, owner: str) -> bool:
        try:
            return key in self._cache(owner)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            self._recover(owner, exc)
            return False

    def delete(self, key: str, *, owner: str) -> None:
        try:
            self._cache(owner).delete(key)
            self._cache(owner).delete(key + SOURCE_SUFFIX)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:  # it is only a cache
            log.warning("could not delete cached document %s: %s", key[:12], exc)

    def volume(self, *, owner: str) -> int:
        """Bytes the owner's share takes on disk (what its size limit bounds)."""
        return int(self._cache(owner).volume())

    def close(self) -> None:
        with self._lock:
            for cache in self._caches.values():
                cache.close()
            self._caches.clear()
