"""The document's own text around a checked quote, for showing the source beside it."""

from __future__ import annotations

from dataclasses import dataclass

from ..prompts import PreparedDocument
from .values import Citation, Locator


@dataclass(frozen=True)
class Excerpt:
    """The text around a citation's source, to show with the quote highlighted."""

    locator: Locator
    before: str
    match: str
    after: str


def source_excerpt(prepared: PreparedDocument, citation: Citation, *, context_chars: int = 600
                   ) -> Excerpt | None:
    """The found (or else cited) place with `context_chars` of text on each side; the match is
    empty when the quote was not found. Titles and text are the document's own: escape them."""
    sections = prepared.document.sections
    found = citation.found
    if found is not None and found.sections and citation.source_offsets is not None:
        start, end = citation.source_offsets
        first, last = found.sections[0], found.sections[-1]
        text = sections[first].text
        if first != last:  # across a page break: show to the end of the first page
            end = len(text)
        return Excerpt(found, text[max(0, start - context_chars):start], text[start:end],
                       text[end:end + context_chars])
    locator = found or citation.cited
    if locator is None or not locator.sections:
        return None
    return Excerpt(locator, "", "", sections[locator.sections[0]].text[:2 * context_chars])
