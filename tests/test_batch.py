"""Batch summarisation: scheduling and failures with the fake server, resume and map-reduce
against the real llama.cpp server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builders import synthetic_document_text
from fakeserver import FakeServer
from sparkdocs.batch import (BatchOptions, BatchSummarizer, atomic_write, collect_items,
                             output_stem)
from sparkdocs.client import ModelClient
from sparkdocs.config import Settings
from sparkdocs.ingest import ingest_bytes
from sparkdocs.prompts import split_into_parts
from sparkdocs.tokens import count_document
from sparkdocs.workspace import Workspace


def _docs(folder: Path, count: int, tokens: int = 200) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"doc{i}.md"
        path.write_text(synthetic_document_text(tokens, seed=100 + i))
        paths.append(path)
    return paths


def test_output_stem_is_stable_and_safe():
    assert output_stem("contracts/a b.pdf") == "contracts__a_b.pdf"
    assert output_stem("./x/../y.txt") == "x__up__y.txt"
    assert len(output_stem("d/" * 200 + "f.txt")) < 140


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path):
    atomic_write(tmp_path / "a.md", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]


def test_split_into_parts_keeps_order_and_ranges():
    document = count_document(ingest_bytes("big.md", synthetic_document_text(3000).encode()))
    parts = split_into_parts(document, 1000, note=lambda n, total, label: f"Part {n} of {total}")
    flat = [i for part in parts for i in part.sections]
    assert flat == list(range(len(document.sections))) and all(p.tokens <= 1000 for p in parts)
    assert parts[0].label.startswith("section ")


@pytest.mark.integration
def test_keeps_n_requests_in_flight(tmp_path: Path):
    with FakeServer() as server:
        server.behaviour.latency_s = 0.3
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        items = collect_items(workspace, [str(p) for p in _docs(tmp_path / "in", 12)])
        options = BatchOptions(out_dir=tmp_path / "out", concurrency=4, max_tokens=20)
        outcomes = BatchSummarizer(workspace, ModelClient(settings), options).run(items)
    assert [o.status for o in outcomes] == ["done"] * 12
    assert server.behaviour.max_in_flight == 4
    assert len(list((tmp_path / "out").glob("*.md"))) == 12


@pytest.mark.integration
def test_failing_documents_are_retried_reported_and_others_finish(tmp_path: Path):
    docs = _docs(tmp_path / "in", 5)
    bad_marker = "MARKER-OF-THE-BAD-DOCUMENT"
    docs[2].write_text(docs[2].read_text() + "\n\n" + bad_marker)
    with FakeServer() as server:
        server.behaviour.fail_when_prompt_contains = bad_marker
        server.behaviour.status = 503
        env = {**os.environ, "SPARKDOCS_BASE_URL": server.base_url, "SPARKDOCS_MAX_RETRIES": "1",
               "SPARKDOCS_CACHE_DIR": str(tmp_path / "c")}
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "summarize", str(tmp_path / "in"),
                              "--out", str(tmp_path / "out"), "--concurrency", "2"],
                             capture_output=True, text=True, env=env, timeout=120)
        requests_for_bad = sum(1 for r in server.behaviour.requests if bad_marker in json.dumps(r))
    assert run.returncode == 1
    assert "failed" in run.stderr and "HTTP 503" in run.stderr.replace("\n", " ").replace("│", "")
    assert len(list((tmp_path / "out").glob("*.md"))) == 4
    assert requests_for_bad == 4  # 2 attempts x (1 + 1 client retry)


@pytest.mark.e2e
def test_five_documents_with_concurrency_two_on_the_real_server(real_server, tmp_path: Path):
    _docs(tmp_path / "in", 5)
    settings = real_server.settings(tmp_path, context_length=6000)
    workspace = Workspace(settings)
    items = collect_items(workspace, [str(tmp_path / "in")])
    options = BatchOptions(out_dir=tmp_path / "out", concurrency=2, max_tokens=24, output_format="jsonl")
    outcomes = BatchSummarizer(workspace, ModelClient(settings), options).run(items)
    assert [o.status for o in outcomes] == ["done"] * 5
    records = [json.loads(line) for line in (tmp_path / "out" / "summaries.jsonl").read_text().splitlines()]
    assert len(records) == 5 and all(r["summary"] and r["content_hash"] and r["source"] for r in records)
    assert set(records[0]) >= {"finish_reason", "ttft_s", "decode_tokens_per_s", "cached_tokens"}
    again = BatchSummarizer(workspace, ModelClient(settings), options).run(items)
    assert [o.status for o in again] == ["skipped"] * 5


@pytest.mark.e2e
def test_killed_run_resumes_only_what_is_left(real_server, tmp_path: Path):
    _docs(tmp_path / "in", 6)
    out = tmp_path / "out"
    env = {**os.environ, "SPARKDOCS_BASE_URL": real_server.base_url, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c"),
           "SPARKDOCS_CONTEXT_LENGTH": "6000"}
    command = [sys.executable, "-m", "sparkdocs", "summarize", str(tmp_path / "in"), "--out", str(out),
               "--concurrency", "1", "--max-tokens", "48"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.md"))) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("*.md")}
    assert 2 <= len(finished) < 6
    assert not list(out.glob(".*.tmp"))  # no half-written file survives a kill -9
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("skipped") >= len(finished)
    after = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("*.md")}
    assert len(after) == 6
    assert all(after[name] == value for name, value in finished.items())  # untouched


@pytest.mark.e2e
def test_document_over_budget_goes_through_map_reduce(real_server, tmp_path: Path):
    doc = tmp_path / "long.md"
    doc.write_text(synthetic_document_text(3500, seed=9))
    settings = real_server.settings(tmp_path, context_length=2048)
    workspace = Workspace(settings)
    options = BatchOptions(out_dir=tmp_path / "out", concurrency=1, max_tokens=48)
    [outcome] = BatchSummarizer(workspace, ModelClient(settings), options).run(
        collect_items(workspace, [str(doc)]))
    assert outcome.status == "done", outcome.error
    assert len(outcome.parts) >= 2
    text = Path(outcome.output).read_text()
    assert f"map-reduce over {len(outcome.parts)} parts" in text and "part 1: section" in text


@pytest.mark.integration
def test_ctrl_c_cancels_in_flight_requests_and_keeps_finished_outputs(tmp_path: Path):
    _docs(tmp_path / "in", 6)
    out = tmp_path / "out"
    with FakeServer() as server:
        server.behaviour.latency_s = 0.2
        server.behaviour.answer = " ".join(["word"] * 200)
        server.behaviour.token_delay_s = 0.02  # each summary streams for ~4 s
        env = {**os.environ, "SPARKDOCS_BASE_URL": server.base_url, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c")}
        process = subprocess.Popen([sys.executable, "-m", "sparkdocs", "summarize", str(tmp_path / "in"),
                                    "--out", str(out), "--concurrency", "2", "--max-tokens", "200"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.glob("*.md"))) < 2:
            time.sleep(0.05)
        time.sleep(0.5)  # the next two are mid-stream now
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    assert process.returncode == 130, stderr
    assert stopped_in < 10  # in-flight streams were closed, not waited out
    assert "interrupted" in stderr and "Traceback" not in stderr
    finished = list(out.glob("*.md"))
    assert 2 <= len(finished) < 6 and not list(out.glob(".*.tmp"))
    assert all(p.read_text().rstrip().endswith("word") for p in finished)  # complete, not cut
