"""What a page says while an answer has not started: how long it has waited and whether the
request is queued, being read (prefill) or answering, from the server's own queue figures; and
what it says about the warm-up, without claiming more than is known."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from .client import ServerMetrics, Waiting
from .warmup import WarmState, WarmStatus


class WaitPhase(StrEnum):
    QUEUED = "queued"  # the server has requests waiting: its batch is full, a new one waits
    PREFILLING = "prefilling"  # nothing waits, so this request runs: it reads the document
    ANSWERING = "answering"  # text has arrived
    UNKNOWN = "waiting"  # the server publishes no queue figures (llama.cpp, a proxy)


@dataclass(frozen=True)
class WaitView:
    phase: WaitPhase
    text: str


def wait_phase(*, elapsed_s: float, received_chunks: int,
               metrics: ServerMetrics | None) -> WaitView:
    """The phase and the sentence to show. vLLM schedules first come, first served, and only
    queues when its running batch is full (max-num-seqs or KV cache): so with requests waiting
    this one is taken as queued, and with none waiting it is running and, with no token yet,
    prefilling. Without metrics the page says it cannot tell rather than guess."""
    seconds = f"{elapsed_s:.0f} s"
    if received_chunks:
        return WaitView(WaitPhase.ANSWERING, f"Answering ({seconds} so far).")
    if metrics is None or metrics.waiting is None:
        return WaitView(WaitPhase.UNKNOWN,
                        f"Waiting for the first token: {seconds} (this server does not say "
                        "whether the request is queued or reading the document).")
    running = int(metrics.running or 0)
    waiting = int(metrics.waiting)
    if waiting > 0:
        return WaitView(WaitPhase.QUEUED,
                        f"Queued: {seconds}. The server's batch is full ({running} running, "
                        f"{waiting} waiting); this question starts when a slot frees up.")
    return WaitView(WaitPhase.PREFILLING,
                    f"Prefilling: {seconds}. The model is reading the document before the "
                    "first word; nothing is queued on the server.")


class WaitWatch:
    """Turns the stream's `Waiting` heartbeats into `WaitView`s, asking the server's metrics at
    most once every `every_s` and only before the first token (a /metrics scrape is cheap but
    not free, and a page heartbeats twice a second). A server without metrics is asked once."""

    def __init__(self, metrics: Callable[[], ServerMetrics | None], *, every_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 warming: Callable[[], bool] | None = None) -> None:
        """`warming`: whether this document's cache warm-up still runs; a question waits
        behind it (one server slot, or the same prefix being read), and is shown so."""
        self._warming = warming
        self._fetch = metrics
        self._every_s = every_s
        self._clock = clock
        self._last: ServerMetrics | None = None
        self._asked_at: float | None = None
        self._has_metrics = True
        self.polls = 0

    def view(self, waiting: Waiting) -> WaitView:
        if not waiting.received_chunks and self._warming is not None and self._warming():
            return WaitView(WaitPhase.QUEUED, (
                f"Queued behind the warm-up: {waiting.elapsed_s:.0f} s. The server is reading "
                "this document into its cache first; this question starts when that ends."))
        if not waiting.received_chunks and self._has_metrics:
            now = self._clock()
            if self._asked_at is None or now - self._asked_at >= self._every_s:
                self._asked_at = now
                self.polls += 1
                self._last = self._fetch()
                self._has_metrics = self._last is not None
        return wait_phase(elapsed_s=waiting.elapsed_s, received_chunks=waiting.received_chunks,
                          metrics=self._last)


WARM_ICONS = {WarmStatus.WARMING: ":material/hourglass_top:",
              WarmStatus.WARM: ":material/local_fire_department:",
              WarmStatus.FAILED: ":material/error:",
              WarmStatus.CANCELLED: ":material/cancel:"}


def duration(seconds: float) -> str:
    """`42 s`, `1 min 15 s`."""
    whole = max(0, int(seconds))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60} s"


def warm_caption(state: WarmState) -> str:
    """The warm-up line: when it was warmed, never that it is still warm (other documents read
    since may have evicted it, and nothing here can see that)."""
    if state.status is WarmStatus.WARMING:
        elapsed = duration(time.time() - state.started) if state.started else "?"
        parts = (f", {state.parts_done} of {state.parts_total} parts done"
                 if state.parts_total > 1 else "")
        return f"Warming the model's prefix cache with this document: {elapsed}{parts}…"
    if state.status is WarmStatus.CANCELLED:
        after = f" after {duration(state.finished - state.started)}" if state.finished else ""
        return (f"Warm-up cancelled{after}; the server dropped it. The first question reads "
                "the document in full.")
    if state.status is WarmStatus.WARM:
        took = f" (took {state.seconds:.1f} s)" if state.seconds is not None else ""
        # the server's clock, named: the page is often read in another time zone
        at = time.strftime("%H:%M %Z", time.localtime(state.finished)) if state.finished else "?"
        return (f"Prefix cache warmed at {at}{took}; other "
                "documents read since may have evicted it.")
    return f"Warm-up failed: {state.error}"
