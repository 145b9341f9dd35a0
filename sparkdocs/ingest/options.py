"""Options that change what ingestion produces (and so are part of a document's cache key)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..documents import RENDER_VERSION

# (done, total, what): called while a long file is read, so a page can show progress.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class IngestOptions:
    password: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_lock_files: bool = False
    max_file_bytes: int = 200 * 1024 * 1024
    max_source_file_bytes: int = 1024 * 1024
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: float = 200.0
    # Every .gitignore/--include/--exclude match of one codebase shares this (a backstop: the
    # pattern guards in `code.py` already keep each match to milliseconds).
    max_match_seconds: float = 30.0
    # PDF text is extracted in a child process with these limits (see `pdf.py`).
    max_pdf_memory_bytes: int = 1024 * 1024 * 1024
    max_pdf_cpu_seconds: float = 300.0
    # A DOCX's XML parts (the only ones read; media are never inflated), unpacked, at most.
    max_docx_xml_bytes: int = 64 * 1024 * 1024

    def cache_salt(self) -> str:
        """The options that change the resulting Document (limits do not, passwords never go in),
        and the rendering version (cached documents carry token counts of their rendering)."""
        # v2: PDF soft hyphens (U+FFFE) are joined, so v1 PDFs are read again
        # v3: a codebase lists the files it left out (Document.skipped: a v2 record has none),
        # and an archive's last copy of a path decides even when it is left out
        # v4: Document.skipped lists what ignore rules leave out too (.git, node_modules, …)
        return repr(("v4", RENDER_VERSION, self.include, self.exclude, self.include_lock_files,
                     self.max_source_file_bytes))
