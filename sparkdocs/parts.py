"""Documents beyond one context: one part planner, one retried request, one merge step, shared
by `summarize`'s map-reduce and a question answered from every page (`ask --whole`).

A part's prompt keeps the prefix contract (the constant system text, then that part's document
block, then the task), so a second question over the same document reuses every part's cached
prefix. Part answers are combined in a merge request; when they would not fit one request they
are merged in groups first (a tree), so no part's answer is ever dropped to make room.

How many parts go at once: as many as the KV cache holds whole (`in_flight_for`, from
`vllm:cache_config_info`), and no more than the engine schedules. vLLM does not publish its
`max_num_seqs` in /metrics (checked in vLLM 0.32.0: the only info gauge is
`vllm:cache_config_info`, whose labels are the cache config's fields; `max_num_seqs` is the
scheduler config's, and no gauge carries it). What it does publish is its queue: a request that
finds no free sequence slot or KV blocks waits (`vllm:num_requests_waiting`). So a part is sent
while none of ours is in flight, or while the engine has nothing waiting (`PartGate`): the
parts fill the engine's slots and stop at the first that has to wait, whatever `max_num_seqs`
is (give or take the step by which the gauges trail the queue), and another user's waiting
request holds further parts back too."""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum

from .client import AnswerResult, ModelClient, StreamEnd, routing_key
from .cluster import combined_metrics, discover_engines, engines_up
from .documents import Document, Section, SectionKind
from .errors import (
    AuthenticationError,
    BudgetError,
    ContextOverflowError,
    ModelNotFoundError,
    ProtocolError,
    ServiceError,
    SparkdocsError,
)
from .metrics import ServerMetrics
from .prompts import (
    QUESTION_RESERVE_TOKENS,
    Part,
    PreparedDocument,
    Prompt,
    PromptBuilder,
    block_tokens,
    prepare_document,
    split_into_parts,
)
from .streams import StreamGroup
from .tokens import ChatMessage, count_document

log = logging.getLogger(__name__)

NOT_RETRIED = (BudgetError, AuthenticationError, ModelNotFoundError, ProtocolError,
               ContextOverflowError)
ENDS_NOT_RETRIED = (StreamEnd.TOO_LONG, StreamEnd.DEADLINE, StreamEnd.INVALID)
MAX_PARTS = 1_000  # a whole-document answer past this is refused up front, with the numbers
SHORTEST_QUESTION = "?"  # a question's room is reserved apart (QUESTION_RESERVE_TOKENS)
ASSUMED_PREFILL_TOKENS_PER_S = 800.0  # Llama 3.3 70B FP8 on one DGX Spark (design.md)


def part_note(number: int, total: int, label: str) -> str:
    return (f"Part {number} of {total} of the document: {label}. The other parts are read "
            "separately.")


@dataclass(frozen=True)
class PartPlan:
    """The parts of a document beyond the context. `document` is what the parts are cut from:
    the document itself, or a copy whose pages too large for one part are split at paragraph
    boundaries (each piece keeps its page number), which `split` names."""

    document: Document
    parts: tuple[Part, ...]
    split: tuple[str, ...] = ()


def plan_parts(document: Document, builder: PromptBuilder, *,
               prompt_for: Callable[[PreparedDocument], Prompt], context: int,
               answer_tokens: int) -> PartPlan:
    """The whole document as one part when its prompt fits, else consecutive parts (pages,
    sections or files; the file tree drawn for each) whose prompts each fit with the answer
    reserve. Everything in the prompt but the block is the same for every part, so the block
    gets exactly the rest; a page larger than that is split at paragraph boundaries first."""
    whole = prepare_document(document, tokenizer=builder.tokenizer)
    prompt = prompt_for(whole)
    if prompt.prompt_tokens + answer_tokens <= context:
        return PartPlan(document, (Part("whole document", whole.kept, whole.block_tokens),))
    fixed = prompt.prompt_tokens - whole.block_tokens
    available = context - answer_tokens - fixed
    if available <= fixed:
        raise BudgetError(
            f"{document.name}: the answer reserve of {answer_tokens:,} tokens leaves almost no "
            f"room for the document in a context of {context:,} (the prompt's own text takes "
            f"{fixed:,}); lower --max-tokens (SPARKDOCS_ANSWER_TOKENS).")
    pieces, split = split_large_sections(document, builder, available=available)
    parts = split_into_parts(pieces, available, note=part_note, tokenizer=builder.tokenizer)
    return PartPlan(pieces, tuple(parts), split)


_SEPARATORS = ("\n\n", "\n", ". ", " ")


def split_large_sections(document: Document, builder: PromptBuilder, *, available: int
                         ) -> tuple[Document, tuple[str, ...]]:
    """`document` with each page or section whose block alone would be over `available` cut
    into pieces that fit, at paragraph boundaries (then lines, sentences, words), each keeping
    its title; and a note per section split. Files are cut the same way, at lines."""
    tok = builder.tokenizer

    def fits(section: Section) -> bool:
        single = count_document(replace(document, sections=(section,)), tok)
        return block_tokens(single, tokenizer=tok,
                            note=part_note(9999, 9999, section.locator)) <= available

    sections: list[Section] = []
    notes: list[str] = []
    for section in document.sections:
        if section.kind is SectionKind.TREE or fits(section):
            sections.append(section)
            continue
        texts = _pieces(section.text, functools.partial(_text_fits, fits, section))
        sections += [replace(section, text=text) for text in texts]
        notes.append(f"{section.locator} was split at paragraph boundaries into {len(texts)} "
                     "pieces")
    if not notes:
        return document, ()
    split = replace(document, sections=tuple(sections),
                    content_hash=f"{document.content_hash}:split-{available}")
    return count_document(split, tok), tuple(notes)


def _text_fits(fits: Callable[[Section], bool], section: Section, text: str) -> bool:
    return fits(replace(section, text=text))


def _pieces(text: str, fits: Callable[[str], bool], level: int = 0) -> list[str]:
    """`text` in consecutive pieces that each fit, cut at the coarsest separator that works:
    each piece is the longest run of units that fits (galloping, then bisection: a few exact
    counts per piece, not one per unit)."""
    if fits(text):
        return [text]
    if level >= len(_SEPARATORS):
        raise BudgetError("a single word is longer than a part; raise the context length")
    separator = _SEPARATORS[level]
    units = text.split(separator)
    pieces: list[str] = []
    start = 0
    while start < len(units):
        if not fits(units[start]):  # one paragraph too large: cut it finer
            pieces += _pieces(units[start], fits, level + 1)
            start += 1
            continue
        low, step = start + 1, 1  # units[start:low] fits
        while low + step <= len(units) and fits(separator.join(units[start:low + step])):
            low, step = low + step, step * 2
        high = min(low + step, len(units) + 1)  # units[start:high] does not fit (or past end)
        while high - low > 1:
            middle = (low + high) // 2
            if fits(separator.join(units[start:middle])):
                low = middle
            else:
                high = middle
        pieces.append(separator.join(units[start:low]))
        start = low
    return pieces


def prepared_part(document: Document, builder: PromptBuilder, parts: Sequence[Part],
                  number: int) -> PreparedDocument:  # `document`: the plan's
    """Part `number` (1-based) as it is sent, its note saying which part of how many."""
    part = parts[number - 1]
    if len(parts) == 1:  # the whole document, exactly as a question over it sends it
        return prepare_document(document, tokenizer=builder.tokenizer)
    return prepare_document(document, keep=part.sections, tokenizer=builder.tokenizer,
                            note=part_note(number, len(parts), part.label))


class PartState(StrEnum):
    """Where one part of an answer from every page is."""

    NOT_SENT = "not sent yet"  # waiting for a place among the parts asked at once
    QUEUED = "queued"  # sent; the engine has it waiting
    PREFILLING = "prefilling"  # sent; the engine reads its prompt
    SENT = "sent"  # sent, no token yet, and the engine's gauges unknown
    ANSWERING = "answering"
    DONE = "done"
    NOT_READ = "not read"


class PartProgress:
    """Each part's state while an answer from every page runs. What the client sees (sent,
    first token, ended) is refined with the engine's own gauges: of the parts sent that have no
    token yet, as many as the engine says are waiting are queued (those sent last), the others
    prefilling. Written by the part threads, read by the page."""

    def __init__(self, parts: int = 0) -> None:
        self._lock = threading.Lock()
        self._count = parts
        self._sent: list[int] = []  # in the order sent
        self._answering: set[int] = set()
        self._ended: dict[int, bool] = {}

    def planned(self, parts: int) -> None:
        """The number of parts, once the plan is made."""
        with self._lock:
            self._count = parts

    def sent(self, number: int) -> None:
        with self._lock:
            if number in self._sent:
                self._sent.remove(number)  # a retry: sent again, last
            self._sent.append(number)
            self._answering.discard(number)
            self._ended.pop(number, None)

    def first_token(self, number: int) -> None:
        with self._lock:
            self._answering.add(number)

    def ended(self, number: int, *, read: bool) -> None:
        with self._lock:
            self._ended[number] = read

    def states(self, metrics: ServerMetrics | None = None) -> tuple[PartState, ...]:
        """Part 1's state first. `metrics`: the engine's gauges now (None: not known)."""
        with self._lock:
            sent, answering, ended = list(self._sent), set(self._answering), dict(self._ended)
        waiting = [n for n in sent if n not in ended and n not in answering]
        queued = set()
        if metrics is not None and metrics.waiting is not None:
            queued = set(waiting[len(waiting) - min(len(waiting), int(metrics.waiting)):])
        states = []
        for number in range(1, self._count + 1):
            if number in ended:
                states.append(PartState.DONE if ended[number] else PartState.NOT_READ)
            elif number in answering:
                states.append(PartState.ANSWERING)
            elif number not in sent:
                states.append(PartState.NOT_SENT)
            elif metrics is None or metrics.waiting is None:
                states.append(PartState.SENT)
            else:
                states.append(PartState.QUEUED if number in queued else PartState.PREFILLING)
        return tuple(states)


def progress_text(states: Sequence[PartState]) -> str:
    """"2 answering · 1 prefilling · 3 queued · 4 done", in the order a part goes through."""
    counts = {state: 0 for state in PartState}
    for state in states:
        counts[state] += 1
    order = (PartState.DONE, PartState.ANSWERING, PartState.PREFILLING, PartState.QUEUED,
             PartState.SENT, PartState.NOT_SENT, PartState.NOT_READ)
    return " · ".join(f"{counts[state]} {state.value}" for state in order if counts[state])


class ProgressWatch:
    """Follows a `PartProgress` on a thread of its own and calls `on_change` with the summary
    ("1 done · 2 prefilling") each time it changes: the parts' threads only record events, and
    the engine's gauges (`metrics`, read every `every_s`) tell queued from prefilling. A
    context manager; on leaving, the last states are said if they changed since."""

    def __init__(self, progress: PartProgress, on_change: Callable[[str], None], *,
                 metrics: Callable[[], ServerMetrics | None] | None = None,
                 every_s: float = 0.25) -> None:
        self._progress, self._on_change, self._metrics = progress, on_change, metrics
        self._every_s = every_s
        self._said = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="part-progress", daemon=True)

    def __enter__(self) -> ProgressWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._say(self._progress.states())  # every part has ended: no gauge is needed

    def _run(self) -> None:
        while not self._stop.is_set():
            metrics = None
            if self._metrics is not None and self._progress.states():  # planned
                try:
                    metrics = self._metrics()
                except Exception:  # a gauge that cannot be read leaves the parts "sent"
                    log.debug("metrics unreadable while following the parts", exc_info=True)
            self._say(self._progress.states(metrics))
            self._stop.wait(self._every_s)

    def _say(self, states: Sequence[PartState]) -> None:
        text = progress_text(states)
        if text and text != self._said:
            self._said = text
            self._on_change(text)


def room_for_another(metrics: ServerMetrics | None) -> bool:
    """Whether the engine takes another request now: nothing of its own queue waits (a
    request waits when the engine's sequence slots, max_num_seqs, or its KV blocks are full).
    A server whose queue is not known (no vLLM metrics) is not held back."""
    return metrics is None or metrics.waiting is None or metrics.waiting <= 0


def serving_metrics(client: ModelClient) -> ServerMetrics | None:
    """The engine's gauges now; behind vLLM's router every engine's, summed (the router
    forwards /metrics to one engine)."""
    if client.capabilities().engines:
        return combined_metrics(discover_engines(client))
    return client.metrics()


class PartGate:
    """Lets requests through one at a time, each only while none of ours is in flight or the
    engine has nothing waiting (`room_for_another`); the gauges are read again every `poll_s`
    until then. A request is in flight from `admit` to `ended`. The engine's gauges trail its
    queue by a step, so a part or two more than the free slots may be sent: they wait in the
    engine's queue like any request."""

    def __init__(self, metrics: Callable[[], ServerMetrics | None], *,
                 poll_s: float = 0.25) -> None:
        self._metrics = metrics
        self._poll_s = poll_s
        self._admitting = threading.Lock()
        self._count = threading.Lock()
        self._ours = 0

    @property
    def in_flight(self) -> int:
        with self._count:
            return self._ours

    def admit(self, streams: StreamGroup) -> None:
        """Wait for room, then count one more in flight. Cancelling `streams` while it waits
        raises."""
        with self._admitting:
            while self.in_flight and not room_for_another(self._metrics()):
                if streams.cancelled:
                    raise SparkdocsError("cancelled")
                time.sleep(self._poll_s)
            with self._count:
                self._ours += 1

    def ended(self) -> None:
        with self._count:
            self._ours -= 1


class PartRequests:
    """Requests for parts and merges: each retried (a stream that broke, a 5xx the client gave
    up on) and all in one StreamGroup, so a Stop or Ctrl-C cancels every one in flight."""

    def __init__(self, client: ModelClient, *, model: str, max_tokens: int,
                 cache_salt: str | None, attempts: int = 2, streams: StreamGroup | None = None,
                 on_start: Callable[[], None] | None = None,
                 on_end: Callable[[AnswerResult | None], None] | None = None,
                 routing: str | None = None, progress: PartProgress | None = None,
                 gate: PartGate | None = None) -> None:
        """`routing`: the document-and-user routing key (client.routing_key); each part is
        routed by its own key derived from it, so parts spread over the engines. `progress`
        hears each part sent, answering and ended. `gate` holds requests back while the
        engine has requests waiting (default: read from the server's own gauges)."""
        self.client = client
        self.progress = progress
        self.routing = routing
        self.streams = streams if streams is not None else StreamGroup()
        self._model, self._max_tokens, self._salt = model, max_tokens, cache_salt
        self._attempts = attempts
        self.gate = gate or PartGate(functools.partial(serving_metrics, client))
        self._on_start = on_start or (lambda: None)
        self._on_end = on_end or (lambda result: None)

    def part_key(self, number: int) -> str | None:
        """Part `number`'s routing key (None without a document key)."""
        return routing_key(self.routing, None, part=number) if self.routing else None

    def run(self, messages: Sequence[ChatMessage], *, routing: str | None = None,
            part: int | None = None) -> AnswerResult:
        """One request, retried; `routing` overrides the document's routing key; `part` is the
        part's number, for `progress`."""
        progress = self.progress if part is not None else None
        last_error: Exception | None = None
        for attempt in range(1, self._attempts + 1):
            if self.streams.cancelled:
                raise SparkdocsError("cancelled")
            self.gate.admit(self.streams)
            try:
                stream = self.client.stream(messages, max_tokens=self._max_tokens,
                                            model=self._model, cache_salt=self._salt,
                                            routing_key=routing or self.routing)
            except BaseException:
                self.gate.ended()
                raise
            self._on_start()
            if progress is not None and part is not None:
                progress.sent(part)
            result: AnswerResult | None = None
            try:
                with self.streams.member(stream), stream:
                    answering = False
                    for _ in stream:
                        if not answering and progress is not None and part is not None:
                            progress.first_token(part)
                            answering = True
                result = stream.result
                assert result is not None  # a stream read to its end has its record
            except NOT_RETRIED:
                raise
            except ServiceError as exc:
                last_error = exc
                log.info("request failed (attempt %d/%d): %s", attempt, self._attempts, exc)
                time.sleep(min(2.0 ** attempt, 10.0) * 0.25)
                continue
            finally:
                self.gate.ended()
                self._on_end(result)
            if not result.interrupted:
                return result
            if result.end is StreamEnd.STOPPED:
                raise SparkdocsError("cancelled")
            if result.end in ENDS_NOT_RETRIED:
                raise ServiceError(result.error or f"the answer ended: {result.end.value}")
            last_error = ServiceError(result.error or "the answer stream broke off")
        raise ServiceError(f"gave up after {self._attempts} attempts: {last_error}")


MergePrompt = Callable[[Sequence[tuple[str, str]]], Prompt]


def merge(partials: Sequence[tuple[str, str]], *, prompt_for: MergePrompt,
          request: Callable[[Sequence[ChatMessage]], AnswerResult], context: int,
          answer_tokens: int, name: str) -> tuple[str, list[AnswerResult]]:
    """Combine (label, text) answers in order into one. When they do not fit one request,
    consecutive groups that fit are merged first, and their merges merged in turn (a tree)."""
    results: list[AnswerResult] = []
    level = list(partials)
    while True:
        prompt = prompt_for(level)
        if prompt.prompt_tokens + answer_tokens <= context:
            result = request(prompt.messages)
            results.append(result)
            return result.answer, results
        groups = _groups_that_fit(level, prompt_for=prompt_for,
                                  limit=context - answer_tokens, name=name)
        log.info("%s: %d answers too long to merge at once; merging in %d groups", name,
                 len(level), len(groups))
        merged: list[tuple[str, str]] = []
        for group in groups:
            if len(group) == 1:
                merged.append(group[0])
                continue
            result = request(prompt_for(group).messages)
            results.append(result)
            merged.append((_span_label(group), result.answer))
        level = merged


def _groups_that_fit(level: Sequence[tuple[str, str]], *, prompt_for: MergePrompt, limit: int,
                     name: str) -> list[list[tuple[str, str]]]:
    groups: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for item in level:
        if current and prompt_for([*current, item]).prompt_tokens > limit:
            groups.append(current)
            current = []
        current.append(item)
    groups.append(current)
    if all(len(group) == 1 for group in groups):
        raise BudgetError(
            f"{name}: two part answers together are too long to combine "
            f"({prompt_for(level[:2]).prompt_tokens:,} tokens, over the {limit:,} a request "
            "may use); lower --max-tokens (shorter part answers) or raise the context length.")
    return groups


def _span_label(group: Sequence[tuple[str, str]]) -> str:
    first, last = group[0][0], group[-1][0]
    start = first.split(" to ")[0]
    end = last.split(" to ")[-1]
    return start if start == end else f"{start} to {end}"


# -- a question answered from every part --------------------------------------------------------

@dataclass(frozen=True)
class PartAnswer:
    number: int
    label: str
    result: AnswerResult | None
    error: str | None = None  # why it was not read (after retries)


@dataclass(frozen=True)
class WholePlan:
    """What answering from every page costs, said before anything is sent."""

    parts: tuple[Part, ...]
    prompts: tuple[Prompt, ...]
    in_flight: int  # parts asked at once
    split: tuple[str, ...] = ()  # pages too large for one part, split at paragraphs

    @property
    def prompt_tokens(self) -> int:
        return sum(p.prompt_tokens for p in self.prompts)

    def estimate_s(self, prefill_tokens_per_s: float) -> float:
        return self.prompt_tokens / prefill_tokens_per_s


@dataclass(frozen=True)
class WholeAnswer:
    answer: str
    parts: tuple[PartAnswer, ...]
    results: tuple[AnswerResult, ...]  # every request: parts, then merges
    read: str  # what was read, in words: "all 300 pages, in 4 parts"

    @property
    def complete(self) -> bool:
        return all(p.error is None for p in self.parts)


def read_text(document: Document, parts: Sequence[Part], failed: Sequence[int]) -> str:
    """"all 300 pages, in 4 parts", or which parts were not read."""
    content = [s for s in document.sections if s.kind is not SectionKind.TREE]
    unit = {SectionKind.PAGE: "page", SectionKind.FILE: "file"}.get(content[0].kind, "section")
    what = f"all {len(content):,} {unit}{'' if len(content) == 1 else 's'}"
    count = f"{len(parts)} part{'' if len(parts) == 1 else 's'}"
    if not failed:
        return f"{what}, in {count}"
    if len(failed) == len(parts):
        return f"nothing read: none of the {count} could be read"
    missing = ", ".join(f"part {n} ({parts[n - 1].label})" for n in failed)
    return (f"partial: {len(parts) - len(failed)} of {count} read; not read after retries: "
            f"{missing}")


def parts_cached_at_once(parts: Sequence[Part], kv_capacity: int | None) -> int | None:
    """How many consecutive parts, from the first, the server's KV cache holds at once (None
    when the server does not say how large it is)."""
    if not kv_capacity:
        return None
    held = used = 0
    for part in parts:
        used += part.tokens
        if used > kv_capacity:
            break
        held += 1
    return held


def in_flight_for(client: ModelClient, prompts: Sequence[Prompt], *, answer_tokens: int,
                  limit: int) -> int:
    """Parts asked at once, at most: as many as the server's KV cache holds whole (vLLM's
    /metrics), and `limit` per engine (vLLM does not publish its max_num_seqs: `PartGate` then
    holds parts back while the engine has requests waiting); one on a server that reports no
    capacity (llama.cpp serves one). Behind vLLM's router both are the engines' sums."""
    caps = client.capabilities()
    metrics = caps.metrics
    capacity = metrics.kv_capacity_tokens if metrics is not None else None
    if not capacity or not prompts:
        return 1
    largest = max(p.prompt_tokens for p in prompts) + answer_tokens
    return max(1, min(limit * engines_up(caps.engines), len(prompts), capacity // largest))


def whole_parts(document: Document, builder: PromptBuilder, *, context: int,
                answer_tokens: int) -> PartPlan:
    """The parts a question over every page reads. They are cut with room for any question up
    to QUESTION_RESERVE_TOKENS, not for one question: every question over the document has the
    same parts, so each part's cached prefix serves the next question."""
    return plan_parts(document, builder,
                      prompt_for=lambda p: builder.part_question(p, SHORTEST_QUESTION),
                      context=context, answer_tokens=answer_tokens + QUESTION_RESERVE_TOKENS)


def plan_whole(document: Document, builder: PromptBuilder, client: ModelClient, question: str, *,
               cut: PartPlan, context: int, answer_tokens: int, limit: int = 32
               ) -> WholePlan:
    parts = cut.parts
    merge_floor = builder.merge_answers([("p. 1", "x"), ("p. 2", "x")], question).prompt_tokens
    if len(parts) > 1 and merge_floor + 3 * answer_tokens > context:
        most = max(0, (context - merge_floor) // 3)
        raise BudgetError(
            f"{document.name}: the answers of two parts, up to {answer_tokens:,} tokens each, "
            f"and their combined answer would not fit the context of {context:,}; lower "
            f"--max-tokens to at most {most:,} (SPARKDOCS_ANSWER_TOKENS).")
    if len(parts) > MAX_PARTS:
        raise BudgetError(
            f"{document.name}: reading every page would take {len(parts):,} parts of at most "
            f"{context:,} tokens, over the limit of {MAX_PARTS:,}; choose pages or files to keep "
            "(--pages/--parts), or use a server with a longer context.")
    prompts = tuple(builder.part_question(prepared_part(cut.document, builder, parts, n),
                                          question) for n in range(1, len(parts) + 1))
    longest = max(p.prompt_tokens for p in prompts)
    if longest + answer_tokens > context:
        raise BudgetError(
            f"{document.name}: this question is too long to ask of every part ({longest:,} "
            f"prompt tokens plus {answer_tokens:,} for the answer, over the context of "
            f"{context:,}); shorten the question to under {QUESTION_RESERVE_TOKENS} tokens.")
    return WholePlan(tuple(parts), prompts,
                     in_flight_for(client, prompts, answer_tokens=answer_tokens, limit=limit),
                     cut.split)


def ask_parts(document: Document, plan: WholePlan, *, requests: PartRequests,
              on_part: Callable[[PartAnswer], None] | None = None) -> tuple[PartAnswer, ...]:
    """Ask every part, `plan.in_flight` at once. A part that fails after retries is named as
    not read; an error that no retry can help (a refused key, an unknown model) ends them all,
    and so does a cancel of the group."""
    def ask(number: int) -> PartAnswer:
        part = plan.parts[number - 1]
        try:
            answer = PartAnswer(number, part.label, requests.run(
                plan.prompts[number - 1].messages,
                routing=requests.part_key(number) if len(plan.parts) > 1 else None,
                part=number))
        except SparkdocsError as exc:
            if requests.streams.cancelled or isinstance(exc, NOT_RETRIED):
                raise
            log.info("%s: part %d not read: %s", document.name, number, exc)
            answer = PartAnswer(number, part.label, None, str(exc))
        if requests.progress is not None:
            requests.progress.ended(number, read=answer.error is None)
        if on_part is not None:
            on_part(answer)
        return answer

    with ThreadPoolExecutor(max_workers=plan.in_flight, thread_name_prefix="part") as pool:
        try:
            answers = tuple(pool.map(ask, range(1, len(plan.parts) + 1)))
        except BaseException:
            requests.streams.cancel()  # before the pool's exit waits for its threads
            raise
    if all(a.result is None for a in answers):
        raise ServiceError(f"{document.name}: no part could be read; the first failed with: "
                           f"{answers[0].error}")
    return answers


def combine(document: Document, builder: PromptBuilder, plan: WholePlan,
            answers: Sequence[PartAnswer], question: str, *, requests: PartRequests,
            context: int, answer_tokens: int) -> WholeAnswer:
    """The parts' answers merged into one (a tree if need be)."""
    read = read_text(document, plan.parts, [a.number for a in answers if a.error])
    if plan.split:
        read = f"{read} ({'; '.join(plan.split)})"
    found = [(a.label, a.result.answer) for a in answers if a.result is not None]
    results = [a.result for a in answers if a.result is not None]
    if len(plan.parts) == 1:
        return WholeAnswer(found[0][1], tuple(answers), tuple(results), read)
    try:
        text, merges = merge(found, prompt_for=lambda pairs: builder.merge_answers(pairs, question),
                             request=requests.run, context=context, answer_tokens=answer_tokens,
                             name=document.name)
    except SparkdocsError as exc:
        if requests.streams.cancelled:
            raise
        raise ServiceError(f"combining the answers of {len(found)} parts failed: {exc}") from exc
    return WholeAnswer(text, tuple(answers), tuple(results + merges), read)


def answer_whole(document: Document, builder: PromptBuilder, plan: WholePlan, question: str, *,
                 requests: PartRequests, context: int, answer_tokens: int,
                 on_part: Callable[[PartAnswer], None] | None = None) -> WholeAnswer:
    """Ask every part, then combine what they found."""
    answers = ask_parts(document, plan, requests=requests, on_part=on_part)
    return combine(document, builder, plan, answers, question, requests=requests,
                   context=context, answer_tokens=answer_tokens)


def prefill_speed(turns_tokens_ttft: Sequence[tuple[int | None, int | None, float | None]]
                  ) -> float | None:
    """Prefill tokens per second measured on earlier answers: (prompt, cached, ttft) of each;
    the median of those that read at least 512 new tokens."""
    speeds = sorted((prompt - (cached or 0)) / ttft for prompt, cached, ttft in turns_tokens_ttft
                    if prompt and ttft and ttft > 0 and prompt - (cached or 0) >= 512)
    return speeds[len(speeds) // 2] if speeds else None


def estimate_text(plan: WholePlan, speed: float | None) -> str:
    measured = speed is not None
    rate = speed if speed is not None else ASSUMED_PREFILL_TOKENS_PER_S
    seconds = math.ceil(plan.estimate_s(rate))  # one engine's prefill is shared by the parts
    basis = (f"{rate:,.0f} tokens/s measured on this server" if measured
             else f"{rate:,.0f} tokens/s assumed, a Spark's figure")
    count = f"{len(plan.parts)} part{'' if len(plan.parts) == 1 else 's'}"
    return (f"{count}, {plan.prompt_tokens:,} prompt tokens to prefill, about "
            f"{seconds:,} s ({basis}); {plan.in_flight} asked at once")
