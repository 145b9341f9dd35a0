"""Background cache warm-ups, one per (document, selection), shared by every browser session
of the process. The page polls `state()`; nothing here blocks a page. A warm-up says how far it
is (parts done, since when) and can be cancelled: its request's connection is shut down, so the
server drops the prefill instead of finishing it for nobody."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum

from .documents import Document
from .errors import SparkdocsError, WarmUpCancelled
from .parts import SHORTEST_QUESTION
from .qa import QuestionAnswering
from .streams import StreamGroup

log = logging.getLogger(__name__)


WHOLE = (-1,)  # the selection key of "every part" (no real selection is negative)
WarmKey = tuple[str, tuple[int, ...] | None, str | None]  # (document, selection, owner)
_Key = WarmKey
# A tab that has not asked for its warm-up for this long is gone (closed or reloaded): it no
# longer keeps one running. A live tab asks on every rerun, and every 2 s while it warms.
TAB_TTL_S = 30.0


def warms_every_part(*, whole_chosen: bool | None, fits: bool, pages_chosen: bool,
                     whole_possible: bool = True) -> bool:
    """Whether a question is answered from every page, and so whether the warm-up fills the
    document's parts (as many as the KV cache holds) rather than the session's selection: one
    decision, so that what is warmed is what the next question sends. `whole_chosen` is the
    user's "Answer from every page" for this selection (None: not set). Unset, a document over
    the context is read whole unless the user chose its pages (`pages_chosen`: typed, ticked or
    "Fit automatically", short of every page), so that no answer silently depends on pages the
    app kept. It is a fact the page records, not read from the pages: pages the user typed are
    theirs even when they equal the app's auto-fit. A document whose parts cannot be planned
    (`whole_possible` False: too many of them) is asked as the session keeps it, and says why."""
    if whole_chosen is not None:
        return whole_chosen
    return not fits and whole_possible and not pages_chosen


def chosen_elsewhere(*, kept: Sequence[int] | None, fitted: Sequence[int] | None) -> bool:
    """Whether a session whose choice this page did not see (made by the command line, or
    opened by another tab or a reload) keeps pages the user chose: any selection short of
    every page other than the one the app makes on opening (auto-fit, `fitted`)."""
    return kept is not None and (fitted is None or tuple(kept) != tuple(fitted))


class WarmStatus(StrEnum):
    WARMING = "warming"
    WARM = "warm"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class WarmState:
    status: WarmStatus
    seconds: float | None = None
    error: str | None = None
    started: float = 0.0  # wall clock
    finished: float = 0.0  # wall clock it ended (0 while warming): "warmed at …"
    parts_done: int = 0  # prefixes warmed so far, of `parts_total` (0: not known yet)
    parts_total: int = 0


class WarmUps:
    def __init__(self, qa: QuestionAnswering, *, workers: int = 2,
                 tab_ttl_s: float = TAB_TTL_S) -> None:
        self._qa = qa
        self._tab_ttl_s = tab_ttl_s
        self._wanted: dict[_Key, dict[str, float]] = {}  # tab -> when it last asked (monotonic)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="warm-up")
        self._states: dict[_Key, WarmState] = {}
        self._streams: dict[_Key, StreamGroup] = {}  # of the warm-ups running now
        self._fits: dict[tuple[str, int], tuple[int, ...] | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(document: Document, keep: Sequence[int] | None, owner: str | None = None) -> _Key:
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
            self._streams[key] = streams = StreamGroup()
        self._pool.submit(self._run, key, document, keep, owner, whole, streams)
        return state

    def warms_parts(self, document: Document, keep: Sequence[int] | None, *,
                    whole_chosen: bool | None, pages_chosen: bool | None) -> bool:
        """`warms_every_part` for this document against the served context: whether the next
        question is answered from every page (and its parts are warmed). `pages_chosen` None:
        the page did not see how the session's pages were chosen (`chosen_elsewhere`)."""
        if whole_chosen is not None:
            return whole_chosen
        fits = self._qa.budget(document).fits
        if fits:
            return False
        if pages_chosen is None:
            pages_chosen = chosen_elsewhere(kept=keep, fitted=self._fitted(document))
        return warms_every_part(whole_chosen=None, fits=fits, pages_chosen=pages_chosen,
                                whole_possible=self._whole_possible(document))

    def _whole_possible(self, document: Document) -> bool:
        """Whether every page can be planned into parts (the plan is kept by `plan_whole`)."""
        try:
            self._qa.plan_whole(document, SHORTEST_QUESTION)
        except SparkdocsError:
            return False
        return True

    def _fitted(self, document: Document) -> tuple[int, ...] | None:
        """The app's auto-fit of `document` (kept per document and served context: a page
        asks on every rerun, and fitting a long document counts it a few times)."""
        key = (document.content_hash, self._qa.client.capabilities().context_length)
        with self._lock:
            if key in self._fits:
                return self._fits[key]
        try:
            fitted = self._qa.fit(document)
        except SparkdocsError:  # not even one page fits: no auto-fit to compare with
            fitted = None
        with self._lock:
            if len(self._fits) > 16:
                self._fits.pop(next(iter(self._fits)))
            self._fits[key] = fitted
        return fitted

    def serve(self, document: Document, keep: Sequence[int] | None = None, *,
              owner: str | None = None, whole: bool = False, tab: str | None = None,
              replacing: WarmKey | None = None) -> tuple[WarmKey, WarmState]:
        """The warm-up of the next question (`start`, unless it runs or ended), and its key.
        `replacing` is the one this caller (`tab`: one browser session) served before: when its
        decision has flipped (every part or the selection) or its pages changed, that warm-up
        no longer serves this tab's next question. It is cancelled, its request closed so it
        does not compete with this one for the engine and a worker, only when no other tab
        still wants it (tabs of one user share a warm-up); this one starts again even if it
        had been cancelled."""
        key = self._key(document, WHOLE if whole else keep, owner)
        self._want(key, tab)
        if replacing is not None and replacing != key:
            if self._release(replacing, tab):
                self._cancel(replacing)
            return key, self.start(document, keep, owner=owner, whole=whole)
        with self._lock:
            state = self._states.get(key)
        return key, state or self.start(document, keep, owner=owner, whole=whole)

    def _want(self, key: WarmKey, tab: str | None) -> None:
        if tab is None:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._wanted) > 256:  # forget the warm-ups only gone tabs wanted
                self._wanted = {k: tabs for k, tabs in self._wanted.items()
                                if any(now - seen < self._tab_ttl_s for seen in tabs.values())}
            self._wanted.setdefault(key, {})[tab] = now

    def _release(self, key: WarmKey, tab: str | None) -> bool:
        """`tab` no longer wants the warm-up `key`: whether no live tab wants it now."""
        now = time.monotonic()
        with self._lock:
            wanted = self._wanted.pop(key, {})
            wanted.pop(tab or "", None)
            alive = {t: seen for t, seen in wanted.items() if now - seen < self._tab_ttl_s}
            if alive:
                self._wanted[key] = alive
            return not alive

    def cancel(self, document: Document, keep: Sequence[int] | None = None, *,
               owner: str | None = None, whole: bool = False) -> bool:
        """Cancel a running warm-up: its request is closed now. False when none runs."""
        return self._cancel(self._key(document, WHOLE if whole else keep, owner))

    def _cancel(self, key: WarmKey) -> bool:
        with self._lock:
            streams = self._streams.get(key)
            state = self._states.get(key)
            if streams is None or state is None or state.status is not WarmStatus.WARMING:
                return False
            self._states[key] = replace(state, status=WarmStatus.CANCELLED, finished=time.time())
        streams.cancel()
        return True

    def _progress(self, key: _Key, streams: StreamGroup, done: int, total: int) -> None:
        with self._lock:
            state = self._states.get(key)
            if state is not None and self._streams.get(key) is streams \
                    and state.status is WarmStatus.WARMING:
                self._states[key] = replace(state, parts_done=done, parts_total=total)

    def _run(self, key: _Key, document: Document, keep: Sequence[int] | None,
             owner: str | None, whole: bool, streams: StreamGroup) -> None:
        def progress(done: int, total: int) -> None:
            if streams.cancelled:  # called before each part: no part is sent after a cancel
                raise WarmUpCancelled("The warm-up was cancelled.")
            self._progress(key, streams, done, total)

        try:
            result = (self._qa.warm_parts(document, owner=owner, streams=streams,
                                          on_part=progress) if whole
                      else self._qa.warm_up(document, keep, owner=owner, streams=streams,
                                            on_part=progress))
            ended: WarmState | None = WarmState(WarmStatus.WARM, seconds=result.seconds,
                                                finished=time.time())
        except WarmUpCancelled:
            ended = None  # `cancel` already said so
        except SparkdocsError as exc:
            ended = WarmState(WarmStatus.FAILED, error=str(exc))
        except Exception as exc:  # never let a warm-up thread die silently
            log.exception("warm-up failed")
            ended = WarmState(WarmStatus.FAILED, error=f"unexpected error: {exc!r}")
        with self._lock:
            if self._streams.get(key) is not streams:
                return  # cancelled and started anew: that one's state is its own
            del self._streams[key]
            state = self._states[key]
            if ended is not None and not streams.cancelled:
                self._states[key] = replace(ended, started=state.started,
                                            parts_done=state.parts_done,
                                            parts_total=state.parts_total)

    def state(self, document: Document, keep: Sequence[int] | None = None, *,
              owner: str | None = None, whole: bool = False,
              tab: str | None = None) -> WarmState | None:
        """The warm-up's state; `tab` still wants it (a tab polling a warm-up is alive)."""
        key = self._key(document, WHOLE if whole else keep, owner)
        self._want(key, tab)
        with self._lock:
            return self._states.get(key)
