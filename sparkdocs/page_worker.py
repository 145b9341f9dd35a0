"""Draws one PDF page in its own process (`python -I page_worker.py MEMORY CPU`), under an
address-space and a CPU-time limit set before PDFium or Pillow is imported, as the text
extractor (ingest/pdf_worker.py) reads PDFs: drawing runs far more of PDFium than reading text
does (images, fonts, shadings), and a hostile page must cost the app nothing but this child.

Run as a script by path, never imported by sparkdocs. Only the standard library is imported at
the top.

Protocol: stdin = one JSON line {"page", "quote", "password", "max_side", "max_scale",
"fill", "outline"} then the PDF bytes; stdout = the PNG; on failure exit status 2 and one JSON
line on stderr {"error": "password" | "page" | "damaged", "message": ...}."""

from __future__ import annotations

import io
import json
import re
import resource
import sys
from collections.abc import Iterator
from typing import Any

_SPACE = re.compile(r"\s+")


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def lower_limit(kind: int, soft: int, hard: int) -> None:
    """Set a limit, never above one this process already has."""
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def main(argv: list[str]) -> int:
    memory, cpu = int(argv[1]), int(argv[2])
    lower_limit(resource.RLIMIT_AS, memory, memory)
    lower_limit(resource.RLIMIT_CPU, cpu, cpu + 5)
    request = json.loads(sys.stdin.buffer.readline())
    pdf = sys.stdin.buffer.read()
    try:
        png = draw(pdf, request)
    except _Refused as exc:
        sys.stderr.write(json.dumps({"error": exc.kind, "message": str(exc)}) + "\n")
        return 2
    sys.stdout.buffer.write(png)
    return 0


def draw(pdf: bytes, request: dict[str, Any]) -> bytes:
    """The page as PNG bytes, the quote's characters under translucent boxes."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    try:
        document = pdfium.PdfDocument(pdf, password=request.get("password"))
    except pdfium.PdfiumError as exc:
        kind = "password" if "password" in str(exc).lower() else "damaged"
        raise _Refused(kind, f"the PDF cannot be opened to draw its page ({exc})") from exc
    try:
        number = int(request["page"])
        if not 1 <= number <= len(document):
            raise _Refused("page", f"the PDF has {len(document)} pages, not a page {number}")
        page = document[number - 1]
        width, height = page.get_size()
        scale = min(float(request["max_scale"]), int(request["max_side"]) / max(width, height, 1.0))
        image = page.render(scale=scale).to_pil().convert("RGBA")
        quote = str(request.get("quote") or "")
        boxes = list(_quote_boxes(page, quote)) if quote.strip() else []
        if boxes:
            layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
            pen = ImageDraw.Draw(layer)
            for left, bottom, right, top in boxes:  # PDF points, origin at the bottom left
                pen.rectangle([left * scale - 1, (height - top) * scale - 1,
                               right * scale + 1, (height - bottom) * scale + 1],
                              fill=tuple(request["fill"]), outline=tuple(request["outline"]))
            image = Image.alpha_composite(image, layer)
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
        return out.getvalue()
    finally:
        document.close()


def _quote_boxes(page: Any, quote: str) -> Iterator[tuple[float, float, float, float]]:
    """The rectangles PDFium gives for the characters of the quote's first occurrence on the
    page, matched without regard to whitespace or case."""
    text_page = page.get_textpage()
    try:
        count = text_page.count_chars()
        text = text_page.get_text_range() if count > 0 else ""
        if len(text) != count:  # characters and indices do not line up: PDFium's own search
            found = text_page.search(" ".join(quote.split()), match_case=False).get_next()
        else:
            found = find_loose(text, quote)
        if found is None:
            return
        start, length = found
        for index in range(text_page.count_rects(start, length)):
            yield text_page.get_rect(index)
    finally:
        text_page.close()


def find_loose(text: str, quote: str) -> tuple[int, int] | None:
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


if __name__ == "__main__":
    sys.exit(main(sys.argv))
