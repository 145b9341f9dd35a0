"""Background warm-ups: state goes warming → warm, or failed with the reason, never blocking."""

from __future__ import annotations

import time

import pytest
from fakeserver import FakeServer

from sparkdocs.client import ModelClient
from sparkdocs.config import Settings
from sparkdocs.ingest import Upload
from sparkdocs.qa import QuestionAnswering
from sparkdocs.warmup import WarmUps
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.integration


def _wait(warmups: WarmUps, document, status: str) -> None:
    deadline = time.monotonic() + 20
    while warmups.state(document).status != status:
        assert time.monotonic() < deadline, warmups.state(document)
        time.sleep(0.05)


def _setup(tmp_path, base_url: str):
    settings = Settings(base_url=base_url, cache_dir=tmp_path / "c", max_retries=0)
    workspace = Workspace(settings)
    document = workspace.load_uploads([Upload("a.txt", b"Some contract text.")], workspace.ingest_options())
    return WarmUps(QuestionAnswering(workspace, ModelClient(settings))), document


def test_warm_up_runs_in_the_background_and_sends_the_question_prefix(tmp_path):
    with FakeServer() as server:
        server.behaviour.latency_s = 0.5
        warmups, document = _setup(tmp_path, server.base_url)
        started = time.perf_counter()
        assert warmups.start(document).status == "warming"
        assert time.perf_counter() - started < 0.4  # returned before the request finished
        assert warmups.start(document).status == "warming"  # not started twice
        _wait(warmups, document, "warm")
        assert len(server.behaviour.requests) == 1
        sent = server.behaviour.requests[0]
        assert sent["max_tokens"] == 1 and sent["messages"][1]["content"].endswith("</document>\n\nQuestion:")


def test_failed_warm_up_says_why(tmp_path):
    warmups, document = _setup(tmp_path, "http://127.0.0.1:9/v1")
    warmups.start(document)
    _wait(warmups, document, "failed")
    assert "docker compose up -d vllm" in warmups.state(document).error
