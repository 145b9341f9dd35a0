"""The session export (issue #22): an answer stopped inside a code block leaves no fence open,
and quotes, places and notes read as written. Judge: markdown-it-py's CommonMark reading of
the exported text (with GFM tables and strikethrough, as viewers render it)."""

from __future__ import annotations

import html

from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from sparkdocs.citation_views import escape_markdown
from sparkdocs.citations import Citation, Locator, Status
from sparkdocs.documents import SectionKind
from sparkdocs.safe_text import fetching_constructs
from sparkdocs.store import Session, Turn, TurnStatus
from sparkdocs.views import session_export

READER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
NOTICE = "Stopped by the user"
PAGE_4 = Locator(SectionKind.PAGE, "4", "p. 4", sections=(3,))

_fence = st.builds(lambda char, n, indent, info: " " * indent + char * n + info,
                   st.sampled_from("`~"), st.integers(3, 6), st.integers(0, 3),
                   st.sampled_from(["", "py", " sh", "text title"]))
_line = st.one_of(
    _fence,
    st.sampled_from(["Run this:", "- a list item", "  - nested", "1. first", "> quoted",
                     "    indented code", "", "print('hi')", "| a | b |", "|---|---|",
                     "**bold", "*", "<div>", "$$", "    ```", "- ```", "  ```", "> ```",
                     "> ~~~~", "```` ```", "~~~ `x`", "![x](http://evil.example/p.png)",
                     "<img src=x>", "[a]: http://evil.example/", "[l](data:text/html,x)"]),
    st.text(alphabet="ab `~*_>-#\\$", max_size=12))


@st.composite
def partial_answers(draw) -> str:
    """Answers made of lines Markdown reads as fences, lists, quotes and code, cut anywhere,
    as a Stop cuts a streaming answer."""
    text = "\n".join(draw(st.lists(_line, min_size=1, max_size=12)))
    return text[:draw(st.integers(1, len(text)))] if text else "x"


def _stopped_session(answer: str) -> Session:
    return Session("s1", "abc123def456", "manual.pdf", "manual.pdf", turns=(
        Turn("How do I install it?", answer, status=TurnStatus.STOPPED,
             error="stopped by the user", finish_reason=None),))


def _paragraph_texts(tokens) -> list[str]:
    return [t.content for i, t in enumerate(tokens)
            if t.type == "inline" and tokens[i - 1].type == "paragraph_open"]


def _code_texts(tokens) -> list[str]:
    return [t.content for t in tokens if t.type in ("fence", "code_block", "html_block")]


@settings(max_examples=300, deadline=None)
@given(partial_answers())
def test_a_stop_inside_a_code_block_leaves_the_notice_stats_and_sources_outside_it(answer):
    quote = Citation("see www.freedesktop.org", PAGE_4, PAGE_4, Status.VERIFIED)
    text = session_export(_stopped_session(answer), [[quote]])
    tokens = READER.parse(text)
    paragraphs = _paragraph_texts(tokens)
    assert any(p.startswith(NOTICE) for p in paragraphs), (answer, text)
    assert not [c for c in _code_texts(tokens) if NOTICE in c], (answer, text)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "Sources, checked against the document" in headings, (answer, text)
    assert "Q1 sources" in headings, (answer, text)
    assert any(p.startswith("first token") or "finish: none" in p for p in paragraphs), text
    assert fetching_constructs(text, keep_tags={"sub"}) == [], (answer, text)


def test_places_and_quotes_in_the_export_carry_no_needless_escapes():
    quote = Citation("Details are at www.freedesktop.org (see p. 4).", PAGE_4, PAGE_4,
                     Status.VERIFIED)
    text = session_export(_stopped_session("It says so."), [[quote]])
    assert "(p. 4)" in text and "www.freedesktop.org (see p. 4)." in text, text
    assert "\\." not in text, text


_single_line = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                       min_size=1, max_size=40).map(lambda s: " ".join(s.split())).filter(bool)


@settings(max_examples=500, deadline=None)
@given(_single_line, st.booleans())
def test_escaped_text_reads_exactly_as_written(text, at_line_start):
    """Whatever the text, CommonMark shows it as written, as one paragraph: no emphasis, link,
    image, HTML, heading, list or code, at the start of a line or inside it."""
    prefix = "" if at_line_start else "Quote: "
    rendered = READER.render(prefix + escape_markdown(text))
    assert rendered.startswith("<p>") and rendered.endswith("</p>\n"), (text, rendered)
    assert html.unescape(rendered[3:-5]) == prefix + text, (text, rendered)
    assert "<" not in rendered[3:-5], rendered
