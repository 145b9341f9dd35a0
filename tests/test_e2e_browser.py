"""The real app in a real browser (Debian chromium via Playwright) against the real llama.cpp
server: upload a PDF, see its token count, ask two questions, see them stream with stats,
reload and find the session again. Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from builders import make_contract_pdf

from sparkdocs.local_model import free_port

pytestmark = pytest.mark.e2e
# the stats line under a finished answer, not the "Waiting for the first token" caption
STATS = re.compile(r"^first token \d")
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _start_app(base_url: str, tmp_path: Path, **overrides: str):
    port = free_port()
    env = {**os.environ, "SPARKDOCS_BASE_URL": base_url,
           "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"), "SPARKDOCS_CONTEXT_LENGTH": "6000",
           "SPARKDOCS_ANSWER_TOKENS": "48", "SPARKDOCS_TEMPERATURE": "0", **overrides}
    log = (tmp_path / "streamlit.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                                "--server.port", str(port), "--server.address", "127.0.0.1",
                                "--server.headless", "true"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_streamlit(url, process, tmp_path / "streamlit.log")
    return url, process, log


@contextlib.contextmanager
def running_app(base_url: str, tmp_path: Path, **overrides: str) -> Iterator[str]:
    """The app as its own process for the block; stopped after it, whatever happened."""
    url, process, log = _start_app(base_url, tmp_path, **overrides)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def wait_for_streamlit(url: str, process: subprocess.Popen, log_path: Path, *,
                       seconds: float = 60) -> None:
    """Until the app's health endpoint answers; otherwise fail with the server's own log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    pytest.fail("streamlit did not start: " + log_path.read_text(errors="replace")[-4000:])


@pytest.fixture
def app_url(real_server, tmp_path):
    with running_app(real_server.base_url, tmp_path) as url:
        yield url


@pytest.fixture
def slow_app_url(tmp_path):
    """The app against the fake server streaming slowly: a real server cannot be made to."""
    from fakeserver import FakeServer

    with FakeServer() as server:
        server.behaviour.answer = " ".join(f"word{i}" for i in range(300))
        server.behaviour.token_delay_s = 0.05
        with running_app(server.base_url, tmp_path) as url:
            yield url


def _upload(p, url: str, path: Path, heading: str):
    """Debian chromium, the app open, one file uploaded and its heading shown."""
    from playwright.sync_api import expect

    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("input[type=file]").first.set_input_files(str(path))
    expect(page.get_by_text(heading)).to_be_visible(timeout=60_000)
    return browser, page


def _ask(page, question: str) -> None:
    box = page.get_by_placeholder("Ask about the document")
    box.fill(question)
    box.press("Enter")


def test_upload_ask_twice_and_reload(app_url, real_server, tmp_path, artifacts_dir):
    import re

    from playwright.sync_api import expect, sync_playwright

    from sparkdocs.served_tokens import PROBE_TEXT
    from sparkdocs.tokens import llama3

    pdf = tmp_path / "supply-contract.pdf"
    pdf.write_bytes(make_contract_pdf(4))
    root = real_server.base_url.removesuffix("/v1")
    served = httpx.post(f"{root}/extras/tokenize", json={"input": PROBE_TEXT}, timeout=30,
                        trust_env=False).json()["tokens"]
    assert len(served) != llama3().count(PROBE_TEXT)  # the demo model counts its own way
    with sync_playwright() as p:
        browser, page = _upload(p, app_url, pdf, "supply-contract.pdf · pdf ·")
        expect(page.get_by_text("document tokens of")).to_be_visible()
        # so the heading's count says it is Llama 3's; the budget counts the served model's
        expect(page.get_by_text(re.compile(r"supply-contract\.pdf · pdf · [\d,]+ Llama 3 tokens"))
               ).to_be_visible()
        page.wait_for_timeout(1500)  # the budget bar is drawn by Vega after the page settles
        page.screenshot(path=str(artifacts_dir / "01-uploaded.png"), full_page=True)

        answers = page.locator('[data-testid="stChatMessage"]')
        box = page.get_by_placeholder("Ask about the document")
        for number, question in enumerate(["What is the payment term?", "Who may terminate?"], 1):
            _ask(page, question)
            # this answer's own line, not a count of lines: while a run draws, the line of the
            # answer before can show twice (the live one and the stored one), so a count of 2
            # was met while the second answer still streamed, and the reload below stopped it
            expect(answers.nth(2 * number - 1)).to_contain_text(re.compile(r"first token \d"),
                                                                timeout=120_000)
            expect(box).to_be_enabled(timeout=60_000)  # the answer's run has ended
        expect(answers).to_have_count(4)
        page.screenshot(path=str(artifacts_dir / "02-ask-page.png"), full_page=True)
        assert "session=" in page.url

        before = page.locator(MAIN).inner_text()
        page.reload()
        with _explained(page, tmp_path, artifacts_dir / "03-after-reload-failed.png", before):
            expect(page.get_by_text("What is the payment term?")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Who may terminate?")).to_be_visible()
            # the page draws turn by turn; on a loaded machine the last one's line takes seconds
            expect(page.get_by_text(STATS)).to_have_count(2, timeout=60_000)
        page.screenshot(path=str(artifacts_dir / "03-after-reload.png"), full_page=True)
        browser.close()


MAIN = '[data-testid="stMain"]'


@contextlib.contextmanager
def _explained(page, tmp_path: Path, screenshot: Path, before: str):
    """A failed expectation says what the page showed before and now, and what the app
    logged (a failure seen once under load is then understood, not only retried)."""
    try:
        yield
    except AssertionError as exc:
        page.screenshot(path=str(screenshot), full_page=True)
        log = tmp_path / "streamlit.log"
        now = page.locator(MAIN).inner_text()
        logged = log.read_text(errors="replace")[-4000:] if log.exists() else "(none)"
        raise AssertionError(f"{exc}\n--- page before ---\n{before[-3000:]}\n--- page now ---\n"
                             f"{now[-3000:]}\n--- app log ---\n{logged}") from exc


def _answer_streaming(p, url: str, tmp_path: Path):
    """A note uploaded and a question asked: returns once the slow answer is streaming."""
    from playwright.sync_api import expect

    note = tmp_path / "note.md"
    note.write_text("# Note\nThe supplier delivers within thirty days.")
    browser, page = _upload(p, url, note, "note.md · text ·")
    _ask(page, "When is delivery?")
    expect(page.get_by_text("word20", exact=False)).to_be_visible(timeout=30_000)
    return browser, page


def test_stop_keeps_the_partial_answer_marked_interrupted(slow_app_url, tmp_path, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = _answer_streaming(p, slow_app_url, tmp_path)
        page.get_by_role("button", name="Stop").click()
        expect(page.get_by_text("Stopped by the user")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "04-stopped.png"), full_page=True)
        page.reload()
        expect(page.get_by_text("Stopped by the user")).to_be_visible(timeout=60_000)
        answer = page.locator('[data-testid="stChatMessage"]').nth(1).inner_text()
        assert "word0" in answer and "word299" not in answer
        browser.close()


def test_a_question_typed_while_an_answer_streams_loses_neither(slow_app_url, tmp_path, artifacts_dir):
    """The chat input is disabled while an answer streams, so typing and Enter there cannot
    rerun the page and cut the answer; once it ends the next question goes through; Esc stops."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = _answer_streaming(p, slow_app_url, tmp_path)
        box = page.get_by_placeholder("Ask about the document")
        box.click(force=True)
        page.keyboard.type("Who pays?")
        page.keyboard.press("Enter")
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
        first = page.locator('[data-testid="stChatMessage"]').nth(1).inner_text()
        assert "word47" in first and "finish: length" in first, first[-300:]  # ended by itself
        expect(box).to_be_enabled(timeout=30_000)
        _ask(page, "Who pays?")
        expect(page.get_by_text("word20", exact=False).nth(1)).to_be_visible(timeout=30_000)
        page.keyboard.press("Escape")
        expect(page.get_by_text("Stopped by the user")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "05-queued-question.png"), full_page=True)
        page.reload()
        expect(page.get_by_text("Who pays?")).to_be_visible(timeout=60_000)
        messages = page.locator('[data-testid="stChatMessage"]')
        expect(messages).to_have_count(4)
        # a reloaded page draws each turn's frame before its text: wait for the text itself
        expect(messages.nth(1)).to_contain_text("word47", timeout=60_000)
        expect(messages.nth(3)).to_contain_text("word0", timeout=60_000)
        browser.close()


def test_the_chat_input_comes_back_after_each_answer(slow_app_url, tmp_path):
    """The input disabled during an answer (submit_mode="disable") re-enables only when the last
    script run to finish was a full one; a fragment on a timer that fired during the answer runs
    right after it and used to leave the input disabled for good (issue #14's flaky test)."""
    from playwright.sync_api import expect, sync_playwright

    note = tmp_path / "note.md"
    note.write_text("# Note\nThe supplier delivers within thirty days.")
    with sync_playwright() as p:
        browser, page = _upload(p, slow_app_url, note, "note.md · text ·")
        expect(page.get_by_text("Prefix cache warmed")).to_be_visible(timeout=30_000)
        # a loaded machine: the browser handles the end of a run and the next run's messages
        # in one go, which is when a timer fragment's run hid the full run's end
        page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": 6})
        box = page.get_by_placeholder("Ask about the document")
        for number, question in enumerate(["When?", "Who pays?", "Where?", "How?", "Why?"], 1):
            expect(box).to_be_enabled(timeout=30_000)
            _ask(page, question)
            expect(page.get_by_text(STATS)).to_have_count(number, timeout=60_000)
            expect(box).to_be_enabled(timeout=15_000)
        browser.close()


def test_a_source_chip_opens_the_cited_page_with_the_quote_highlighted(tmp_path, artifacts_dir):
    """Issue #13 in a real browser: under the answer, a verified chip and a not-found chip; the
    verified one opens page 2 with the document's own words in a <mark>."""
    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright

    pdf = tmp_path / "supply-contract.pdf"
    pdf.write_bytes(make_contract_pdf(3))
    with FakeServer() as server:
        server.behaviour.answer = (
            'The Supplier delivers: "The Supplier shall deliver the Goods to the Customer within '
            'thirty" (p. 2). It also says "The Customer shall pay a bonus of ten million euros" '
            '(p. 1).')
        url, process, log = _start_app(server.base_url, tmp_path)
        try:
            with sync_playwright() as p:
                browser, page = _upload(p, url, pdf, "supply-contract.pdf · pdf ·")
                _ask(page, "When does the Supplier deliver?")
                expect(page.get_by_text("Sources:", exact=False)).to_be_visible(timeout=60_000)
                verified = page.get_by_role("button", name=re.compile(r"✓ p\. 2"))
                expect(verified).to_be_visible()
                expect(page.get_by_role("button", name=re.compile(r"✗ p\. 1"))).to_be_visible()
                verified.click()
                mark = page.locator("mark").first
                expect(mark).to_be_visible(timeout=30_000)
                assert "The Supplier shall deliver the Goods to the Customer" in mark.inner_text()
                page.screenshot(path=str(artifacts_dir / "06-source-chip.png"), full_page=True)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)
            log.close()
