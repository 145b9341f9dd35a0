"""Choosing parts of a document by hand, as text a person types and a command line carries:
`--pages 1-40,90-120` (PDF page numbers) or `--parts 1-3,7` (parts numbered as `count` lists
them). The inverse, `selection_hint`, turns a fitted selection into the flag to paste. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from enum import StrEnum

from .documents import Document, SectionKind, bounded_number
from .errors import SelectionError

_RANGE = re.compile(r"^\s*(\d+)\s*(?:[-–]\s*(\d+)\s*)?$")


def parse_ranges(spec: str, *, what: str, largest: int) -> list[int]:
    """"1-40, 90-120, 7" → the 1-based numbers in it, sorted and unique."""
    numbers: set[int] = set()
    for chunk in spec.split(","):
        if not chunk.strip():
            continue
        match = _RANGE.match(chunk)
        shown = _shorten(chunk.strip())
        if match is None:
            raise SelectionError(
                f"{what} {shown!r} is not a number or a range: write them like "
                f"'1-40,90-120' (1 to {largest:,}).")
        first = bounded_number(match.group(1))
        last = bounded_number(match.group(2)) if match.group(2) else first
        if first < 1 or last > largest or first > last:
            raise SelectionError(
                f"{what} {shown!r} is outside 1-{largest:,} (or runs backwards); this "
                f"document has {largest:,}.")
        numbers.update(range(first, last + 1))
    if not numbers:
        raise SelectionError(f"The {what} selection is empty: name at least one, e.g. '1-10'.")
    return sorted(numbers)


def _shorten(text: str, limit: int = 40) -> str:
    """What was typed, cut for an error message (a 5,000-digit number is not echoed)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def format_ranges(numbers: Iterable[int]) -> str:
    """[1, 2, 3, 7, 9, 10] → "1-3,7,9-10"."""
    runs: list[list[int]] = []
    for number in sorted(set(numbers)):
        if runs and runs[-1][1] == number - 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _page_numbers(document: Document) -> dict[int, int]:
    """Page number → section index, for documents whose pages are numbered 1, 2, 3…"""
    pages: dict[int, int] = {}
    for index, section in enumerate(document.sections):
        if section.kind is SectionKind.PAGE and section.title.isdigit():
            pages[bounded_number(section.title)] = index
    return pages


def _with_tree(document: Document, keep: Iterable[int]) -> tuple[int, ...]:
    """A codebase's file tree stays with any choice of files (it is drawn for the choice)."""
    tree = {i for i, s in enumerate(document.sections) if s.kind is SectionKind.TREE}
    return tuple(sorted(tree | set(keep)))


def select(document: Document, *, pages: str | None = None, parts: str | None = None
           ) -> tuple[int, ...] | None:
    """The section indices a `--pages`/`--parts` choice names; None when neither is given."""
    if pages and parts:
        raise SelectionError("Give --pages or --parts, not both.")
    if pages:
        numbered = _page_numbers(document)
        if not numbered:
            raise SelectionError(
                f"{document.name} has no numbered pages (it is {document.kind.value}); choose "
                "with --parts, numbered as `sparkdocs count` lists them.")
        chosen = parse_ranges(pages, what="page", largest=max(numbered))
        missing = [n for n in chosen if n not in numbered]
        if missing:
            raise SelectionError(f"{document.name} has no page {format_ranges(missing)}.")
        return _with_tree(document, (numbered[n] for n in chosen))
    if parts:
        chosen = parse_ranges(parts, what="part", largest=len(document.sections))
        return _with_tree(document, (n - 1 for n in chosen))
    return None


def selection_hint(document: Document, keep: Sequence[int]) -> str:
    """The flag that reproduces `keep`: pages by number for PDFs, parts by number otherwise."""
    numbered = _page_numbers(document)
    by_index = {index: number for number, index in numbered.items()}
    if numbered and all(i in by_index for i in keep):
        return f"--pages {format_ranges(by_index[i] for i in keep)}"
    content = [i for i in keep if document.sections[i].kind is not SectionKind.TREE]
    return f"--parts {format_ranges(i + 1 for i in content)}"


class SelectBy(StrEnum):
    """What a person types to choose: PDF page numbers, or part numbers as `count` lists them."""

    PAGES = "pages"
    PARTS = "parts"


def select_by(document: Document) -> SelectBy:
    return SelectBy.PAGES if _page_numbers(document) else SelectBy.PARTS


def selection_text(document: Document, keep: Sequence[int] | None) -> str:
    """The numbers a person would type for `keep` (None: everything), e.g. "1-40,90-120"."""
    chosen = range(len(document.sections)) if keep is None else keep
    return selection_hint(document, tuple(chosen)).split(" ", 1)[1]


def select_typed(document: Document, text: str) -> tuple[int, ...]:
    """What a person typed in the app's "Pages to keep" / "Parts to keep" box → the sections."""
    by = select_by(document)
    chosen = select(document, pages=text) if by is SelectBy.PAGES else select(document, parts=text)
    if chosen is None:  # select() reads "" as no choice given; an empty box chose nothing
        raise SelectionError(f"The {by.value[:-1]} selection is empty: name at least one, "
                             "e.g. '1-10'.")
    return chosen
