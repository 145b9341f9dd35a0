"""PDF text per page. PDFium (pypdfium2) extracts ~20x faster than pypdf with comparable text;
pypdf, with its logger silenced, is the fallback for files PDFium refuses."""

from __future__ import annotations

import io
import logging
import threading

from ..documents import Section, SectionKind, clean_text
from ..errors import EncryptedDocumentError, IngestError
from .options import Progress

log = logging.getLogger(__name__)
_PDFIUM_LOCK = threading.Lock()  # PDFium is not thread-safe; Streamlit runs sessions in threads


def _pdfium_pages(data: bytes, *, name: str, password: str | None,
                  progress: Progress | None = None) -> list[str]:
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data, password=password)
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                hint = ("the password is wrong; check it" if password else
                        "it is encrypted; give its password (--password, or the field on the page)")
                raise EncryptedDocumentError(f"{name}: cannot open the PDF: {hint}.") from exc
            raise
        try:
            pages = []
            total = len(pdf)
            for index in range(total):
                if progress is not None and index % 25 == 0:
                    progress(index, total, f"page {index + 1} of {total}")
                page = pdf[index]
                textpage = page.get_textpage()
                pages.append(textpage.get_text_range())
                textpage.close()
                page.close()
            return pages
        finally:
            pdf.close()


def _pypdf_pages(data: bytes, *, name: str, password: str | None) -> list[str]:
    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        if not password or not reader.decrypt(password):
            raise EncryptedDocumentError(f"{name}: cannot open the encrypted PDF; give its password.")
    return [page.extract_text() or "" for page in reader.pages]


def pdf_sections(data: bytes, *, name: str, password: str | None = None,
                 progress: Progress | None = None) -> tuple[list[Section], list[str]]:
    try:
        pages = _pdfium_pages(data, name=name, password=password, progress=progress)
    except EncryptedDocumentError:
        raise
    except Exception as first:  # PDFium refused it: give pypdf's lenient parser a chance
        log.info("%s: PDFium could not read the file (%s); trying pypdf", name, first)
        try:
            pages = _pypdf_pages(data, name=name, password=password)
        except EncryptedDocumentError:
            raise
        except Exception as second:
            raise IngestError(
                f"{name}: the PDF is damaged or truncated and no text could be read ({first}); "
                "re-export or re-download it."
            ) from second
    if not pages:
        raise IngestError(f"{name}: the PDF has no pages.")
    sections = [Section(SectionKind.PAGE, str(number), clean_text(text))
                for number, text in enumerate(pages, 1)]
    empty = [s.title for s in sections if not s.text.strip()]
    warnings = []
    if len(empty) == len(sections):
        raise IngestError(
            f"{name}: none of its {len(sections)} pages has extractable text — it is probably "
            "scanned; run OCR on it (for example `ocrmypdf in.pdf out.pdf`) and upload the result."
        )
    if empty:
        shown = ", ".join(empty[:10]) + (" …" if len(empty) > 10 else "")
        warnings.append(f"{name}: {len(empty)} of {len(sections)} pages have no text — scanned? "
                        f"(pages {shown})")
    return sections, warnings
