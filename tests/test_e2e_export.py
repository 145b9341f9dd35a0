"""Issue #22's export items in a real browser (Debian chromium via Playwright) against the fake
server: an answer stopped inside a code block, its source opened, then the session exported.
Judges: the browser's DOM and hit-testing (the Export button takes a click while the source is
open), and the exported file read back with a CommonMark parser."""

from __future__ import annotations

import re

import pytest
from builders import make_pdf
from markdown_it import MarkdownIt
from test_e2e_browser import _ask, _start_app, _upload

pytestmark = pytest.mark.e2e
PAGES = ["Installation notes.", "For the details see www.freedesktop.org and the manual."]


def test_a_stop_inside_code_is_exported_closed_and_sources_read_as_written(tmp_path,
                                                                          artifacts_dir):
    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright

    pdf = tmp_path / "manual.pdf"
    pdf.write_bytes(make_pdf(PAGES))
    with FakeServer() as server:
        server.behaviour.chunks = (
            ['It says "see www.freedesktop.org and the manual" (p. 2). Run:\n\n', "```sh\n"]
            + [f"echo line{i}\n" for i in range(1200)])
        server.behaviour.token_delay_s = 0.05
        url, process, log = _start_app(server.base_url, tmp_path)
        try:
            with sync_playwright() as p:
                browser, page = _upload(p, url, pdf, "manual.pdf · pdf ·")
                _ask(page, "How do I install it?")
                expect(page.get_by_text("line20", exact=False)).to_be_visible(timeout=60_000)
                page.get_by_role("button", name="Stop").click()
                expect(page.get_by_text("Stopped by the user")).to_be_visible(timeout=30_000)

                chip = page.get_by_role("button", name=re.compile(r"✓ p\. 2"))
                expect(chip).to_be_visible(timeout=30_000)
                chip.click()
                popover = page.locator('[data-testid="stPopoverBody"]')
                expect(popover).to_contain_text("www.freedesktop.org", timeout=30_000)
                shown = popover.inner_text()
                assert "\\" not in shown, shown  # no Markdown escapes on screen
                page.screenshot(path=str(artifacts_dir / "export-01-source-open.png"))
                export = page.get_by_role("button", name="Export session (Markdown)")
                assert not _overlap(export.bounding_box(), popover.bounding_box())
                export.click(trial=True, timeout=5_000)  # takes the click, source open
                with page.expect_download() as download:
                    export.click()
                saved = tmp_path / "export.md"
                download.value.save_as(saved)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)
            log.close()
    text = saved.read_text()
    tokens = MarkdownIt("commonmark").parse(text)
    code = "".join(t.content for t in tokens if t.type in ("fence", "code_block"))
    assert "echo line0" in code and "Stopped by the user" not in code, text
    paragraphs = [t.content for i, t in enumerate(tokens)
                  if t.type == "inline" and tokens[i - 1].type == "paragraph_open"]
    assert any(p.startswith("Stopped by the user") for p in paragraphs), text
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "Sources, checked against the document" in headings, text
    assert "(p. 2)" in text and "www.freedesktop.org" in text and "\\." not in text, text


def _overlap(a, b) -> float:
    """The area two boxes on the screen share (0 when one does not cover the other)."""
    width = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    height = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(width, 0) * max(height, 0)
