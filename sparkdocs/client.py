"""The model-service edge: an OpenAI-compatible server (vLLM in production, anything else
elsewhere). Streams answers with their timing, discovers what the server can do and degrades
when it cannot, warms the prefix cache, and turns every failure into an error with its fix."""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import httpx
import openai

from .config import Settings
from .errors import (AuthenticationError, ContextOverflowError, ModelNotFoundError, ServiceError,
                     ServiceTimeoutError, ServiceUnavailableError)
from .tokens import ChatMessage

log = logging.getLogger(__name__)
FAILURE_TTL_S = 2.0
START_HINT = "start it with `docker compose up -d vllm` (or `sparkdocs local-model`), or set SPARKDOCS_BASE_URL"


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

    @property
    def truncated(self) -> bool:
        """The answer hit max_tokens: it is cut off."""
        return self.finish_reason == "length"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "truncated": self.truncated}


@dataclass(frozen=True)
class ServerMetrics:
    prefix_cache_queries: float | None = None
    prefix_cache_hits: float | None = None
    kv_cache_usage: float | None = None
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    prefix_caching_enabled: bool | None = None
    running: float | None = None
    waiting: float | None = None

    @property
    def kv_capacity_tokens(self) -> int | None:
        if self.block_size and self.num_gpu_blocks:
            return self.block_size * self.num_gpu_blocks
        return None

    @property
    def prefix_hit_rate(self) -> float | None:
        if self.prefix_cache_queries:
            return (self.prefix_cache_hits or 0.0) / self.prefix_cache_queries
        return None


@dataclass(frozen=True)
class Capabilities:
    base_url: str
    reachable: bool
    error: str | None = None
    models: tuple[str, ...] = ()
    model: str | None = None
    model_note: str | None = None
    context_length: int = 65_536
    context_from_server: bool = False
    tokenize_path: str | None = None
    metrics: ServerMetrics | None = None
    server_kind: str = "unknown"
    checked_at: float = field(default=0.0, compare=False)


def parse_metrics(text: str) -> ServerMetrics:
    """vLLM's Prometheus text → the figures sparkdocs shows (old and new metric names)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    info: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "vllm:cache_config_info":
                info = dict(sample.labels)
            elif name in {"vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                          "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
                          "vllm:num_requests_running", "vllm:num_requests_waiting"}:
                values[name] = values.get(name, 0.0) + sample.value

    def as_int(key: str) -> int | None:
        try:
            return int(float(info[key]))
        except (KeyError, ValueError):
            return None

    enabled = info.get("enable_prefix_caching")
    return ServerMetrics(
        prefix_cache_queries=values.get("vllm:prefix_cache_queries_total"),
        prefix_cache_hits=values.get("vllm:prefix_cache_hits_total"),
        kv_cache_usage=values.get("vllm:kv_cache_usage_perc", values.get("vllm:gpu_cache_usage_perc")),
        block_size=as_int("block_size"),
        num_gpu_blocks=as_int("num_gpu_blocks"),
        prefix_caching_enabled=None if enabled is None else enabled.lower() == "true",
        running=values.get("vllm:num_requests_running"),
        waiting=values.get("vllm:num_requests_waiting"),
    )


_OVERFLOW_NUMBERS = re.compile(r"maximum context length is (\d+) tokens.*?(\d+) (?:input )?tokens", re.S)


def _service_error(exc: Exception, *, settings: Settings, model: str) -> ServiceError:
    """openai/httpx exceptions → sparkdocs errors whose message says what to do."""
    url = settings.base_url
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return ServiceTimeoutError(
            f"The model service at {url} did not answer within {settings.request_timeout_s:.0f} s; "
            "it may be loading the model or overloaded — check `sparkdocs doctor`, or raise "
            "SPARKDOCS_REQUEST_TIMEOUT_S.")
    if isinstance(exc, (openai.APIConnectionError, httpx.ConnectError, httpx.TransportError)):
        return ServiceUnavailableError(f"Nothing is answering at {url}: {START_HINT}.")
    if isinstance(exc, openai.AuthenticationError) or getattr(exc, "status_code", None) == 401:
        return AuthenticationError(
            f"The model service at {url} refused the API key; set SPARKDOCS_API_KEY (or --api-key) "
            "to the key the server was started with (VLLM_API_KEY in compose).")
    message = str(getattr(exc, "message", "") or exc)
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
    """The request fields that keep a user's cached prefix their own (issue #12): vLLM (>= 0.9)
    mixes `cache_salt` into the hash of the first KV block, so another salt never hits it."""
    return {"extra_body": {"cache_salt": cache_salt}} if cache_salt else {}


class AnswerStream:
    """Iterate for text as it arrives; `result` holds the record once the stream ends (also after
    a cancel or a cut: the partial answer is kept and marked)."""

    def __init__(self, client: "ModelClient", messages: Sequence[ChatMessage], *, model: str,
                 max_tokens: int, temperature: float, cache_salt: str | None = None) -> None:
        self._client = client
        self._cache_salt = cache_salt
        self._messages = [m.as_dict() for m in messages]
        self._model = model
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._cancel = threading.Event()
        self._response: Any = None
        self.result: AnswerResult | None = None
        self.parts: list[str] = []

    def cancel(self) -> None:
        """Stop now, also on the server: shutting the socket down wakes the reading thread and
        tells vLLM the client left, so it aborts the request even in the middle of a prefill
        (closing the response alone waits for the next chunk, which a prefill does not send)."""
        self._cancel.set()
        self._abort_connection()

    def _abort_connection(self) -> None:
        response = getattr(self._response, "response", None)  # openai's Stream → HTTP response
        extensions = getattr(response, "extensions", None) or {}
        network = extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed by the server or by the reading thread
            pass

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def events(self, *, heartbeat_s: float = 0.5) -> Iterator[str | Waiting]:
        """Text chunks, with a `Waiting` every `heartbeat_s` while none arrives. The stream is
        read on a helper thread; leaving the loop early (a Stop, a rerun) cancels it."""
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

    def __iter__(self) -> Iterator[str]:
        started = time.perf_counter()
        first: float | None = None
        finish: str | None = None
        usage: Any = None
        chunks = 0
        error: str | None = None
        interrupted = False
        try:
            self._response = self._client.openai.chat.completions.create(  # type: ignore[call-overload]
                model=self._model, messages=self._messages, stream=True,
                max_tokens=self._max_tokens, temperature=self._temperature,
                stream_options={"include_usage": True}, **salted(self._cache_salt))
        except openai.OpenAIError as exc:
            raise _service_error(exc, settings=self._client.settings, model=self._model) from exc
        if self._cancel.is_set():  # stopped while the request was being sent
            self._abort_connection()
        try:
            for chunk in self._response:
                if self._cancel.is_set():
                    interrupted, error = True, "stopped by the user"
                    break
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                for choice in chunk.choices or ():
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        if first is None:
                            first = time.perf_counter()
                        chunks += 1
                        self.parts.append(delta)
                        yield delta
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except GeneratorExit:  # the consumer went away (a Streamlit rerun): keep what we have
            interrupted, error = True, "interrupted before the answer finished"
            raise
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM turned into it) in the reading thread
            interrupted, error = True, "stopped by the user"
            raise
        except Exception as exc:  # any transport failure mid-stream (httpx or httpx2, by version)
            if not self._cancel.is_set():
                interrupted = True
                error = f"the answer stream broke off: {exc}; the partial answer is kept"
                log.warning("stream cut after %d chunks: %s", chunks, exc)
            else:
                interrupted, error = True, "stopped by the user"
        finally:
            if interrupted:
                self._cancel.set()
                self._abort_connection()
            try:
                self._response.close()
            except (OSError, httpx.HTTPError, openai.OpenAIError, RuntimeError) as exc:
                log.debug("closing a finished stream: %s", exc)
            ended = time.perf_counter()
            if finish is None and not interrupted and not self._cancel.is_set():
                interrupted, error = True, "the answer stream broke off before its end; the partial answer is kept"
            if self._cancel.is_set() and not interrupted:
                interrupted, error = True, "stopped by the user"
            self.result = self._record(started, first, ended, finish, usage, chunks,
                                       interrupted, error)

    def _record(self, started: float, first: float | None, ended: float, finish: str | None,
                usage: Any, chunks: int, interrupted: bool, error: str | None) -> AnswerResult:
        completion = getattr(usage, "completion_tokens", None) if usage else None
        prompt = getattr(usage, "prompt_tokens", None) if usage else None
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        cached = getattr(details, "cached_tokens", None) if details else None
        if cached is None and details is not None:
            cached = 0  # vLLM omits the field when nothing was cached
        produced = completion if completion is not None else chunks
        decode = None
        if first is not None and produced > 1 and ended > first:
            decode = (produced - 1) / (ended - first)
        return AnswerResult(
            answer="".join(self.parts), finish_reason=finish,
            ttft_s=None if first is None else first - started, total_s=ended - started,
            decode_tokens_per_s=decode, prompt_tokens=prompt, completion_tokens=completion,
            cached_tokens=cached, model=self._model, interrupted=interrupted, error=error)

    def run(self) -> AnswerResult:
        """Consume the whole stream (for batch work) and return the record."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


@dataclass(frozen=True)
class WarmUpResult:
    seconds: float
    prompt_tokens: int | None
    cached_tokens: int | None


class ModelClient:
    def __init__(self, settings: Settings, *, http_client: httpx.Client | None = None) -> None:
        self.settings = settings
        timeout = httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s)
        self._http = http_client or httpx.Client(timeout=timeout)
        # The openai package brings its own HTTP stack (httpx2 since openai 3): give it its own
        # timeout type and let it own its connection pool; ours serves discovery only.
        self.openai = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key, max_retries=settings.max_retries,
            timeout=openai.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s))
        self._caps: Capabilities | None = None
        self._lock = threading.Lock()

    @property
    def root_url(self) -> str:
        """The server root (vLLM's /tokenize, /metrics and /health sit beside /v1)."""
        return re.sub(r"/v1/?$", "", self.settings.base_url.rstrip("/"))

    def close(self) -> None:
        self._http.close()
        self.openai.close()

    # discovery -------------------------------------------------------------------------------
    def capabilities(self, *, refresh: bool = False) -> Capabilities:
        with self._lock:
            caps = self._caps
            # A failure is kept only briefly: the service is seen soon after it comes up, yet
            # a page that reruns on every click does not wait on a dead address each time.
            ttl = (self.settings.capability_ttl_s if caps is not None and caps.reachable
                   and caps.error is None else min(FAILURE_TTL_S, self.settings.capability_ttl_s))
            fresh = caps is not None and time.monotonic() - caps.checked_at < ttl
            if refresh or not fresh:
                self._caps = self._discover()
            assert self._caps is not None
            return self._caps

    def _get(self, path: str, *, absolute: bool = False) -> httpx.Response | None:
        url = path if absolute else f"{self.root_url}{path}"
        try:
            response = self._http.get(url, headers=self._auth_headers(),
                                      timeout=self.settings.connect_timeout_s * 2)
        except httpx.HTTPError:
            return None
        return response

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}"}

    def _discover(self) -> Capabilities:
        base = self.settings.base_url
        try:
            response = self._http.get(f"{base.rstrip('/')}/models", headers=self._auth_headers(),
                                      timeout=self.settings.connect_timeout_s * 2)
        except httpx.HTTPError as exc:
            return Capabilities(base, False, error=f"Nothing is answering at {base} ({exc.__class__.__name__}): {START_HINT}.",
                                context_length=self.settings.context_length, checked_at=time.monotonic())
        if response.status_code == 401:
            return Capabilities(base, True, error="The server refused the API key: set SPARKDOCS_API_KEY.",
                                context_length=self.settings.context_length, checked_at=time.monotonic())
        try:
            data = response.json().get("data", [])
        except ValueError:
            data = []
        models = tuple(str(m.get("id")) for m in data if isinstance(m, dict))
        wanted = self.settings.model
        model: str | None = wanted
        note: str | None = None
        if wanted not in models:
            if len(models) == 1:
                model = models[0]
                note = f"{wanted!r} is not served here; using the only served model {model!r}."
            elif not models:
                model, note = None, "The server lists no models."
            else:
                model, note = None, f"{wanted!r} is not served; choose one of {', '.join(models)} with SPARKDOCS_MODEL."
        entry = next((m for m in data if isinstance(m, dict) and m.get("id") == model), {})
        context = entry.get("max_model_len")
        owned = str(entry.get("owned_by", ""))
        metrics = self._metrics()
        kind = "vllm" if (owned == "vllm" or metrics is not None) else "unknown"
        if not context:
            context = self._llama_cpp_context()
            if context:
                kind = "llama.cpp"
        tokenize = self._find_tokenize(model)
        if tokenize == "/extras/tokenize":
            kind = "llama-cpp-python"
        return Capabilities(
            base, True, models=models, model=model, model_note=note,
            context_length=int(context) if context else self.settings.context_length,
            context_from_server=bool(context), tokenize_path=tokenize, metrics=metrics,
            server_kind=kind, checked_at=time.monotonic())

    def _llama_cpp_context(self) -> int | None:
        response = self._get("/props")
        if response is None or response.status_code != 200:
            return None
        try:
            return int(response.json()["default_generation_settings"]["n_ctx"])
        except (ValueError, KeyError, TypeError):
            return None

    def _metrics(self) -> ServerMetrics | None:
        response = self._get("/metrics")
        if response is None or response.status_code != 200 or "vllm:" not in response.text:
            return None
        try:
            return parse_metrics(response.text)
        except ValueError as exc:
            log.warning("unreadable /metrics: %s", exc)
            return None

    def metrics(self) -> ServerMetrics | None:
        return self._metrics()

    def _find_tokenize(self, model: str | None) -> str | None:
        probes = (("/tokenize", {"model": model, "prompt": "hi"}),  # vLLM
                  ("/tokenize", {"content": "hi"}),  # llama.cpp's own server
                  ("/extras/tokenize", {"input": "hi", "model": model}))  # llama-cpp-python
        for path, payload in probes:
            try:
                response = self._http.post(f"{self.root_url}{path}", json=payload,
                                           headers=self._auth_headers(),
                                           timeout=self.settings.connect_timeout_s * 2)
            except httpx.HTTPError:
                continue
            if response.status_code == 200 and "tokens" in response.text:
                return path
        return None

    def count_tokens(self, text: str) -> int | None:
        """The server's own count for a text (other models than Llama 3); None if it cannot."""
        caps = self.capabilities()
        if caps.tokenize_path is None:
            return None
        if caps.tokenize_path == "/extras/tokenize":
            payload: dict[str, object] = {"input": text, "model": caps.model}
        elif caps.server_kind == "llama.cpp":
            payload = {"content": text, "add_special": False}
        else:
            payload = {"model": caps.model, "prompt": text, "add_special_tokens": False}
        try:
            response = self._http.post(f"{self.root_url}{caps.tokenize_path}", json=payload,
                                       headers=self._auth_headers())
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return int(body.get("count") or len(body.get("tokens", [])))

    def health(self) -> bool | None:
        """True/False from /health; None when the server has no such endpoint."""
        response = self._get("/health")
        if response is None:
            return False
        if response.status_code == 404:
            return None
        return response.status_code == 200

    # requests --------------------------------------------------------------------------------
    def resolve_model(self) -> str:
        caps = self.capabilities()
        if not caps.reachable:
            raise ServiceUnavailableError(caps.error or f"Nothing is answering at {caps.base_url}.")
        if caps.model is None:
            raise ModelNotFoundError(caps.model_note or f"No model at {caps.base_url}.")
        if caps.model_note:
            log.info(caps.model_note)
        return caps.model

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None,
               temperature: float | None = None, model: str | None = None,
               cache_salt: str | None = None) -> AnswerStream:
        return AnswerStream(self, messages, model=model or self.resolve_model(),
                            max_tokens=max_tokens or self.settings.answer_tokens,
                            temperature=self.settings.temperature if temperature is None else temperature,
                            cache_salt=cache_salt)

    def warm_up(self, messages: Sequence[ChatMessage], *, model: str | None = None,
                cache_salt: str | None = None) -> WarmUpResult:
        """Send the next question's exact prefix with max_tokens=1 so its KV blocks are cached."""
        model = model or self.resolve_model()
        started = time.perf_counter()
        try:
            response = self.openai.chat.completions.create(
                model=model, messages=[m.as_dict() for m in messages],  # type: ignore[misc]
                max_tokens=1, temperature=0.0, stream=False, **salted(cache_salt))
        except openai.OpenAIError as exc:
            raise _service_error(exc, settings=self.settings, model=model) from exc
        usage = getattr(response, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return WarmUpResult(time.perf_counter() - started,
                            usage.prompt_tokens if usage else None,
                            getattr(details, "cached_tokens", None) if details else None)
