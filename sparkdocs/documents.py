"""Document and Section values and the deterministic rendering that the prefix cache depends on.

Rendering is a pure function of content: the same bytes give byte-identical text in any process
on any machine. Each rendered section starts with `<` right after a `>\\n` boundary, which the
Llama 3 pre-tokenizer always splits at, so a section's token count is independent of its
neighbours and the document's count is the sum of its parts (a property test holds us to it).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Iterable


class DocumentKind(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    TEXT = "text"
    CODEBASE = "codebase"
    FILES = "files"


class SectionKind(StrEnum):
    PAGE = "page"
    HEADING = "section"
    FILE = "file"
    TREE = "tree"


@dataclass(frozen=True)
class Section:
    """One page, heading section or file: the unit of budgeting and of choice."""

    kind: SectionKind
    title: str
    text: str
    tokens: int = 0  # tokens of `render_section(self)`, filled in by `tokens.count_document`

    @property
    def locator(self) -> str:
        """How an answer cites it: "page 12", "file src/app.py", 'section "Payment"'."""
        if self.kind is SectionKind.HEADING:
            return f'section "{self.title}"'
        return f"{self.kind.value} {self.title}"


@dataclass(frozen=True)
class Document:
    name: str
    kind: DocumentKind
    content_hash: str
    sections: tuple[Section, ...]
    warnings: tuple[str, ...] = ()
    source_bytes: int = 0
    counted: bool = field(default=False, compare=False)

    @property
    def section_tokens(self) -> int:
        """Tokens of all sections (the document block adds a few for its frame)."""
        return sum(section.tokens for section in self.sections)

_SPECIAL_TOKEN_TEXT = re.compile(r"<\|([A-Za-z0-9_]{1,64})\|>")
_WORD_JOINER = "\u2060"
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def neutralise_special_tokens(text: str) -> str:
    """Break `<|eot_id|>`-like text with an invisible word joiner so no tokenizer reads it as a
    control token (a document must not be able to inject a chat turn)."""
    if "<|" not in text:
        return text
    return _SPECIAL_TOKEN_TEXT.sub(lambda m: f"<{_WORD_JOINER}|{m.group(1)}|>", text)


def clean_text(text: str) -> str:
    """Normalise newlines and control characters so equal content renders equal."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_CHARS.sub("", text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return neutralise_special_tokens(text.strip("\n"))


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def render_section(section: Section) -> str:
    """The exact text of one section inside the document block."""
    tag = section.kind.value
    if section.kind is SectionKind.PAGE:
        open_tag = f'<page number="{_attr(section.title)}">'
    elif section.kind is SectionKind.FILE:
        open_tag = f'<file path="{_attr(section.title)}">'
    elif section.kind is SectionKind.TREE:
        open_tag = "<tree>"
    else:
        open_tag = f'<section title="{_attr(section.title)}">'
    return f"{open_tag}\n{section.text}\n</{tag}>\n"


DOCUMENT_OPEN = "<document>\n"
DOCUMENT_CLOSE = "</document>\n\n"


def omission_note(omitted: Iterable[Section]) -> str:
    """States, inside the prompt, what was left out so the model does not pretend otherwise."""
    names = ", ".join(s.locator for s in omitted)
    return f"<omitted>\nLeft out to fit the context: {neutralise_special_tokens(_attr(names))}\n</omitted>\n"


def part_note(text: str) -> str:
    return f"<part>\n{neutralise_special_tokens(_attr(text))}\n</part>\n"


def content_hash(parts: Iterable[tuple[str, bytes]], *, salt: str = "") -> str:
    """sha256 over (name, bytes) pairs in the given order plus options that change the result."""
    digest = hashlib.sha256(salt.encode())
    for name, data in parts:
        digest.update(len(name).to_bytes(8, "little") + name.encode("utf-8", "surrogatepass"))
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
