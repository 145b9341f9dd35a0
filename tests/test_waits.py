"""The wait shown before the first token: the phase follows the server's own queue figures
(vLLM's Prometheus text), and the metrics are asked at most once every 2 s."""

from __future__ import annotations

from fakeserver import VLLM_METRICS, FakeServer

from sparkdocs.client import ModelClient, ServerMetrics, Waiting, parse_metrics
from sparkdocs.config import Settings
from sparkdocs.waits import WaitPhase, WaitWatch, wait_phase, warm_caption
from sparkdocs.warmup import WarmState, WarmStatus


def _vllm_text(*, running: int, waiting: int) -> str:
    return (VLLM_METRICS
            .replace('vllm:num_requests_running{engine="0",model_name="m"} 2.0',
                     f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}.0')
            .replace('vllm:num_requests_waiting{engine="0",model_name="m"} 1.0',
                     f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}.0'))


def test_requests_waiting_on_the_server_mean_queued():
    view = wait_phase(elapsed_s=61.4, received_chunks=0,
                      metrics=parse_metrics(_vllm_text(running=2, waiting=1)))
    assert view.phase is WaitPhase.QUEUED
    assert "Queued: 61 s" in view.text and "(2 running, 1 waiting)" in view.text


def test_nothing_waiting_and_no_token_yet_means_prefilling():
    view = wait_phase(elapsed_s=12, received_chunks=0,
                      metrics=parse_metrics(_vllm_text(running=1, waiting=0)))
    assert view.phase is WaitPhase.PREFILLING and view.text.startswith("Prefilling: 12 s")


def test_text_arrived_means_answering_whatever_the_queue():
    view = wait_phase(elapsed_s=3, received_chunks=4,
                      metrics=parse_metrics(_vllm_text(running=3, waiting=5)))
    assert view.phase is WaitPhase.ANSWERING


def test_a_server_without_metrics_is_not_guessed_about():
    view = wait_phase(elapsed_s=5, received_chunks=0, metrics=None)
    assert view.phase is WaitPhase.UNKNOWN and "does not say" in view.text


def test_metrics_are_asked_at_most_every_2_s_and_never_after_the_first_token():
    now = [0.0]
    asked: list[float] = []

    def fetch() -> ServerMetrics:
        asked.append(now[0])
        return ServerMetrics(running=1, waiting=0)

    watch = WaitWatch(fetch, clock=lambda: now[0])
    for _ in range(20):  # 10 s of heartbeats every 0.5 s
        watch.view(Waiting(now[0], 0))
        now[0] += 0.5
    assert asked == [0.0, 2.0, 4.0, 6.0, 8.0]
    for _ in range(10):
        watch.view(Waiting(now[0], 3))
        now[0] += 0.5
    assert len(asked) == 5


def test_a_server_without_metrics_is_asked_once():
    asked = []
    now = [0.0]
    watch = WaitWatch(lambda: asked.append(1), clock=lambda: now[0])  # type: ignore[arg-type,func-returns-value]
    for _ in range(10):
        view = watch.view(Waiting(now[0], 0))
        now[0] += 1.0
    assert len(asked) == 1 and view.phase is WaitPhase.UNKNOWN


def test_the_fake_vllm_queue_reads_as_queued_through_the_client():
    with FakeServer() as server:  # its /metrics: 2 running, 1 waiting
        client = ModelClient(Settings(base_url=server.base_url, max_retries=0))
        view = WaitWatch(client.metrics).view(Waiting(3.0, 0))
        client.close()
    assert view.phase is WaitPhase.QUEUED


def test_the_warm_caption_says_when_not_that_it_is_still_warm():
    import time

    finished = time.mktime((2026, 11, 28, 14, 5, 0, 0, 0, -1))
    text = warm_caption(WarmState(WarmStatus.WARM, seconds=3.2, finished=finished))
    assert "warmed at 14:05 " in text and "(took 3.2 s)" in text and "may have evicted" in text


def test_metrics_that_are_not_finite_numbers_read_as_unknown_not_a_crash():
    # Prometheus text allows NaN and ±Inf; a broken exporter or proxy may send them. The wait
    # must then say it cannot tell (int(nan) raised mid-answer before).
    for bad in ("NaN", "+Inf", "-Inf"):
        text = VLLM_METRICS.replace('vllm:num_requests_waiting{engine="0",model_name="m"} 1.0',
                                    f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {bad}'
                                    ).replace('vllm:num_requests_running{engine="0",model_name="m"} 2.0',
                                              f'vllm:num_requests_running{{engine="0",model_name="m"}} {bad}')
        assert bad in text
        view = wait_phase(elapsed_s=5, received_chunks=0, metrics=parse_metrics(text))
        assert view.phase is WaitPhase.UNKNOWN, (bad, view)


def test_a_cache_config_label_that_is_infinite_reads_as_unknown():
    text = VLLM_METRICS.replace('block_size="16"', 'block_size="inf"')
    assert 'block_size="inf"' in text
    assert parse_metrics(text).block_size is None


def test_the_warm_caption_names_the_time_zone_of_its_clock(monkeypatch):
    """The app runs on a server (often UTC in a container) and is read on laptops elsewhere:
    a bare "warmed at 14:05" reads as the reader's own clock, hours off."""
    import calendar
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        finished = calendar.timegm((2026, 11, 28, 14, 5, 0, 0, 0, 0))
        text = warm_caption(WarmState(WarmStatus.WARM, seconds=3.2, finished=finished))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "warmed at 14:05 UTC (took 3.2 s)" in text, text
