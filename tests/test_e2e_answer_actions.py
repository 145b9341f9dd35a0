"""Issue #22: an answer can be copied and regenerated, in a real browser (Debian chromium via
Playwright) against the fake server. Judges: the browser's clipboard against the answer stored
in the SQLite file, and the server's own log of chat requests with the turns stored."""

from __future__ import annotations

import json
import re

import pytest
from test_e2e_browser import STATS, _ask, _upload
from test_e2e_pages import _db, app  # noqa: F401  (the app fixture)

pytestmark = pytest.mark.e2e
ANSWER = "The answer is **forty-two** (see `x < y` and www.example.org)."


def _turns(tmp_path) -> list[dict]:
    with _db(tmp_path) as db:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM turns ORDER BY seq")]


def test_copy_puts_the_answer_on_the_clipboard_and_regenerate_asks_again(app, tmp_path,  # noqa: F811
                                                                         artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url, server = app
    server.behaviour.answer = ANSWER
    note = tmp_path / "note.md"
    note.write_text("# Note\nThe answer is forty-two.")
    with sync_playwright() as p:
        browser, page = _upload(p, url, note, "note.md · text ·")
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
        _ask(page, "What is the answer?")
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
        asked = sum(1 for line in server.behaviour.seen if "chat/completions" in line)

        page.get_by_role("button", name="Copy", exact=True).click()
        code = page.locator('[data-testid="stPopoverBody"] [data-testid="stCode"]')
        expect(code).to_be_visible(timeout=30_000)
        code.hover()
        page.locator('[data-testid="stPopoverBody"]').get_by_role(
            "button", name=re.compile("copy", re.I)).click()
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == _turns(tmp_path)[0]["answer"] == ANSWER, copied
        page.keyboard.press("Escape")

        page.get_by_role("button", name="Regenerate").click()
        # the new answer's own line (a count of lines can be met by the first answer's line
        # drawn twice while the run draws), then its run's end: the reload must not stop it
        expect(page.locator('[data-testid="stChatMessage"]').nth(3)).to_contain_text(
            re.compile(r"first token \d"), timeout=60_000)
        expect(page.get_by_placeholder("Ask about the document")).to_be_enabled(timeout=60_000)
        page.reload()  # a stored answer has them too
        expect(page.get_by_role("button", name="Regenerate")).to_have_count(2, timeout=60_000)
        expect(page.get_by_role("button", name="Copy", exact=True)).to_have_count(2)
        page.screenshot(path=str(artifacts_dir / "answer-actions.png"), full_page=True)
        browser.close()
    turns = _turns(tmp_path)
    assert [t["question"] for t in turns] == ["What is the answer?"] * 2
    assert sum(1 for line in server.behaviour.seen if "chat/completions" in line) == asked + 1
