"""Sources under an answer in the app: one chip per quote, coloured by its verdict; a click opens
the cited page or file section with the quote highlighted. Kept apart from the chat (ui/ask.py) so the chat
only calls two functions. Document text is shown escaped: no Markdown, HTML, images or links
from a document are ever rendered or fetched."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence

import streamlit as st

from ..citation_views import STATUS_LABELS, STATUS_MARKS, counts_line, escape_markdown, mark_answer
from ..citations import Citation, Status, source_excerpt
from ..cited_page import cited_page_png
from ..prompts import PreparedDocument
from ..safe_text import safe_markdown
from . import team
from .services import services

log = logging.getLogger(__name__)

CHIP_COLOURS: dict[Status, str] = {
    Status.VERIFIED: "green", Status.MOVED: "orange", Status.REPAIRED: "blue",
    Status.OMITTED: "violet", Status.NOT_FOUND: "red",
}


def marked_answer(answer: str, citations: Sequence[Citation]) -> str:
    """The answer as safe Markdown, each unfound quote followed by the app's own red mark:
    the marks go in as placeholders, the text through safe_markdown, then the marks replace
    the placeholders (so the answer's text can never make a mark, nor a mark be escaped)."""
    marks: list[str] = []

    def hold(mark: str) -> str:
        marks.append(mark)
        return f"\ue000{len(marks) - 1}\ue001"

    text = safe_markdown(mark_answer(answer, citations, mark=hold) if citations else answer)
    return re.sub("\ue000(\\d+)\ue001", lambda m: marks[int(m.group(1))], text)


def chip_label(citation: Citation) -> str:
    where = citation.found or citation.cited
    label = where.label if where else "no reference"
    return (f":{CHIP_COLOURS[citation.status]}[{STATUS_MARKS[citation.status]} "
            f"{escape_markdown(label)}]")


def show_sources(prepared: PreparedDocument | None, citations: Sequence[Citation], *,
                 key: str) -> None:
    """The chips under an answer; each opens its source with the quote highlighted."""
    if prepared is None or not citations:
        return
    st.caption(f"Sources: {counts_line(citations)} (✓ verified · → found elsewhere · "
               "≈ close match · ∅ from a left-out part · ✗ not found)")
    columns = st.columns(min(len(citations), 4))
    for number, citation in enumerate(citations):
        with columns[number % len(columns)], st.popover(
                chip_label(citation), key=f"src-{key}-{number}",
                help=STATUS_LABELS[citation.status]):
            _source_view(prepared, citation)


def _source_view(prepared: PreparedDocument, citation: Citation) -> None:
    verdict = STATUS_LABELS[citation.status]
    note = f" — {escape_markdown(citation.note)}" if citation.note else ""
    st.markdown(f"**{verdict}**{note}")
    st.markdown(f"> {escape_markdown(' '.join(citation.quote.split()))}")
    if citation.cited is not None:
        st.caption(f"cited: {escape_markdown(citation.cited.label)}")
    excerpt = source_excerpt(prepared, citation)
    if excerpt is None:
        st.caption("Nothing in the document to show for this quote.")
        return
    st.caption(f"{escape_markdown(excerpt.locator.label)}"
               + (" (the document's exact words are highlighted)" if excerpt.match else ""))
    body = (html.escape(excerpt.before) + (f"<mark>{html.escape(excerpt.match)}</mark>"
                                           if excerpt.match else "") + html.escape(excerpt.after))
    page = _page_image(prepared, excerpt.locator, excerpt.match or citation.quote)
    text = st.container()
    if page is not None:  # the page as printed, beside the text extracted from it
        picture, text = st.columns(2)
        picture.image(page, caption=f"{excerpt.locator.label} as printed", width="stretch")
    text.html('<div style="white-space: pre-wrap; font-family: monospace; font-size: 0.85em; '
              f'max-height: 24em; overflow-y: auto">{body}</div>')


def _page_image(prepared: PreparedDocument, locator, quote: str) -> bytes | None:
    """The cited PDF page drawn with the quote highlighted (None for other documents)."""
    key = prepared.document.content_hash
    return cited_page_png(services().workspace.store, prepared.document, locator, quote,
                          owner=team.current_user(), password=team.remembered_password(key))
