"""Client behaviour for what a real server cannot be made to do (fake server)."""

from __future__ import annotations

import threading
import time

import pytest
from fakeserver import FakeServer, StreamFault

from sparkdocs.client import (
    ModelClient,
    ServerKind,
    ServiceProblem,
    StreamEnd,
    Waiting,
    parse_metrics,
)
from sparkdocs.config import Settings
from sparkdocs.errors import (
    AuthenticationError,
    ContextOverflowError,
    ModelNotFoundError,
    ProtocolError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
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
    with client.stream(MESSAGES, max_tokens=50) as stream:
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
    client = client_for(server)
    caps = client.capabilities()
    assert caps.reachable and caps.server_kind is ServerKind.VLLM
    assert caps.context_length == 65_536 and caps.context_from_server
    assert client.tokenize_path() == "/tokenize"
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
    with stream:
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

    from fakeserver import Behaviour, _Handler

    handler = type("H", (_Handler,), {"behaviour": Behaviour()})
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    revived = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=revived.serve_forever, daemon=True).start()
    try:
        assert client.capabilities().reachable  # not the cached failure (the long TTL is 1 h)
    finally:
        revived.shutdown()
        revived.server_close()


# streams that never end, stall or are not streams --------------------------------------------
def test_a_stream_that_ignores_max_tokens_is_stopped_at_its_length_bound(server):
    server.behaviour.stream_fault = StreamFault.ENDLESS
    started = time.perf_counter()
    result = client_for(server).stream(MESSAGES, max_tokens=16).run()
    assert time.perf_counter() - started < 10
    assert result.interrupted and result.end is StreamEnd.TOO_LONG
    assert "the server sent more than 48 tokens for max_tokens=16; stopped" in result.error
    assert 16 <= len(result.answer.split()) <= 49  # the partial answer is kept


def test_one_huge_chunk_is_cut_at_the_character_bound(server):
    """The bound holds inside a chunk: a server sending 5 MB in one event does not get 5 MB
    printed and stored as the partial answer."""
    from sparkdocs.client import MAX_CHARS_PER_TOKEN, chunk_bound

    server.behaviour.chunks = ["x" * 5_000_000]
    result = client_for(server).stream(MESSAGES, max_tokens=16).run()
    assert result.end is StreamEnd.TOO_LONG and "characters for max_tokens=16" in result.error
    assert len(result.answer) <= chunk_bound(16) * MAX_CHARS_PER_TOKEN + 1


def test_a_stream_of_keep_alives_ends_at_the_answer_deadline(server):
    server.behaviour.stream_fault = StreamFault.KEEPALIVE_ONLY
    started = time.perf_counter()
    result = client_for(server, answer_deadline_s=1).stream(MESSAGES).run()
    assert time.perf_counter() - started < 8
    assert result.interrupted and result.end is StreamEnd.DEADLINE
    assert "no answer within 1 s" in result.error and "SPARKDOCS_ANSWER_DEADLINE_S" in result.error


@pytest.mark.parametrize("deadline_s", [float("inf"), 1e300])
def test_a_deadline_too_long_for_a_timer_is_refused_where_it_is_set(deadline_s):
    """Settings refuse it (one line naming the variable) before any timer sees it."""
    from sparkdocs.config import build_settings
    from sparkdocs.errors import ConfigError

    with (pytest.MonkeyPatch.context() as env,
          pytest.raises(ConfigError, match="SPARKDOCS_ANSWER_DEADLINE_S")):
        env.setenv("SPARKDOCS_ANSWER_DEADLINE_S", repr(deadline_s))
        build_settings()


def test_the_longest_deadline_settings_allow_runs_a_timer_without_a_crash(server):
    from sparkdocs.config import A_WEEK_S

    errors = []
    previous = threading.excepthook
    threading.excepthook = errors.append
    try:
        result = client_for(server, answer_deadline_s=A_WEEK_S).stream(MESSAGES).run()
    finally:
        threading.excepthook = previous
    assert result.answer == "The answer is forty-two." and not result.interrupted
    assert errors == []


def test_the_deadline_also_ends_events_and_their_heartbeats(server):
    server.behaviour.stream_fault = StreamFault.KEEPALIVE_ONLY
    stream = client_for(server, answer_deadline_s=1).stream(MESSAGES)
    started = time.perf_counter()
    with stream:
        events = list(stream.events(heartbeat_s=0.2))
    assert time.perf_counter() - started < 8
    assert events and all(isinstance(e, Waiting) for e in events)
    assert stream.result.end is StreamEnd.DEADLINE


def test_a_slow_endless_stream_ends_at_the_deadline_with_its_words_kept(server):
    server.behaviour.stream_fault = StreamFault.ENDLESS
    server.behaviour.token_delay_s = 0.1
    result = client_for(server, answer_deadline_s=1).stream(MESSAGES, max_tokens=1000).run()
    assert result.end is StreamEnd.DEADLINE and result.answer.startswith("The answer")


def test_a_stall_mid_answer_names_the_silence_and_the_setting(server):
    server.behaviour.stream_fault = StreamFault.STALL
    server.behaviour.stall_s = 5
    result = client_for(server, request_timeout_s=0.5, max_retries=0).stream(MESSAGES).run()
    assert result.interrupted and result.end is StreamEnd.STALLED
    assert result.answer == "The answer "
    assert "no text for 0.5 s" in result.error and "SPARKDOCS_REQUEST_TIMEOUT_S" in result.error


def test_html_instead_of_an_event_stream_is_a_protocol_error(server):
    server.behaviour.stream_fault = StreamFault.HTML
    with pytest.raises(ProtocolError, match="text/html") as info:
        client_for(server).stream(MESSAGES).run()
    assert "SPARKDOCS_BASE_URL" in str(info.value)


def test_an_event_that_is_not_json_ends_the_stream_saying_so(server):
    server.behaviour.stream_fault = StreamFault.NOT_JSON
    result = client_for(server).stream(MESSAGES).run()
    assert result.interrupted and result.end is StreamEnd.INVALID
    assert result.answer == "The answer " and "not JSON" in result.error
    assert "<html>Bad Gateway</html>" in result.error  # quoted, so the user sees what came


def test_a_mid_stream_error_event_is_reported_with_the_servers_words(server):
    server.behaviour.stream_fault = StreamFault.ERROR_EVENT
    result = client_for(server).stream(MESSAGES).run()
    assert result.interrupted and result.end is StreamEnd.BROKEN
    assert "EngineCore encountered an issue [/INST]" in result.error


def test_a_stream_without_a_finish_reason_is_flagged(server):
    server.behaviour.stream_fault = StreamFault.NO_FINISH
    result = client_for(server).stream(MESSAGES).run()
    assert result.interrupted and result.end is StreamEnd.BROKEN and "before its end" in result.error


def test_a_finished_answer_says_so(server):
    result = client_for(server).stream(MESSAGES).run()
    assert result.end is StreamEnd.FINISHED and not result.interrupted


def test_cancel_is_stopped_by_the_user(server):
    server.behaviour.stream_fault = StreamFault.KEEPALIVE_ONLY
    stream = client_for(server).stream(MESSAGES)
    threading.Timer(0.5, stream.cancel).start()
    result = stream.run()
    assert result.end is StreamEnd.STOPPED and result.error == "stopped by the user"


def test_terminal_control_sequences_are_stripped_from_answers_even_across_chunks(server):
    server.behaviour.chunks = ["Red \x1b[3", "1mtext\x1b[0m", " and \x1b]0;pwned\x07title",
                               " bell\x07 back\x08space\r\n", "tab\tok [/INST] \x1b", "[2Jend"]
    with client_for(server).stream(MESSAGES) as stream:
        parts = list(stream)
    text = "".join(parts)
    assert text == stream.result.answer == "Red text and title bell backspace\ntab\tok [/INST] end"
    assert not any("\x1b" in p or "\x07" in p for p in parts)


# /v1/models that is not the OpenAI shape; the key ----------------------------------------------
@pytest.mark.parametrize("body, shown", [([{"id": "m"}], "a JSON list"), (None, "null"),
                                          ({"data": "m"}, "a JSON object without a model list")])
def test_models_that_are_not_a_model_list_say_what_came_and_the_fix(server, body, shown):
    server.behaviour.models_body = body
    client = client_for(server)
    caps = client.capabilities()
    assert caps.reachable and caps.problem is ServiceProblem.NOT_OPENAI
    assert "/v1/models" in caps.error and shown in caps.error and "SPARKDOCS_BASE_URL" in caps.error
    with pytest.raises(ProtocolError, match="/v1/models"):
        client.stream(MESSAGES).run()


def test_models_as_html_say_text_html(server):
    server.behaviour.models_html = True
    caps = client_for(server).capabilities()
    assert caps.problem is ServiceProblem.NOT_OPENAI and "text/html" in caps.error


@pytest.mark.parametrize("value", ["abc", None, -5, True, [1]])
def test_a_max_model_len_that_is_not_a_number_falls_back_to_configuration(server, value):
    server.behaviour.models_body = {"data": [{"id": server.behaviour.model, "max_model_len": value}]}
    caps = client_for(server, context_length=8192).capabilities()
    assert caps.error is None and caps.model == server.behaviour.model
    assert caps.context_length == 8192 and not caps.context_from_server
    if value is not None:
        assert any("max_model_len" in note and "SPARKDOCS_CONTEXT_LENGTH" in note for note in caps.notes)


def test_a_numeric_string_max_model_len_is_taken(server):
    server.behaviour.models_body = {"data": [{"id": server.behaviour.model, "max_model_len": "4096"}]}
    caps = client_for(server).capabilities()
    assert caps.context_length == 4096 and caps.context_from_server


def test_a_wrong_key_is_reported_as_a_refused_key_not_a_missing_model(server):
    server.behaviour.api_key = "right"
    client = client_for(server, api_key="wrong")
    assert client.capabilities().problem is ServiceProblem.KEY_REFUSED
    with pytest.raises(AuthenticationError, match="refused the API key"):
        client.stream(MESSAGES).run()


# credentials in the base URL -------------------------------------------------------------------
def test_credentials_in_the_base_url_never_reach_a_message():
    client = ModelClient(Settings(base_url="http://alice:s3cret@127.0.0.1:9/v1", max_retries=0))
    caps = client.capabilities()
    assert "s3cret" not in caps.error and "alice" not in caps.error and "***@127.0.0.1:9" in caps.error
    assert "s3cret" not in caps.base_url
    with pytest.raises(ServiceUnavailableError) as info:
        client.stream(MESSAGES).run()
    assert "s3cret" not in str(info.value)
    with pytest.raises(ServiceUnavailableError) as info:
        client.stream(MESSAGES, model="m").run()  # the request's own failure, not discovery's
    assert "s3cret" not in str(info.value) and "***@" in str(info.value)


@pytest.mark.parametrize("body", [[1, 2], None, {"count": "many"}, {"tokens": "abc"}])
def test_a_tokenize_answer_of_another_shape_is_no_count_not_a_crash(server, body):
    server.behaviour.tokenize_body = body
    assert client_for(server).count_tokens("Hello there") is None


@pytest.mark.parametrize("fault", [None, StreamFault.KEEPALIVE_ONLY], ids=["prefill", "streaming"])
def test_sigterm_while_waiting_is_stopped_by_the_user_not_broke_off(server, fault):
    import signal
    import sys

    if fault is None:
        server.behaviour.latency_s = 5  # no headers yet: the request is in its "prefill"
    server.behaviour.stream_fault = fault
    stream = client_for(server).stream(MESSAGES)
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: sys.exit(143))  # as cli.main
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(SystemExit):
            stream.run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stream.result is not None and stream.result.end is StreamEnd.STOPPED
    assert stream.result.error == "stopped by the user"


def test_ctrl_c_in_the_callers_loop_then_cancel_is_stopped_by_the_user(server):
    server.behaviour.answer = " ".join(["word"] * 100)
    server.behaviour.token_delay_s = 0.02
    stream = client_for(server).stream(MESSAGES, max_tokens=100)
    with pytest.raises(KeyboardInterrupt), stream:
        for index, _ in enumerate(stream):
            if index == 2:
                raise KeyboardInterrupt  # as if it landed while the CLI wrote the text
    assert stream.result.end is StreamEnd.ABANDONED  # the reader left …
    stream.cancel()  # … and the CLI's handler says stop (cli ask does this)
    assert stream.result.end is StreamEnd.STOPPED and stream.result.error == "stopped by the user"
    assert stream.result.answer == "word word word"


def test_models_answering_5xx_is_a_failing_service_not_a_missing_model(server):
    server.behaviour.models_body, server.behaviour.models_status = {"error": "loading"}, 503
    client = client_for(server)
    caps = client.capabilities()
    assert caps.reachable and caps.problem is ServiceProblem.FAILING and "HTTP 503" in caps.error
    with pytest.raises(ServiceUnavailableError, match="HTTP 503"):
        client.stream(MESSAGES).run()


def test_a_base_url_that_is_no_address_is_a_config_error_not_an_httpx_one():
    from sparkdocs.errors import ConfigError

    with pytest.raises(ConfigError, match="SPARKDOCS_BASE_URL"):
        ModelClient(Settings(base_url="http://host:abc/v1"))


def test_a_server_that_holds_back_its_headers_is_waited_for_no_longer_than_the_deadline(server):
    server.behaviour.latency_s = 4
    started = time.perf_counter()
    with pytest.raises(ServiceTimeoutError, match="no answer within 1 s.*SPARKDOCS_ANSWER_DEADLINE_S"):
        client_for(server, answer_deadline_s=1, max_retries=0).stream(MESSAGES).run()
    assert time.perf_counter() - started < 3.5


# discovery asks only what it needs; a stream ends with its block --------------------------------
def test_discovery_sends_no_tokenize_request_and_the_first_count_probes_once(server):
    client = client_for(server)
    for _ in range(3):
        assert client.capabilities(refresh=True).model == "nvidia/Llama-3.3-70B-Instruct-FP8"
    assert not [r for r in server.behaviour.seen if "tokenize" in r]
    assert client.count_tokens("Hello there") and client.count_tokens("General Kenobi")
    # one probe, found on the first count and kept, then one request per count
    assert [r for r in server.behaviour.seen if "tokenize" in r] == ["POST /tokenize"] * 3
    assert server.behaviour.tokenize_requests == 2


def test_leaving_the_with_block_closes_the_connection_though_the_reader_is_still_held(server):
    """The block ends the request, not the garbage collector: the server sees the client leave
    while the reading generator is still referenced."""
    server.behaviour.stream_fault = StreamFault.ENDLESS
    server.behaviour.token_delay_s = 0.01
    with client_for(server).stream(MESSAGES, max_tokens=100_000) as answer:
        reader = iter(answer)
        first = next(reader)
        assert not server.behaviour.client_left.is_set()
    assert server.behaviour.client_left.wait(10), "the server still streams to a closed block"
    assert reader is not None  # still held: no finaliser ran
    assert answer.result.end is StreamEnd.ABANDONED and answer.result.answer.startswith(first)


def test_leaving_the_with_block_during_events_stops_the_answer_on_the_server(server):
    server.behaviour.stream_fault = StreamFault.ENDLESS
    server.behaviour.token_delay_s = 0.01
    with client_for(server).stream(MESSAGES, max_tokens=100_000) as answer:
        events = answer.events(heartbeat_s=0.2)
        first = next(e for e in events if isinstance(e, str))
    assert server.behaviour.client_left.wait(10)
    assert events is not None
    assert answer.result.end is StreamEnd.STOPPED and answer.result.answer.startswith(first)


def test_an_answer_read_outside_a_with_block_is_refused_before_any_request(server):
    stream = client_for(server).stream(MESSAGES)
    with pytest.raises(RuntimeError, match="with client.stream"):
        list(stream)
    with pytest.raises(RuntimeError, match="with client.stream"):
        stream.events()
    assert server.behaviour.requests == []
