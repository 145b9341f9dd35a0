"""A cited PDF page as the reader sees it: one page rendered by PDFium, the quoted words under
a translucent highlight, as PNG bytes for the page to show beside the extracted text.

Bounded work: one page, its longer side at most `max_side` pixels (a poster-sized page is
scaled down, never rendered at full size), and the quote found on that page only. Words are
found as PDFium lays them out: whitespace and case are ignored, so a quote that runs over a
line break in the PDF still lights up every line it covers."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

from .errors import SparkdocsError

log = logging.getLogger(__name__)

MAX_SIDE_PX = 1400  # the longer side of a rendered page, in pixels
MAX_SCALE = 2.0  # pixels per PDF point: a small page is not blown up further than this
HIGHLIGHT = (255, 213, 0, 110)  # RGBA: translucent, the words stay readable
OUTLINE = (214, 148, 0, 255)
_SPACE = re.compile(r"\s+")


class PageImageError(SparkdocsError):
    """The page cannot be drawn (no such page, a damaged or locked PDF)."""


def page_png(pdf: bytes, page_number: int, *, quote: str = "", password: str | None = None,
             max_side: int = MAX_SIDE_PX) -> bytes:
    """Page `page_number` (from 1) of `pdf` as PNG bytes, with `quote` highlighted where it
    stands on that page (nothing highlighted when it is not there)."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    try:
        document = pdfium.PdfDocument(pdf, password=password)
    except pdfium.PdfiumError as exc:
        raise PageImageError(f"The PDF cannot be opened to draw its page ({exc}).") from exc
    try:
        if not 1 <= page_number <= len(document):
            raise PageImageError(f"The PDF has {len(document)} pages, not a page {page_number}.")
        page = document[page_number - 1]
        width, height = page.get_size()
        scale = min(MAX_SCALE, max_side / max(width, height, 1.0))
        image = page.render(scale=scale).to_pil().convert("RGBA")
        boxes = list(_quote_boxes(page, quote)) if quote.strip() else []
        if boxes:
            layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
            draw = ImageDraw.Draw(layer)
            for left, bottom, right, top in boxes:  # PDF points, origin at the bottom left
                draw.rectangle([left * scale - 1, (height - top) * scale - 1,
                                right * scale + 1, (height - bottom) * scale + 1],
                               fill=HIGHLIGHT, outline=OUTLINE)
            image = Image.alpha_composite(image, layer)
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
        return out.getvalue()
    finally:
        document.close()


def _quote_boxes(page, quote: str) -> Iterator[tuple[float, float, float, float]]:
    """The rectangles PDFium gives for the characters of the quote's first occurrence on the
    page, matched without regard to whitespace or case."""
    text_page = page.get_textpage()
    try:
        count = text_page.count_chars()
        text = text_page.get_text_range() if count > 0 else ""
        if len(text) != count:  # characters and indices do not line up: PDFium's own search
            found = text_page.search(" ".join(quote.split()), match_case=False).get_next()
        else:
            found = _find_loose(text, quote)
        if found is None:
            return
        start, length = found
        for index in range(text_page.count_rects(start, length)):
            yield text_page.get_rect(index)
    finally:
        text_page.close()


def _find_loose(text: str, quote: str) -> tuple[int, int] | None:
    """(first character index, number of characters) of `quote` in `text`, whitespace and
    case ignored; None when it is not there."""
    wanted = _SPACE.sub("", quote).casefold()
    if not wanted:
        return None
    kept = [i for i, char in enumerate(text) if not char.isspace()]
    squeezed = "".join(text[i] for i in kept).casefold()
    at = squeezed.find(wanted)
    if at < 0 or len(squeezed) != len(kept):  # casefold changed a length: no safe mapping
        return None
    first, last = kept[at], kept[at + len(wanted) - 1]
    return first, last - first + 1
