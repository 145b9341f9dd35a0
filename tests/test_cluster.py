"""sparkdocs behind vLLM's router: the engines it lists, each asked itself (a mock router and
engines answer as vllm-router 0.1.17 and vLLM do); their figures summed; the routing key on
every model request; and a stream that broke before its first token asked once more (a real
socket cut by the fake server), while one broken mid-answer is kept as broken off."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from fakeserver import VLLM_METRICS, FakeServer
from hypothesis import given
from hypothesis import strategies as st

from sparkdocs.client import (
    ROUTING_HEADER,
    ModelClient,
    ServerMetrics,
    StreamEnd,
    routing_key,
)
from sparkdocs.cluster import Engine, combined_metrics, engines_up, listed_workers
from sparkdocs.config import Settings
from sparkdocs.doctor import CheckStatus, run_checks
from sparkdocs.tokens import ChatMessage

MODEL = "nvidia/Llama-3.3-70B-Instruct-FP8"
MESSAGES = (ChatMessage("system", "s"), ChatMessage("user", "u"))


def _engine_metrics(blocks: int, usage: float, running: float, waiting: float) -> str:
    return (VLLM_METRICS.replace('num_gpu_blocks="12000"', f'num_gpu_blocks="{blocks}"')
            .replace("kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25",
                     f"kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} {usage}")
            .replace("num_requests_running{engine=\"0\",model_name=\"m\"} 2.0",
                     f"num_requests_running{{engine=\"0\",model_name=\"m\"}} {running}")
            .replace("num_requests_waiting{engine=\"0\",model_name=\"m\"} 1.0",
                     f"num_requests_waiting{{engine=\"0\",model_name=\"m\"}} {waiting}"))


def _router(tmp_path: Path, *, down: frozenset[str] = frozenset()):
    """A router at router.test listing three engines, as vllm-router answers /list_workers; each
    engine answers for itself; the router forwards /v1/* and /metrics to the first one."""
    seen: list[httpx2.Request] = []
    engines = {"e1.test": (1000, 0.5, 2.0, 0.0), "e2.test": (3000, 0.1, 1.0, 3.0),
               "e3.test": (2000, 0.0, 0.0, 0.0)}

    def engine(host: str, request: httpx2.Request) -> httpx2.Response:
        if host in down:
            raise httpx2.ConnectError("connection refused")
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"object": "list", "data": [
                {"id": MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 8192}]})
        if request.url.path == "/metrics":
            return httpx2.Response(200, text=_engine_metrics(*engines[host]))
        return httpx2.Response(404, json={"detail": "Not Found"})

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        host = request.url.host
        if host == "router.test":
            if request.url.path == "/list_workers":
                return httpx2.Response(200, json={"urls": [f"http://{h}:8000" for h in engines]})
            return engine("e1.test", request)
        return engine(host, request)

    settings = Settings(base_url="http://router.test:8100/v1", cache_dir=tmp_path, max_retries=0,
                        api_key="k")  # type: ignore[call-arg]
    return ModelClient(settings, transport=httpx2.MockTransport(handle)), seen


def test_every_engine_the_router_lists_is_asked_itself_and_summed(tmp_path):
    client, seen = _router(tmp_path)
    caps = client.capabilities()
    assert [e.url for e in caps.engines] == ["http://e1.test:8000", "http://e2.test:8000",
                                             "http://e3.test:8000"]
    assert all(e.up and e.model == MODEL and e.context_length == 8192 for e in caps.engines)
    assert [e.metrics.kv_capacity_tokens for e in caps.engines] == [16_000, 48_000, 32_000]
    # the router forwards /metrics to one engine; the cluster's figures are all of them
    assert caps.metrics.kv_capacity_tokens == 96_000
    assert caps.metrics.running == 3.0 and caps.metrics.waiting == 3.0
    assert caps.metrics.kv_cache_usage == pytest.approx((0.5 * 16 + 0.1 * 48) / 96)
    # each engine was asked with the key (its /v1/* needs it)
    asked = [r for r in seen if r.url.host == "e2.test" and r.url.path == "/v1/models"]
    assert asked and asked[0].headers["authorization"] == "Bearer k"
    assert engines_up(caps.engines) == 3


def test_doctor_lists_every_engine_and_fails_on_one_down(tmp_path):
    client, _ = _router(tmp_path, down=frozenset({"e3.test"}))
    checks = {c.name: c for c in run_checks(client)}
    assert checks["engines"].status is CheckStatus.FAIL and "2 of 3" in checks["engines"].detail
    down = checks["engine http://e3.test:8000"]
    assert down.status is CheckStatus.FAIL and down.as_dict()["engine"]["up"] is False
    up = checks["engine http://e2.test:8000"].as_dict()["engine"]
    assert up["context_length"] == 8192 and up["kv_capacity_tokens"] == 48_000
    assert up["running"] == 1.0 and up["waiting"] == 3.0
    json.dumps([c.as_dict() for c in checks.values()])  # what `doctor --json` prints
    assert engines_up(client.capabilities().engines) == 2


def test_a_single_server_lists_no_engines(tmp_path):
    with FakeServer() as server:
        client = ModelClient(Settings(base_url=server.base_url, cache_dir=tmp_path))  # type: ignore[call-arg]
        caps = client.capabilities()
        assert caps.engines == () and engines_up(caps.engines) == 1
        assert not [c for c in run_checks(client) if c.name.startswith("engine")]


@given(st.lists(st.tuples(st.integers(1, 10_000), st.floats(0, 1), st.integers(0, 64),
                          st.integers(0, 64), st.booleans()), min_size=1, max_size=6))
def test_summed_figures_are_the_sum_of_the_engines_that_serve(rows):
    engines = [Engine(f"http://e{i}:8000", up, metrics=ServerMetrics(
        kv_cache_usage=usage, block_size=128, num_gpu_blocks=blocks, running=running,
        waiting=waiting, prefix_caching_enabled=True)) for i, (blocks, usage, running, waiting, up)
        in enumerate(rows)]
    serving = [r for r in rows if r[4]]
    total = combined_metrics(engines)
    if not serving:
        assert total is None
        return
    assert total is not None
    assert total.kv_capacity_tokens == 128 * sum(r[0] for r in serving)
    assert total.running == sum(r[2] for r in serving) and total.waiting == sum(r[3] for r in serving)
    assert min(r[1] for r in serving) - 1e-9 <= total.kv_cache_usage <= max(r[1] for r in serving) + 1e-9
    assert engines_up(engines) == len(serving)


def test_list_workers_answers_are_read_strictly():
    assert listed_workers({"urls": ["http://a:8000/", "https://b:8000"]}) == ("http://a:8000", "https://b:8000")
    assert listed_workers({"urls": ["file:///etc/passwd"]}) == ()
    for odd in ({"urls": "http://a"}, {"urls": [1]}, [], None, {"detail": "Not Found"}):
        assert listed_workers(odd) is None


def test_the_routing_key_rides_on_every_model_request(tmp_path):
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"data": [{"id": MODEL, "owned_by": "vllm"}]})
        if request.url.path == "/v1/chat/completions":
            if json.loads(request.content).get("stream"):
                return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=(
                    b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
                    b"data: [DONE]\n\n"))
            return httpx2.Response(200, json={"choices": [{"index": 0, "message": {
                "role": "assistant", "content": "o"}, "finish_reason": "length"}]})
        return httpx2.Response(404)

    client = ModelClient(Settings(base_url="http://router.test/v1", cache_dir=tmp_path),  # type: ignore[call-arg]
                         transport=httpx2.MockTransport(handle))
    key = routing_key("sha256-of-the-document", "alice")
    client.stream(MESSAGES, routing_key=key).run()
    client.warm_up(MESSAGES, routing_key=key)
    client.stream(MESSAGES).run()
    chats = [r for r in seen if r.url.path == "/v1/chat/completions"]
    assert [r.headers.get(ROUTING_HEADER) for r in chats] == [key, key, None]
    # stable, per document and per user, per part; and it names neither
    assert key == routing_key("sha256-of-the-document", "alice")
    assert len({key, routing_key("sha256-of-the-document", "bob"), routing_key("other", "alice"),
                routing_key("sha256-of-the-document", "alice", part=2)}) == 4
    assert "alice" not in key and "document" not in key


@pytest.mark.integration
def test_a_stream_broken_before_its_first_token_is_asked_once_more(tmp_path):
    with FakeServer() as server:
        client = ModelClient(Settings(base_url=server.base_url, cache_dir=tmp_path, max_retries=0))  # type: ignore[call-arg]
        server.behaviour.cut_first_streams = 1
        result = client.stream(MESSAGES).run()
        assert result.end is StreamEnd.FINISHED and result.answer == "The answer is forty-two."
        assert len(server.behaviour.requests) == 2
        # twice in a row: recorded as broken, not asked a third time
        server.behaviour.requests.clear()
        server.behaviour.cut_first_streams = 2
        twice = client.stream(MESSAGES).run()
        assert twice.end is StreamEnd.BROKEN and twice.answer == "" and "broke off" in twice.error
        assert len(server.behaviour.requests) == 2


@pytest.mark.integration
def test_an_answer_broken_mid_stream_is_kept_as_broken_off_and_not_asked_again(tmp_path):
    with FakeServer() as server:
        client = ModelClient(Settings(base_url=server.base_url, cache_dir=tmp_path, max_retries=0))  # type: ignore[call-arg]
        server.behaviour.cut_after_chunks = 2
        result = client.stream(MESSAGES).run()
        assert result.end is StreamEnd.BROKEN and result.interrupted
        assert result.answer == "The answer" and "partial answer is kept" in result.error
        assert len(server.behaviour.requests) == 1


@pytest.mark.integration
def test_the_server_page_lists_every_engine_and_the_one_down(monkeypatch, tmp_path):
    """The Server page in Streamlit's AppTest, its service a fake vLLM whose /list_workers
    answer is replaced by two engines, one down."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import sparkdocs.cluster

    engines = (Engine("http://10.0.0.1:8000", True, model=MODEL, context_length=8192,
                      metrics=ServerMetrics(kv_cache_usage=0.25, block_size=128,
                                            num_gpu_blocks=100, running=2, waiting=1)),
               Engine("http://10.0.0.2:8000", False, error="does not answer"))
    monkeypatch.setattr(sparkdocs.cluster, "discover_engines", lambda client: engines)
    with FakeServer() as server:
        for name, value in {"SPARKDOCS_BASE_URL": server.base_url,
                            "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
                            "SPARKDOCS_MAX_RETRIES": "0"}.items():
            monkeypatch.setenv(name, value)
        st.cache_resource.clear()
        monkeypatch.setattr(st, "get_option", lambda key, real=st.get_option: (
            "127.0.0.1" if key == "server.address" else real(key)))
        try:
            at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"),
                                   default_timeout=60).run()
            at.switch_page("pages/server.py").run()
            assert not at.exception
            table = at.dataframe[0].value
            assert list(table["engine"]) == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
            assert list(table["state"]) == ["serving", "down"]
            assert list(table["KV tokens"]) == ["12,800", "—"]
            assert list(table["running"]) == ["2", "—"] and table["why down"][1] == "does not answer"
            assert any("1 of 2" in m.value for m in at.markdown)
            # the figures shown are the engines' sum (here the one that serves)
            assert {m.label: m.value for m in at.metric}["KV cache used"] == "25%"
        finally:
            st.cache_resource.clear()


@pytest.mark.integration
def test_the_real_router_routes_by_the_routing_key_sparkdocs_sends(tmp_path):
    """The real vllm-router (consistent_hash) over two counting workers: the requests sparkdocs
    sends with a routing key stick to one worker per key and spread over both; without a key
    the router has nothing to hash and keeps to one. The fake workers only count."""
    import os
    import signal
    import subprocess
    import time

    from vllm_tier import free_port

    binary = Path.home() / ".cache" / "sparkdocs" / "router-venv" / "bin" / "vllm-router"
    if not binary.exists():
        pytest.fail("vllm-router is not installed: run .ci/install-vllm-router (.ci/run does)")
    with FakeServer() as first, FakeServer() as second:
        workers = [first.base_url.removesuffix("/v1"), second.base_url.removesuffix("/v1")]
        port = free_port()
        with (tmp_path / "router.log").open("wb") as log:
            router = subprocess.Popen(
                [str(binary), "--host", "127.0.0.1", "--port", str(port), "--worker-urls",
                 *workers, "--policy", "consistent_hash", "--prometheus-port", str(free_port())],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx2.get(f"http://127.0.0.1:{port}/list_workers", timeout=1).json()["urls"]:
                        break
                except (httpx2.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.3)
            client = ModelClient(Settings(base_url=f"http://127.0.0.1:{port}/v1",  # type: ignore[call-arg]
                                          cache_dir=tmp_path, max_retries=0))

            def worker_of(key: str | None) -> int:
                counts = [len(first.behaviour.requests), len(second.behaviour.requests)]
                assert client.stream(MESSAGES, routing_key=key).run().error is None
                grown = [len(first.behaviour.requests) - counts[0],
                         len(second.behaviour.requests) - counts[1]]
                assert sorted(grown) == [0, 1]
                return grown.index(1)

            keys = [routing_key(f"document-{n}", "alice") for n in range(16)]
            chosen = [worker_of(key) for key in keys]
            assert [worker_of(key) for key in keys] == chosen  # each key sticks
            assert set(chosen) == {0, 1}  # and the keys spread over both workers
            assert len({worker_of(None) for _ in range(6)}) == 1
        finally:
            os.killpg(router.pid, signal.SIGTERM)
            router.wait(timeout=30)
