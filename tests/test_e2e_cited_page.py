"""Issue #22: a source of a PDF shows the page itself, the quoted words highlighted, beside the
extracted text — in a real browser (Debian chromium via Playwright) against the fake server.
Judges: the image the browser received, against PDFium's plain rendering of the page."""

from __future__ import annotations

import io
import re

import pytest
from builders import make_pdf
from PIL import Image, ImageChops
from test_e2e_browser import _ask, _start_app, _upload

pytestmark = pytest.mark.e2e
PAGES = ["Installation notes. Nothing else on this page.",
         "Chapter two.\n\nFor the details see www.freedesktop.org and the manual, then restart."]


def _plain(pdf: bytes, number: int, size: tuple[int, int]) -> Image.Image:
    import pypdfium2 as pdfium

    page = pdfium.PdfDocument(pdf)[number - 1]
    return page.render(scale=size[0] / page.get_size()[0]).to_pil().convert("RGB").resize(size)


def test_a_pdf_source_shows_its_page_with_the_quote_highlighted(tmp_path, artifacts_dir):
    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright

    pdf = make_pdf(PAGES)
    path = tmp_path / "manual.pdf"
    path.write_bytes(pdf)
    with FakeServer() as server:
        server.behaviour.answer = ('It says "see www.freedesktop.org and the manual" (p. 2).')
        url, process, log = _start_app(server.base_url, tmp_path)
        try:
            with sync_playwright() as p:
                browser, page = _upload(p, url, path, "manual.pdf · pdf ·")
                _ask(page, "Where are the details?")
                chip = page.get_by_role("button", name=re.compile(r"✓ p\. 2"))
                expect(chip).to_be_visible(timeout=60_000)
                chip.click()
                popover = page.locator('[data-testid="stPopoverBody"]')
                image = popover.locator('[data-testid="stImage"] img')
                expect(image).to_be_visible(timeout=30_000)
                expect(popover.locator("mark")).to_contain_text("see www.freedesktop.org")
                expect(popover).to_contain_text("p. 2 as printed")
                page.screenshot(path=str(artifacts_dir / "cited-page.png"))
                shown_box, text_box = image.bounding_box(), popover.locator("mark").bounding_box()
                src = image.get_attribute("src")
                data = page.request.get(src if src.startswith("http") else url + src).body()
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)
            log.close()
    assert shown_box["x"] + shown_box["width"] <= text_box["x"]  # beside the text, on its left
    shown = Image.open(io.BytesIO(data)).convert("RGB")
    page_two, page_one = _plain(pdf, 2, shown.size), _plain(pdf, 1, shown.size)
    changed = ImageChops.difference(shown, page_two).convert("L").point(lambda v: 255 * (v > 24))
    box = changed.getbbox()
    assert box is not None, "nothing highlighted"
    assert box[3] - box[1] < shown.size[1] * 0.1  # one line
    assert page_two.crop(box).convert("L").getextrema()[0] < 100  # over the words
    rest = ImageChops.difference(shown, page_two).convert("L")
    rest.paste(0, box)
    assert rest.getextrema()[1] <= 24  # page two, as PDFium draws it
    assert ImageChops.difference(shown, page_one).getbbox() is not None
