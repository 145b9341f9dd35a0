"""Background cache warm-ups, one per (document, selection), shared by every browser session
of the process. The page polls `state()`; nothing here blocks a page."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from .documents import Document
from .errors import SparkdocsError
from .qa import QuestionAnswering

log = logging.getLogger(__name__)


WHOLE = (-1,)  # the selection key of "every part" (no real selection is negative)


class WarmStatus(StrEnum):
    WARMING = "warming"
    WARM = "warm"
    FAILED = "failed"


@dataclass(frozen=True)
class WarmState:
    status: WarmStatus
    seconds: float | None = None
    error: str | None = None
    started: float = 0.0  # wall clock
    finished: float = 0.0  # wall clock it ended (0 while warming): "warmed at …"


class WarmUps:
    def __init__(self, qa: QuestionAnswering, *, workers: int = 2) -> None:
        self._qa = qa
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="warm-up")
        self._states: dict[tuple[str, tuple[int, ...] | None, str | None], WarmState] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(document: Document, keep: Sequence[int] | None, owner: str | None = None
             ) -> tuple[str, tuple[int, ...] | None, str | None]:
        # per owner: under per-user cache isolation one user's warm-up does not serve another
        return document.content_hash, tuple(keep) if keep is not None else None, owner

    def start(self, document: Document, keep: Sequence[int] | None = None, *,
              owner: str | None = None, whole: bool = False) -> WarmState:
        """Warm the selection's prefix, or with `whole` every part of a document beyond the
        context that the KV cache holds (`QuestionAnswering.warm_parts`)."""
        key = self._key(document, WHOLE if whole else keep, owner)
        with self._lock:
            state = self._states.get(key)
            if state is not None and state.status in (WarmStatus.WARMING, WarmStatus.WARM):
                return state
            state = WarmState(WarmStatus.WARMING, started=time.time())
            self._states[key] = state
        self._pool.submit(self._run, key, document, keep, owner, state.started, whole)
        return state

    def _run(self, key: tuple[str, tuple[int, ...] | None, str | None], document: Document,
             keep: Sequence[int] | None, owner: str | None, started: float,
             whole: bool) -> None:
        try:
            result = (self._qa.warm_parts(document, owner=owner) if whole
                      else self._qa.warm_up(document, keep, owner=owner))
            state = WarmState(WarmStatus.WARM, seconds=result.seconds, started=started,
                              finished=time.time())
        except SparkdocsError as exc:
            state = WarmState(WarmStatus.FAILED, error=str(exc), started=started)
        except Exception as exc:  # never let a warm-up thread die silently
            log.exception("warm-up failed")
            state = WarmState(WarmStatus.FAILED, error=f"unexpected error: {exc!r}",
                              started=started)
        with self._lock:
            self._states[key] = state

    def state(self, document: Document, keep: Sequence[int] | None = None, *,
              owner: str | None = None, whole: bool = False) -> WarmState | None:
        with self._lock:
            return self._states.get(self._key(document, WHOLE if whole else keep, owner))
