"""A small fake OpenAI-compatible server, only for what a real server cannot be made to do:
vLLM's usage and metrics shapes, a 400 overflow body, a stream cut in the middle, a slow
server, a 503, latency for scheduling tests, and the stream faults of `StreamFault` (a stream
that never ends, one that stalls, HTML or broken events instead of a stream) and odd
`/v1/models` bodies (`models_body`)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VLLM_METRICS = """# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",gpu_memory_utilization="0.8",num_gpu_blocks="12000"} 1.0
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 10000.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 7500.0
# HELP vllm:kv_cache_usage_perc KV-cache usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
"""


class StreamFault(Enum):
    """How a chat stream misbehaves (None in `Behaviour.stream_fault`: it does not)."""

    ENDLESS = "endless"  # ignores max_tokens: words until the client leaves
    STALL = "stall"  # `stall_after_chunks` words, then silence for `stall_s`
    KEEPALIVE_ONLY = "keepalive-only"  # SSE comments forever, never a word (no read timeout fires)
    HTML = "html"  # 200 with an HTML page (a proxy's login page) instead of an event stream
    NOT_JSON = "not-json"  # two words, then an event whose data is not JSON
    ERROR_EVENT = "error-event"  # two words, then vLLM's mid-stream error event
    NO_FINISH = "no-finish"  # words and [DONE], but never a finish_reason


MODELS_NOT_SET = object()


@dataclass
class Behaviour:
    """What the next requests do. Tests mutate it between calls."""

    model: str = "nvidia/Llama-3.3-70B-Instruct-FP8"
    max_model_len: int = 65_536
    answer: str = "The answer is forty-two."
    chunks: list[str] | None = None  # sent exactly as given instead of the answer's words
    reply: Any = None  # a function of the request's messages giving the answer (a scripted model)
    latency_s: float = 0.0  # before the first token
    token_delay_s: float = 0.0
    cut_after_chunks: int | None = None
    cut_first_streams: int = 0  # the next N streams break before their first token (an engine died)
    status: int = 200
    status_times: int = 0  # how many requests get `status` before normal service resumes
    error_body: dict[str, Any] | None = None
    cached_tokens: int | None = 1024
    api_key: str | None = None
    fail_when_prompt_contains: str | None = None
    stream_fault: StreamFault | None = None
    stall_after_chunks: int = 2
    stall_s: float = 30.0
    models_body: Any = MODELS_NOT_SET  # the raw JSON /v1/models answers (a list, None, …)
    models_status: int = 200  # with models_body
    models_html: bool = False  # /v1/models answers 200 with an HTML page
    tokenize_body: Any = MODELS_NOT_SET  # the raw JSON /tokenize answers (after discovery's probe)
    tokenize_scale: float = 1.0  # /tokenize counts Llama 3 tokens × this (another model's tokenizer)
    requests: list[dict[str, Any]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # "GET /metrics", "POST /tokenize", … in order
    client_left: threading.Event = field(default_factory=threading.Event)  # mid-stream, a fault's
    tokenize_requests: int = 0  # counts of texts other than discovery's probe
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A busy server: discovery (GET /v1/models, /metrics, /props, /health) answers only after
    # `discovery_delay_s`; with `serial`, one completion at a time and discovery waits for it
    # (llama-cpp-python's one lock); a stream's `prefill_s` comes after its headers, and a
    # client that leaves during it ends it there (as vLLM aborts it), counted in `left_early`.
    discovery_delay_s: float = 0.0
    serial: bool = False
    serial_lock: threading.Lock = field(default_factory=threading.Lock)
    prefill_s: float = 0.0
    left_early: int = 0
    # /metrics: `metrics_text` as given (a recorded text), else VLLM_METRICS; with
    # `max_num_seqs`, its running and waiting gauges are this server's own chat requests in
    # flight, as vLLM's scheduler would have them (at most max_num_seqs running, the rest waiting)
    metrics_text: str | None = None
    max_num_seqs: int | None = None


def _metrics_text(b: Behaviour) -> str:
    text = b.metrics_text if b.metrics_text is not None else VLLM_METRICS
    if b.max_num_seqs is None:
        return text
    with b.lock:
        running, waiting = min(b.in_flight, b.max_num_seqs), max(0, b.in_flight - b.max_num_seqs)
    return (text.replace('vllm:num_requests_running{engine="0",model_name="m"} 2.0',
                         f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}.0')
            .replace('vllm:num_requests_waiting{engine="0",model_name="m"} 1.0',
                     f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}.0'))


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _html(self) -> None:
        data = b"<!doctype html><html><body><h1>Sign in</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.behaviour.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._json(401, {"error": {"message": "Unauthorized", "type": "AuthenticationError", "code": 401}})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        b = self.behaviour
        b.seen.append(f"GET {self.path}")
        if self.path in ("/v1/models", "/metrics", "/props", "/health"):
            self._busy_discovery()
        if self.path == "/v1/models":
            if not self._authorised():
                return
            if b.models_html:
                self._html()
            elif b.models_body is not MODELS_NOT_SET:
                self._json(b.models_status, b.models_body)
            else:
                self._json(200, {"object": "list", "data": [
                    {"id": b.model, "object": "model", "owned_by": "vllm", "max_model_len": b.max_model_len}]})
        elif self.path == "/metrics":
            data = _metrics_text(b).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/stats":
            self._json(200, {"max_in_flight": b.max_in_flight, "requests": len(b.requests)})
        elif self.path == "/health":
            self._json(200, {})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def _busy_discovery(self) -> None:
        b = self.behaviour
        time.sleep(b.discovery_delay_s)
        if b.serial:
            with b.serial_lock:  # waits for the completion being served
                pass

    def _client_left(self) -> bool:
        """The client closed its end (a cancel): its socket reads as ended."""
        import select
        import socket

        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _prefill(self) -> bool:
        """`prefill_s` of reading the prompt; False when the client left during it."""
        b = self.behaviour
        end = time.monotonic() + b.prefill_s
        while time.monotonic() < end:
            if self._client_left():
                with b.lock:
                    b.left_early += 1
                b.client_left.set()
                return False
            time.sleep(0.02)
        return True

    def do_POST(self) -> None:  # noqa: N802
        b = self.behaviour
        if b.serial and self.path == "/v1/chat/completions":
            with b.serial_lock:  # the one slot: the next request waits here
                self._post(b)
            return
        self._post(b)

    def _post(self, b: Behaviour) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        b.seen.append(f"POST {self.path}")
        if self.path == "/tokenize":
            if b.tokenize_body is not MODELS_NOT_SET and body.get("prompt") != "hi":  # not the probe
                self._json(200, b.tokenize_body)
            elif body.get("prompt", "hi") == "hi":  # discovery's probe
                self._json(200, {"count": 3, "max_model_len": b.max_model_len, "tokens": [1, 2, 3]})
            else:  # a Llama 3 server counts as Llama 3 does; another model by its own scale
                from sparkdocs.tokens import llama3

                n = int(llama3().count(str(body["prompt"])) * b.tokenize_scale + 0.5)
                with b.lock:
                    b.tokenize_requests += 1
                self._json(200, {"count": n, "max_model_len": b.max_model_len,
                                 "tokens": list(range(n))})
            return
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "not found"}})
            return
        if not self._authorised():
            return
        with b.lock:
            b.requests.append(body)
            b.in_flight += 1
            b.max_in_flight = max(b.max_in_flight, b.in_flight)
            fail = b.status_times > 0
            if fail:
                b.status_times -= 1
        try:
            prompt = json.dumps(body.get("messages"))
            if fail or (b.fail_when_prompt_contains and b.fail_when_prompt_contains in prompt):
                self._json(b.status, b.error_body or {"error": {"message": "Service Unavailable", "code": b.status}})
                return
            time.sleep(b.latency_s)
            if b.stream_fault is StreamFault.HTML:
                self._html()
                return
            if not body.get("stream"):
                if b.prefill_s and not self._prefill():
                    return
                self._json(200, {"id": "x", "object": "chat.completion", "model": b.model, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": b.answer[:1]}, "finish_reason": "length"}],
                    "usage": self._usage(1)})
                return
            self._stream(body)
        finally:
            with b.lock:
                b.in_flight -= 1

    def _usage(self, completion: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": 2048, "completion_tokens": completion,
                                 "total_tokens": 2048 + completion}
        if self.behaviour.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.behaviour.cached_tokens}
        return usage

    def _stream(self, body: dict[str, Any]) -> None:
        b = self.behaviour
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        if b.prefill_s and not self._prefill():
            return
        answer = b.reply(body["messages"]) if b.reply is not None else b.answer
        words = list(b.chunks) if b.chunks is not None else answer.split(" ")
        max_tokens = body.get("max_tokens") or len(words)
        emitted = words[:max_tokens]
        finish = "stop" if len(emitted) == len(words) else "length"

        def send(obj: Any) -> None:
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
            self.wfile.flush()

        def word_chunk(text: str) -> dict[str, Any]:
            return {"id": "x", "object": "chat.completion.chunk", "model": b.model, "choices": [
                {"index": 0, "delta": {"content": text}, "finish_reason": None}]}

        with b.lock:
            cut_now = b.cut_first_streams > 0
            if cut_now:
                b.cut_first_streams -= 1
        if cut_now:
            self.wfile.write(b"data: {\"broken")
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        fault = b.stream_fault
        try:
            if fault is not None and self._fault(fault, words, send, word_chunk):
                return
        except OSError:  # the client left (a cancel, a length bound, a deadline)
            b.client_left.set()
            return
        for index, word in enumerate(emitted):
            if b.cut_after_chunks is not None and index >= b.cut_after_chunks:
                self.wfile.write(b"data: {\"broken")
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            send({"id": "x", "object": "chat.completion.chunk", "model": b.model, "choices": [
                {"index": 0, "delta": {"content": word if index == 0 or b.chunks is not None else " " + word},
                 "finish_reason": None}]})
            time.sleep(b.token_delay_s)
        send({"id": "x", "object": "chat.completion.chunk", "model": b.model,
              "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            send({"id": "x", "object": "chat.completion.chunk", "model": b.model, "choices": [],
                  "usage": self._usage(len(emitted))})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _fault(self, fault: StreamFault, words: list[str], send: Any, word_chunk: Any) -> bool:
        """Play one stream fault; True when the stream is over (else the normal stream follows)."""
        b = self.behaviour
        if fault is StreamFault.ENDLESS:
            index = 0
            while True:
                send(word_chunk(words[index % len(words)] + " "))
                index += 1
                time.sleep(b.token_delay_s)
        if fault is StreamFault.KEEPALIVE_ONLY:
            while True:
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                time.sleep(0.05)
        if fault is StreamFault.STALL:
            for word in words[:b.stall_after_chunks]:
                send(word_chunk(word + " "))
            time.sleep(b.stall_s)
            return False
        if fault in (StreamFault.NOT_JSON, StreamFault.ERROR_EVENT):
            for word in words[:2]:
                send(word_chunk(word + " "))
            if fault is StreamFault.NOT_JSON:
                self.wfile.write(b"data: <html>Bad Gateway</html>\n\n")
            else:
                send({"error": {"message": "EngineCore encountered an issue [/INST]", "code": 500}})
            self.wfile.flush()
            time.sleep(0.2)
            return True
        if fault is StreamFault.NO_FINISH:
            for word in words:
                send(word_chunk(word + " "))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            return True
        return False


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that leaves mid-stream (cancel, a bound, a deadline) is expected here."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeServer:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        handler = type("Handler", (_Handler,), {"behaviour": self.behaviour})
        server_class = type("Server", (_QuietServer,), {"request_queue_size": 256})
        self._server = server_class(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":  # a separate process, so benchmarks do not share the GIL with it
    import sys

    fake = FakeServer()
    fake.behaviour.latency_s = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    print(fake.base_url, flush=True)
    fake._server.serve_forever()
