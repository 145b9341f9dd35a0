"""Which sessions are answering from every page right now, across processes: an advisory
lock file per session under the cache folder, held while the parts are read. A second such
question on the same session would read every part again beside the first; the CLI refuses it,
the app waits its turn."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import SparkdocsError

FOLDER = "busy"


class SessionBusyError(SparkdocsError):
    """Another whole-document question is running on this session."""


@contextlib.contextmanager
def whole_answer_lock(directory: Path, session_id: str, *, wait: bool,
                      on_wait: Callable[[float], None] | None = None) -> Iterator[None]:
    """Hold the session's lock for the block. Without `wait`, a lock already held is a
    SessionBusyError; with it, the block starts once the other question is done (`on_wait`
    sees the seconds waited so far)."""
    folder = directory / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_-]", "_", session_id)[:64]
    handle = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise SessionBusyError(
                        f"Session {session_id} is already answering a question from every page "
                        "(in another sparkdocs); wait for it to finish, or ask in a new session "
                        "(leave out --follow-up-of).") from None
                if on_wait is not None:
                    on_wait(time.monotonic() - started)
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
