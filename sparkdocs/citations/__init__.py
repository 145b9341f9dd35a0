"""Verified citations: find the quotes in an answer, locate each in the document that was sent,
and say whether it is where the answer says it is.

Why: a model that answers over a whole document still misquotes, cites the wrong page, or
invents a sentence that sounds right. Checking a quote is cheap and exact if the document is
indexed once: every section's text becomes a stream of normalised words (case, quotes, dashes,
ligatures, soft hyphens and hyphenation across line and page breaks all folded away) with an
offset map back to the section's text. A quote is then a substring search over that stream.

A close match is accepted only as `repaired`, and only when what differs cannot change the
meaning: no number, negation, modal or quantifier may be added, dropped or changed, and changed
words must be inflections or one-letter typos. A quote that is not in the document is never
`verified` or `repaired` (the tests and the benchmark hold us to it).

Pure core: no network, disk or UI imports.
"""

from __future__ import annotations

from .excerpts import Excerpt, source_excerpt
from .index import (
    CitationIndex,
    file_locator,
    index_for,
    normalise_words,
    page_numbers,
    section_locator,
)
from .match import MAX_REPAIR_WORDS
from .quotes import QuoteMention, Reference, Refs, find_quotes, find_references
from .resolve import resolve
from .values import (
    LINE_TOLERANCE,
    MIN_QUOTE_WORDS,
    REPAIR_THRESHOLD,
    Citation,
    Locator,
    RefKind,
    Status,
    citations_from_records,
)
from .verify import verify_answer, verify_quote

__all__ = ["Citation", "LINE_TOLERANCE", "Locator", "MIN_QUOTE_WORDS", "REPAIR_THRESHOLD", "RefKind", "Status", "citations_from_records", "CitationIndex", "file_locator", "index_for", "normalise_words", "page_numbers", "section_locator", "QuoteMention", "Reference", "Refs", "find_quotes", "find_references", "resolve", "MAX_REPAIR_WORDS", "verify_answer", "verify_quote", "Excerpt", "source_excerpt"]
