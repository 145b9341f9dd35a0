"""The model-service edge: an OpenAI-compatible server (vLLM in production, anything else
elsewhere). Streams answers with their timing, discovers what the server can do and degrades
when it cannot, warms the prefix cache, and turns every failure into an error with its fix."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx2
import openai

from .config import Settings, check_base_url
from .errors import (
    AuthenticationError,
    ContextOverflowError,
    ModelNotFoundError,
    ProtocolError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
    WarmUpCancelled,
)
from .literal import ControlStripper, redact_url, redact_urls
from .metrics import ServerMetrics, parse_metrics
from .streams import StreamGroup
from .tokens import ChatMessage

if TYPE_CHECKING:
    from .cluster import Engine

log = logging.getLogger(__name__)
FAILURE_TTL_S = 2.0
BUSY_TTL_S = 10.0  # a busy server's last figures are asked about again after this
_DISCOVERY = threading.local()  # `timed_out`: a GET of this thread's discovery timed out
START_HINT = "start it with `docker compose up -d vllm` (or `sparkdocs local-model`), or set SPARKDOCS_BASE_URL"
BASE_URL_HINT = ("check SPARKDOCS_BASE_URL: it must point at an OpenAI-compatible server and "
                 "usually ends in /v1 (a proxy's login or error page answers like this)")
# Every answer's own length bound: a server that ignores max_tokens is stopped here, not never.
# Chunks (vLLM sends one per token, plus a role, a finish and a usage chunk) and characters (no
# Llama 3 token is longer than 128 characters) — loose enough for any honest server.
LENGTH_BOUND_FACTOR = 2
LENGTH_BOUND_SLACK = 16
MAX_CHARS_PER_TOKEN = 128


def chunk_bound(max_tokens: int) -> int:
    """How many stream chunks an answer of `max_tokens` may take before it is stopped."""
    return LENGTH_BOUND_FACTOR * max_tokens + LENGTH_BOUND_SLACK


class StreamEnd(StrEnum):
    """How an answer stream ended; everything but FINISHED keeps a partial answer."""

    FINISHED = "finished"  # the server gave a finish reason (stop, length, …)
    STOPPED = "stopped"  # by the user: Stop, Ctrl-C, SIGTERM, cancel()
    ABANDONED = "abandoned"  # the reader went away (a page rerun) before the end
    BROKEN = "broken"  # the connection broke, the server reported an error, or no finish reason
    STALLED = "stalled"  # no text for the read timeout
    DEADLINE = "deadline"  # the answer as a whole took longer than its deadline
    TOO_LONG = "too-long"  # the server sent far more than max_tokens (it ignores the limit)
    INVALID = "invalid"  # an event that is not JSON: not an OpenAI-compatible stream


class ServerKind(StrEnum):
    """Which server discovery found: it decides the tokenize form and what `doctor` checks."""

    VLLM = "vllm"
    LLAMA_CPP = "llama.cpp"  # llama.cpp's own server (its /props reports the context)
    LLAMA_CPP_PYTHON = "llama-cpp-python"  # the demo model's server (/extras/tokenize)
    UNKNOWN = "unknown"


class ServiceProblem(StrEnum):
    """Why discovery found no usable service (Capabilities.problem)."""

    UNREACHABLE = "unreachable"
    KEY_REFUSED = "key-refused"
    NOT_OPENAI = "not-openai"  # /v1/models answered, but not with an OpenAI model list
    FAILING = "failing"  # /v1/models answered 5xx: there, but loading or broken
    BUSY = "busy"  # it took the connection but did not answer in time: busy, not absent


@dataclass(frozen=True)
class AnswerResult:
    """What one request did; the figures shown under every answer."""

    answer: str
    finish_reason: str | None
    ttft_s: float | None
    total_s: float
    decode_tokens_per_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    model: str
    interrupted: bool = False
    error: str | None = None
    end: StreamEnd = StreamEnd.FINISHED

    @property
    def truncated(self) -> bool:
        """The answer hit max_tokens: it is cut off."""
        return self.finish_reason == "length"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "truncated": self.truncated}


@dataclass(frozen=True)
class Capabilities:
    """What discovery found. `base_url` is the one to show (credentials hidden)."""

    base_url: str
    reachable: bool
    error: str | None = None
    problem: ServiceProblem | None = None
    models: tuple[str, ...] = ()
    model: str | None = None
    model_note: str | None = None
    context_length: int = 65_536
    context_from_server: bool = False
    metrics: ServerMetrics | None = None
    server_kind: ServerKind = ServerKind.UNKNOWN
    notes: tuple[str, ...] = ()  # what the server said that sparkdocs could not use, and the fix
    # Behind vLLM's router: every engine it lists (cluster.py); `metrics` is then their sum.
    engines: tuple[Engine, ...] = ()
    checked_at: float = field(default=0.0, compare=False)
    # A discovery under load timed out: these are the figures the server gave at `read_at`
    # (monotonic), kept rather than re-budgeting with defaults.
    busy: bool = False
    read_at: float = field(default=0.0, compare=False)

    @property
    def busy_note(self) -> str | None:
        """What to tell a user while the figures are the last known ones."""
        if not self.busy:
            return None
        age = max(0.0, time.monotonic() - (self.read_at or self.checked_at))
        ago = f"{age:.0f} s" if age < 90 else f"{age / 60:.0f} min"
        return (f"The model service is busy (it did not answer discovery in time): its model, "
                f"context and tokenizer are as it said them {ago} ago; questions wait their "
                "turn.")


def kept_when_busy(previous: Capabilities | None, found: Capabilities) -> Capabilities:
    """A discovery that timed out under load keeps the last figures the server gave (marked
    busy, with their age) instead of budgeting with defaults; an absent server is absent."""
    if not found.busy and found.problem is not ServiceProblem.BUSY:
        return found
    if (previous is None or not previous.reachable or previous.error is not None
            or previous.problem is not None):
        return found
    return replace(previous, busy=True, checked_at=found.checked_at,
                   read_at=previous.read_at or previous.checked_at)


_OVERFLOW_NUMBERS = re.compile(r"maximum context length is (\d+) tokens.*?(\d+) (?:input )?tokens", re.S)


def _service_error(exc: Exception, *, settings: Settings, model: str) -> ServiceError:
    """openai's exceptions → sparkdocs errors whose message says what to do."""
    url = redact_url(settings.base_url)
    if isinstance(exc, openai.APITimeoutError):
        return ServiceTimeoutError(
            f"The model service at {url} did not answer within {settings.request_timeout_s:g} s; "
            "it may be loading the model or overloaded — check `sparkdocs doctor`, or raise "
            "SPARKDOCS_REQUEST_TIMEOUT_S.")
    if isinstance(exc, openai.APIConnectionError):
        return ServiceUnavailableError(f"Nothing is answering at {url}: {START_HINT}.")
    if (isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError))
            or getattr(exc, "status_code", None) in (401, 403)):
        return AuthenticationError(
            f"The model service at {url} refused the API key; set SPARKDOCS_API_KEY (or --api-key) "
            "to the key the server was started with (VLLM_API_KEY in compose).")
    message = redact_urls(str(getattr(exc, "message", "") or exc))
    if isinstance(exc, openai.NotFoundError) or getattr(exc, "status_code", None) == 404:
        return ModelNotFoundError(
            f"The service at {url} does not serve model {model!r} ({message}); set SPARKDOCS_MODEL "
            "to one of the ids `sparkdocs doctor` lists.")
    if isinstance(exc, openai.BadRequestError) and ("context length" in message.lower()
                                                     or "context window" in message.lower()):
        match = _OVERFLOW_NUMBERS.search(message)
        context, prompt = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        figures = f" (server: context {context:,}, request {prompt:,} tokens)" if match else ""
        return ContextOverflowError(
            f"The prompt plus answer reserve do not fit the served context{figures}; leave out "
            "parts of the document or lower --max-tokens.", prompt_tokens=prompt, context_length=context)
    status = getattr(exc, "status_code", None)
    if status is not None and status >= 500:
        return ServiceUnavailableError(
            f"The model service at {url} kept failing (HTTP {status}) after "
            f"{settings.max_retries} retries: {message}. It may be overloaded or restarting; "
            "check its logs (`docker compose logs vllm`).")
    return ServiceError(f"The model service at {url} refused the request: {message}")


@dataclass(frozen=True)
class Waiting:
    """A heartbeat while no text arrives (queued or prefilling): lets a page show the wait and
    notice a Stop, since the text stream itself cannot be interrupted between chunks."""

    elapsed_s: float
    received_chunks: int


def salted(cache_salt: str | None) -> dict[str, Any]:
    """The request fields that keep a user's cached prefix their own: vLLM (>= 0.9)
    mixes `cache_salt` into the hash of the first KV block, so another salt never hits it."""
    return {"extra_body": {"cache_salt": cache_salt}} if cache_salt else {}


ANSWER_HEADER = "x-sparkdocs-answer"
# The header vLLM's router (`vllm-router --policy consistent_hash`) hashes first to pick an engine;
# it reads X-Session-ID, then X-User-ID, X-Tenant-ID, X-Request-ID. One value per document and
# user keeps that user's questions on the engine that holds the document's prefix.
ROUTING_HEADER = "X-Session-ID"


def routing_key(document: str, user: str | None, *, part: int | None = None) -> str:
    """A stable routing key for one document (its content hash) and one user, and optionally
    one part of it: a hash, so the router's logs show neither the name nor the document."""
    import hashlib

    text = f"{user or ''}\0{document}\0{'' if part is None else part}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def routed(key: str | None) -> dict[str, str]:
    """The request headers that carry a routing key (none without one)."""
    return {ROUTING_HEADER: key} if key else {}


class AnswerConnections(httpx2.BaseTransport):
    """The transport under the openai client, and the handle sparkdocs owns on each answer's
    connection. An answer's request carries a one-off key in a header, which is taken off
    here before the request is sent and kept with its response, so that a Stop or the answer's
    deadline shuts that answer's socket down: that wakes a read blocked in a prefill, which
    closing the response alone would not (it waits for the next chunk), and it tells vLLM the
    client left, so vLLM aborts the request."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner
        self._responses: dict[str, httpx2.Response] = {}
        self._aborted: set[str] = set()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        key = request.headers.get(ANSWER_HEADER)
        if key is None:
            return self._inner.handle_request(request)
        del request.headers[ANSWER_HEADER]
        response = self._inner.handle_request(request)
        with self._lock:
            self._responses[key] = response
            aborted = key in self._aborted
        if aborted:  # stopped while its headers were on the way
            _shut_down(response)
        return response

    def abort(self, key: str) -> None:
        """End this answer's connection now (from any thread); also one not yet answered."""
        with self._lock:
            self._aborted.add(key)
            response = self._responses.get(key)
        if response is not None:
            _shut_down(response)

    def __len__(self) -> int:
        """Answers whose connections are held now."""
        with self._lock:
            return len(self._responses)

    def content_type(self, key: str) -> str:
        """The content type this answer's response came with ("" if none came)."""
        with self._lock:
            response = self._responses.get(key)
        return response.headers.get("content-type", "") if response is not None else ""

    def release(self, key: str) -> None:
        """The answer is over: forget its connection (the pool may reuse it)."""
        with self._lock:
            self._responses.pop(key, None)
            self._aborted.discard(key)

    def close(self) -> None:
        self._inner.close()


def _shut_down(response: httpx2.Response) -> None:
    # `network_stream` is the HTTP stack's documented response extension for the connection.
    network = response.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed by the server or the reading thread
        sock.shutdown(socket.SHUT_RDWR)


class AnswerStream:
    """One answer, read inside a `with` block: `with client.stream(messages) as answer: for text
    in answer: …`. Leaving the block ends the request there and then (the response is closed,
    the deadline timer cancelled), not whenever the garbage collector finalises a generator.
    `result` holds the record once the stream ends (also after a cancel, a cut, a deadline or a
    length bound, or a block left early: the partial answer is kept and marked).

    Every answer is bounded twice, so no server can keep it running forever: a deadline for the
    whole answer (a timer that closes the connection, since a server sending keep-alives forever
    never lets a read time out) and a length bound of about twice max_tokens. Text is stripped of
    terminal control sequences here, once, for every reader (terminal, files, pages, store)."""

    def __init__(self, client: ModelClient, messages: Sequence[ChatMessage], *, model: str,
                 max_tokens: int, temperature: float, deadline_s: float,
                 deadline_fix: str, cache_salt: str | None = None,
                 routing_key: str | None = None) -> None:
        self._client = client
        self._cache_salt = cache_salt
        self._routing_key = routing_key
        self._messages = [m.as_dict() for m in messages]
        self._model = model
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._deadline_s = deadline_s
        self._deadline_fix = deadline_fix
        self._key = secrets.token_hex(8)  # this answer's handle on its connection
        self._cancel = threading.Event()
        self._expired = threading.Event()
        self._response: Any = None
        self._timer: threading.Timer | None = None
        self._reader: Generator[str, None, None] | None = None  # the one read of this answer
        self._event_loops: list[Generator[str | Waiting, None, None]] = []
        self._entered = False
        self._closed = False
        self.result: AnswerResult | None = None
        self.parts: list[str] = []

    def __enter__(self) -> AnswerStream:
        self._entered = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the answer now if it is still open: an `events()` loop left early stops it (a
        Stop, a page rerun); a text loop left early abandons it (the partial answer is kept).
        Either way the response is closed and the deadline timer cancelled."""
        self._closed = True
        for loop in self._event_loops:
            loop.close()  # its own finally cancels the request and joins the reading thread
        self._event_loops.clear()
        reader = self._reader
        if reader is not None:
            try:
                reader.close()  # GeneratorExit at its yield: _read's finally closes the response
            except ValueError:  # still running on a reading thread that did not end in time
                self.cancel()
        if self._timer is not None:
            self._timer.cancel()

    def _check_open(self) -> None:
        if not self._entered:
            raise RuntimeError("read an answer inside `with client.stream(...) as answer:`, "
                               "so that it is closed when the block ends")
        if self._closed and self._reader is None:
            raise RuntimeError("this answer stream was closed before it was read")

    def cancel(self) -> None:
        """Stop now, also on the server: shutting the socket down wakes the reading thread and
        tells vLLM the client left, so it aborts the request even in the middle of a prefill
        (closing the response alone waits for the next chunk, which a prefill does not send)."""
        self._cancel.set()
        self._abort_connection()
        result = self.result
        if result is not None and result.end is StreamEnd.ABANDONED:
            # The reader left first (Ctrl-C landed in the caller's loop, not in the read), then
            # the caller said stop: it was the user's stop.
            self.result = replace(result, end=StreamEnd.STOPPED, error=STOPPED_BY_USER)

    def _expire(self) -> None:
        """The deadline timer: end the answer the way cancel() does, but say why."""
        self._expired.set()
        self._abort_connection()

    def _abort_connection(self) -> None:
        self._client.connections.abort(self._key)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def events(self, *, heartbeat_s: float = 0.5) -> Iterator[str | Waiting]:
        """Text chunks, with a `Waiting` every `heartbeat_s` while none arrives. The stream is
        read on a helper thread; leaving the `with` block early (a Stop, a rerun) cancels it."""
        self._check_open()
        loop = self._events(heartbeat_s)
        self._event_loops.append(loop)
        return loop

    def _events(self, heartbeat_s: float) -> Generator[str | Waiting, None, None]:
        box: queue.Queue[object] = queue.Queue()
        finished = object()

        def pump() -> None:
            try:
                for part in self:
                    box.put(part)
            except BaseException as exc:  # handed to the consumer, raised there
                box.put(exc)
            finally:
                box.put(finished)

        reader = threading.Thread(target=pump, name="answer-stream", daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            while True:
                try:
                    item = box.get(timeout=heartbeat_s)
                except queue.Empty:
                    yield Waiting(time.monotonic() - started, len(self.parts))
                    continue
                if item is finished:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str)
                yield item
        finally:
            if reader.is_alive():
                self.cancel()
                reader.join(timeout=10)

    def _open(self) -> Any:
        """Send the request; the response must be an event stream (not a login page). A server
        that holds back even its headers is waited for no longer than the answer's deadline
        (per attempt: the timer cannot reach a connection that is not open yet)."""
        settings = self._client.settings
        wait_s = min(settings.request_timeout_s, self._deadline_s)
        try:
            response = self._client.openai.chat.completions.create(  # type: ignore[call-overload]
                model=self._model, messages=self._messages, stream=True,
                max_tokens=self._max_tokens, temperature=self._temperature,
                stream_options={"include_usage": True}, **salted(self._cache_salt),
                extra_headers={ANSWER_HEADER: self._key, **routed(self._routing_key)},
                timeout=openai.Timeout(wait_s, connect=settings.connect_timeout_s))
        except openai.APITimeoutError as exc:
            if wait_s < settings.request_timeout_s:
                raise ServiceTimeoutError(
                    f"The model service at {redact_url(settings.base_url)} sent no answer within "
                    f"{wait_s:g} s; {self._deadline_fix}.") from exc
            raise _service_error(exc, settings=settings, model=self._model) from exc
        except openai.OpenAIError as exc:
            raise _service_error(exc, settings=settings, model=self._model) from exc
        kind = self._client.connections.content_type(self._key)
        if kind and "event-stream" not in kind:
            try:
                response.close()
            except (OSError, openai.OpenAIError) as exc:
                log.debug("closing a response that is not a stream: %s", exc)
            raise ProtocolError(
                f"The model service at {redact_url(self._client.settings.base_url)} answered the "
                f"chat request with {kind.split(';')[0]}, not an event stream; {BASE_URL_HINT}.")
        return response

    def __iter__(self) -> Iterator[str]:
        """The answer's text; one request per AnswerStream, so a second loop continues the
        first one's read instead of asking again."""
        self._check_open()
        if self._reader is None:
            self._reader = self._stream()
        return self._reader

    def _stream(self) -> Generator[str, None, None]:
        started = time.perf_counter()
        state = _StreamState()
        # a deadline past what a thread can wait (inf, 1e300) is no deadline, not a crash
        timer = threading.Timer(min(self._deadline_s, threading.TIMEOUT_MAX), self._expire)
        timer.daemon = True
        self._timer = timer
        timer.start()
        try:
            for attempt in (1, 2):
                try:
                    self._response = self._open()
                except (KeyboardInterrupt, SystemExit):  # Ctrl-C/SIGTERM while it waits for headers
                    self._cancel.set()
                    state.end, state.error = StreamEnd.STOPPED, STOPPED_BY_USER
                    raise
                if self._cancel.is_set() or self._expired.is_set():  # stopped while it was sent
                    self._abort_connection()
                yield from self._read(state)
                if attempt == 1 and state.retryable:
                    # It broke before its first token (an engine died behind the router, a
                    # connection dropped): nothing was shown, so it is asked once more, anew.
                    log.info("the answer stream broke before its first token; asked once more: %s",
                             state.error)
                    self._client.connections.release(self._key)
                    self._key = secrets.token_hex(8)
                    self._cancel.clear()
                    state = _StreamState(retried=True)
                    continue
                break
        finally:
            timer.cancel()
            self._client.connections.release(self._key)
            if self._response is not None or state.end is not None:
                self.result = self._record(started, state)

    def _read(self, state: _StreamState) -> Iterator[str]:  # noqa: C901 (over the limit; split when next changed)
        bound = chunk_bound(self._max_tokens)
        char_bound = bound * MAX_CHARS_PER_TOKEN
        stripper = ControlStripper()
        try:
            for chunk in self._response:
                if self._cancel.is_set() or self._expired.is_set():
                    break
                state.chunks += 1
                text, finish, usage = _chunk_fields(chunk)
                if usage is not None:
                    state.usage = usage
                if finish:
                    state.finish = finish
                if text:
                    if state.chars + len(text) > char_bound:  # one huge chunk: keep the bound
                        text = text[:char_bound + 1 - state.chars]
                    state.chars += len(text)
                    clean = stripper.feed(text)
                    if clean:
                        if state.first is None:
                            state.first = time.perf_counter()
                        state.text_chunks += 1
                        self.parts.append(clean)
                        yield clean
                if state.chunks > bound or state.chars > char_bound:
                    what = (f"{bound:,} tokens" if state.chunks > bound
                            else f"{char_bound:,} characters")
                    state.end = StreamEnd.TOO_LONG
                    state.error = (f"the server sent more than {what} for max_tokens="
                                   f"{self._max_tokens}; stopped (it ignores the answer limit: "
                                   "check the server with `sparkdocs doctor`); the partial answer "
                                   "is kept")
                    log.warning("stream stopped: %s", state.error)
                    break
            tail = stripper.flush()
            if tail:
                self.parts.append(tail)
                yield tail
        except GeneratorExit:  # the consumer went away (a Streamlit rerun): keep what we have
            state.end, state.error = StreamEnd.ABANDONED, "interrupted before the answer finished"
            raise
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (sys.exit), while reading
            self._cancel.set()
            state.end, state.error = StreamEnd.STOPPED, STOPPED_BY_USER
            raise
        except openai.APITimeoutError as exc:
            state.fail(StreamEnd.STALLED, (
                f"no text for {self._client.settings.request_timeout_s:g} s in the middle of the "
                "answer: the server stalled; the partial answer is kept — check it with "
                "`sparkdocs doctor`, or raise SPARKDOCS_REQUEST_TIMEOUT_S if it is only slow"), exc)
        except openai.APIConnectionError as exc:
            state.fail(StreamEnd.BROKEN, f"the answer stream broke off ({_cause(exc)}); the "
                       "partial answer is kept", exc)
        except openai.APIError as exc:  # an error event in the stream (vLLM: an engine failure)
            state.fail(StreamEnd.BROKEN, "the server reported an error in the middle of the "
                       f"answer: {redact_urls(exc.message)}; the partial answer is kept", exc)
        except ValueError as exc:  # json.JSONDecodeError: an event whose data is not JSON
            sample = getattr(exc, "doc", "")[:120]
            state.fail(StreamEnd.INVALID, f"the server sent an event that is not JSON ({sample!r}): "
                       f"not an OpenAI-compatible stream; the partial answer is kept; {BASE_URL_HINT}",
                       exc)
        except OSError as exc:  # the socket itself (openai wraps its HTTP stack's errors)
            state.fail(StreamEnd.BROKEN, f"the answer stream broke off ({_cause(exc)}); the "
                       "partial answer is kept", exc)
        finally:
            try:
                self._response.close()
            except (OSError, openai.OpenAIError) as exc:
                log.debug("closing a finished stream: %s", exc)
            # Who ended it matters more than how the socket reported it.
            if self._cancel.is_set() and state.end is not StreamEnd.TOO_LONG:
                state.end, state.error = StreamEnd.STOPPED, STOPPED_BY_USER
            elif self._expired.is_set() and state.end is not StreamEnd.TOO_LONG:
                state.end = StreamEnd.DEADLINE
                state.error = (f"no answer within {self._deadline_s:g} s; stopped, the partial "
                               f"answer is kept — {self._deadline_fix}")
            elif state.end is None and state.finish is None:
                state.end = StreamEnd.BROKEN
                state.error = "the answer stream broke off before its end; the partial answer is kept"
            state.retryable = (state.end is StreamEnd.BROKEN and not self.parts
                               and not state.retried)
            if state.end not in (None, StreamEnd.FINISHED):
                self._cancel.set()
                self._abort_connection()
            state.ended = time.perf_counter()

    def _record(self, started: float, state: _StreamState) -> AnswerResult:
        usage = state.usage
        completion = getattr(usage, "completion_tokens", None) if usage else None
        prompt = getattr(usage, "prompt_tokens", None) if usage else None
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        cached = getattr(details, "cached_tokens", None) if details else None
        if cached is None and details is not None:
            cached = 0  # vLLM omits the field when nothing was cached
        ended = state.ended or time.perf_counter()
        produced = completion if isinstance(completion, int) else state.text_chunks
        decode = None
        first = state.first
        if first is not None and produced > 1 and ended > first:
            decode = (produced - 1) / (ended - first)
        end = state.end or StreamEnd.FINISHED
        return AnswerResult(
            answer="".join(self.parts), finish_reason=state.finish,
            ttft_s=None if first is None else first - started, total_s=ended - started,
            decode_tokens_per_s=decode, prompt_tokens=prompt, completion_tokens=completion,
            cached_tokens=cached, model=self._model, interrupted=end is not StreamEnd.FINISHED,
            error=state.error, end=end)

    def run(self) -> AnswerResult:
        """Read the whole answer (for batch work) and return the record."""
        with self:
            for _ in self:
                pass
        assert self.result is not None
        return self.result


STOPPED_BY_USER = "stopped by the user"


@dataclass
class _StreamState:
    """What one stream has seen so far (one reader thread writes it)."""

    first: float | None = None
    ended: float | None = None
    finish: str | None = None
    usage: Any = None
    chunks: int = 0
    text_chunks: int = 0
    chars: int = 0
    end: StreamEnd | None = None
    error: str | None = None
    retried: bool = False  # this is the second attempt: it broke before its first token once
    retryable: bool = False  # broke before any text, not stopped: may be asked once more

    def fail(self, end: StreamEnd, error: str, exc: BaseException) -> None:
        self.end, self.error = end, error
        log.warning("stream ended (%s): %s", end.value, exc)


def _cause(exc: BaseException) -> str:
    """The innermost message of a wrapped transport error ("Connection error." says nothing)."""
    inner: BaseException = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    return redact_urls(str(inner) or inner.__class__.__name__)


def _chunk_fields(chunk: Any) -> tuple[str, str | None, Any]:
    """(text, finish reason, usage) of one stream chunk, whatever its shape: openai builds
    chunks without validating them, so a server's odd JSON must not become an AttributeError."""
    usage = getattr(chunk, "usage", None)
    choices = getattr(chunk, "choices", None)
    texts: list[str] = []
    finish: str | None = None
    for choice in choices if isinstance(choices, list) else ():
        content = getattr(getattr(choice, "delta", None), "content", None)
        if isinstance(content, str):
            texts.append(content)
        reason = getattr(choice, "finish_reason", None)
        if isinstance(reason, str) and reason:
            finish = reason
    return "".join(texts), finish, usage


@dataclass(frozen=True)
class WarmUpResult:
    seconds: float
    prompt_tokens: int | None
    cached_tokens: int | None


@dataclass(frozen=True)
class _Reply:
    """One discovery answer, whatever its status: what sparkdocs reads of it."""

    status: int
    content_type: str
    text: str

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.text)


# Where each server counts a text (each with its own body, _tokenize_body); the first form that
# answers the one probe is kept.
_TOKENIZE_FORMS: dict[ServerKind, str] = {
    ServerKind.VLLM: "/tokenize",
    ServerKind.LLAMA_CPP: "/tokenize",  # same path, its own body
    ServerKind.LLAMA_CPP_PYTHON: "/extras/tokenize",
}


def _tokenize_body(form: ServerKind, text: str, model: str | None) -> dict[str, object]:
    if form is ServerKind.LLAMA_CPP_PYTHON:
        return {"input": text, "model": model}
    if form is ServerKind.LLAMA_CPP:
        return {"content": text, "add_special": False}
    return {"model": model, "prompt": text, "add_special_tokens": False}


class ModelClient:
    def __init__(self, settings: Settings, *, transport: httpx2.BaseTransport | None = None
                 ) -> None:
        """`transport` replaces the network under the client (tests give a mock one)."""
        check_base_url(settings.base_url)
        self.settings = settings
        # One HTTP stack: answers and discovery both go through openai's client (httpx2 since
        # openai 3), so there is one connection pool and one exception family to map; its
        # transport is ours, so every answer has a handle on its own connection.
        self.connections = AnswerConnections(transport or httpx2.HTTPTransport())
        self.openai = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key, max_retries=settings.max_retries,
            timeout=openai.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
            http_client=openai.DefaultHttpxClient(transport=self.connections))
        self._caps: Capabilities | None = None
        self._lock = threading.Lock()
        # The tokenize form per model, found on the first count (None: the server has none).
        self._tokenize: dict[str | None, ServerKind | None] = {}
        self._tokenize_lock = threading.Lock()

    @property
    def root_url(self) -> str:
        """The server root (vLLM's /tokenize, /metrics and /health sit beside /v1)."""
        return re.sub(r"/v1/?$", "", self.settings.base_url.rstrip("/"))

    def close(self) -> None:
        self.openai.close()

    # discovery -------------------------------------------------------------------------------
    def capabilities(self, *, refresh: bool = False) -> Capabilities:
        with self._lock:
            caps = self._caps
            # A failure is kept only briefly: the service is seen soon after it comes up, yet
            # a page that reruns on every click does not wait on a dead address each time.
            ttl = (self.settings.capability_ttl_s if caps is not None and caps.reachable
                   and caps.error is None else min(FAILURE_TTL_S, self.settings.capability_ttl_s))
            if caps is not None and caps.busy:
                ttl = min(ttl, BUSY_TTL_S)
            fresh = caps is not None and time.monotonic() - caps.checked_at < ttl
            if refresh or not fresh:
                self._caps = kept_when_busy(caps, self._discover())
            assert self._caps is not None
            return self._caps

    def _fetch(self, url: str, *, body: dict[str, object] | None = None,
               timeout_s: float | None = None) -> _Reply:
        """GET `url` (POST `body`) through the openai client: no retries, a short timeout, any
        status returned. Raises openai.APIConnectionError (APITimeoutError) when none answers."""
        options: openai.RequestOptions = {
            "max_retries": 0, "timeout": timeout_s or self.settings.connect_timeout_s * 2}
        try:
            if body is None:
                response = self.openai.get(url, cast_to=openai.APIResponse[object], options=options)
            else:
                response = self.openai.post(url, cast_to=openai.APIResponse[object], body=body,
                                            options=options)
        except openai.APIStatusError as exc:  # 4xx/5xx: an answer too, read like any other
            return _Reply(exc.status_code, exc.response.headers.get("content-type", ""),
                          exc.response.text)
        return _Reply(response.status_code, response.headers.get("content-type", ""),
                      response.text())

    def _get(self, path: str, *, timeout_s: float | None = None) -> _Reply | None:
        """A GET beside /v1, or None when nothing answers."""
        return self.get_url(f"{self.root_url}{path}", timeout_s=timeout_s)

    def get_url(self, url: str, *, timeout_s: float | None = None) -> _Reply | None:
        """A GET of any URL with the API key (an engine the router lists), or None when
        nothing answers."""
        try:
            return self._fetch(url, timeout_s=timeout_s)
        except openai.APIConnectionError as exc:
            log.debug("GET %s: %s", redact_url(url), _cause(exc))
            _DISCOVERY.timed_out = getattr(_DISCOVERY, "timed_out", False) or _busy(exc)
            return None

    def _discover(self) -> Capabilities:  # noqa: C901 (over the limit; split when next changed)
        base = self.settings.base_url
        shown = redact_url(base)
        context = self.settings.context_length

        def failed(problem: ServiceProblem, error: str) -> Capabilities:
            return Capabilities(shown, problem is not ServiceProblem.UNREACHABLE, error=error,
                                problem=problem, context_length=context,
                                checked_at=time.monotonic())

        _DISCOVERY.timed_out = False
        try:
            response = self._fetch(f"{base.rstrip('/')}/models")
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            if _busy(exc):
                return failed(ServiceProblem.BUSY, (
                    f"The model service at {shown} took the connection but did not answer "
                    f"/v1/models within {self.settings.connect_timeout_s * 2:g} s: it is busy "
                    "(a warm-up or a long prompt); questions wait their turn. If this lasts, "
                    "check `sparkdocs doctor`."))
            return failed(ServiceProblem.UNREACHABLE, f"Nothing is answering at {shown} "
                          f"({cause.__class__.__name__}): {START_HINT}.")
        if response.status in (401, 403):
            return failed(ServiceProblem.KEY_REFUSED, (
                f"The model service at {shown} refused the API key (HTTP {response.status}); "
                "set SPARKDOCS_API_KEY (or --api-key) to the key the server was started with "
                "(VLLM_API_KEY in compose)."))
        if response.status >= 500:
            return failed(ServiceProblem.FAILING, (
                f"The model service at {shown} answered /v1/models with HTTP "
                f"{response.status}: it may be loading the model or failing; check its logs "
                "(`docker compose logs vllm`)."))
        listed = _model_list(response)
        if isinstance(listed, str):
            return failed(ServiceProblem.NOT_OPENAI, f"The server at {shown} answered /v1/models "
                          f"with {listed}, not an OpenAI model list; {BASE_URL_HINT}.")
        data = listed
        models = tuple(m["id"] for m in data)
        wanted = self.settings.model
        model: str | None = wanted
        note: str | None = None
        if wanted not in models:
            if len(models) == 1:
                model = models[0]
                note = f"{wanted!r} is not served here; using the only served model {model!r}."
            elif not models:
                model, note = None, (f"The server at {shown} lists no models; start it with a "
                                     "model (`vllm serve MODEL`) or check SPARKDOCS_BASE_URL.")
            else:
                model, note = None, f"{wanted!r} is not served; choose one of {', '.join(models)} with SPARKDOCS_MODEL."
        entry = next((m for m in data if m["id"] == model), {})
        notes: list[str] = []
        served_context = _positive_int(entry.get("max_model_len"))
        if "max_model_len" in entry and entry["max_model_len"] is not None and served_context is None:
            notes.append(f"The server reports max_model_len {entry['max_model_len']!r}, not a "
                         f"number of tokens; budgeting with {context:,} from configuration — set "
                         "SPARKDOCS_CONTEXT_LENGTH to the server's real context.")
        owned = str(entry.get("owned_by", ""))
        metrics = self._metrics()
        kind = ServerKind.VLLM if (owned == "vllm" or metrics is not None) else ServerKind.UNKNOWN
        if not served_context:
            served_context = self._llama_cpp_context()
            if served_context:
                kind = ServerKind.LLAMA_CPP
        if kind is ServerKind.UNKNOWN and owned == "me":  # how llama-cpp-python lists its model
            kind = ServerKind.LLAMA_CPP_PYTHON
        from .cluster import combined_metrics, discover_engines

        # the router forwards /metrics to one engine: the cluster's figures are every engine's
        engines = discover_engines(self) if kind is ServerKind.VLLM else ()
        if engines:
            metrics = combined_metrics(engines)
        return Capabilities(
            shown, True, models=models, model=model, model_note=note,
            context_length=served_context or context,
            context_from_server=served_context is not None, metrics=metrics,
            server_kind=kind, notes=tuple(notes), engines=engines, checked_at=time.monotonic(),
            busy=_DISCOVERY.timed_out, read_at=time.monotonic())

    def _llama_cpp_context(self) -> int | None:
        response = self._get("/props")
        if response is None or response.status != 200:
            return None
        try:
            return _positive_int(response.json()["default_generation_settings"]["n_ctx"])
        except (ValueError, KeyError, TypeError):
            return None

    def _metrics(self, *, timeout_s: float | None = None) -> ServerMetrics | None:
        response = self._get("/metrics", timeout_s=timeout_s)
        if response is None or response.status != 200 or "vllm:" not in response.text:
            return None
        try:
            return parse_metrics(response.text)
        except ValueError as exc:
            log.warning("unreadable /metrics: %s", exc)
            return None

    def metrics(self) -> ServerMetrics | None:
        """vLLM's figures now (running, waiting, cache): one GET of /metrics with a short
        timeout and no retry, so a page can poll it while an answer waits; None elsewhere."""
        return self._metrics(timeout_s=self.settings.connect_timeout_s)

    def tokenize_path(self) -> str | None:
        """The server's tokenize endpoint, found on first use (then kept); None if it has none."""
        form = self._tokenize_form(self.capabilities())
        return None if form is None else _TOKENIZE_FORMS[form]

    def _tokenize_form(self, caps: Capabilities) -> ServerKind | None:
        """Which tokenize form this server answers: probed once per model, lazily — only a
        count that is actually needed pays for it (a Llama 3 model under vLLM asks once per
        process, not on every discovery). A server that did not answer is asked again later."""
        if not caps.reachable or caps.error is not None:
            return None
        with self._tokenize_lock:
            if caps.model in self._tokenize:
                return self._tokenize[caps.model]
            # its own server's form first, then the others
            order = sorted(_TOKENIZE_FORMS, key=lambda form: form is not caps.server_kind)
            answered = False
            found: ServerKind | None = None
            for form in order:
                try:
                    response = self._fetch(f"{self.root_url}{_TOKENIZE_FORMS[form]}",
                                           body=_tokenize_body(form, "hi", caps.model))
                except openai.APIConnectionError as exc:
                    log.debug("tokenize probe %s: %s", form.value, _cause(exc))
                    continue
                answered = True
                if response.status == 200 and "tokens" in response.text:
                    found = form
                    break
            if answered:
                self._tokenize[caps.model] = found
            return found

    def count_tokens(self, text: str) -> int | None:
        """The server's own count for a text (other models than Llama 3); None if it cannot."""
        caps = self.capabilities()
        form = self._tokenize_form(caps)
        if form is None:
            return None
        try:
            response = self._fetch(f"{self.root_url}{_TOKENIZE_FORMS[form]}",
                                   body=_tokenize_body(form, text, caps.model),
                                   timeout_s=self.settings.request_timeout_s)
            body = response.json() if response.status == 200 else None
        except openai.APIConnectionError as exc:
            log.info("the server did not count the text: %s", _cause(exc))
            return None
        except ValueError:  # not JSON
            return None
        if not isinstance(body, dict):  # a server's odd JSON is "cannot count", not a crash
            return None
        tokens = body.get("tokens")
        return _positive_int(body.get("count")) or (len(tokens) if isinstance(tokens, list) else None)

    def health(self) -> bool | None:
        """True/False from /health; None when the server has no such endpoint."""
        response = self._get("/health")
        if response is None:
            return False
        if response.status == 404:
            return None
        return response.status == 200

    # requests --------------------------------------------------------------------------------
    def resolve_model(self) -> str:
        """The model to ask, or the error that says why there is none (each problem its own)."""
        caps = self.capabilities()
        problem = caps.problem
        if problem is ServiceProblem.BUSY:  # nothing known yet: the configured model waits
            return caps.model or self.settings.model
        if problem is ServiceProblem.UNREACHABLE or not caps.reachable:
            raise ServiceUnavailableError(caps.error or f"Nothing is answering at {caps.base_url}.")
        if problem is ServiceProblem.KEY_REFUSED:
            raise AuthenticationError(caps.error or f"{caps.base_url} refused the API key.")
        if problem is ServiceProblem.FAILING:
            raise ServiceUnavailableError(caps.error or f"{caps.base_url} is failing.")
        if problem is ServiceProblem.NOT_OPENAI:
            raise ProtocolError(caps.error or f"{caps.base_url} is not an OpenAI-compatible server.")
        if caps.model is None:
            raise ModelNotFoundError(caps.model_note or f"The server at {caps.base_url} lists no "
                                     "models; check SPARKDOCS_BASE_URL and SPARKDOCS_MODEL.")
        if caps.model_note:
            log.info(caps.model_note)
        return caps.model

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None,
               temperature: float | None = None, model: str | None = None,
               deadline_s: float | None = None, deadline_fix: str | None = None,
               cache_salt: str | None = None, routing_key: str | None = None) -> AnswerStream:
        """An answer to stream. It ends by `deadline_s` (default SPARKDOCS_ANSWER_DEADLINE_S);
        `deadline_fix` is what the message then tells the user to do; `cache_salt` keeps the
        prefix cache private to one user (team mode); `routing_key` (`routing_key()`) keeps a
        document's requests on one engine behind a router."""
        settings = self.settings
        return AnswerStream(
            self, messages, model=model or self.resolve_model(),
            max_tokens=max_tokens or settings.answer_tokens,
            temperature=settings.temperature if temperature is None else temperature,
            deadline_s=settings.answer_deadline_s if deadline_s is None else deadline_s,
            deadline_fix=deadline_fix or (
                f"raise SPARKDOCS_ANSWER_DEADLINE_S (now {settings.answer_deadline_s:g} s) if "
                "the server is only slow, or lower the answer length"),
            cache_salt=cache_salt, routing_key=routing_key)

    def warm_up(self, messages: Sequence[ChatMessage], *, model: str | None = None,
                cache_salt: str | None = None, routing_key: str | None = None,
                streams: StreamGroup | None = None) -> WarmUpResult:
        """Send the next question's exact prefix with max_tokens=1 so its KV blocks are cached.
        With `streams` it is streamed, so the server sends its headers at once and
        `streams.cancel()` shuts its connection down mid-prefill: the server sees the client
        leave and drops it. Without, it is one plain request (the doctor's probes, bench)."""
        if streams is None:
            return self._plain_warm_up(messages, model=model, cache_salt=cache_salt, routing_key=routing_key)
        started = time.perf_counter()
        with self.stream(messages, max_tokens=1, temperature=0.0, model=model,
                         cache_salt=cache_salt, routing_key=routing_key) as answer, \
                streams.member(answer):
            for _ in answer:
                pass
        result = answer.result
        if result is None or result.end is StreamEnd.STOPPED or streams.cancelled:
            raise WarmUpCancelled("The warm-up was cancelled; the first question reads the "
                                  "document in full.")
        if result.end is not StreamEnd.FINISHED:
            raise ServiceError(f"The warm-up did not finish: {result.error}")
        return WarmUpResult(time.perf_counter() - started, result.prompt_tokens,
                            result.cached_tokens)

    def _plain_warm_up(self, messages: Sequence[ChatMessage], *, model: str | None,
                       cache_salt: str | None, routing_key: str | None) -> WarmUpResult:
        model = model or self.resolve_model()
        started = time.perf_counter()
        try:
            response = self.openai.chat.completions.create(
                model=model, messages=[m.as_dict() for m in messages],  # type: ignore[misc]
                max_tokens=1, temperature=0.0, stream=False, **salted(cache_salt),
                extra_headers=routed(routing_key))
        except openai.OpenAIError as exc:
            raise _service_error(exc, settings=self.settings, model=model) from exc
        usage = getattr(response, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return WarmUpResult(time.perf_counter() - started,
                            usage.prompt_tokens if usage else None,
                            getattr(details, "cached_tokens", None) if details else None)


def _busy(exc: openai.APIConnectionError) -> bool:
    """It took the connection and then said nothing in time (not refused, not unreachable)."""
    return (isinstance(exc, openai.APITimeoutError)
            and not isinstance(exc.__cause__, httpx2.ConnectTimeout))


def _positive_int(value: object) -> int | None:
    """A token count from a server's JSON (an int or a numeric string), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value) or None
    return None


def _model_list(response: _Reply) -> list[dict[str, Any]] | str:
    """The entries of an OpenAI /v1/models answer that have an id, or what came instead."""
    kind = response.content_type
    if response.status != 200:
        return f"HTTP {response.status}"
    try:
        body = response.json()
    except ValueError:
        return (kind.split(";")[0] or "something") + " that is not JSON"
    if body is None:
        return "null"
    if isinstance(body, list):
        return "a JSON list"
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return ("a JSON object without a model list" if isinstance(body, dict)
                else f"a JSON {type(body).__name__}")
    return [m for m in body["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
