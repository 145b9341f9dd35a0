"""Documents beyond one context: one planner and one merge step for `summarize` and `ask --whole`.
Judged by what the server received (every page in exactly one part request, every part answer
in the merge), by the tokenizer's count of each request, and by the SQLite file."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_pdf
from corpus import contract_pages
from fakeserver import FakeServer
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdocs.client import AnswerResult
from sparkdocs.errors import BudgetError
from sparkdocs.parts import merge
from sparkdocs.prompts import PromptBuilder
from sparkdocs.store import DATABASE_NAME
from sparkdocs.tokens import ChatEncoder, llama3

PAGES = 14
CONTEXT = 4_000
ANSWER_TOKENS = 200


def _env(cache: Path, base_url: str, **more: str) -> dict[str, str]:
    return {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache), "SPARKDOCS_BASE_URL": base_url,
            "SPARKDOCS_MAX_RETRIES": "0", "SPARKDOCS_WARM_UP": "false",
            "SPARKDOCS_ANSWER_TOKENS": str(ANSWER_TOKENS), **more}


def _page_marks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r'<page number="(\d+)"', text)]


def _ask_whole(tmp_path: Path, server: FakeServer, *extra: str) -> subprocess.CompletedProcess:
    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_pdf(contract_pages(PAGES, per_page=9)))
    return subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(pdf), "Who pays?",
                           "--whole", "--json", *extra], capture_output=True, text=True,
                          timeout=300, check=False, env=_env(tmp_path / "cache", server.base_url))


@pytest.mark.integration
def test_every_page_is_read_once_and_every_part_answer_is_merged(tmp_path):
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.answer = "Nothing relevant in this part."
        run = _ask_whole(tmp_path, server)
        requests = list(server.behaviour.requests)
    assert run.returncode == 0, run.stderr
    users = [r["messages"][-1]["content"] for r in requests]
    part_requests = [u for u in users if "<document" in u]
    merges = [u for u in users if "<document" not in u]
    pages = sorted(p for u in part_requests for p in _page_marks(u))
    assert pages == list(range(1, PAGES + 1))  # every page, once
    assert len(part_requests) >= 2 and merges
    assert all(u.count("## Part ") == 0 for u in part_requests)
    assert merges[-1].count("Nothing relevant in this part.") >= 1
    # each request, counted by the tokenizer (the judge), fits the context with the reserve
    encoder = ChatEncoder(llama3())
    for request in requests:
        from sparkdocs.tokens import ChatMessage

        ids = encoder.chat_ids(tuple(ChatMessage(m["role"], m["content"])
                                     for m in request["messages"]))
        assert len(ids) + ANSWER_TOKENS <= CONTEXT
    printed = json.loads(run.stdout)
    assert printed["read"] == f"all {PAGES} pages, in {len(part_requests)} parts"
    assert printed["coverage"] == "all" and len(printed["parts"]) == len(part_requests)
    assert all(p["status"] == "read" for p in printed["parts"])
    db = sqlite3.connect(tmp_path / "cache" / DATABASE_NAME)
    [(body,)] = db.execute("SELECT body FROM turns").fetchall()
    db.close()
    stored = json.loads(body)
    assert stored["read"] == printed["read"] and stored["status"] == "finished"
    assert "reading every page:" in run.stderr and "prompt tokens to prefill" in run.stderr


@pytest.mark.integration
def test_a_part_that_fails_is_named_and_the_answer_is_partial(tmp_path):
    pages = contract_pages(PAGES, per_page=9)
    marker = " ".join(pages[8].split()[3:9])  # words only page 9 has
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.fail_when_prompt_contains = marker
        server.behaviour.status = 503
        run = _ask_whole(tmp_path, server)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["read"].startswith("partial: ") and "not read after retries: part " in printed["read"]
    assert printed["coverage"] == "partial"
    [missing] = [p for p in printed["parts"] if p["status"] == "not read"]
    assert f"part {missing['part']} ({missing['covers']})" in printed["read"]
    assert "NOT READ" in run.stderr
    assert not printed["read"].startswith("all ")


@pytest.mark.integration
def test_whole_refuses_a_page_selection(tmp_path):
    with FakeServer() as server:
        run = _ask_whole(tmp_path, server, "--pages", "1-3")
    assert run.returncode == 2 and "--whole reads every page" in run.stderr


# -- the merge step -------------------------------------------------------------------------------

def _result(text: str) -> AnswerResult:
    return AnswerResult(text, "stop", 0.1, 0.2, None, None, None, None, "m")


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=120), min_size=2, max_size=14),
       limit=st.integers(min_value=500, max_value=1_500))
def test_merge_keeps_every_answer_and_never_sends_one_over_the_limit(sizes, limit):
    builder = PromptBuilder()
    partials = [(f"p. {i}", f"answer{i}x " * size) for i, size in enumerate(sizes, 1)]
    sent: list[str] = []

    def request(messages):
        prompt_tokens = len(builder.encoder.chat_ids(tuple(messages)))
        assert prompt_tokens + 100 <= limit  # the judge: the tokenizer's own count
        sent.append(messages[-1].content)
        # a merge answers with the answer words it was given, so nothing is lost upward
        return _result(" ".join(sorted(set(re.findall(r"answer\d+x", messages[-1].content)))))

    try:
        text, results = merge(partials, prompt_for=lambda pairs: builder.merge_answers(pairs, "Q?"),
                              request=request, context=limit, answer_tokens=100, name="doc")
    except BudgetError as exc:  # when no two neighbouring answers fit one merge request
        assert "too long to combine" in str(exc) and f"{limit - 100:,}" in str(exc)
        return
    assert set(re.findall(r"answer\d+x", text)) == {f"answer{i}x" for i in range(1, len(sizes) + 1)}
    assert len(results) == len(sent) >= 1


@pytest.mark.integration
def test_the_app_answers_from_every_page_when_asked(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    cache = tmp_path / "cache"
    pdf = make_pdf(contract_pages(PAGES, per_page=9))
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.answer = "Nothing relevant in this part."
        for name, value in _env(cache, server.base_url).items():
            monkeypatch.setenv(name, value)
        st.cache_resource.clear()
        try:
            at = AppTest.from_file(str(root / "app.py"), default_timeout=120).run()
            at.sidebar.file_uploader[0].set_value(("contract.pdf", pdf, "application/pdf")).run()
            [toggle] = [t for t in at.toggle if t.label.startswith("Answer from every page (")]
            assert re.match(r"Answer from every page \(\d+ parts, about \d+ s on this server\)",
                            toggle.label)
            toggle.set_value(True).run()
            at.chat_input[0].set_value("Who pays?").run()
            assert not at.exception
            requests = list(server.behaviour.requests)
        finally:
            st.cache_resource.clear()
    users = [r["messages"][-1]["content"] for r in requests]
    pages = sorted(p for u in users if "<document" in u for p in _page_marks(u))
    assert pages == list(range(1, PAGES + 1))
    db = sqlite3.connect(cache / DATABASE_NAME)
    [(body,)] = db.execute("SELECT body FROM turns").fetchall()
    db.close()
    assert json.loads(body)["read"].startswith(f"all {PAGES} pages, in ")
    assert any("read: all 14 pages" in c.value for c in at.caption)


FACTS = {3: "The deposit of 4,250 euros is returned within nine days of the end of the term",
         9: "Either party may end this agreement with sixty days of written notice",
         13: "All disputes go to the courts of Rotterdam under Dutch law"}


def _scripted_reply(messages: list[dict]) -> str:
    """A model that quotes the facts of its part with their pages, and a merge that keeps the
    quotes it was given: what a good model does, scripted."""
    text = messages[-1]["content"]
    if "<document" in text:
        found = []
        for match in re.finditer(r'<page number="(\d+)">(.*?)</page>', text, re.S):
            page, body = int(match.group(1)), " ".join(match.group(2).split())
            fact = FACTS.get(page)
            if fact and fact in body:
                found.append(f'"{fact}" (p. {page})')
        return " ".join(found) or "Nothing relevant in this part."
    return " ".join(re.findall(r'"[^"]+" \(p\. \d+\)', text)) or "Nothing relevant."


@pytest.mark.integration
def test_the_final_answer_carries_every_parts_facts_verified_on_their_pages(tmp_path):
    pages = contract_pages(PAGES, per_page=9)
    for page, fact in FACTS.items():
        pages[page - 1] = f"{pages[page - 1]} {fact}."
    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_pdf(pages))
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.reply = _scripted_reply
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(pdf), "What are the "
                              "deposit, notice and law terms?", "--whole", "--json"],
                             capture_output=True, text=True, timeout=300, check=False,
                             env=_env(tmp_path / "cache", server.base_url))
        parts_seen = sum("<document" in r["messages"][-1]["content"]
                         for r in server.behaviour.requests)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert parts_seen >= 2 and printed["coverage"] == "all"
    verdicts = {(c["quote"], c["status"], c["found"]["label"] if c["found"] else None)
                for c in printed["citations"]}
    assert verdicts == {(fact, "verified", f"p. {page}") for page, fact in FACTS.items()}
    # every part's own answer is kept with the turn
    db = sqlite3.connect(tmp_path / "cache" / DATABASE_NAME)
    [(body,)] = db.execute("SELECT body FROM turns").fetchall()
    db.close()
    kept = " ".join(p["answer"] for p in json.loads(body)["parts"])
    assert all(fact in kept for fact in FACTS.values())


@pytest.mark.integration
@pytest.mark.parametrize("command", ["whole", "summarize"])
def test_parts_fit_a_served_model_that_counts_more_tokens(tmp_path, command):
    """The demo model's tokenizer counts more tokens than Llama 3 for the same text: parts are
    cut for the served count, so no request is over the served context (the server's own
    count, scaled by the fake server's tokenizer, is the judge)."""
    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_pdf(contract_pages(PAGES, per_page=9)))
    scale = 1.3
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.model = "smollm2-demo"
        server.behaviour.tokenize_scale = scale
        server.behaviour.answer = "Nothing relevant in this part."
        args = (["ask", str(pdf), "Who pays?", "--whole", "--json"] if command == "whole"
                else ["summarize", str(pdf), "--out", str(tmp_path / "out")])
        run = subprocess.run([sys.executable, "-m", "sparkdocs", *args], capture_output=True,
                             text=True, timeout=300, check=False,
                             env=_env(tmp_path / "cache", server.base_url,
                                      SPARKDOCS_MODEL="smollm2-demo"))
        requests = list(server.behaviour.requests)
    assert run.returncode == 0, run.stderr
    encoder = ChatEncoder(llama3())
    from sparkdocs.tokens import ChatMessage

    for request in requests:
        ids = encoder.chat_ids(tuple(ChatMessage(m["role"], m["content"])
                                     for m in request["messages"]))
        served = int(len(ids) * scale + 0.5)
        assert served + ANSWER_TOKENS <= CONTEXT, served


def _turns(cache: Path) -> list[dict]:
    db = sqlite3.connect(cache / DATABASE_NAME)
    try:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM turns ORDER BY seq")]
    finally:
        db.close()


@pytest.mark.integration
def test_a_merge_that_could_never_fit_is_refused_before_any_part_is_sent(tmp_path):
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        run = _ask_whole(tmp_path, server, "--max-tokens", "1400")
        sent = len(server.behaviour.requests)
    assert run.returncode == 2 and sent == 0
    assert "lower --max-tokens to at most" in " ".join(run.stderr.split())
    [turn] = _turns(tmp_path / "cache")  # the question is kept, marked failed
    assert turn["question"] == "Who pays?" and turn["status"] == "failed"


@pytest.mark.integration
def test_when_combining_fails_every_part_answer_is_shown_and_kept(tmp_path):
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.answer = "Part answer here."
        server.behaviour.fail_when_prompt_contains = "## Part 1:"  # only the merge request
        server.behaviour.status = 503
        pdf = tmp_path / "contract.pdf"
        pdf.write_bytes(make_pdf(contract_pages(PAGES, per_page=9)))
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(pdf), "Who pays?",
                              "--whole"], capture_output=True, text=True, timeout=300,
                             check=False, env=_env(tmp_path / "cache", server.base_url))
    assert run.returncode == 2, run.stderr
    assert "combining the answers of" in " ".join(run.stderr.split())
    assert run.stdout.count("Part answer here.") >= 2  # each part's answer, printed
    [turn] = _turns(tmp_path / "cache")
    assert turn["status"] == "failed" and len(turn["parts"]) >= 2
    assert all(p["answer"] == "Part answer here." for p in turn["parts"])


@pytest.mark.integration
def test_a_page_larger_than_a_part_is_split_at_paragraphs_and_the_answer_says_so(tmp_path):
    """Page 5 alone is larger than a part: it is read in pieces cut between paragraphs, every
    paragraph of it reaches exactly one part request whole, and what was read says so."""
    pages = contract_pages(8, per_page=3)
    paragraphs = [f"Paragraph {i} of the schedule: " + " ".join(f"item{i}x{j}" for j in range(60))
                  for i in range(24)]
    doc = tmp_path / "contract.md"
    # a Markdown heading per 'page': the long one is section "Schedule"
    doc.write_text("\n\n".join(f"# Clause {n}\n\n{text}" for n, text in enumerate(pages, 1))
                   + "\n\n# Schedule\n\n" + "\n\n".join(paragraphs) + "\n")
    with FakeServer() as server:
        server.behaviour.max_model_len = 3_000
        server.behaviour.answer = "Nothing relevant in this part."
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), "Who pays?",
                              "--whole", "--json"], capture_output=True, text=True, timeout=300,
                             check=False, env=_env(tmp_path / "cache", server.base_url))
        sent = [r["messages"][-1]["content"] for r in server.behaviour.requests
                if "<document" in r["messages"][-1]["content"]]
    assert run.returncode == 0, run.stderr
    for paragraph in paragraphs:
        assert sum(paragraph in text for text in sent) == 1, paragraph[:30]
    read = json.loads(run.stdout)["read"]
    assert 'section "Schedule" was split at paragraph boundaries into' in read


@pytest.mark.integration
def test_a_second_whole_question_on_a_busy_session_is_refused_and_kept(tmp_path):
    import time

    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_pdf(contract_pages(PAGES, per_page=9)))
    cache = tmp_path / "cache"
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.answer = " ".join(f"w{i}" for i in range(40))
        server.behaviour.token_delay_s = 0.1
        env = _env(cache, server.base_url)
        first = subprocess.Popen([sys.executable, "-m", "sparkdocs", "ask", str(pdf),
                                  "Who pays?", "--whole"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env)
        try:
            deadline = time.monotonic() + 60
            session_id = None
            while session_id is None and time.monotonic() < deadline:
                if server.behaviour.in_flight and (cache / DATABASE_NAME).exists():
                    db = sqlite3.connect(cache / DATABASE_NAME)
                    rows = db.execute("SELECT id FROM sessions").fetchall()
                    db.close()
                    session_id = rows[0][0] if rows else None
                time.sleep(0.1)
            assert session_id, "the first question never started"
            second = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(pdf),
                                     "And who signs?", "--whole", "--follow-up-of", session_id],
                                    capture_output=True, text=True, timeout=120, check=False,
                                    env=env)
            first.communicate(timeout=180)
        finally:
            first.kill()
    assert second.returncode == 2
    assert "already answering a question from every page" in " ".join(second.stderr.split())
    questions = [(t["question"], t["status"]) for t in _turns(cache)]
    assert ("And who signs?", "failed") in questions and ("Who pays?", "finished") in questions


@pytest.mark.integration
def test_warming_the_parts_sends_each_parts_exact_prefix_as_many_as_the_kv_cache_holds(tmp_path):
    """The fake server's KV cache (its /metrics: 12,000 blocks of 16) holds every part here;
    each warm-up request is the part's question prompt up to the question (the same prefix a
    question then finds cached)."""
    from sparkdocs.client import ModelClient
    from sparkdocs.config import Settings
    from sparkdocs.ingest import Upload
    from sparkdocs.prompts import QUESTION_LEAD
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.workspace import Workspace

    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "cache",  # type: ignore[call-arg]
                            max_retries=0, answer_tokens=ANSWER_TOKENS)
        workspace = Workspace(settings)
        qa = QuestionAnswering(workspace, ModelClient(settings))
        document = workspace.load_uploads(
            [Upload("c.pdf", make_pdf(contract_pages(PAGES, per_page=9)))],
            workspace.ingest_options())
        qa.warm_parts(document)
        warmed = [r["messages"][-1]["content"] for r in server.behaviour.requests]
        plan = qa.plan_whole(document, "Who pays?")
    asked = [p.messages[-1].content for p in plan.prompts]
    assert len(warmed) == len(asked) >= 2
    for warm, question in zip(warmed, asked, strict=True):
        assert warm.endswith(QUESTION_LEAD) and question.startswith(warm)


def test_parts_cached_at_once_counts_from_the_first_part_until_the_kv_cache_is_full():
    from sparkdocs.parts import parts_cached_at_once
    from sparkdocs.prompts import Part
    from sparkdocs.views import parts_fit

    parts = [Part(f"p. {n}", (n,), 40_000) for n in range(5)]
    assert parts_cached_at_once(parts, 95_000) == 2  # a Spark's BF16 KV cache
    assert parts_cached_at_once(parts, 200_000) == 5 and parts_cached_at_once(parts, None) is None
    assert parts_fit(parts, 95_000, 800.0) == (
        "2 of this document's 5 parts stay cached at once (KV cache 95,000 tokens): each "
        "question re-reads about 120,000 tokens, ~150 s at 800 tokens/s.")


# -- each part's state while it runs: what the client saw, refined by the engine's gauges ------

events = st.lists(st.tuples(st.sampled_from(["sent", "token", "read", "failed"]),
                            st.integers(1, 6)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(events, st.none() | st.integers(0, 8))
def test_part_states_follow_what_each_part_went_through(script, waiting):
    """Judged against the script of events itself: a part never sent is not sent yet; an
    ended one done or not read; one with a token answering; of those sent and silent, the
    engine's waiting count (the latest sent) are queued, the rest prefilling."""
    from sparkdocs.metrics import ServerMetrics
    from sparkdocs.parts import PartProgress, PartState

    progress = PartProgress(6)
    sent: list[int] = []
    token: set[int] = set()
    ended: dict[int, bool] = {}
    for kind, number in script:
        if kind == "sent":
            progress.sent(number)
            sent = [n for n in sent if n != number] + [number]
            token.discard(number)
            ended.pop(number, None)
        elif number in sent and number not in ended:
            if kind == "token":
                progress.first_token(number)
                token.add(number)
            else:
                progress.ended(number, read=kind == "read")
                ended[number] = kind == "read"
    metrics = ServerMetrics(waiting=waiting) if waiting is not None else None
    states = progress.states(metrics)
    silent = [n for n in sent if n not in token and n not in ended]
    queued = set(silent[len(silent) - min(len(silent), waiting or 0):])
    for number, state in enumerate(states, 1):
        if number in ended:
            assert state is (PartState.DONE if ended[number] else PartState.NOT_READ)
        elif number in token:
            assert state is PartState.ANSWERING
        elif number not in sent:
            assert state is PartState.NOT_SENT
        elif waiting is None:
            assert state is PartState.SENT
        else:
            assert state is (PartState.QUEUED if number in queued else PartState.PREFILLING)


@pytest.mark.integration
def test_the_progress_of_a_whole_answer_shows_each_part_as_the_server_has_it(tmp_path):
    """Through the real runner against a server whose first tokens are slow and whose
    scheduler runs one part fewer than there are (the fake vLLM's /metrics, from its own
    requests in flight): while the parts wait, as many are queued as the engine's gauge says
    are waiting, the others prefilling, and once all are sent one is queued; at the end every
    part is done (judge: the requests the server received, one per part)."""
    import threading
    import time

    from sparkdocs.client import ModelClient
    from sparkdocs.config import Settings
    from sparkdocs.ingest import Upload
    from sparkdocs.parts import PartProgress, PartState
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.workspace import Workspace

    pdf = make_pdf(contract_pages(PAGES, per_page=9))
    with FakeServer() as server:
        server.behaviour.max_model_len = CONTEXT
        server.behaviour.answer = "Nothing relevant in this part."
        server.behaviour.latency_s = 1.5
        settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "cache",  # type: ignore[call-arg]
                            answer_tokens=ANSWER_TOKENS)
        qa = QuestionAnswering(Workspace(settings), ModelClient(settings))
        document = qa.workspace.load_uploads([Upload("contract.pdf", pdf)],
                                             qa.workspace.ingest_options())
        session = qa.session_for(document, whole=True)
        server.behaviour.max_num_seqs = len(qa.plan_whole(document, "Terms?").parts) - 1
        progress = PartProgress()
        seen: list[tuple[tuple[PartState, ...], float]] = []
        worker = threading.Thread(target=lambda: qa.run_whole(document, session, "Terms?",
                                                              progress=progress))
        worker.start()
        while worker.is_alive():
            metrics = qa.client.metrics()
            assert metrics is not None and metrics.waiting is not None
            seen.append((progress.states(metrics), metrics.waiting))
            time.sleep(0.1)
        final = progress.states(qa.client.metrics())
        parts = sum("<document" in r["messages"][-1]["content"]
                    for r in server.behaviour.requests)
    assert parts >= 2 and len(final) == parts
    assert all(state is PartState.DONE for state in final)
    waiting = [(s, w) for s, w in seen if s and all(x in (PartState.QUEUED, PartState.PREFILLING)
                                                    for x in s)]
    assert all(s.count(PartState.QUEUED) == w for s, w in waiting)
    assert any(w == 1 for _, w in waiting)  # every part sent, the last one waiting
