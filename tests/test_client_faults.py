"""Client behaviour for what a real server cannot be made to do (fake server)."""

from __future__ import annotations

import threading
import time

import pytest

from fakeserver import FakeServer
from sparkdocs.client import ModelClient, parse_metrics
from sparkdocs.config import Settings
from sparkdocs.errors import (AuthenticationError, ContextOverflowError, ModelNotFoundError,
                              ServiceTimeoutError, ServiceUnavailableError)
from sparkdocs.tokens import ChatMessage

pytestmark = pytest.mark.integration
MESSAGES = [ChatMessage("system", "s"), ChatMessage("user", "u")]


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


def client_for(server: FakeServer, **overrides) -> ModelClient:
    return ModelClient(Settings(**{"base_url": server.base_url, "max_retries": 1, **overrides}))


def test_stream_yields_text_then_vllm_usage_with_cached_tokens(server):
    client = client_for(server)
    stream = client.stream(MESSAGES, max_tokens=50)
    text = "".join(stream)
    result = stream.result
    assert text == result.answer == "The answer is forty-two."
    assert result.finish_reason == "stop" and not result.truncated and not result.interrupted
    assert (result.prompt_tokens, result.completion_tokens, result.cached_tokens) == (2048, 4, 1024)
    assert result.ttft_s is not None and result.decode_tokens_per_s is not None
    assert server.behaviour.requests[0]["stream_options"] == {"include_usage": True}


def test_cut_off_answer_is_flagged(server):
    result = client_for(server).stream(MESSAGES, max_tokens=2).run()
    assert result.truncated and result.answer == "The answer"


def test_cached_tokens_zero_when_vllm_omits_details(server):
    server.behaviour.cached_tokens = None
    assert client_for(server).stream(MESSAGES).run().cached_tokens is None


def test_capabilities_from_vllm_models_and_metrics(server):
    caps = client_for(server).capabilities()
    assert caps.reachable and caps.server_kind == "vllm"
    assert caps.context_length == 65_536 and caps.context_from_server
    assert caps.tokenize_path == "/tokenize"
    metrics = caps.metrics
    assert metrics.kv_capacity_tokens == 192_000 and metrics.prefix_caching_enabled
    assert metrics.prefix_hit_rate == 0.75 and metrics.running == 2 and metrics.waiting == 1


def test_only_served_model_is_picked_and_said(server):
    caps = client_for(server, model="some/other-model").capabilities()
    assert caps.model == server.behaviour.model and "not served here" in caps.model_note


def test_nothing_listening_says_how_to_start_it():
    client = ModelClient(Settings(base_url="http://127.0.0.1:9/v1", max_retries=0))
    assert not client.capabilities().reachable
    with pytest.raises(ServiceUnavailableError, match="docker compose up -d vllm"):
        client.stream(MESSAGES).run()


def test_context_overflow_400_carries_the_servers_numbers(server):
    server.behaviour.status, server.behaviour.status_times = 400, 1
    server.behaviour.error_body = {"error": {
        "message": "This model's maximum context length is 65536 tokens. However, you requested "
                   "70000 tokens (69000 in the messages, 1000 in the completion).",
        "type": "BadRequestError", "code": 400}}
    with pytest.raises(ContextOverflowError, match="context 65,536") as info:
        client_for(server).stream(MESSAGES).run()
    assert info.value.context_length == 65_536


def test_503_is_retried_then_succeeds(server):
    server.behaviour.status, server.behaviour.status_times = 503, 1
    result = client_for(server).stream(MESSAGES).run()
    assert result.answer and len(server.behaviour.requests) == 2


def test_503_that_persists_becomes_a_clear_error(server):
    server.behaviour.status, server.behaviour.status_times = 503, 10
    with pytest.raises(ServiceUnavailableError, match="HTTP 503"):
        client_for(server).stream(MESSAGES).run()


def test_wrong_api_key(server):
    server.behaviour.api_key = "right"
    with pytest.raises(AuthenticationError, match="SPARKDOCS_API_KEY"):
        client_for(server, api_key="wrong").stream(MESSAGES, model="m").run()


def test_unknown_model_when_several_are_served(server):
    server.behaviour.status, server.behaviour.status_times = 404, 1
    server.behaviour.error_body = {"error": {"message": "The model `x` does not exist."}}
    with pytest.raises(ModelNotFoundError, match="SPARKDOCS_MODEL"):
        client_for(server).stream(MESSAGES, model="x").run()


def test_stream_cut_mid_answer_keeps_the_partial_answer(server):
    server.behaviour.cut_after_chunks = 2
    result = client_for(server).stream(MESSAGES).run()
    assert result.interrupted and result.answer == "The answer" and "broke off" in result.error


def test_slow_server_times_out_with_advice(server):
    server.behaviour.latency_s = 3
    with pytest.raises(ServiceTimeoutError, match="did not answer within"):
        client_for(server, request_timeout_s=0.5, max_retries=0).stream(MESSAGES).run()


def test_cancel_closes_the_stream_promptly(server):
    server.behaviour.answer = " ".join(["word"] * 400)
    server.behaviour.token_delay_s = 0.02
    stream = client_for(server).stream(MESSAGES, max_tokens=400)
    received = []
    started = time.perf_counter()
    for index, part in enumerate(stream):
        received.append(part)
        if index == 3:
            threading.Timer(0.0, stream.cancel).start()
            time.sleep(0.05)
    assert time.perf_counter() - started < 5
    assert stream.result.interrupted and stream.result.error == "stopped by the user"
    assert len(received) < 50


def test_warm_up_sends_max_tokens_1(server):
    result = client_for(server).warm_up(MESSAGES)
    assert server.behaviour.requests[-1]["max_tokens"] == 1
    assert result.seconds >= 0 and result.prompt_tokens == 2048


def test_parse_metrics_older_gpu_cache_name():
    metrics = parse_metrics("# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.5\n")
    assert metrics.kv_cache_usage == 0.5 and metrics.kv_capacity_tokens is None


def test_a_service_that_comes_up_is_seen_once_the_short_failure_ttl_passes(monkeypatch):
    import sparkdocs.client

    monkeypatch.setattr(sparkdocs.client, "FAILURE_TTL_S", 0.0)
    with FakeServer() as server:
        url = server.base_url
    client = ModelClient(Settings(base_url=url, max_retries=0, capability_ttl_s=3600))
    assert not client.capabilities().reachable  # the port is closed now
    import http.server
    import threading

    from fakeserver import _Handler, Behaviour

    handler = type("H", (_Handler,), {"behaviour": Behaviour()})
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    revived = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=revived.serve_forever, daemon=True).start()
    try:
        assert client.capabilities().reachable  # not the cached failure (the long TTL is 1 h)
    finally:
        revived.shutdown()
        revived.server_close()
