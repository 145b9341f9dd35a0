"""A busy server in a real browser (issue #20): a question asked while the warm-up holds the
server's one slot ends with an answer, not "Nothing is answering", and the page keeps its
budget and demo-model notice; the warm-up shows its elapsed time and its Cancel ends the request
on the server. The fake server plays llama-cpp-python's one lock (discovery waits for the
completion in flight, as the demo engine's /v1/models does); the judges are the browser's DOM
and the fake server's own record (requests seen, requests held)."""

from __future__ import annotations

import re
import time

import pytest
from test_e2e_browser import STATS, _ask, _upload, running_app

from sparkdocs.local_model import LOCAL_MODEL_ALIAS

pytestmark = pytest.mark.e2e
BUDGET = re.compile(r"document tokens of [\d,]+ available")
DEMO = re.compile(r"^Answers come from")


def _until(condition, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _demo_server(server) -> None:
    """The fake dressed as the demo engine: its model, its context, its own tokenizer."""
    server.behaviour.model = LOCAL_MODEL_ALIAS
    server.behaviour.max_model_len = 6000
    server.behaviour.tokenize_scale = 1.3  # not Llama 3's counts: budgeted with the server's


def test_a_question_during_a_slow_warm_up_is_answered_and_the_budget_stays(tmp_path,
                                                                          artifacts_dir):
    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright

    note = tmp_path / "note.md"
    note.write_text("# Note\nThe supplier delivers within thirty days.")
    with FakeServer() as server:
        _demo_server(server)
        server.behaviour.serial = True  # one slot; /v1/models waits for it
        with running_app(server.base_url, tmp_path, SPARKDOCS_CAPABILITY_TTL_S="3",
                         SPARKDOCS_CONNECT_TIMEOUT_S="0.5") as url, sync_playwright() as p:
            server.behaviour.prefill_s = 15.0  # each request reads for 15 s
            browser, page = _upload(p, url, note, "note.md · text ·")
            budget = page.get_by_text(BUDGET)
            expect(budget).to_be_visible(timeout=30_000)
            before = budget.inner_text()
            assert "server's tokenizer" in before  # the demo model's own counts
            expect(page.get_by_text(DEMO)).to_be_visible()
            _until(lambda: server.behaviour.in_flight == 1, timeout_s=30,
                   what="the warm-up did not reach the server")
            time.sleep(3.5)  # the page's capabilities are now due to be asked again
            _ask(page, "When is delivery?")
            expect(page.get_by_text(re.compile(r"^Queued behind the warm-up: \d+ s"))
                   ).to_be_visible(timeout=30_000)
            # the figures are the server's last, and the page says how old they are
            expect(page.get_by_text(re.compile(r"model service is busy .* \d+ s ago"))
                   ).to_be_visible(timeout=10_000)
            page.screenshot(path=str(artifacts_dir / "20-queued-behind-warm-up.png"),
                            full_page=True)
            expect(page.get_by_text(STATS)).to_have_count(1, timeout=90_000)
            expect(page.get_by_text(re.compile("Nothing is answering"))).to_have_count(0)
            expect(page.get_by_text(DEMO)).to_be_visible()
            assert page.get_by_text(BUDGET).inner_text() == before
            page.screenshot(path=str(artifacts_dir / "21-answered-after-warm-up.png"),
                            full_page=True)
            browser.close()
        sent = server.behaviour.requests
        assert [r["max_tokens"] for r in sent] == [1, 48]  # the warm-up, then the question
        waited = [seen for seen in server.behaviour.seen if seen == "GET /v1/models"]
        assert len(waited) >= 2  # it asked again while busy, and kept what it knew


def test_the_warm_up_shows_its_time_and_cancel_ends_it_on_the_server(tmp_path, artifacts_dir):
    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright

    note = tmp_path / "note.md"
    note.write_text("# Note\nThe supplier delivers within thirty days.")
    with FakeServer() as server:
        server.behaviour.prefill_s = 120.0
        with running_app(server.base_url, tmp_path) as url, sync_playwright() as p:
            browser, page = _upload(p, url, note, "note.md · text ·")
            caption = page.get_by_text(re.compile(r"Warming the model's prefix cache with this "
                                                  r"document: \d+ s"))
            expect(caption).to_be_visible(timeout=30_000)
            _until(lambda: server.behaviour.in_flight == 1, timeout_s=30,
                   what="the warm-up did not reach the server")
            first = int(re.search(r"document: (\d+) s", caption.inner_text()).group(1))
            expect(page.get_by_text(re.compile(rf"document: (?!{first} s)\d+ s"))
                   ).to_be_visible(timeout=10_000)  # the elapsed time moves on
            page.screenshot(path=str(artifacts_dir / "22-warming.png"), full_page=True)
            page.get_by_role("button", name="Cancel").click()
            _until(lambda: server.behaviour.in_flight == 0, timeout_s=10,
                   what="the server still holds the cancelled warm-up")
            assert server.behaviour.left_early == 1
            expect(page.get_by_text(re.compile(r"Warm-up cancelled after \d+"))
                   ).to_be_visible(timeout=15_000)
            page.screenshot(path=str(artifacts_dir / "23-warm-up-cancelled.png"),
                            full_page=True)
            browser.close()
        assert len(server.behaviour.requests) == 1  # cancelled, not started again
