"""A cited PDF page drawn with the quote highlighted (issue #22). Judges: PDFium's plain
rendering of the same page (which page is shown, where the image differs) and the PNG's own
pixels; the quote's place comes from the PDF as fpdf wrote it (top of the page)."""

from __future__ import annotations

import io

import pytest
from builders import make_pdf
from PIL import Image, ImageChops

from sparkdocs.page_image import MAX_SIDE_PX, PageImageError, page_png

PAGES = ["Installation notes. Nothing else on this page.",
         "Chapter two.\n\nFor the details see www.freedesktop.org and the manual, then restart."]


def _plain(pdf: bytes, number: int, size: tuple[int, int]) -> Image.Image:
    import pypdfium2 as pdfium

    page = pdfium.PdfDocument(pdf)[number - 1]
    scale = size[0] / page.get_size()[0]
    return page.render(scale=scale).to_pil().convert("RGB").resize(size)


def test_the_cited_page_is_drawn_with_the_quote_under_a_highlight():
    pdf = make_pdf(PAGES)
    image = Image.open(io.BytesIO(page_png(pdf, 2, quote="see  WWW.freedesktop.org\nand the")))
    assert image.format == "PNG" and max(image.size) <= MAX_SIDE_PX
    shown = image.convert("RGB")
    page_two, page_one = _plain(pdf, 2, shown.size), _plain(pdf, 1, shown.size)
    changed = ImageChops.difference(shown, page_two).convert("L").point(lambda v: 255 * (v > 24))
    box = changed.getbbox()
    assert box is not None, "nothing highlighted"
    left, top, right, bottom = box
    assert bottom - top < shown.size[1] * 0.1  # one line of text, not the page
    assert top < shown.size[1] * 0.3  # where fpdf wrote it: near the top
    # the highlight lies over text: the plain page has dark pixels inside it
    inside = page_two.crop(box).convert("L")
    assert inside.getextrema()[0] < 100
    # everything else is page two as PDFium draws it, not page one
    outside = ImageChops.difference(shown, page_two).convert("L")
    outside.paste(0, box)
    assert outside.getextrema()[1] <= 24
    assert ImageChops.difference(shown, page_one).getbbox() is not None


def test_a_quote_not_on_the_page_leaves_it_plain_and_a_missing_page_is_refused():
    pdf = make_pdf(PAGES)
    shown = Image.open(io.BytesIO(page_png(pdf, 1, quote="not on this page"))).convert("RGB")
    plain = _plain(pdf, 1, shown.size)
    assert ImageChops.difference(shown, plain).convert("L").getextrema()[1] <= 24
    with pytest.raises(PageImageError, match="has 2 pages"):
        page_png(pdf, 3)


def test_a_huge_page_is_drawn_at_the_bounded_size():
    from fpdf import FPDF

    big = FPDF(format=(3000, 3000))  # millimetres: a poster
    big.add_page()
    big.set_font("helvetica", size=40)
    big.cell(text="Poster")
    image = Image.open(io.BytesIO(page_png(bytes(big.output()), 1, quote="Poster")))
    assert max(image.size) == MAX_SIDE_PX


def test_drawing_runs_in_a_limited_child_and_a_bad_pdf_is_a_plain_error():
    """The child's address-space limit holds (a limit too small to load PDFium fails there,
    not in this process), and a damaged PDF is one error naming the page."""
    pdf = make_pdf(PAGES)
    with pytest.raises(PageImageError, match="Page 1 cannot be drawn"):
        page_png(pdf, 1, memory_bytes=48 * 2**20)
    with pytest.raises(PageImageError, match="Page 1 cannot be drawn"):
        page_png(b"%PDF-1.4\nnot really a PDF", 1)
    assert page_png(pdf, 1).startswith(b"\x89PNG")  # and the next page is drawn as usual
