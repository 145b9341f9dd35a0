"""Resolving a reference ("p. 12", 'section "Payment"', "src/app.py:40-52") to a place
in the document."""

from __future__ import annotations

import re

from ..documents import Document, SectionKind, bounded_number
from .index import file_locator, normalise_words, page_numbers
from .quotes import Reference
from .values import Locator, RefKind

_NUMBERED_LINE = r"^[ \t]*(?:§+\s*|(?:section|clause|article)\s+)?{number}(?![\d.]?\d)"
_TITLE_LEAD = {"section", "clause", "article", "chapter", "part"}


def resolve(reference: Reference, document: Document, *, pages: dict[int, int] | None = None
            ) -> Locator:
    """The sections a reference points at (none when the document has no such place).
    `pages` is `page_numbers(document)` when the caller keeps it."""
    sections = document.sections
    if reference.kind is RefKind.PAGE:
        low = bounded_number(reference.value)  # model text: a number may be 5,000 digits
        high = bounded_number(reference.last) if reference.last else low
        if high < low or high - low > 50:
            high = low
        numbers = page_numbers(document) if pages is None else pages
        if re.search(r"\band\b|&", reference.text):  # "pages 3 and 17": two pages, no range
            matches = tuple(i for i, number in numbers.items() if number in (low, high))
        else:
            matches = tuple(i for i, number in numbers.items() if low <= number <= high)
        label = f"p. {low}" if high == low else f"pp. {low}-{high}"
        return Locator(SectionKind.PAGE, str(low), label, last=str(high) if high != low else None,
                       sections=matches)
    if reference.kind is RefKind.SECTION_TITLE:
        wanted = " ".join(normalise_words(reference.value))
        titles = [(i, " ".join(normalise_words(s.title))) for i, s in enumerate(sections)
                  if s.kind is SectionKind.HEADING]
        matches = tuple(i for i, t in titles if t == wanted) or tuple(
            i for i, t in titles if wanted and (f" {wanted} " in f" {t} "))
        return Locator(SectionKind.HEADING, reference.value, f'section "{reference.value}"',
                       sections=matches)
    if reference.kind is RefKind.SECTION_NUMBER:
        return _resolve_number(reference.value, document)
    if reference.kind is RefKind.FILE:
        path = reference.value.strip("./") if reference.value.startswith("./") else reference.value
        titled = [(i, s.title) for i, s in enumerate(sections) if s.kind is SectionKind.FILE]
        matches = tuple(i for i, t in titled if t == path) or tuple(
            i for i, t in titled if t.endswith("/" + path) or path.endswith("/" + t))
        title = sections[matches[0]].title if len(matches) == 1 else path
        return file_locator(title, reference.lines, matches)
    # bare "lines 40-52": a plain-text part titled by its lines, or the only file
    assert reference.lines is not None
    low, high = reference.lines
    parts: list[int] = []
    for i, s in enumerate(sections):
        m = re.fullmatch(r"lines (\d+)-(\d+)", s.title) if s.kind is SectionKind.HEADING else None
        if m and int(m.group(1)) <= low <= int(m.group(2)):
            parts.append(i)
    if parts:
        return Locator(SectionKind.HEADING, sections[parts[0]].title,
                       f"lines {low}-{high}", sections=tuple(parts))
    files = [i for i, s in enumerate(sections) if s.kind is SectionKind.FILE]
    if len(files) == 1:
        return file_locator(sections[files[0]].title, reference.lines, (files[0],))
    return Locator(SectionKind.HEADING, f"lines {low}-{high}", f"lines {low}-{high}")


def _resolve_number(number: str, document: Document) -> Locator:
    """"§ 4.2": a heading that starts with the number, else the pages or sections with a line
    that starts with it ("4.2 …", "Clause 4.2 …", "Section 4.2 …")."""
    sections = document.sections
    wanted = normalise_words(number)
    matches: list[int] = []
    for i, s in enumerate(sections):
        if s.kind is SectionKind.HEADING:
            words = normalise_words(s.title)
            while words and words[0] in _TITLE_LEAD:
                words = words[1:]
            if words[:len(wanted)] == wanted and (len(words) == len(wanted)
                                                   or not words[len(wanted)].isdigit()):
                matches.append(i)
    if not matches:
        pattern = re.compile(_NUMBERED_LINE.format(number=re.escape(number)),
                             re.IGNORECASE | re.MULTILINE)
        matches = [i for i, s in enumerate(sections) if s.kind is not SectionKind.TREE
                   and pattern.search(s.text)]
    return Locator(SectionKind.HEADING, number, f"§ {number}", sections=tuple(matches))
