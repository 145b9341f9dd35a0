"""Document and Section values and the deterministic rendering that the prefix cache depends on.

Rendering is a pure function of content: the same bytes give byte-identical text in any process
on any machine. Each rendered section starts with `<` right after a `>\\n` boundary, which the
Llama 3 pre-tokenizer always splits at, so a section's token count is independent of its
neighbours and the document's count is the sum of its parts (a property test holds us to it).

Anchors are what an answer can cite and `sparkdocs.citations` can check: `<page number>`,
`<section title>`, `<file path>`, and, inside files, sparse line numbers (see `anchor_lines`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .literal import whole_characters


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
    skipped: tuple[str, ...] = ()  # files of a codebase left out, each `path: reason`

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


NUMBER_CEILING = 10**18  # beyond any page, part or line number


def bounded_number(digits: str) -> int:
    """Digits a regex's `\\d+` matched in typed or model text → their value, at most
    NUMBER_CEILING: int() raises past 4,300 digits (`--pages 1-<5,000 digits>` was a
    traceback), and any number that long is out of range wherever it is used."""
    significant = digits.lstrip("0")
    if len(significant) > len(str(NUMBER_CEILING)):
        return NUMBER_CEILING
    return min(int(significant), NUMBER_CEILING) if significant else 0


def clean_text(text: str) -> str:
    """Normalise newlines and control characters so equal content renders equal."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_CHARS.sub("", text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", whole_characters(text))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return neutralise_special_tokens(text.strip("\n"))


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


# Bump when rendering changes: cached token counts of earlier renderings are then stale (the
# ingest cache salt includes it).
RENDER_VERSION = "2"
# A file line carries its number when it is a multiple of LINE_ANCHOR_EVERY and at least
# LINE_ANCHOR_MIN_CHARS characters have passed since the previous anchor: round numbers a model
# can count from, at a bounded cost (~2 tokens per 400 characters, ~1% of typical code).
LINE_ANCHOR_EVERY = 10
LINE_ANCHOR_MIN_CHARS = 400
LINE_ANCHOR_SEPARATOR = "\t"


def line_anchors(text: str) -> tuple[int, ...]:
    """The 1-based numbers of the lines of a file's text that carry an anchor. A pure function
    of the text, so the verifier can tell anchors from content without parsing the block."""
    anchors: list[int] = []
    since = 0
    for number, line in enumerate(text.split("\n"), 1):
        if number % LINE_ANCHOR_EVERY == 0 and since >= LINE_ANCHOR_MIN_CHARS:
            anchors.append(number)
            since = 0
        since += len(line) + 1
    return tuple(anchors)


def anchor_lines(text: str) -> str:
    """A file's text with sparse `40\t` line-number prefixes (as `cat -n` prints them), so a model
    can cite `path:40-52` without the cost of numbering every line."""
    anchors = line_anchors(text)
    if not anchors:
        return text
    lines = text.split("\n")
    for number in anchors:
        lines[number - 1] = f"{number}{LINE_ANCHOR_SEPARATOR}{lines[number - 1]}"
    return "\n".join(lines)


def section_body(section: Section) -> str:
    """The body of a section as rendered (a file's text with its line anchors)."""
    if section.kind is SectionKind.FILE:
        return anchor_lines(section.text)
    return section.text


def render_section(section: Section, *, text: str | None = None) -> str:
    """The exact text of one section inside the document block. Every byte of a section (title,
    text, tree) passes the one neutralising step here, so no field can carry a control token
    into a prompt. `text` overrides the body (a tree re-drawn for a selection)."""
    tag = section.kind.value
    if section.kind is SectionKind.PAGE:
        open_tag = f'<page number="{_attr(section.title)}">'
    elif section.kind is SectionKind.FILE:
        open_tag = f'<file path="{_attr(section.title)}">'
    elif section.kind is SectionKind.TREE:
        open_tag = "<tree>"
    else:
        open_tag = f'<section title="{_attr(section.title)}">'
    body = section_body(section) if text is None else text
    return neutralise_special_tokens(f"{open_tag}\n{body}\n</{tag}>\n")


DOCUMENT_OPEN = "<document>\n"
DOCUMENT_CLOSE = "</document>\n\n"


MAX_NOTE_ITEMS = 24


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def omission_note(sections: Sequence[Section], omitted: Sequence[int]) -> str:
    """States, inside the prompt, what was left out so the model does not pretend otherwise.
    Consecutive parts are given as ranges ("page 3 to page 90") and files by count (the tree
    shows where they are), so the note stays short however much is left out."""
    files = [i for i in omitted if sections[i].kind is SectionKind.FILE]
    others = [i for i in omitted if sections[i].kind is not SectionKind.FILE]
    items = []
    for first, last in _runs(others):
        a, b = sections[first], sections[last]
        items.append(a.locator if first == last else f"{a.locator} to {b.locator}")
    if len(items) > MAX_NOTE_ITEMS:
        rest = len(items) - MAX_NOTE_ITEMS
        items = items[:MAX_NOTE_ITEMS] + [f"and {rest:,} more ranges"]
    if files:
        total = sum(1 for s in sections if s.kind is SectionKind.FILE)
        items.append(f"{len(files):,} of {total:,} files (marked in the tree)" if any(
            s.kind is SectionKind.TREE for s in sections) else f"{len(files):,} of {total:,} files")
    return f"<omitted>\nLeft out to fit the context: {_attr('; '.join(items))}\n</omitted>\n"


def part_note(text: str) -> str:
    return f"<part>\n{_attr(text)}\n</part>\n"


def _files(n: int) -> str:
    return f"{n:,} file" if n == 1 else f"{n:,} files"


def render_tree(paths: Iterable[str], *, omitted: Iterable[str] = ()) -> str:  # noqa: C901 (over the limit; split when next changed)
    """A `tree`-style listing, directories first-seen in path order. Omitted files are drawn as
    counts: a directory with nothing kept is one line, and each directory's omitted files one
    line, so the tree of a selection grows with what is kept, not with the repository."""
    root: dict[str, dict] = {}
    for path in paths:
        node = root
        for part in path.split("/"):
            node = node.setdefault(part, {})
    gone: dict[str, dict] = {}
    for path in omitted:
        node = gone
        for part in path.split("/"):
            node = node.setdefault(part, {})
    lines = ["."]

    def count(node: dict[str, dict]) -> int:
        return sum(count(child) if child else 1 for child in node.values())

    def walk(kept: dict[str, dict], left_out: dict[str, dict], prefix: str) -> None:
        rows: list[tuple[bool, str, str, dict, dict]] = []  # (is file, label, line, kept, gone)
        hidden_files = 0
        for label in sorted(kept.keys() | left_out.keys()):
            kept_child, gone_child = kept.get(label), left_out.get(label) or {}
            if kept_child is not None:
                is_dir = bool(kept_child) or bool(gone_child)
                rows.append((not is_dir, label, label + "/" * is_dir, kept_child, gone_child))
            elif gone_child:
                rows.append((False, label, f"{label}/ ({_files(count(gone_child))} left out)",
                             {}, {}))
            else:
                hidden_files += 1
        rows.sort(key=lambda row: (row[0], row[1]))
        if hidden_files:
            rows.append((True, "", f"… {hidden_files:,} more {'file' if hidden_files == 1 else 'files'} left out", {}, {}))
        for index, (_, _, line, kept_child, gone_child) in enumerate(rows):
            last = index == len(rows) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{line}")
            if kept_child:
                walk(kept_child, gone_child, prefix + ("    " if last else "│   "))

    walk(root, gone, "")
    return "\n".join(lines)


def content_hash(parts: Iterable[tuple[str, bytes]], *, salt: str = "") -> str:
    """sha256 over (name, bytes) pairs in the given order plus options that change the result."""
    digest = hashlib.sha256(salt.encode())
    for name, data in parts:
        digest.update(len(name).to_bytes(8, "little") + name.encode("utf-8", "surrogatepass"))
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
