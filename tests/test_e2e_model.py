"""Against the real llama.cpp test server: streaming, prefix reuse, warm-up, doctor."""

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
    parts = list(pending.stream)
    result = pending.stream.result
    assert len(parts) > 3 and "".join(parts) == result.answer
    assert result.finish_reason in {"stop", "length"} and result.ttft_s > 0
    saved = qa.record(session, pending)
    assert qa.workspace.store.get_session(session.id).turns[0].answer == result.answer == saved.turns[0].answer


def test_three_questions_reuse_the_document_prefix(qa, real_server):
    document = _document(qa, 2000, seed=2)
    session = qa.workspace.store.new_session(document)
    ttfts, hits = [], []
    for question in ("Who are the parties?", "What is the payment term?", "How can it end?"):
        offset = real_server.log_offset()
        pending = qa.ask(document, session, question, max_tokens=8)
        result = pending.stream.run()
        ttfts.append(result.ttft_s)
        hits.append(real_server.prefix_hits_since(offset)[-1])
    print("TTFT per question (s):", [round(t, 3) for t in ttfts], "prefix hits:", hits)
    first_hit, first_remaining = hits[0]
    assert first_remaining > 1500  # the first question evaluates the whole document
    for hit, remaining in hits[1:]:
        assert hit > 0.95 * (hit + remaining) and remaining < 40  # only the question is new


def test_warm_up_makes_the_first_question_a_cache_hit(qa, real_server):
    document = _document(qa, 2000, seed=3)
    warm = qa.warm_up(document)
    offset = real_server.log_offset()
    session = qa.workspace.store.new_session(document)
    result = qa.ask(document, session, "What is the term?", max_tokens=8).stream.run()
    hit, remaining = real_server.prefix_hits_since(offset)[-1]
    print(f"warm-up {warm.seconds:.2f}s, first question TTFT {result.ttft_s:.3f}s, hit {hit}, remaining {remaining}")
    assert hit > 0.95 * (hit + remaining) and remaining < 40


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
