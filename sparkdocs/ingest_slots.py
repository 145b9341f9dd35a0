"""At most a few documents are read at once in one process: the app serves every user from
one process, and a read costs memory and CPU in proportion to the document (a DOCX body is
streamed, a PDF is read in a child of up to 1 GiB), so four large uploads at once must wait
their turn instead of taking the memory and time other users' pages need."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

_GUARD = threading.Lock()
_SLOTS: dict[int, threading.BoundedSemaphore] = {}

# Seconds waited so far, called about every `poll_s` while another upload is being read.
Waiting = Callable[[float], None]


@contextlib.contextmanager
def ingest_slot(limit: int, *, waiting: Waiting | None = None, poll_s: float = 0.5
                ) -> Iterator[None]:
    """Hold one of this process's `limit` reading slots for the block. When all are taken,
    `waiting` is told how long it has waited (first at once, then every `poll_s`): a page
    says so, and each call lets Streamlit stop a run whose user left."""
    with _GUARD:
        slots = _SLOTS.setdefault(limit, threading.BoundedSemaphore(limit))
    if not slots.acquire(blocking=False):
        started = time.monotonic()
        log.info("an upload waits for one of %d reading slots", limit)
        while True:
            if waiting is not None:
                waiting(time.monotonic() - started)
            if slots.acquire(timeout=poll_s):
                break
    try:
        yield
    finally:
        slots.release()
