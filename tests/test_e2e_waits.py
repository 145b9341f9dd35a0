"""Honest waits in a real browser (issue #14): before the first token the page shows the
elapsed time and whether the request is queued or prefilling, read from the server's metrics.
The judge is the text in the browser's DOM while the request is in flight, checked against the
engine's own queue gauges."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from builders import synthetic_document_text
from test_e2e_browser import STATS, _ask, _upload, running_app

from sparkdocs.client import parse_metrics


def _shown_beside_the_engine(page, phase: str, root_url: str):
    """The page's wait line once it shows `phase`, and vLLM's own gauges read right then."""
    from playwright.sync_api import expect

    wait = page.get_by_text(re.compile(rf"^{phase}: \d+ s"))
    expect(wait).to_be_visible(timeout=60_000)
    # vLLM's API server tokenises a long prompt before its engine counts the request (running
    # 0, waiting 0 for a moment under load): read the gauges until they see it, the page
    # still showing the phase each time
    deadline = time.monotonic() + 20
    while True:
        engine = parse_metrics(httpx.get(f"{root_url}/metrics", timeout=10).text)
        shown = wait.inner_text(timeout=5_000)
        if engine.running or engine.waiting or time.monotonic() > deadline:
            return shown, engine
        time.sleep(0.3)


def _seconds(text: str, phase: str) -> int:
    found = re.search(rf"{phase}: (\d+) s", text)
    assert found, text
    return int(found.group(1))


@pytest.mark.e2e
def test_a_request_behind_a_full_batch_shows_queued_with_its_elapsed_time(tmp_path, artifacts_dir):
    """The fake server's /metrics say 2 running and 1 waiting (what vLLM says when its batch is
    full), and its first token comes after 8 s: a CPU build cannot be made to queue on demand."""
    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright

    note = tmp_path / "note.md"
    note.write_text("# Note\nThe supplier delivers within thirty days.")
    with FakeServer() as server:
        server.behaviour.latency_s = 8.0
        with running_app(server.base_url, tmp_path, SPARKDOCS_WARM_UP="false") as url, \
                sync_playwright() as p:
            browser, page = _upload(p, url, note, "note.md · text ·")
            _ask(page, "When is delivery?")
            wait = page.get_by_text(re.compile(r"^Queued: \d+ s"))
            expect(wait).to_be_visible(timeout=30_000)
            first = _seconds(wait.inner_text(), "Queued")
            expect(page.get_by_text(re.compile(rf"^Queued: (?!{first} s)\d+ s"))
                   ).to_be_visible(timeout=10_000)  # the elapsed time moves on
            assert "1 waiting" in wait.inner_text()
            page.screenshot(path=str(artifacts_dir / "07-queued.png"), full_page=True)
            expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
            expect(page.get_by_text(re.compile(r"^Queued:"))).to_have_count(0)
            browser.close()


@pytest.mark.vllm
def test_a_long_prefill_on_vllm_shows_prefilling_with_its_elapsed_time(vllm, tmp_path,
                                                                      artifacts_dir):
    """vLLM's CPU build reading ~30K tokens for seconds: while the page says "Prefilling: N s",
    vLLM's own gauges say one request running and none waiting, and no token has come."""
    from playwright.sync_api import expect, sync_playwright
    from vllm_tier import API_KEY

    document = tmp_path / "long-contract.md"
    document.write_text(f"prefill {time.time()}\n" + synthetic_document_text(30_000, seed=11))
    with running_app(vllm.base_url, tmp_path, SPARKDOCS_API_KEY=API_KEY,
                     SPARKDOCS_WARM_UP="false", SPARKDOCS_CONTEXT_LENGTH="65536",
                     SPARKDOCS_ANSWER_TOKENS="8") as url, sync_playwright() as p:
        browser, page = _upload(p, url, document, "long-contract.md · text ·")
        _ask(page, "What does clause 3 say?")
        shown, engine = _shown_beside_the_engine(page, "Prefilling", vllm.root_url)
        assert (engine.running, engine.waiting) == (1.0, 0.0), (engine, shown)
        first = _seconds(shown, "Prefilling")
        expect(page.get_by_text(re.compile(rf"^Prefilling: (?!{first} s)\d+ s"))
               ).to_be_visible(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "08-prefilling.png"), full_page=True)
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=300_000)
        expect(page.get_by_text(re.compile(r"^Prefilling:"))).to_have_count(0)
        browser.close()


@pytest.mark.vllm
def test_a_question_behind_a_full_vllm_batch_shows_queued_with_its_elapsed_time(
        vllm_8k, tmp_path, artifacts_dir):
    """The real engine queues: the tier serves at most 8 sequences at once, so with 8 long
    answers running a 9th request waits. While vLLM's own gauges say 8 running and 1 waiting,
    the page says "Queued: N s"; once the 8 are cancelled, the question is answered."""
    import threading

    from playwright.sync_api import expect, sync_playwright
    from vllm_tier import API_KEY, MODEL_NAME

    stop = threading.Event()
    started = threading.Barrier(9)

    def long_answer(number: int) -> None:
        body = {"model": MODEL_NAME, "max_tokens": 7000, "temperature": 0.0, "stream": True,
                "ignore_eos": True, "messages": [{"role": "user", "content":
                                                  f"Filler {number}: count to a million."}]}
        with httpx.Client(timeout=600, trust_env=False) as client, client.stream(
                "POST", f"{vllm_8k.base_url}/chat/completions", json=body,
                headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            started.wait(timeout=120)
            for _ in response.iter_lines():
                if stop.is_set():
                    break  # closing the connection makes vLLM abort the request

    fillers = [threading.Thread(target=long_answer, args=(n,), daemon=True) for n in range(8)]
    note = tmp_path / "note.md"
    note.write_text("# Note\nThe supplier delivers within thirty days.")
    try:
        with running_app(vllm_8k.base_url, tmp_path, SPARKDOCS_API_KEY=API_KEY,
                         SPARKDOCS_WARM_UP="false", SPARKDOCS_CONTEXT_LENGTH="8192",
                         SPARKDOCS_ANSWER_TOKENS="8") as url, sync_playwright() as p:
            browser, page = _upload(p, url, note, "note.md · text ·")
            # the page settled (its input ready) before 8 decoding answers take both cores
            box = page.get_by_placeholder("Ask about the document")
            expect(box).to_be_enabled(timeout=60_000)
            page.wait_for_timeout(2000)
            for filler in fillers:
                filler.start()
            started.wait(timeout=120)  # all 8 answers have begun streaming
            box.fill("When is delivery?", timeout=120_000)
            box.press("Enter", timeout=120_000)
            shown, engine = _shown_beside_the_engine(page, "Queued", vllm_8k.root_url)
            assert (engine.running, engine.waiting) == (8.0, 1.0), (engine, shown)
            assert "8 running, 1 waiting" in shown, shown
            page.screenshot(path=str(artifacts_dir / "09-queued-vllm.png"), full_page=True)
            stop.set()  # the 8 are cancelled: the question gets its slot
            expect(page.get_by_text(STATS)).to_have_count(1, timeout=300_000)
            expect(page.get_by_text(re.compile(r"^Queued:"))).to_have_count(0)
            browser.close()
    finally:
        stop.set()
        for filler in fillers:
            filler.join(timeout=60)
