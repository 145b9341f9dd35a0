"""Against the demo engine (llama.cpp with SmolLM2): streaming, saving, graceful degradation in
doctor and the CLI. Engine truths (counts, cache hits, aborts) are judged by vLLM in
test_e2e_vllm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import synthetic_document_text

from sparkdocs.client import ModelClient
from sparkdocs.doctor import run_checks
from sparkdocs.ingest import Upload
from sparkdocs.qa import QuestionAnswering
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.e2e


@pytest.fixture
def qa(real_server, tmp_path):
    settings = real_server.settings(tmp_path)
    workspace = Workspace(settings)
    return QuestionAnswering(workspace, ModelClient(settings))


def _document(qa: QuestionAnswering, tokens: int, seed: int):
    text = synthetic_document_text(tokens, seed=seed)
    return qa.workspace.load_uploads([Upload(f"doc{seed}.md", text.encode())],
                                     qa.workspace.ingest_options())


def test_an_answer_streams_in_parts(qa):
    document = _document(qa, 300, seed=1)
    session = qa.workspace.store.new_session(document)
    pending = qa.ask(document, session, "What is this document about?")
    with pending.stream as answer:
        parts = list(answer)
    result = pending.stream.result
    assert len(parts) > 3 and "".join(parts) == result.answer
    assert result.finish_reason in {"stop", "length"} and result.ttft_s > 0
    saved = qa.record(session, pending)
    assert qa.workspace.store.get_session(session.id).turns[0].answer == result.answer == saved.turns[0].answer


def test_doctor_reports_what_this_server_lacks(real_server, tmp_path):
    checks = {c.name: c for c in run_checks(ModelClient(real_server.settings(tmp_path)))}
    assert checks["reachable"].status == "ok"
    assert checks["model"].status == "warn" and "only served model" in checks["model"].detail
    assert checks["context length"].status == "warn"
    assert checks["prefix caching"].status == "unknown"
    assert checks["cached-token reporting"].status == "warn"
    assert checks["health endpoint"].status == "unknown"
    assert checks["tokenize endpoint"].detail == "/extras/tokenize"
    assert ModelClient(real_server.settings(tmp_path)).count_tokens("Hello there, world.") > 2


def test_cli_ask_json_and_follow_up(real_server, tmp_path: Path):
    doc = tmp_path / "notes.md"
    doc.write_text(synthetic_document_text(400, seed=4))
    env = {**os.environ, "SPARKDOCS_BASE_URL": real_server.base_url,
           "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"), "SPARKDOCS_CONTEXT_LENGTH": "8192"}

    def ask(*extra: str) -> dict:
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), *extra,
                              "--max-tokens", "16", "--json"], capture_output=True, text=True,
                             env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    first = ask("What is section 4 about?")
    assert set(first) >= {"answer", "finish_reason", "ttft_s", "decode_tokens_per_s",
                          "prompt_tokens", "completion_tokens", "cached_tokens"}
    assert first["cached_tokens"] is None  # llama.cpp does not report it: null, not 0
    follow = ask("And section 8?", "--follow-up-of", first["session"])
    assert follow["session"] == first["session"] and follow["answer"]


def test_the_demo_model_is_budgeted_with_its_own_tokenizer(qa):
    """SmolLM2 splits text into more tokens than Llama 3: the budget says so and counts as the
    server does, and the whole-prompt check uses its counts (the server's own count of the
    block is the independent evidence)."""
    from sparkdocs.tokens import TokenCounting
    from sparkdocs.views import budget_summary

    document = _document(qa, 2000, seed=7)
    served = qa.served_count(document)
    assert served.counting is TokenCounting.SERVER and served.ratio > 1.05
    budget = qa.budget(document)
    block = qa.prepared(document).block
    server_block = qa.client.count_tokens(block)
    assert budget.used == pytest.approx(server_block, rel=0.02)
    assert budget.used > qa.workspace.budget(document, context=8192).used
    assert "Counted with the server's tokenizer" in budget_summary(budget)
