"""The production engine as the judge: vLLM's CPU build (tests/vllm_tier.py) with the real Llama 3
tokenizer and Llama 3.3 template. Every count is vLLM's `usage.prompt_tokens` or its `/tokenize`
ids, every cache hit its `cached_tokens`, every abort its `vllm:num_requests_running` gauge."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from builders import (
    INJECTION,
    make_contract_pdf,
    make_hostile_codebase,
    make_hostile_docx,
    make_many_file_codebase,
    make_pdf,
    synthetic_document_text,
)
from corpus import CORPUS, corpus_document
from vllm_tier import API_KEY, CPU_BLOCK_SIZE

from sparkdocs.batch import BatchOptions, BatchSummarizer, collect_items
from sparkdocs.client import ModelClient, StreamEnd
from sparkdocs.doctor import run_checks
from sparkdocs.documents import Document
from sparkdocs.ingest import Upload
from sparkdocs.prompts import QUESTION_RESERVE_TOKENS, SYSTEM_PROMPT, Prompt, prepare_document
from sparkdocs.qa import QuestionAnswering
from sparkdocs.tokens import count_document
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.vllm
BOS, START, END, EOT = 128000, 128006, 128007, 128009


def engine_ids(engine, prompt: Prompt) -> list[int]:
    """The ids vLLM itself makes of these messages (its template, its tokenizer)."""
    response = httpx.post(f"{engine.root_url}/tokenize", timeout=60, json={
        "model": "nvidia/Llama-3.3-70B-Instruct-FP8", "messages": prompt.as_dicts(),
        "add_generation_prompt": True})
    response.raise_for_status()
    return response.json()["tokens"]


def template_control_tokens(n_messages: int) -> list[int]:
    return [BOS, *[START, END, EOT] * n_messages, START, END]


def _qa(engine, tmp_path: Path, **settings) -> QuestionAnswering:
    config = engine.settings(tmp_path, **settings)
    return QuestionAnswering(Workspace(config), ModelClient(config))


def _load(qa: QuestionAnswering, name: str, data: bytes) -> Document:
    workspace = qa.workspace
    return workspace.load_uploads([Upload(name, data)], workspace.ingest_options())


HOSTILE = {
    "codebase-names.zip": make_hostile_codebase,
    "headings.docx": make_hostile_docx,
    "page.pdf": lambda: make_pdf([f"Clause 1. {INJECTION}", "Clause 2. <|python_tag|> end."]),
}


def _every_prompt_kind(qa: QuestionAnswering, document: Document) -> list[Prompt]:
    prompts = qa.workspace.prompts
    whole = prepare_document(document, tokenizer=prompts.tokenizer)
    kinds = [prompts.question(whole, f"What does it say? {INJECTION}"),
             prompts.follow_up(whole, [("First?", f"An answer {INJECTION}"),
                                       (f"Second {INJECTION}?", "Another answer.")], "Third?"),
             prompts.summary(whole), prompts.warm_up(whole),
             prompts.merge([(f"file {INJECTION}.py", f"Part one {INJECTION}"),
                            ("page 2 to page 9", "Part two.")])]
    if len(document.sections) > 2:  # a selection with its omission note (and re-drawn tree)
        selection = prepare_document(document, keep=[0, len(document.sections) - 1],
                                     tokenizer=prompts.tokenizer)
        kinds.append(prompts.question(selection, "Only these parts?"))
    return kinds


@pytest.mark.parametrize("name", sorted(CORPUS) + sorted(HOSTILE))
def test_prompt_tokens_equal_vllms_and_only_template_control_tokens(vllm, tmp_path, name):
    qa = _qa(vllm, tmp_path)
    if name in HOSTILE:
        document = _load(qa, name, HOSTILE[name]())
    else:
        document = count_document(corpus_document(name))
    for prompt in _every_prompt_kind(qa, document):
        ids = engine_ids(vllm, prompt)
        assert len(ids) == prompt.prompt_tokens, (name, prompt.task)
        assert [i for i in ids if i >= BOS] == template_control_tokens(len(prompt.messages))
        result = qa.client.stream(prompt.messages, max_tokens=1).run()
        assert result.prompt_tokens == prompt.prompt_tokens, (name, prompt.task)


# -- budgets: a small served context, where any miscount is a 400 -----------------------------

@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("big")
    (folder / "repo.zip").write_bytes(make_many_file_codebase(600))
    (folder / "contract.pdf").write_bytes(make_contract_pdf(300))
    return {"codebase": folder / "repo.zip", "pdf": folder / "contract.pdf"}


@pytest.mark.parametrize("kind", ["codebase", "pdf"])
def test_auto_fit_and_hand_picked_selections_fit_the_served_context(vllm_8k, tmp_path,
                                                                    big_inputs, kind):
    qa = _qa(vllm_8k, tmp_path, answer_tokens=256)
    path = big_inputs[kind]
    document = _load(qa, path.name, path.read_bytes())
    context = qa.client.capabilities().context_length
    assert context == 8192  # from the server's max_model_len
    keep = qa.workspace.fit(document, context=context)
    assert keep is not None and len(keep) < len(document.sections)
    budget = qa.workspace.budget(document, keep=keep, context=context)
    assert budget.fits
    warm = qa.warm_up(document, keep)  # a 400 here was the old symptom
    session = qa.workspace.store.new_session(document, kept_sections=keep)
    pending = qa.ask(document, session, "Which parts were left out?")
    result = pending.stream.run()
    assert result.error is None and result.prompt_tokens == pending.prompt.prompt_tokens
    assert warm.prompt_tokens == qa.workspace.prompts.warm_up(qa.prepared(document, keep)).prompt_tokens
    # The budget shown is the prompt sent: it differs only by the room kept for the question.
    shown = budget.used + budget.prompt_overhead
    assert shown - QUESTION_RESERVE_TOKENS <= result.prompt_tokens <= shown
    assert result.prompt_tokens + 256 <= context
    if kind == "codebase":
        assert "files left out" in pending.prompt.messages[1].content  # the tree is collapsed
    else:  # pages are kept from the start, in one run
        assert keep == tuple(range(len(keep)))


def test_every_selection_the_budget_calls_fitting_is_accepted(vllm_8k, tmp_path, big_inputs):
    """The parts editor: whatever a user ticks, `fits` means the server takes it."""
    import random

    qa = _qa(vllm_8k, tmp_path, answer_tokens=256)
    path = big_inputs["codebase"]
    document = _load(qa, path.name, path.read_bytes())
    rng = random.Random(5)
    checked = 0
    for _ in range(60):
        keep = sorted(rng.sample(range(1, len(document.sections)), rng.randint(1, 40)))
        if rng.random() < 0.8:
            keep = [0, *keep]  # usually with the tree
        budget = qa.workspace.budget(document, keep=keep, context=8192)
        if not budget.fits or budget.free > 1500:
            continue  # only selections near the limit say something
        prompt = qa.workspace.prompts.question(qa.prepared(document, keep), "What is this?")
        result = qa.client.stream(prompt.messages, max_tokens=256).run()
        assert result.error is None and result.prompt_tokens == prompt.prompt_tokens
        checked += 1
        if checked == 5:
            break
    assert checked >= 3


@pytest.mark.parametrize("kind", ["codebase", "pdf"])
def test_summarize_over_budget_maps_and_reduces_without_a_400(vllm_8k, tmp_path, big_inputs,
                                                              kind):
    settings = vllm_8k.settings(tmp_path)
    workspace = Workspace(settings)
    options = BatchOptions(out_dir=tmp_path / "out", concurrency=4, max_tokens=48)
    [outcome] = BatchSummarizer(workspace, ModelClient(settings), options).run(
        collect_items(workspace, [str(big_inputs[kind])]))
    assert outcome.status == "done", outcome.error
    assert len(outcome.parts) >= 2
    assert all(part.tokens <= 8192 for part in outcome.parts)


# -- the prefix cache, judged by the engine's cached_tokens ------------------------------------

def _document_prefix_blocks(qa: QuestionAnswering, document: Document) -> int:
    """Full KV blocks of system + user header + the document block: what every request on this
    document must be served from the cache."""
    prompts = qa.workspace.prompts
    encoder, tok = prompts.encoder, prompts.tokenizer
    prepared = qa.prepared(document)
    prefix = len(encoder.system_ids(SYSTEM_PROMPT)) + len(encoder.user_with_prefix_ids([], "")) - 1
    prefix += tok.count(prepared.block.rstrip("\n"))
    return prefix // CPU_BLOCK_SIZE * CPU_BLOCK_SIZE


def _text_document(qa: QuestionAnswering, tokens: int, seed: int) -> Document:
    return _load(qa, f"doc{seed}.md", synthetic_document_text(tokens, seed=seed).encode())


def test_questions_follow_ups_summaries_and_reopened_sessions_hit_every_document_block(
        vllm, tmp_path):
    qa = _qa(vllm, tmp_path)
    document = _text_document(qa, 6000, seed=101)
    blocks = _document_prefix_blocks(qa, document)
    session = qa.workspace.store.new_session(document)

    cold = qa.ask(document, session, "Who are the parties?")
    first = cold.stream.run()
    session = qa.record(session, cold)
    assert first.cached_tokens < blocks  # the judge can tell a miss: nothing was cached yet
    second = qa.ask(document, session, "What is the payment term?").stream.run()
    follow = qa.ask(document, session, "And how does it end?", follow_up=True).stream.run()
    prompts = qa.workspace.prompts
    summary = qa.client.stream(prompts.summary(qa.prepared(document)).messages,
                               max_tokens=8).run()
    reopened_qa = _qa(vllm, tmp_path)  # a new process: same cache folder, nothing in memory
    reopened = reopened_qa.workspace.store.get_session(session.id)
    again = reopened_qa.ask(document, reopened, "Anything about liability?",
                            follow_up=True).stream.run()
    for label, result in [("second", second), ("follow-up", follow), ("summary", summary),
                          ("reopened", again)]:
        assert result.cached_tokens >= blocks, (label, result.cached_tokens, blocks)


def test_warm_up_makes_the_first_question_and_a_summary_cache_hits(vllm, tmp_path):
    qa = _qa(vllm, tmp_path)
    document = _text_document(qa, 6000, seed=102)
    blocks = _document_prefix_blocks(qa, document)
    warm = qa.warm_up(document)
    assert warm.prompt_tokens and (warm.cached_tokens or 0) < blocks  # the warm-up paid for it
    session = qa.workspace.store.new_session(document)
    first = qa.ask(document, session, "What is the term?").stream.run()
    assert first.cached_tokens >= blocks
    other = _text_document(qa, 6000, seed=103)
    qa.warm_up(other)
    summary = qa.client.stream(
        qa.workspace.prompts.summary(qa.prepared(other)).messages, max_tokens=8).run()
    assert summary.cached_tokens >= _document_prefix_blocks(qa, other)


def test_metrics_and_doctor_read_the_engines_own_counters(vllm, tmp_path):
    qa = _qa(vllm, tmp_path)
    document = _text_document(qa, 1500, seed=104)
    client = qa.client
    before = client.metrics()
    session = qa.workspace.store.new_session(document)
    results = [qa.ask(document, session, q).stream.run() for q in ("One?", "Two?")]
    after = client.metrics()
    assert before is not None and after is not None
    hits = after.prefix_cache_hits - before.prefix_cache_hits
    assert hits == sum(r.cached_tokens for r in results) and hits > 0
    assert after.prefix_cache_queries - before.prefix_cache_queries >= sum(
        r.prompt_tokens for r in results) - 2
    assert after.block_size == CPU_BLOCK_SIZE and after.prefix_caching_enabled is True
    assert after.num_gpu_blocks and after.kv_capacity_tokens == after.num_gpu_blocks * 128
    assert after.running == 0 and after.waiting == 0 and 0 <= after.kv_cache_usage <= 1
    checks = {c.name: c for c in run_checks(client)}
    for name in ("reachable", "model", "context length", "prefix caching",
                 "cached-token reporting", "tokenize endpoint"):
        assert checks[name].status == "ok", (name, checks[name].detail)
    assert "65,536" in checks["context length"].detail


# -- Stop means stop, on the server too --------------------------------------------------------

def _wait_running(engine, target: float, timeout: float) -> float | None:
    """Seconds until vLLM's running gauge equals `target`, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if engine.running() == target:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


@pytest.fixture(scope="module")
def long_document(tmp_path_factory) -> Path:
    """~30K tokens: a prefill of several seconds on the CPU engine, never cached before. Each
    test puts its own first line in front, so no test's prefill is served by another's cache."""
    path = tmp_path_factory.mktemp("long") / "long.md"
    path.write_text(synthetic_document_text(30_000, seed=int(time.time()) % 10_000))
    return path


def test_cancel_during_a_long_prefill_aborts_the_request_on_the_server(vllm, tmp_path,
                                                                       long_document):
    qa = _qa(vllm, tmp_path)
    document = _load(qa, "long.md", b"library stop\n" + long_document.read_bytes())
    session = qa.workspace.store.new_session(document)
    pending = qa.ask(document, session, "Summarise clause 3.")
    waits = []

    def consume() -> None:
        with pending.stream as answer:
            waits.extend(answer.events())

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert _wait_running(vllm, 1, 30) is not None, "the request never started"
    time.sleep(1.0)  # well inside the prefill
    pending.stream.cancel()
    gone = _wait_running(vllm, 0, 10)
    consumer.join(timeout=10)
    print(f"running gauge back to 0 {gone:.2f} s after Stop")
    assert gone is not None and gone <= 2.0
    assert pending.stream.result.interrupted and pending.stream.result.error == "stopped by the user"
    after = qa.ask(document, qa.record(session, pending), "Next question?", max_tokens=4)
    assert after.stream.run().error is None


def test_leaving_the_with_block_ends_the_answer_on_the_server(vllm, tmp_path):
    """The block, not the garbage collector, ends the request: vLLM's running gauge returns to
    0 while the reading generator is still referenced."""
    qa = _qa(vllm, tmp_path)
    document = _text_document(qa, 300, seed=107)
    session = qa.workspace.store.new_session(document)
    pending = qa.ask(document, session, "Write a long essay about this document.",
                     max_tokens=2000)
    with pending.stream as answer:
        reader = iter(answer)
        first = next(reader)
        assert _wait_running(vllm, 1, 30) is not None, "the answer is not running"
    assert _wait_running(vllm, 0, 30) is not None, "vLLM still decodes for a closed block"
    assert reader is not None  # still held: no finaliser ran
    assert answer.result.end is StreamEnd.ABANDONED and answer.result.answer.startswith(first)


def _cli(args: list[str], settings_env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sparkdocs", *args],
                            env={**os.environ, **settings_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@pytest.mark.parametrize("command,sig", [("ask", signal.SIGINT), ("ask", signal.SIGTERM),
                                         ("summarize", signal.SIGINT), ("bench", signal.SIGINT)])
def test_ctrl_c_and_sigterm_abort_the_request_on_the_server(vllm, tmp_path, long_document,
                                                            command, sig):
    document = tmp_path / "long.md"
    document.write_text(f"{command} {sig.name}\n" + long_document.read_text())
    env = {"SPARKDOCS_BASE_URL": vllm.base_url, "SPARKDOCS_API_KEY": API_KEY,
           "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"), "SPARKDOCS_MAX_RETRIES": "0"}
    args = {"ask": ["ask", str(document), "What is clause 3?"],
            "summarize": ["summarize", str(document), "--out", str(tmp_path / "out")],
            "bench": ["bench", "--tokens", "30000", "--concurrency", "1"]}[command]
    process = _cli(args, env)
    try:
        assert _wait_running(vllm, 1, 60) is not None, process.stderr.read1().decode()
        time.sleep(1.0)
        process.send_signal(sig)
        gone = _wait_running(vllm, 0, 10)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    print(f"{command} {sig.name}: running gauge back to 0 {gone} s after the signal")
    assert gone is not None and gone <= 2.0
    assert process.returncode != 0


def test_stop_in_the_browser_during_a_prefill_aborts_it_on_the_server(vllm, tmp_path,
                                                                      long_document,
                                                                      artifacts_dir):
    from playwright.sync_api import expect, sync_playwright
    from test_e2e_browser import _ask, _start_app, _upload

    document = tmp_path / "long-contract.md"
    document.write_text("browser stop\n" + long_document.read_text())
    url, process, log = _start_app(vllm.base_url, tmp_path, SPARKDOCS_API_KEY=API_KEY,
                                   SPARKDOCS_WARM_UP="false")
    try:
        with sync_playwright() as p:
            browser, page = _upload(p, url, document, "long-contract.md · text ·")
            _ask(page, "What does clause 3 say?")
            expect(page.get_by_text(re.compile(r"^Prefilling: \d+ s"))).to_be_visible(timeout=60_000)
            assert _wait_running(vllm, 1, 30) is not None
            page.get_by_role("button", name="Stop").click()
            gone = _wait_running(vllm, 0, 10)
            print(f"browser Stop: running gauge back to 0 {gone} s after the click")
            assert gone is not None and gone <= 2.0
            expect(page.get_by_text("Stopped by the user")).to_be_visible(timeout=30_000)
            page.screenshot(path=str(artifacts_dir / "05-stopped-during-prefill.png"),
                            full_page=True)
            _ask(page, "Next question?")  # the next question starts at once and is answered
            expect(page.get_by_text("first token")).to_have_count(1, timeout=120_000)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_server_page_shows_the_engines_own_figures(vllm, tmp_path, monkeypatch):
    import streamlit as st
    from prometheus_client.parser import text_string_to_metric_families
    from streamlit.testing.v1 import AppTest

    qa = _qa(vllm, tmp_path)
    document = _text_document(qa, 800, seed=105)
    session = qa.workspace.store.new_session(document)
    for question in ("One?", "Two?"):
        qa.ask(document, session, question).stream.run()
    for name, value in {"SPARKDOCS_BASE_URL": vllm.base_url, "SPARKDOCS_API_KEY": API_KEY,
                        "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"),
                               default_timeout=60).run()
        at.switch_page("pages/server.py").run()
    finally:
        st.cache_resource.clear()
    shown = {m.label: m.value for m in at.metric}
    samples = {s.name: s.value for family in text_string_to_metric_families(
        httpx.get(f"{vllm.root_url}/metrics", timeout=10).text) for s in family.samples}
    rate = samples["vllm:prefix_cache_hits_total"] / samples["vllm:prefix_cache_queries_total"]
    assert shown["Prefix-cache hit rate"] == f"{rate:.0%}" and rate > 0
    assert shown["Context (tokens)"] == "65,536"
    names = " ".join(m.value for m in at.markdown)  # names are text, not metrics (never cut)
    assert "**Server:** vllm" in names, names
    assert re.search(r"\*\*Tokenize endpoint:\*\* (`+) ?/tokenize ?\1", names), names  # a code span
    assert shown["Running"] == f"{samples['vllm:num_requests_running']:.0f}"
    assert shown["KV cache used"] == f"{samples['vllm:kv_cache_usage_perc']:.0%}"


def test_line_anchored_codebase_counts_equal_vllms_and_answers_are_checked(vllm, tmp_path):
    """Issue #13: the anchors inside files and the citation instructions keep every count exact
    on the production engine; whatever the (dummy-weight) model writes is checked, and nothing
    is called verified without the document's own text behind it."""
    from sparkdocs.citations import Status, verify_answer

    qa = _qa(vllm, tmp_path)
    document = _load(qa, "repo.zip", make_many_file_codebase(40))
    prompts = qa.workspace.prompts
    prepared = prepare_document(document, tokenizer=prompts.tokenizer)
    assert re.search(r"\n\d*0\t", prepared.block)  # sparse line anchors are in what is sent
    prompt = prompts.question(prepared, "Where is function_3_1 defined? Quote it with path:lines.")
    assert len(engine_ids(vllm, prompt)) == prompt.prompt_tokens
    result = qa.client.stream(prompt.messages, max_tokens=32).run()
    assert result.prompt_tokens == prompt.prompt_tokens
    for citation in verify_answer(result.answer, prepared):
        assert citation.status is Status.NOT_FOUND or citation.source_text


def test_every_part_counts_as_vllm_counts_and_a_second_question_reuses_each_parts_cache(
        vllm_8k, tmp_path):
    """`ask --whole` on the production engine: each part's prompt is counted as vLLM counts it;
    the parts the app warms when the document opens (as many as the engine's KV cache holds)
    serve the first question from the cache, and a second question over the same document finds
    every part's prefix in the cache (the parts do not depend on the question)."""
    from sparkdocs.parts import PartRequests, answer_whole, parts_cached_at_once

    qa = _qa(vllm_8k, tmp_path, answer_tokens=32)
    from corpus import contract_pages

    document = _load(qa, "contract.pdf", make_pdf(contract_pages(60, per_page=9)))
    builder = qa.workspace.prompts
    qa.warm_parts(document)  # what the app does when the document opens
    metrics = qa.client.capabilities().metrics
    parts = qa.whole_parts(document).parts
    held = parts_cached_at_once(parts, metrics.kv_capacity_tokens if metrics else None)
    held = len(parts) if held is None else held
    assert held >= 2, (held, len(parts))
    answers = []
    for question in ("Who pays the invoices?", "When may either party end the agreement?"):
        plan = qa.plan_whole(document, question)
        assert len(plan.parts) >= 3
        requests = PartRequests(qa.client, model=qa.client.resolve_model(), max_tokens=32,
                                cache_salt=None)
        answer = answer_whole(document, builder, plan, question, requests=requests,
                              context=8_192, answer_tokens=32)
        assert answer.complete and answer.read.startswith("all 60 pages, in ")
        for part, prompt in zip(answer.parts, plan.prompts, strict=True):
            assert part.result is not None and part.result.prompt_tokens == prompt.prompt_tokens
        merge = builder.merge_answers([(p.label, p.result.answer) for p in answer.parts
                                       if p.result is not None], question)
        assert answer.results[-1].prompt_tokens == merge.prompt_tokens
        if not answers:  # the first question: the parts warmed on open come from the cache
            for part, prompt in list(zip(answer.parts, plan.prompts, strict=True))[:held]:
                assert part.result.cached_tokens >= 0.9 * prompt.prompt_tokens, (
                    "warmed on open", part.label, part.result.cached_tokens, prompt.prompt_tokens)
        answers.append((plan, answer))
    (first_plan, _), (second_plan, second) = answers
    assert [p.sections for p in first_plan.parts] == [p.sections for p in second_plan.parts]
    for part, prompt in zip(second.parts, second_plan.prompts, strict=True):
        assert part.result is not None and part.result.cached_tokens is not None
        assert part.result.cached_tokens >= 0.9 * prompt.prompt_tokens, (
            part.label, part.result.cached_tokens, prompt.prompt_tokens)


def test_stop_during_the_parts_ends_every_request_on_the_engine(vllm_8k, tmp_path):
    """A whole-document answer stopped while its parts are read: vLLM's own running gauge is
    back to 0 within 2 s, and the turn is kept as stopped with the parts it had."""
    from corpus import contract_pages

    from sparkdocs.streams import StreamGroup

    qa = _qa(vllm_8k, tmp_path, answer_tokens=2_000)
    document = _load(qa, "contract.pdf", make_pdf(contract_pages(60, per_page=9)))
    session = qa.session_for(document, whole=True)
    group = StreamGroup()
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(
        outcome=qa.run_whole(document, session, "Write out every clause in full.",
                             streams=group)), daemon=True)
    worker.start()
    deadline = time.monotonic() + 300
    while vllm_8k.running() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vllm_8k.running() >= 2, "the parts never ran at once"
    group.cancel()
    stopped = time.monotonic()
    while vllm_8k.running() > 0 and time.monotonic() - stopped < 2.0:
        time.sleep(0.1)
    assert vllm_8k.running() == 0, "parts still running on the engine 2 s after the stop"
    worker.join(timeout=60)
    turn = box["outcome"].turn
    assert turn.status.value == "stopped" and turn.read.startswith("stopped after")
