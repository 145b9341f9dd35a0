"""Bytes and names in, a `Document` out. Pure: no disk, no network; see `sparkdocs.sources`
for reading paths and folders.

Nothing a file can send takes the process down: every format is checked from what it declares
before anything is inflated, and reads stop at the limit whatever was declared. The memory
budget, beyond the upload itself (at most `max_file_bytes`, 200 MiB) and the document made:

- text: the decoded text (up to 4 bytes a character) plus a 64 KiB sample for
  charset-normalizer; parts of at most 64K characters, even for one enormous line;
- codebases (zip, tar.*, folders): at most `max_unpacked_bytes` (512 MiB) unpacked (for a
  tar, every byte tarfile asks for is charged before it is produced), files of at most `max_source_file_bytes` (1 MiB), at
  most 200,000 archive entries, compression ratio at most 200:1; ignore patterns of at most 3
  wildcards (2 `**`), paths of at most 4,096 characters and 128 folders deep, 30 s of matching
  in all;
- DOCX: only XML parts are read, at most `max_docx_xml_bytes` (64 MiB) unpacked, ratio at most
  200:1; lxml needs several times that while parsing. Media parts are never inflated;
- PDF: text is extracted in a child process of at most `max_pdf_memory_bytes` (1 GiB) address
  space and `max_pdf_cpu_seconds` (300 s) of CPU; page texts together at most 512 MiB.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from ..documents import Document, DocumentKind, Section, SectionKind, content_hash
from ..errors import UnsupportedFormatError
from .code import SourceFile, check_size, codebase_sections, read_tar, read_zip
from .docx import docx_sections
from .options import IngestOptions, Progress
from .pdf import pdf_sections
from .text import looks_binary, text_sections

__all__ = ["IngestOptions", "Progress", "SourceFile", "Upload", "detect_kind", "ingest_bytes",
           "ingest_uploads", "ingest_codebase", "codebase_key", "document_key"]

DEFAULT_OPTIONS = IngestOptions()
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def detect_kind(name: str, data: bytes) -> str:
    """'pdf', 'docx', 'zip', 'tar' or 'text', from magic bytes first, then the name."""
    lower = name.lower()
    if data.startswith(b"%PDF-") or (lower.endswith(".pdf") and b"%PDF-" in data[:1024]):
        return "pdf"
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        if lower.endswith((".docx", ".docm", ".dotx")) or b"word/" in data[:4096]:
            return "docx"
        return "zip"
    if data.startswith(b"\x1f\x8b") or data.startswith(b"BZh") or data.startswith(b"\xfd7zXZ") or (
            len(data) > 262 and data[257:262] == b"ustar"):
        return "tar"
    if lower.endswith(".pdf"):
        return "pdf"  # a broken PDF: let the PDF reader say what is wrong
    if lower.endswith(".docx"):
        return "docx"
    if lower.endswith(_ARCHIVE_SUFFIXES):
        return "zip" if lower.endswith(".zip") else "tar"
    return "text"


def document_key(uploads: Sequence[Upload], options: IngestOptions) -> str:
    """The cache key of what `ingest_uploads` would make, computable without parsing. A single
    file's name counts only through its extension, so a renamed copy is the same document."""
    if len(uploads) == 1:
        suffix = posixpath.splitext(uploads[0].name.lower())[1]
        return content_hash([(suffix, uploads[0].data)], salt=options.cache_salt())
    # in the order given: the order of the sections is part of the document (and its prompt)
    return content_hash([(u.name, u.data) for u in uploads], salt=options.cache_salt())


def _single(upload: Upload, options: IngestOptions, progress: Progress | None = None
            ) -> tuple[DocumentKind, list[Section], list[str], list[str]]:
    """(kind, sections, warnings, what was left out of an archive with its reason)."""
    name, data = upload.name, upload.data
    check_size(name, len(data), options.max_file_bytes)
    if not data:
        raise UnsupportedFormatError(f"{name}: the file is empty; pick a file with content.")
    kind = detect_kind(name, data)
    if kind == "pdf":
        return DocumentKind.PDF, *pdf_sections(data, name=name, options=options,
                                               progress=progress), []
    if kind == "docx":
        return DocumentKind.DOCX, *docx_sections(data, name=name, options=options), []
    if kind in ("zip", "tar"):
        reader = read_zip if kind == "zip" else read_tar
        files, notes = reader(data, name=name, options=options)
        return DocumentKind.CODEBASE, *codebase_sections(files, notes=notes)
    if looks_binary(data):
        raise UnsupportedFormatError(
            f"{name}: a binary file in a format sparkdocs does not read; use PDF, DOCX, text, "
            "source code, or a .zip/.tar.gz of a codebase."
        )
    return DocumentKind.TEXT, *text_sections(data, name=name), []


def ingest_bytes(name: str, data: bytes, *, options: IngestOptions = DEFAULT_OPTIONS) -> Document:
    return ingest_uploads([Upload(name, data)], options=options)


def ingest_uploads(uploads: Sequence[Upload], *, options: IngestOptions = DEFAULT_OPTIONS,
                   progress: Progress | None = None) -> Document:
    """One file → its own kind; many files → one document with one section per file, in the
    order given (the user's order says what comes first). Token counts are filled in by
    `tokens.count_document`."""
    if not uploads:
        raise UnsupportedFormatError("No files given: upload or name at least one file.")
    key = document_key(uploads, options)
    if len(uploads) == 1:
        kind, sections, warnings, skipped = _single(uploads[0], options, progress)
        return Document(uploads[0].name, kind, key, tuple(sections), tuple(warnings),
                        source_bytes=len(uploads[0].data), skipped=tuple(skipped))
    merged: list[Section] = []
    notes_all: list[str] = []
    skipped_all: list[str] = []
    ordered = list(uploads)
    for number, upload in enumerate(ordered):
        if progress is not None:
            progress(number, len(ordered), upload.name)
        kind, parts, notes, left_out = _single(upload, options)
        notes_all += notes
        skipped_all += (f"{upload.name}/{entry}" for entry in left_out)
        if kind in (DocumentKind.TEXT, DocumentKind.DOCX):
            text = "\n\n".join(p.text for p in parts)
            merged.append(Section(SectionKind.FILE, upload.name, text))
        else:  # PDFs keep pages, archives keep files: prefix their titles with the upload name
            for part in parts:
                title = (f"{upload.name} p.{part.title}" if part.kind is SectionKind.PAGE
                         else f"{upload.name}/{part.title}")
                merged.append(Section(part.kind, title, part.text))
    name = f"{len(uploads)} files"
    return Document(name, DocumentKind.FILES, key, tuple(merged), tuple(notes_all),
                    source_bytes=sum(len(u.data) for u in uploads), skipped=tuple(skipped_all))


def codebase_key(files: Sequence[SourceFile], options: IngestOptions = DEFAULT_OPTIONS) -> str:
    """The cache key of a folder's files, computable before decoding any of them."""
    return content_hash(sorted((f.path, f.data) for f in files), salt=options.cache_salt())


def ingest_codebase(name: str, files: Sequence[SourceFile], *, notes: Sequence[str] = (),
                    options: IngestOptions = DEFAULT_OPTIONS) -> Document:
    """A folder's files (already filtered by `PathFilter`) as one codebase document."""
    key = codebase_key(files, options)
    sections, warnings, skipped = codebase_sections(files, notes=notes)
    return Document(name, DocumentKind.CODEBASE, key, tuple(sections), tuple(warnings),
                    source_bytes=sum(len(f.data) for f in files), skipped=tuple(skipped))
