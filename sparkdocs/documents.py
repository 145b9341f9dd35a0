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
    SET = "documents"  # several documents of one session, each its own block


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
class Member:
    """One document of a set, and where its sections sit among the set's sections. Its name is
    the one the prompt gives it and citations use (unique within the set, fixed once added, so
    the block of a document never changes when another is added after it)."""

    name: str
    content_hash: str
    kind: DocumentKind
    first: int
    count: int

    @property
    def indices(self) -> range:
        return range(self.first, self.first + self.count)


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
    members: tuple[Member, ...] = ()  # a set's documents in the order added; () for one
    # Sent after the documents' blocks: for two versions of one document, what changed
    # between them (`changes.with_changes`), which the model explains and the diff proves.
    appendix: str = ""

    @property
    def section_tokens(self) -> int:
        """Tokens of all sections (the document block adds a few for its frame)."""
        return sum(section.tokens for section in self.sections)

    @property
    def blocks(self) -> tuple[Member, ...]:
        """The documents as the prompt has them, one block each: a set's members, or this
        document alone."""
        if self.members:
            return self.members
        return (Member(self.name, self.content_hash, self.kind, 0, len(self.sections)),)

    def member_of(self, index: int) -> Member | None:
        """The set member a section belongs to (None for a single document)."""
        for member in self.members:
            if member.first <= index < member.first + member.count:
                return member
        return None


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
    NUMBER_CEILING: int() raises past 4,300 digits (Python's integer-string limit), and any
    number that long is out of range wherever it is used."""
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


def name_line(name: str) -> str:
    """A document's name as the first line of its block: what citations name it by when a
    session holds several. Every document carries it, so a document's block is the same alone
    and with others after it (adding one keeps the cached prefix)."""
    return f"<name>{_attr(display_name(name))}</name>\n"


def combine_documents(documents: Sequence[Document], *, names: Sequence[str]) -> Document:
    """Several counted documents as one set, in the order given, each its own block under its
    name (see `unique_names`). Section indices run on across members, so a selection, a part
    or a citation of the set is a plain index into its sections."""
    if len(documents) != len(names) or not documents:
        raise ValueError("one name per document, at least one document")
    names = [display_name(name) for name in names]  # as the prompt shows them
    members: list[Member] = []
    sections: list[Section] = []
    for document, name in zip(documents, names, strict=True):
        if document.members:
            raise ValueError(f"{document.name} is a set already")
        members.append(Member(name, document.content_hash, document.kind, len(sections),
                              len(document.sections)))
        sections.extend(document.sections)
    key = content_hash(((m.name, m.content_hash.encode()) for m in members), salt="set")
    warnings = tuple(f"{name}: {w}" for d, name in zip(documents, names, strict=True)
                     for w in d.warnings)
    skipped = tuple(f"{name}: {s}" for d, name in zip(documents, names, strict=True)
                    for s in d.skipped)
    return Document(set_name(names), DocumentKind.SET, key, tuple(sections), warnings,
                    sum(d.source_bytes for d in documents),
                    counted=all(d.counted for d in documents), skipped=skipped,
                    members=tuple(members))


def member_document(whole: Document, member: Member) -> Document:
    """One document of a set as it was before it joined (the document itself when it is not a
    set)."""
    if not whole.members:
        return whole
    return Document(member.name, member.kind, member.content_hash,
                    whole.sections[member.first:member.first + member.count], counted=True)


def appendix_block(text: str) -> str:
    """The appendix as sent after the documents' blocks."""
    body = neutralise_special_tokens(clean_text(text))  # text as a page's: not escaped
    return f"<changes>\n{body}\n</changes>\n\n" if text else ""


def set_name(names: Sequence[str]) -> str:
    """How a set is listed: "a.pdf + b.pdf", "a.pdf + 3 more"."""
    if len(names) <= 2:
        return " + ".join(names)
    return f"{names[0]} + {len(names) - 1} more"


def display_name(name: str) -> str:
    """A document's name as the prompt shows it: one line, NFC, control characters out, runs
    of spaces as one. Names are told apart and matched in this form."""
    return " ".join(clean_text(name).split()) or "document"


def _key(name: str) -> str:
    return display_name(name).casefold()


def _base(name: str) -> str:
    return _key(name).rsplit("/", 1)[-1]


def unique_names(names: Sequence[str], *, folders: Sequence[str] | None = None,
                 taken: Sequence[str] = ()) -> list[str]:
    """Names that tell the documents apart as the prompt shows them (`display_name`): a name
    whose file name is taken (or given twice) gets its folder in front when that tells it from
    the others ("2024/contract.pdf"), else a number ("contract (2).pdf"). `folders` are each
    name's folder (its last part is used); names in `taken` (documents already in the set)
    never change."""
    shown = [display_name(n) for n in names]
    used = {_key(n) for n in taken}
    clashing: dict[str, set[str]] = {}  # file name → the folders it is given from
    for position, name in enumerate([*taken, *shown]):
        folder = ""
        if folders and position >= len(taken):
            folder = display_name(folders[position - len(taken)]).strip("/").rsplit("/", 1)[-1]
        clashing.setdefault(_base(name), set()).add(folder.casefold())
    counts: dict[str, int] = {}
    for name in [*taken, *shown]:
        counts[_base(name)] = counts.get(_base(name), 0) + 1
    result: list[str] = []
    for position, name in enumerate(shown):
        candidate = name
        folder = ""
        if folders:
            folder = display_name(folders[position]).strip("/").rsplit("/", 1)[-1]
        if (counts[_base(name)] > 1 and folder not in ("", ".", "..")
                and len(clashing[_base(name)]) > 1):
            candidate = f"{folder}/{name}"
        stem, dot, suffix = candidate.rpartition(".")
        number = 2
        while _key(candidate) in used:
            candidate = display_name(f"{stem.rstrip()} ({number}).{suffix}" if dot and stem.strip()
                                     else f"{name} ({number})")
            number += 1
        used.add(_key(candidate))
        result.append(candidate)
    return result


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
        tree_kept = any(s.kind is SectionKind.TREE and i not in omitted
                        for i, s in enumerate(sections))
        items.append(f"{len(files):,} of {total:,} files (marked in the tree)" if tree_kept
                     else f"{len(files):,} of {total:,} files")
    return f"<omitted>\nLeft out to fit the context: {_attr('; '.join(items))}\n</omitted>\n"


def part_note(text: str) -> str:
    return f"<part>\n{_attr(text)}\n</part>\n"


def _files(n: int) -> str:
    return f"{n:,} file" if n == 1 else f"{n:,} files"


MAX_LEFT_OUT_FOLDER_LINES = 8  # more fully left-out folders than this in one folder: one line


def _count(node: dict[str, dict]) -> int:
    return sum(_count(child) if child else 1 for child in node.values())


def _nest(paths: Iterable[str]) -> dict[str, dict]:
    root: dict[str, dict] = {}
    for path in paths:
        node = root
        for part in path.split("/"):
            node = node.setdefault(part, {})
    return root


def _folder_summary(kept: dict[str, dict], gone: dict[str, dict]) -> str:
    left_out = _count(gone)
    total = _count(kept) + left_out
    return f"{_files(total)}, {left_out:,} left out" if left_out else _files(total)


_Row = tuple[bool, str, str, dict, dict]  # (is file, label, line, kept below, left out below)


def _tree_rows(kept: dict[str, dict], left_out: dict[str, dict], *, collapse: bool
               ) -> list[_Row]:
    """One folder's lines: kept entries by name (folders first), folders with nothing kept as
    counts (many of them as one line), left-out files as one count."""
    rows: list[_Row] = []
    gone_folders: list[_Row] = []
    hidden_files = 0
    for label in sorted(kept.keys() | left_out.keys()):
        kept_child, gone_child = kept.get(label), left_out.get(label) or {}
        if kept_child is None and gone_child:
            gone_folders.append((False, label, f"{label}/ ({_files(_count(gone_child))} left out)",
                                 {}, {}))
        elif kept_child is None:
            hidden_files += 1
        elif (kept_child or gone_child) and collapse:
            rows.append((False, label, f"{label}/ ({_folder_summary(kept_child, gone_child)})",
                         {}, {}))
        else:
            is_dir = bool(kept_child) or bool(gone_child)
            rows.append((not is_dir, label, label + "/" * is_dir, kept_child, gone_child))
    if len(gone_folders) > MAX_LEFT_OUT_FOLDER_LINES:
        files = sum(_count(left_out[row[1]]) for row in gone_folders)
        gone_folders = [(False, "\U0010ffff", f"… {len(gone_folders):,} more folders "
                         f"({_files(files)}) left out", {}, {})]  # after the named folders
    rows = sorted(rows + gone_folders, key=lambda row: (row[0], row[1]))
    if hidden_files:
        rows.append((True, "", f"… {hidden_files:,} more {'file' if hidden_files == 1 else 'files'} left out", {}, {}))
    return rows


def render_tree(paths: Iterable[str], *, omitted: Iterable[str] = (),
                depth: int | None = None) -> str:
    """A `tree`-style listing, directories first-seen in path order. Omitted files are drawn as
    counts: a directory with nothing kept is one line (many such directories in one directory
    are one line together), and each directory's omitted files one line, so the tree of a
    selection grows with what is kept, not with the repository. Folders `depth` levels down
    are drawn as counts too (a tree that must be smaller than its files)."""
    lines = ["."]

    def walk(kept: dict[str, dict], left_out: dict[str, dict], prefix: str, level: int) -> None:
        rows = _tree_rows(kept, left_out, collapse=depth is not None and level >= depth)
        for index, (_, _, line, kept_child, gone_child) in enumerate(rows):
            last = index == len(rows) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{line}")
            if kept_child:
                walk(kept_child, gone_child, prefix + ("    " if last else "│   "), level + 1)

    walk(_nest(paths), _nest(omitted), "", 0)
    return "\n".join(lines)


def content_hash(parts: Iterable[tuple[str, bytes]], *, salt: str = "") -> str:
    """sha256 over (name, bytes) pairs in the given order plus options that change the result."""
    digest = hashlib.sha256(salt.encode())
    for name, data in parts:
        digest.update(len(name).to_bytes(8, "little") + name.encode("utf-8", "surrogatepass"))
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
