"""The values of citation checking: a verdict, a place in the document, a checked quote."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ..documents import LINE_ANCHOR_EVERY, SectionKind

MIN_QUOTE_WORDS = 6
REPAIR_THRESHOLD = 0.85  # 2·matched / (quote words + source words), over the aligned span
LINE_TOLERANCE = LINE_ANCHOR_EVERY  # cited lines may be off by one anchor interval


class Status(StrEnum):
    """What checking a quote found."""

    VERIFIED = "verified"  # found where cited (or found, when nothing was cited)
    MOVED = "moved"  # found, but on another page/section/file (or other lines) than cited
    REPAIRED = "repaired"  # only a close, meaning-preserving match: see source_text
    OMITTED = "omitted"  # found only in a part that was left out of the prompt
    NOT_FOUND = "not_found"


class RefKind(StrEnum):
    PAGE = "page"
    SECTION_TITLE = "section_title"
    SECTION_NUMBER = "section_number"
    FILE = "file"
    LINES = "lines"


@dataclass(frozen=True)
class Locator:
    """A place in the document: page(s), a heading section or a file (with lines)."""

    kind: SectionKind
    title: str  # page number, heading title (or section number as written) or file path
    label: str  # how it reads: "p. 12", "pp. 3-4", 'section "Payment"', "src/app.py:40-52"
    last: str | None = None  # the last page of a range of pages
    lines: tuple[int, int] | None = None
    sections: tuple[int, ...] = ()  # indices into document.sections it refers to
    document: str | None = None  # the document of a set it is in (its label names it too)

    def in_document(self, name: str) -> Locator:
        """The same place, named as one of several documents: "b.pdf, p. 3"."""
        if self.document == name:
            return self
        return replace(self, document=name, label=f"{name}, {self.label}")

    def as_dict(self, *, full: bool = False) -> dict[str, Any]:
        """The public record; `full` adds the section indices, for a verdict stored with its
        turn and shown again (the page or file it opens)."""
        record: dict[str, Any] = {"kind": self.kind.value, "title": self.title, "label": self.label,
                  "last": self.last, "lines": list(self.lines) if self.lines else None,
                  "document": self.document}
        if full:
            record["sections"] = list(self.sections)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Locator:
        lines = record.get("lines")
        document = record.get("document")
        return cls(SectionKind(record["kind"]), record["title"], record["label"],
                   last=record.get("last"), lines=(lines[0], lines[1]) if lines else None,
                   sections=tuple(int(i) for i in record.get("sections") or ()),
                   document=str(document) if document is not None else None)


@dataclass(frozen=True)
class Citation:
    """One quote of an answer and its verdict."""

    quote: str
    cited: Locator | None
    found: Locator | None
    status: Status
    source_text: str = ""  # the document's exact text where it was found
    occurrences: tuple[Locator, ...] = ()  # every place it was found (sent or omitted parts)
    span: tuple[int, int] = (0, 0)  # where the quote sits in the answer
    note: str = ""
    similarity: float = 0.0
    # (start in the found locator's first section, end in its last), for highlighting
    source_offsets: tuple[int, int] | None = None

    @property
    def document(self) -> str | None:
        """The document of a set the quote was found in (else the one it cited)."""
        place = self.found or self.cited
        return place.document if place else None

    def as_dict(self, *, full: bool = False) -> dict[str, Any]:
        """The public record (`--json`, JSONL); `full` keeps all a page needs to show the
        verdict again without checking the answer anew: where the quote sits in the answer,
        the sections it was found in and the offsets to highlight."""
        record: dict[str, Any] = {
                  "quote": self.quote,
                  "cited": self.cited.as_dict(full=full) if self.cited else None,
                  "found": self.found.as_dict(full=full) if self.found else None,
                  "status": self.status.value, "document": self.document,
                  "source_text": self.source_text or None,
                  "occurrences": [o.as_dict(full=full) for o in self.occurrences],
                  "note": self.note or None}
        if full:
            record |= {"span": list(self.span), "similarity": self.similarity,
                       "source_offsets": (list(self.source_offsets)
                                          if self.source_offsets is not None else None)}
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Citation:
        """Back from `as_dict` (a JSONL record or a stored turn's verdicts)."""
        def place(value: dict[str, Any] | None) -> Locator | None:
            return Locator.from_dict(value) if value else None

        def pair(value: list[int] | None) -> tuple[int, int] | None:
            return (int(value[0]), int(value[1])) if value else None

        return cls(record["quote"], place(record.get("cited")), place(record.get("found")),
                   Status(record["status"]), record.get("source_text") or "",
                   tuple(Locator.from_dict(o) for o in record.get("occurrences") or ()),
                   pair(record.get("span")) or (0, 0), record.get("note") or "",
                   float(record.get("similarity") or 0.0), pair(record.get("source_offsets")))


def citations_from_records(records: Iterable[dict[str, Any]]) -> tuple[Citation, ...]:
    return tuple(Citation.from_dict(record) for record in records)
