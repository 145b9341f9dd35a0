"""The PDF text extractor that runs in its own process (`python -I pdf_worker.py MEMORY CPU`),
under an address-space and a CPU-time limit set before PDFium or pypdf is imported.

Run as a script by path, never imported by sparkdocs: importing the package would load what the
limits are meant to keep out. Only the standard library is imported at the top.

Protocol: stdin = one JSON line {"password", "text_limit"} then the PDF bytes; stdout = JSON
lines {"n": pages}, {"i": index, "t": text}..., then {"done": true}; or {"fallback": reason}
when PDFium fails and pypdf takes over; or one {"error": "password" | "text" | "damaged",
"message": ...}."""

from __future__ import annotations

import io
import json
import logging
import resource
import sys
import warnings
from collections.abc import Iterator
from typing import Any

Pages = Iterator[tuple[int, str]]


class _Done(Exception):
    """The answer has been given (an error line): stop without a traceback."""


def lower_limit(kind: int, soft: int, hard: int) -> None:
    """Set a limit, never above one this process already has."""
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def pages_pdfium(data: bytes, password: str | None) -> Pages:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data, password=password)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            emit(error="password")
            raise _Done from exc
        raise
    total = len(pdf)
    emit(n=total)
    for index in range(total):
        page = pdf[index]
        textpage = page.get_textpage()
        yield index, textpage.get_text_range()
        textpage.close()
        page.close()


def pages_pypdf(data: bytes, password: str | None) -> Pages:
    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted and (not password or not reader.decrypt(password)):
        emit(error="password")
        raise _Done
    emit(n=len(reader.pages))
    for index, page in enumerate(reader.pages):
        yield index, page.extract_text() or ""


def run(pages: Pages, text_limit: int) -> None:
    size = 0
    for index, text in pages:
        size += len(text)
        if size > text_limit:
            emit(error="text", message=str(size))
            raise _Done
        emit(i=index, t=text)
    emit(done=True)


def main(argv: list[str]) -> int:
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    memory, cpu = int(argv[1]), int(argv[2])
    lower_limit(resource.RLIMIT_AS, memory, memory)
    lower_limit(resource.RLIMIT_CPU, cpu, cpu + 5)
    header = json.loads(sys.stdin.buffer.readline())
    data = sys.stdin.buffer.read()
    password, text_limit = header["password"], int(header["text_limit"])
    try:
        try:
            run(pages_pdfium(data, password), text_limit)
        except (_Done, MemoryError):
            raise
        except Exception as first:  # this process is the isolation boundary: PDFium → pypdf
            emit(fallback=f"{type(first).__name__}: {first}")
            try:
                run(pages_pypdf(data, password), text_limit)
            except (_Done, MemoryError):
                raise
            except Exception as second:
                emit(error="damaged", message=f"{first}; pypdf: {second}")
    except _Done:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
