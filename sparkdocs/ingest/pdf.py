"""PDF text per page. PDFium (pypdfium2) extracts ~20x faster than pypdf with comparable text;
pypdf, with its logger silenced, is the fallback for files PDFium refuses.

Extraction runs in a child process with an address-space limit (`max_pdf_memory_bytes`,
1 GiB by default) and a CPU-time limit (`max_pdf_cpu_seconds`): a 2 MB PDF whose content
stream inflates to gigabytes takes 3.3 GB of memory in-process, and neither library lets a
caller bound what one page may inflate to. The child costs ~50 ms to start; in exchange a bomb
ends as a clear per-file error, whatever PDFium does when an allocation fails (it aborts), and
sessions do not queue behind one PDFium lock. The page texts together are capped at
`max_unpacked_bytes`."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

from ..documents import Section, SectionKind, clean_text
from ..errors import EncryptedDocumentError, IngestError, UnsafeArchiveError
from .options import IngestOptions, Progress

log = logging.getLogger(__name__)

# The extractor, run by path in its own process (see pdf_worker.py for why and its protocol).
_WORKER = Path(__file__).with_name("pdf_worker.py")


def _extract(data: bytes, *, name: str, options: IngestOptions,  # noqa: C901 (over the limit; split when next changed)
             progress: Progress | None) -> list[str]:
    memory_mib = options.max_pdf_memory_bytes / 2**20
    command = [sys.executable, "-I", str(_WORKER), str(options.max_pdf_memory_bytes),
               str(int(options.max_pdf_cpu_seconds))]
    header = json.dumps({"password": options.password,
                         "text_limit": options.max_unpacked_bytes}).encode() + b"\n"
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    try:
        try:
            process.stdin.write(header)
            process.stdin.write(data)
            process.stdin.close()
        except BrokenPipeError:
            pass  # the child died early: its exit status says why
        pages: dict[int, str] = {}
        total = 0
        outcome: dict[str, object] = {}
        for line in process.stdout:
            message = json.loads(line)
            if "n" in message:
                total = int(message["n"])
            elif "i" in message:
                index = int(message["i"])
                pages[index] = str(message["t"])
                if progress is not None and index % 25 == 0:
                    progress(index, total, f"page {index + 1} of {total}")
            elif "fallback" in message:
                log.info("%s: PDFium could not read the file (%s); trying pypdf", name,
                         message["fallback"])
                pages, total = {}, 0
            else:
                outcome = message
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        code = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if outcome.get("error") == "password":
        hint = ("the password is wrong; check it" if options.password else
                "it is encrypted; give its password (--password, or the field on the page)")
        raise EncryptedDocumentError(f"{name}: cannot open the PDF: {hint}.")
    if outcome.get("error") == "text":
        raise UnsafeArchiveError(
            f"{name}: its text is over {options.max_unpacked_bytes / 2**20:,.0f} MiB "
            "(SPARKDOCS_MAX_UNPACKED_MB); split the PDF into smaller files.")
    if outcome.get("error") == "damaged":
        raise IngestError(
            f"{name}: the PDF is damaged or truncated and no text could be read "
            f"({outcome.get('message')}); re-export or re-download it.")
    if outcome.get("done") and code == 0:
        return [pages.get(i, "") for i in range(total)]
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in stderr:
        raise UnsafeArchiveError(
            f"{name}: reading the PDF took over {options.max_pdf_cpu_seconds:,.0f} s of CPU "
            "(SPARKDOCS_MAX_PDF_CPU_SECONDS), which is how a PDF bomb looks; refusing it. "
            "Re-export the PDF, or raise the limit if you trust the file.")
    if code in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS) or "MemoryError" in stderr:
        raise UnsafeArchiveError(
            f"{name}: reading the PDF needed more than {memory_mib:,.0f} MiB of memory "
            "(SPARKDOCS_MAX_PDF_MEMORY_MB), which is how a decompression bomb looks (a content "
            "stream inflating to gigabytes); refusing it. Re-export the PDF, or raise the limit "
            "if you trust the file.")
    log.warning("%s: PDF reader exited with %s: %s", name, code, stderr[-2000:])
    raise IngestError(f"{name}: the PDF reader stopped unexpectedly (exit status {code}); "
                      "re-export the PDF and try again.")


# PDFium marks a soft hyphen (a word broken across lines by the typesetter) with U+FFFE, a
# noncharacter, and leaves it in the text: "dan\ufffe\r\ngerous". Seen 34-52 times per real
# document; it splits words for the reader, the tokenizer and quote checks alike.
_SOFT_HYPHEN_AT_LINE_END = re.compile("\ufffe[ \t]*(?:\r\n|\r|\n)[ \t]*")
_SOFT_HYPHEN = "\ufffe"


def join_soft_hyphens(text: str) -> str:
    """PDFium's soft-hyphen markers out: at a line end the two halves of the word join (the
    hyphen and the line break go); anywhere else the marker is dropped."""
    if _SOFT_HYPHEN not in text:
        return text
    return _SOFT_HYPHEN_AT_LINE_END.sub("", text).replace(_SOFT_HYPHEN, "")


def pdf_sections(data: bytes, *, name: str, options: IngestOptions,
                 progress: Progress | None = None) -> tuple[list[Section], list[str]]:
    pages = _extract(data, name=name, options=options, progress=progress)
    if not pages:
        raise IngestError(f"{name}: the PDF has no pages.")
    sections = [Section(SectionKind.PAGE, str(number), clean_text(join_soft_hyphens(text)))
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
