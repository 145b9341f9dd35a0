"""A group of answer streams that are cancelled together: a batch's requests, a bench level,
the parts of a whole-document answer. One place owns "stop everything in flight", so no caller
keeps its own set, lock and race check."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Cancellable(Protocol):
    def cancel(self) -> None: ...


S = TypeVar("S", bound=Cancellable)


class StreamGroup:
    """The streams in flight for one job. `cancel()` stops them all and every stream that joins
    later (a thread that had not yet sent its request when Ctrl-C came): a cancelled group stays
    cancelled."""

    def __init__(self) -> None:
        self._streams: set[Cancellable] = set()
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __len__(self) -> int:
        """Streams in flight now."""
        with self._lock:
            return len(self._streams)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            streams = list(self._streams)
        for stream in streams:
            stream.cancel()

    @contextmanager
    def member(self, stream: S) -> Iterator[S]:
        """`stream` belongs to the group while the block runs. Joining a cancelled group cancels
        the stream at once (its request is never left running on the server)."""
        with self._lock:
            self._streams.add(stream)
            late = self._cancelled.is_set()
        if late:
            stream.cancel()
        try:
            yield stream
        finally:
            with self._lock:
                self._streams.discard(stream)
