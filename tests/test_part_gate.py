"""How many parts go at once: vLLM does not publish max_num_seqs in /metrics, so a part is sent
while none of ours is in flight or the engine has nothing waiting. Judged by the numbers in
recorded /metrics texts and by the fake server's own count of requests in flight."""

from __future__ import annotations

import threading

import pytest
from builders import make_pdf
from corpus import contract_pages
from fakeserver import VLLM_METRICS, FakeServer

from sparkdocs.errors import SparkdocsError
from sparkdocs.metrics import parse_metrics
from sparkdocs.parts import PartGate, room_for_another
from sparkdocs.streams import StreamGroup

WAITING_LINE = 'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0'


def _text(waiting: str) -> str:
    assert WAITING_LINE in VLLM_METRICS
    return VLLM_METRICS.replace(WAITING_LINE,
                                f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}')


def test_room_is_read_from_the_engines_waiting_gauge():
    assert not room_for_another(parse_metrics(VLLM_METRICS))  # "... waiting ... 1.0"
    assert not room_for_another(parse_metrics(_text("3.0")))
    assert room_for_another(parse_metrics(_text("0.0")))
    assert room_for_another(parse_metrics(_text("NaN")))  # no figure: not held back
    assert room_for_another(None)  # a server without vLLM's metrics (llama.cpp)


def test_two_engines_behind_a_router_are_held_back_by_either_ones_queue():
    from sparkdocs.cluster import Engine, combined_metrics

    engines = (Engine("http://e1", True, metrics=parse_metrics(_text("0.0"))),
               Engine("http://e2", True, metrics=parse_metrics(_text("2.0"))))
    assert not room_for_another(combined_metrics(engines))
    idle = (engines[0], Engine("http://e2", True, metrics=parse_metrics(_text("0.0"))))
    assert room_for_another(combined_metrics(idle))


class _Recorded:
    """The engine's /metrics texts in the order they are read."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.reads = 0

    def __call__(self):
        text = self.texts[min(self.reads, len(self.texts) - 1)]
        self.reads += 1
        return parse_metrics(text)


def test_the_first_part_goes_at_once_the_next_when_nothing_waits():
    recorded = _Recorded(_text("2.0"), _text("1.0"), _text("0.0"), _text("5.0"))
    gate = PartGate(recorded, poll_s=0)
    streams = StreamGroup()
    gate.admit(streams)  # none of ours in flight: not even asked
    assert recorded.reads == 0 and gate.in_flight == 1
    gate.admit(streams)  # held while the engine said 2, then 1 waiting; sent at 0
    assert recorded.reads == 3 and gate.in_flight == 2
    gate.ended()
    gate.ended()
    gate.admit(streams)  # ours all ended: sent whatever waits
    assert recorded.reads == 3 and gate.in_flight == 1


def test_a_cancel_while_held_back_ends_the_wait():
    gate = PartGate(_Recorded(_text("4.0")), poll_s=0.01)
    streams = StreamGroup()
    gate.admit(streams)
    threading.Timer(0.2, streams.cancel).start()
    with pytest.raises(SparkdocsError, match="cancelled"):
        gate.admit(streams)
    assert gate.in_flight == 1


def _answer_whole(tmp_path, server: FakeServer) -> int:
    """Every part of a 30-page contract asked through the runner; the plan's parts at once."""
    from sparkdocs.client import ModelClient
    from sparkdocs.config import Settings
    from sparkdocs.ingest import Upload
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.workspace import Workspace

    server.behaviour.max_model_len = 4_000
    server.behaviour.answer = "Nothing relevant in this part."
    server.behaviour.latency_s = 0.8  # each part stays in flight a while
    settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "cache",  # type: ignore[call-arg]
                        answer_tokens=200, max_retries=0)
    qa = QuestionAnswering(Workspace(settings), ModelClient(settings))
    document = qa.workspace.load_uploads([Upload("c.pdf", make_pdf(contract_pages(30, per_page=9)))],
                                         qa.workspace.ingest_options())
    plan = qa.plan_whole(document, "Who pays?")
    outcome = qa.run_whole(document, qa.session_for(document, whole=True), "Who pays?")
    assert outcome.turn.answer
    return plan.in_flight


@pytest.mark.integration
def test_parts_fill_an_idle_engine_at_once(tmp_path):
    with FakeServer() as server:
        server.behaviour.metrics_text = _text("0.0")
        at_once = _answer_whole(tmp_path, server)
        assert at_once >= 3  # the KV cache (12,000 blocks of 16) holds every part
        assert server.behaviour.max_in_flight == at_once


@pytest.mark.integration
def test_parts_go_one_at_a_time_while_the_engine_has_requests_waiting(tmp_path):
    with FakeServer() as server:
        server.behaviour.metrics_text = _text("3.0")  # another user's requests queue there
        at_once = _answer_whole(tmp_path, server)
        assert at_once >= 3
        assert server.behaviour.max_in_flight == 1
