"""Plain text and Markdown: detect the encoding, normalise newlines, split into sections."""

from __future__ import annotations

import codecs
import re

from ..documents import Section, SectionKind, clean_text
from ..errors import UnsupportedFormatError

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
PART_CHARS = 16_000  # plain text is split near here so parts of a long file can be chosen
_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def looks_binary(data: bytes) -> bool:
    """NUL bytes early on (and no UTF-16/32 BOM) mean binary, as git decides."""
    head = data[:8192]
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return False
    return b"\x00" in head


def decode_text(data: bytes, *, name: str) -> tuple[str, str | None]:
    """Returns (text, warning). UTF-8 first (fast path), then BOMs, then charset-normalizer."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    if looks_binary(data):
        raise UnsupportedFormatError(
            f"{name}: this is a binary file, not text, PDF or DOCX; "
            "convert it to one of those formats first."
        )
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is None:
        raise UnsupportedFormatError(
            f"{name}: the text encoding could not be detected; save it as UTF-8 and try again."
        )
    encoding = best.encoding
    # Short Western text is ambiguous between single-byte code pages; on a tie (or when the
    # bytes read the same) prefer Windows-1252, by far the most common of them.
    tied = {m.encoding for m in results if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    if encoding != "cp1252" and ("cp1252" in tied or encoding in {"latin_1", "iso8859_1"}
                                 or _same_as_cp1252(data, str(best))):
        encoding = "cp1252"
    text = data.decode(encoding, errors="replace")
    return text, f"{name}: not UTF-8; decoded as {encoding}."


def _same_as_cp1252(data: bytes, decoded: str) -> bool:
    try:
        return data.decode("cp1252") == decoded
    except UnicodeDecodeError:
        return False


def split_markdown(text: str) -> list[Section]:
    sections: list[Section] = []
    title, in_fence = "(start)", False
    lines: list[str] = []
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else _MARKDOWN_HEADING.match(line)
        if match and lines and any(item.strip() for item in lines):
            sections.append(Section(SectionKind.HEADING, title, clean_text("\n".join(lines))))
            lines = []
        if match:
            title = match.group(2)
        lines.append(line)
    if lines:
        sections.append(Section(SectionKind.HEADING, title, clean_text("\n".join(lines))))
    return sections


def split_plain(text: str) -> list[Section]:
    """Parts of about PART_CHARS at blank lines, titled by line range for citation."""
    lines = text.split("\n")
    sections: list[Section] = []
    start, size = 0, 0
    for index, line in enumerate(lines):
        size += len(line) + 1
        at_break = not line.strip() or index == len(lines) - 1
        if (size >= PART_CHARS and at_break) or size >= 4 * PART_CHARS or index == len(lines) - 1:
            chunk = "\n".join(lines[start:index + 1])
            sections.append(Section(SectionKind.HEADING, f"lines {start + 1}-{index + 1}",
                                    clean_text(chunk)))
            start, size = index + 1, 0
    return sections


def text_sections(data: bytes, *, name: str) -> tuple[list[Section], list[str]]:
    text, warning = decode_text(data, name=name)
    text = clean_text(text)
    if not text.strip():
        raise UnsupportedFormatError(f"{name}: the file holds no text; pick a file with content.")
    is_markdown = name.lower().endswith((".md", ".markdown", ".mdx"))
    sections = split_markdown(text) if is_markdown else split_plain(text)
    return sections, [warning] if warning else []
