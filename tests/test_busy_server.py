"""A busy server is not an absent one (issue #20). Judged by what the library returns and by
the fake server's own record: the requests it saw, and what it holds in flight."""

from __future__ import annotations

import time

import pytest
from fakeserver import FakeServer

from sparkdocs.client import ModelClient, ServiceProblem, Waiting
from sparkdocs.config import Settings
from sparkdocs.ingest import Upload
from sparkdocs.qa import QuestionAnswering
from sparkdocs.tokens import ChatMessage
from sparkdocs.waits import WaitPhase, WaitWatch, warm_caption
from sparkdocs.warmup import WarmState, WarmStatus, WarmUps
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.integration
MESSAGES = [ChatMessage("system", "s"), ChatMessage("user", "u")]
ANSWER = "The answer is forty-two."


def _settings(server: FakeServer, tmp_path, **overrides) -> Settings:
    # discovery's timeout is twice the connect timeout: 0.4 s here
    return Settings(**{"base_url": server.base_url, "max_retries": 0, "capability_ttl_s": 0,
                       "connect_timeout_s": 0.2, "cache_dir": tmp_path / "c", **overrides})


def _until(condition, *, timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _count(server: FakeServer, line: str) -> int:
    return sum(1 for seen in server.behaviour.seen if seen == line)


def test_discovery_timing_out_under_load_keeps_the_last_capabilities(tmp_path):
    with FakeServer() as server:
        server.behaviour.max_model_len = 8192
        client = ModelClient(_settings(server, tmp_path))
        first = client.capabilities()
        assert first.context_length == 8192 and not first.busy
        server.behaviour.discovery_delay_s = 2.0  # busy: discovery hangs, completions work
        later = client.capabilities(refresh=True)
        assert later.reachable and later.error is None and later.problem is None
        assert (later.model, later.context_length, later.server_kind, later.context_from_server
                ) == (first.model, first.context_length, first.server_kind, True)
        assert later.busy and "busy" in later.busy_note and "ago" in later.busy_note
        with client.stream(MESSAGES) as answer:  # the question is asked, not refused
            assert "".join(answer) == ANSWER
        assert _count(server, "GET /v1/models") >= 2  # it did ask again, and was not answered
        assert _count(server, "POST /v1/chat/completions") == 1


def test_a_first_discovery_under_load_is_busy_not_absent(tmp_path):
    with FakeServer() as server:
        server.behaviour.discovery_delay_s = 2.0
        client = ModelClient(_settings(server, tmp_path))
        caps = client.capabilities()
        assert caps.problem is ServiceProblem.BUSY and caps.reachable
        assert "Nothing is answering" not in (caps.error or "") and "busy" in (caps.error or "")
        with client.stream(MESSAGES) as answer:  # asked with the configured model; it waits
            assert "".join(answer) == ANSWER
        assert server.behaviour.requests[-1]["model"] == client.settings.model


def test_a_refused_connection_is_still_absent(tmp_path):
    client = ModelClient(Settings(base_url="http://127.0.0.1:9/v1", max_retries=0,
                                  capability_ttl_s=0, cache_dir=tmp_path / "c"))
    client.capabilities()
    caps = client.capabilities(refresh=True)
    assert caps.problem is ServiceProblem.UNREACHABLE and not caps.busy
    assert "Nothing is answering" in (caps.error or "")


def _warm_setup(server: FakeServer, tmp_path, text: bytes = b"Some contract text.", **overrides):
    settings = _settings(server, tmp_path, **overrides)
    workspace = Workspace(settings)
    document = workspace.load_uploads([Upload("a.txt", text)], workspace.ingest_options())
    qa = QuestionAnswering(workspace, ModelClient(settings))
    return qa, WarmUps(qa), document


def test_a_question_behind_the_warm_up_waits_and_is_answered(tmp_path):
    """One slot (llama-cpp-python's lock): discovery and the question wait for the warm-up."""
    with FakeServer() as server:
        qa, warmups, document = _warm_setup(server, tmp_path)
        qa.client.capabilities()  # the page read the server before the warm-up began
        server.behaviour.serial = True
        server.behaviour.prefill_s = 5.0
        warmups.start(document)
        _until(lambda: server.behaviour.in_flight == 1, what="the warm-up reached the server")
        session = qa.workspace.open_session(document)
        watch = WaitWatch(qa.client.metrics, warming=lambda: warmups.state(document).status
                          is WarmStatus.WARMING)
        shown: list[str] = []
        outcome = qa.run_turn(document, session, "What is it?",
                              on_wait=lambda waiting: shown.append(watch.view(waiting).text))
        assert outcome.turn.answer == ANSWER and outcome.turn.error is None
        assert any(text.startswith("Queued behind the warm-up") for text in shown), shown
        sent = server.behaviour.requests
        assert [r["max_tokens"] for r in sent][0] == 1 and len(sent) == 2
        assert server.behaviour.max_in_flight == 1  # it waited; it did not fail or overlap


def test_cancel_ends_the_warm_up_on_the_server(tmp_path):
    with FakeServer() as server:
        server.behaviour.prefill_s = 60.0
        qa, warmups, document = _warm_setup(server, tmp_path)
        warmups.start(document)
        _until(lambda: server.behaviour.in_flight == 1, what="the warm-up reached the server")
        assert warmups.cancel(document)
        _until(lambda: server.behaviour.in_flight == 0, timeout_s=5,
               what="the server still holds the warm-up")
        assert server.behaviour.left_early == 1
        _until(lambda: warmups.state(document).status is WarmStatus.CANCELLED, timeout_s=5)
        assert "cancelled" in warm_caption(warmups.state(document)).lower()
        assert not warmups.cancel(document)  # nothing left to cancel
        assert warmups.start(document).status is WarmStatus.WARMING  # it can be started again


def test_a_warm_up_of_parts_shows_elapsed_time_and_parts_done(tmp_path):
    from builders import synthetic_document_text

    with FakeServer() as server:
        server.behaviour.max_model_len = 4096
        server.behaviour.prefill_s = 0.5
        text = synthetic_document_text(9_000, seed=5).encode()
        qa, warmups, document = _warm_setup(server, tmp_path, text, answer_tokens=512)
        seen: set[tuple[int, int]] = set()
        warmups.start(document, whole=True)
        deadline = time.monotonic() + 60
        while (state := warmups.state(document, whole=True)).status is WarmStatus.WARMING:
            seen.add((state.parts_done, state.parts_total))
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state.status is WarmStatus.WARM, state.error
        total = state.parts_total
        assert total >= 2 and state.parts_done == total
        assert total == sum(1 for r in server.behaviour.requests if r["max_tokens"] == 1)
        assert {done for done, _ in seen} >= {0, 1}  # it moved through the parts
        caption = warm_caption(WarmState(WarmStatus.WARMING, started=time.time() - 75,
                                         parts_done=1, parts_total=3))
        assert "1 min 15 s" in caption and "1 of 3 parts" in caption


def test_a_wait_behind_the_warm_up_says_so():
    watch = WaitWatch(lambda: None, warming=lambda: True)
    view = watch.view(Waiting(elapsed_s=4.2, received_chunks=0))
    assert view.phase is WaitPhase.QUEUED and view.text.startswith("Queued behind the warm-up: 4 s")
    assert WaitWatch(lambda: None, warming=lambda: False).view(
        Waiting(4.2, 0)).phase is WaitPhase.UNKNOWN
