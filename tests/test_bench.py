"""`sparkdocs bench` against the real llama.cpp test server, with small settings."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sparkdocs.bench import BenchReport, Sample, synthetic_document
from sparkdocs.client import AnswerResult


def test_synthetic_documents_are_fresh_and_about_the_right_size():
    a = synthetic_document(2000, rng=random.Random(1))
    b = synthetic_document(2000, rng=random.Random(2))
    assert a.sections[0].text != b.sections[0].text
    assert 1500 < a.section_tokens < 3000


def test_report_ratios_and_markdown():
    def sample(label: str, ttft: float, cached: int | None) -> Sample:
        return Sample(label, AnswerResult("a", "stop", ttft, ttft + 1, 3.0, 4100, 10, cached, "m"))

    report = BenchReport("http://x/v1", "m", "vllm", 4000, 4100, samples=[
        sample("cold first question", 5.0, None), sample("follow-up question", 0.05, 4096),
        sample("first question after warm-up", 0.1, 4080), sample("bad layout: second question", 5.0, 0)])
    ratios = report.ratios()
    assert ratios["follow-up / cold"] == pytest.approx(0.01)
    assert report.prefill_tokens_per_s() == pytest.approx(820)
    text = report.to_markdown()
    assert "| follow-up / cold | 1.00% |" in text and "| 100% |" in text
    assert report.as_dict()["samples"][1]["cached_fraction"] == pytest.approx(4096 / 4100)


@pytest.mark.e2e
def test_bench_command_against_the_real_server(real_server, tmp_path: Path):
    env = {**os.environ, "SPARKDOCS_BASE_URL": real_server.base_url,
           "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"), "SPARKDOCS_CONTEXT_LENGTH": "8192"}
    run = subprocess.run([sys.executable, "-m", "sparkdocs", "bench", "--tokens", "500",
                          "--concurrency", "1,2", "--max-tokens", "8", "--json", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    labels = [s["label"] for s in report["samples"]]
    assert labels == ["cold first question", "follow-up question", "first question after warm-up",
                      "bad layout: first question", "bad layout: second question"]
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    assert report["ratios"]["follow-up / cold"] is not None and report["warm_up_s"] > 0
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.md", "report.json", "ttft.png", "throughput.png"} <= written
    assert (tmp_path / "cache" / "bench" / "report.md").exists()


@pytest.mark.integration
def test_ctrl_c_stops_the_bench_promptly(tmp_path: Path):
    import signal
    import time

    from fakeserver import FakeServer

    with FakeServer() as server:
        server.behaviour.answer = " ".join(["word"] * 400)
        server.behaviour.token_delay_s = 0.05  # every request streams for ~20 s
        env = {**os.environ, "SPARKDOCS_BASE_URL": server.base_url, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c")}
        process = subprocess.Popen([sys.executable, "-m", "sparkdocs", "bench", "--tokens", "300",
                                    "--concurrency", "4", "--max-tokens", "400"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(6)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        assert time.monotonic() - started < 10
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr


@pytest.mark.integration
def test_a_request_that_does_not_finish_is_not_a_measurement(tmp_path: Path):
    from fakeserver import FakeServer, StreamFault

    from sparkdocs.bench import Bench, BenchOptions
    from sparkdocs.client import ModelClient
    from sparkdocs.config import Settings
    from sparkdocs.errors import ServiceError
    from sparkdocs.workspace import Workspace

    with FakeServer() as server:
        server.behaviour.stream_fault = StreamFault.ENDLESS
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        bench = Bench(Workspace(settings), ModelClient(settings),
                      BenchOptions(tokens=300, concurrency=(1,), max_tokens=8))
        with pytest.raises(ServiceError, match="request did not finish: the server sent more than "
                                               "32 tokens for max_tokens=8"):
            bench.run()


@pytest.mark.integration
def test_the_report_never_shows_credentials_of_the_base_url(tmp_path: Path):
    from fakeserver import FakeServer

    from sparkdocs.bench import Bench, BenchOptions
    from sparkdocs.client import ModelClient
    from sparkdocs.config import Settings
    from sparkdocs.workspace import Workspace

    with FakeServer() as server:
        url = server.base_url.replace("http://", "http://alice:s3cret@")
        settings = Settings(base_url=url, cache_dir=tmp_path / "c", max_retries=0)
        report = Bench(Workspace(settings), ModelClient(settings),
                       BenchOptions(tokens=300, concurrency=(1,), max_tokens=4)).run()
    assert "s3cret" not in report.to_markdown() and "***@127.0.0.1" in report.base_url
    assert "s3cret" not in json.dumps(report.as_dict())
