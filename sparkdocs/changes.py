"""What changed between two versions of one document: a deterministic clause-level diff.

The model explains; the diff proves. Each document is cut into clauses (sentences of pages and
sections, lines of files), each with the place it starts; difflib aligns the two sequences,
near-identical removed/added pairs become `changed` (with the words that changed), and an
identical clause removed in one place and added in another becomes `moved`.

Clauses are compared by a key that ignores what a re-layout changes and a reader does not:
whitespace, line and page breaks (pages are one text stream, so a clause that crosses a page
break is one clause, placed on the page where it starts), hyphens splitting a word across a
line, and the clause's own leading number (a renumbering after an inserted clause is not a
change of every clause below it).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from enum import StrEnum
from typing import Any

from .documents import (
    Document,
    DocumentKind,
    Section,
    SectionKind,
    member_document,
    neutralise_special_tokens,
)
from .errors import SparkdocsError


class ComparisonError(SparkdocsError):
    """Two inputs that cannot be compared (the same file given twice)."""


class ChangeKind(StrEnum):
    CHANGED = "changed"
    REMOVED = "removed"
    ADDED = "added"
    MOVED = "moved"


# Word-level similarity (difflib ratio) from which a removed and an added clause at the same
# place are one changed clause: one word or number changed in a 10-word clause is 0.9; two
# unrelated clauses of one contract template share about half their words.
CHANGED_SIMILARITY = 0.6
# Pairing clauses inside one replaced block is quadratic; past this many candidate pairs only
# clauses at the same offset in the block are paired.
MAX_PAIRING = 2_500
DETAIL_EDITS = 3  # word edits named in a changed clause's detail
SHORT_PIECE_WORDS = 3  # a "sentence" shorter than this ("12.", "Clause 4.") joins the next


@dataclass(frozen=True)
class Place:
    """Where a clause starts: a page, a section title, or a file path with its line."""

    kind: str  # a SectionKind value, or "line" for a plain-text file's line
    title: str
    line: int | None = None

    @property
    def label(self) -> str:
        if self.kind == SectionKind.PAGE.value:
            return f"p. {self.title}"
        if self.kind == SectionKind.FILE.value:
            return f"{self.title}:{self.line}" if self.line else self.title
        if self.kind == "line":
            return f"line {self.line}"
        return f'section "{self.title}"'

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "line": self.line, "label": self.label}


def span_label(first: Place, last: Place | None) -> str:
    """Where a change of several clauses runs: "pp. 3-4", "lines 7-12", "a.py:4-9"."""
    if last is None or last == first:
        return first.label
    if first.kind == last.kind == SectionKind.PAGE.value:
        return f"pp. {first.title}-{last.title}"
    if first.kind == last.kind == "line":
        return f"lines {first.line}-{last.line}"
    if first.kind == last.kind == SectionKind.FILE.value and first.title == last.title:
        return f"{first.title}:{first.line}-{last.line}"
    return f"{first.label} to {last.label}"


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    old: str | None  # the clause text as it was (None for an added clause)
    new: str | None  # as it is (None for a removed clause)
    old_place: Place | None  # where its first clause is
    new_place: Place | None
    detail: str = ""  # for a changed clause: which words or numbers changed
    old_end: Place | None = None  # where its last clause is, when elsewhere (a block over pages)
    new_end: Place | None = None

    @property
    def old_label(self) -> str | None:
        return span_label(self.old_place, self.old_end) if self.old_place else None

    @property
    def new_label(self) -> str | None:
        return span_label(self.new_place, self.new_end) if self.new_place else None

    def as_dict(self) -> dict[str, Any]:
        def place(first: Place | None, last: Place | None) -> dict[str, Any] | None:
            if first is None:
                return None
            shown = {**first.as_dict(), "label": span_label(first, last)}
            return {**shown, "last": last.as_dict()} if last not in (None, first) else shown

        return {"kind": self.kind.value, "old": self.old, "new": self.new,
                "old_place": place(self.old_place, self.old_end),
                "new_place": place(self.new_place, self.new_end), "detail": self.detail}


@dataclass(frozen=True)
class Comparison:
    old_name: str
    new_name: str
    changes: tuple[Change, ...]
    old_clauses: int  # clauses compared on each side
    new_clauses: int

    def counts(self) -> dict[str, int]:
        return {kind.value: sum(1 for c in self.changes if c.kind is kind) for kind in ChangeKind}

    def as_dict(self) -> dict[str, Any]:
        return {"old": self.old_name, "new": self.new_name,
                "clauses": {"old": self.old_clauses, "new": self.new_clauses},
                "counts": self.counts(), "changes": [c.as_dict() for c in self.changes]}


@dataclass(frozen=True)
class Clause:
    """One sentence of prose or one line of a file, and where it starts."""

    text: str  # whitespace collapsed, otherwise as written
    key: str  # what is compared
    place: Place
    end: Place | None = None  # where it ends, when that is elsewhere (a line or page further)


# -- cutting a document into clauses ---------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[]?[A-Z0-9])")
# A clause's own number or letter at its start: "12.", "4.2", "(a)", "iv.", "Clause 7", "§ 3".
_LEADING_NUMBER = re.compile(
    r"^(?:(?:(?i:clause|section|article)|\u00a7)\s*\d+(?:\.\d+)*[.:)]?|\d+(?:\.\d+)+[.)]?|\d+[.)]"
    r"|\(?[a-z]{1,4}\)|[a-z]{1,4}\.)\s+(?=[A-Z\"'(\u201c])")
_WORD_BREAK_HYPHEN = re.compile(r"(?<=[^\W\d_])[-\u00ad\ufffe]\s*(?=[^\W\d_])")
_PLAIN_PART = re.compile(r"^lines? (\d+)(?:-\d+| part \d+)$")
_TOKEN = re.compile(r"\d[\d,.]*\d|\w+|[^\w\s]")


def _key(text: str) -> str:
    """Words, numbers and punctuation one space apart: spacing is layout, not content."""
    unnumbered = _LEADING_NUMBER.sub("", text, count=1)
    return " ".join(_TOKEN.findall(_WORD_BREAK_HYPHEN.sub("", unnumbered)))


def _spans(text: str) -> Iterator[tuple[int, int]]:
    """Sentence spans of a text: paragraphs cut at sentence ends, a too-short piece (a clause
    number, "Clause 4.") joined to the sentence it opens."""
    start = 0
    for brk in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = brk.start() if brk else len(text)
        yield from _sentences(text, start, end)
        start = brk.end() if brk else end


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    cuts = [m.end() for m in _SENTENCE_END.finditer(text, start, end)]
    pieces = [(a, b) for a, b in zip([start, *cuts], [*cuts, end], strict=True) if text[a:b].strip()]
    pending: int | None = None
    for index, (a, b) in enumerate(pieces):
        first = a if pending is None else pending
        if len(text[first:b].split()) < SHORT_PIECE_WORDS and index < len(pieces) - 1:
            pending = first
            continue
        pending = None
        yield first, b


def _stream_of(section: Section, plain_text: bool) -> str:
    """Which text stream a section continues: pages flow into the next page, and the parts a
    plain-text file was cut into flow into each other; anything else stands alone."""
    if section.kind is SectionKind.PAGE:
        return "page"
    if plain_text and section.kind is SectionKind.HEADING and _PLAIN_PART.match(section.title):
        return "plain"
    return ""


def _streams(document: Document) -> Iterator[list[Section]]:
    plain_text = document.kind is DocumentKind.TEXT
    run: list[Section] = []
    for section in document.sections:
        if section.kind is SectionKind.TREE:
            continue
        stream = _stream_of(section, plain_text)
        if run and (not stream or _stream_of(run[-1], plain_text) != stream):
            yield run
            run = []
        run.append(section)
        if not stream:
            yield run
            run = []
    if run:
        yield run


def _place(section: Section, text: str, offset: int) -> Place:
    plain = _PLAIN_PART.match(section.title) if section.kind is SectionKind.HEADING else None
    if plain:
        return Place("line", "", int(plain.group(1)) + text.count("\n", 0, offset))
    if section.kind is SectionKind.FILE:
        return Place(section.kind.value, section.title, text.count("\n", 0, offset) + 1)
    return Place(section.kind.value, section.title)


def _clause(text: str, place: Place, *, prose: bool = True, end: Place | None = None
            ) -> Clause | None:
    """A clause of prose, or a line of a file (compared as written but for whitespace)."""
    collapsed = " ".join(text.split())
    if not collapsed:
        return None
    return Clause(collapsed, _key(collapsed) if prose else " ".join(_TOKEN.findall(collapsed)),
                  place, end if end != place else None)


def _stream_clauses(run: list[Section]) -> Iterator[Clause]:
    if run[0].kind is SectionKind.FILE:  # code and data: a line is the unit
        offset = 0
        for line in run[0].text.split("\n"):
            clause = _clause(line, _place(run[0], run[0].text, offset), prose=False)
            offset += len(line) + 1
            if clause:
                yield clause
        return
    starts, offset = [], 0
    for section in run:
        starts.append(offset)
        offset += len(section.text) + 1
    text = "\n".join(section.text for section in run)

    def place_at(offset: int) -> Place:
        index = bisect_right(starts, offset) - 1
        return _place(run[index], run[index].text, offset - starts[index])

    for a, b in _spans(text):
        a += len(text[a:b]) - len(text[a:b].lstrip())
        last = a + max(0, len(text[a:b].rstrip()) - 1)
        clause = _clause(text[a:b], place_at(a), end=place_at(last))
        if clause:
            yield clause


def clauses(document: Document) -> list[Clause]:
    """The document as clauses in reading order, each with the place it starts."""
    return [clause for run in _streams(document) for clause in _stream_clauses(run)]


# -- aligning ---------------------------------------------------------------------------------

def _similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, _TOKEN.findall(a), _TOKEN.findall(b), autojunk=False).ratio()


def _pairs(old: Sequence[Clause], new: Sequence[Clause]) -> list[tuple[int | None, int | None]]:
    """The best in-order pairing of a replaced block's clauses by similarity (a small dynamic
    programme); unpaired ones come back with None on the other side."""
    n, m = len(old), len(new)
    if n * m > MAX_PAIRING:
        return _pairs_in_step(old, new)
    sim = [[_similarity(a.key, b.key) for b in new] for a in old]
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            take = sim[i][j] + best[i + 1][j + 1] if sim[i][j] >= CHANGED_SIMILARITY else -1.0
            best[i][j] = max(take, best[i + 1][j], best[i][j + 1])
    out: list[tuple[int | None, int | None]] = []
    i = j = 0
    while i < n and j < m:
        if sim[i][j] >= CHANGED_SIMILARITY and best[i][j] == sim[i][j] + best[i + 1][j + 1]:
            out.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            out.append((i, None))
            i += 1
        else:
            out.append((None, j))
            j += 1
    return out + [(k, None) for k in range(i, n)] + [(None, k) for k in range(j, m)]


def _pairs_in_step(old: Sequence[Clause], new: Sequence[Clause]
                   ) -> list[tuple[int | None, int | None]]:
    """A large replaced block: clauses at the same offset are paired when similar."""
    out: list[tuple[int | None, int | None]] = []
    for k in range(max(len(old), len(new))):
        a = old[k] if k < len(old) else None
        b = new[k] if k < len(new) else None
        if a and b and _similarity(a.key, b.key) >= CHANGED_SIMILARITY:
            out.append((k, k))
        else:
            out += ([(k, None)] if a else []) + ([(None, k)] if b else [])
    return out


def _removed_first(pairs: list[tuple[int | None, int | None]]) -> list[tuple[int | None, int | None]]:
    """Between two paired clauses, the removed ones before the added ones, so a removed block
    (and an added block) is one change, not clauses taking turns."""
    out: list[tuple[int | None, int | None]] = []
    added: list[tuple[int | None, int | None]] = []
    for pair in pairs:
        if pair[0] is None:
            added.append(pair)
            continue
        if pair[1] is not None:
            out += added
            added = []
        out.append(pair)
    return out + added


@dataclass
class _Entry:
    kind: ChangeKind
    i: int | None  # clause index on the old side
    j: int | None  # on the new side


def _entries(old: Sequence[Clause], new: Sequence[Clause]) -> list[_Entry]:
    matcher = SequenceMatcher(None, [c.key for c in old], [c.key for c in new], autojunk=False)
    entries: list[_Entry] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for a, b in _removed_first(_pairs(old[i1:i2], new[j1:j2])):
            i = None if a is None else i1 + a
            j = None if b is None else j1 + b
            kind = (ChangeKind.CHANGED if i is not None and j is not None
                    else ChangeKind.REMOVED if i is not None else ChangeKind.ADDED)
            entries.append(_Entry(kind, i, j))
    return entries


def _find_moves(entries: list[_Entry], old: Sequence[Clause], new: Sequence[Clause]) -> list[_Entry]:
    """A removed clause whose exact key is added elsewhere is one moved clause (first removed
    with first added, in reading order)."""
    added: dict[str, list[_Entry]] = {}
    for entry in entries:
        if entry.kind is ChangeKind.ADDED and entry.j is not None:
            added.setdefault(new[entry.j].key, []).append(entry)
    taken: set[int] = set()
    for entry in entries:
        if entry.kind is ChangeKind.REMOVED and entry.i is not None and added.get(old[entry.i].key):
            partner = added[old[entry.i].key].pop(0)
            taken.add(id(partner))
            entry.kind, entry.j = ChangeKind.MOVED, partner.j
    return [e for e in entries if id(e) not in taken]


def _continues(group: list[_Entry], entry: _Entry) -> bool:
    last = group[-1]
    if entry.kind is not last.kind or entry.kind is ChangeKind.CHANGED:
        return False

    def follows(now: int | None, before: int | None) -> bool:
        return now is None if before is None else now == before + 1

    return follows(entry.i, last.i) and follows(entry.j, last.j)


def _groups(entries: list[_Entry]) -> list[list[_Entry]]:
    """Consecutive clauses removed, added or moved together are one change (a clause of
    several sentences, a block)."""
    groups: list[list[_Entry]] = []
    for entry in entries:
        if groups and _continues(groups[-1], entry):
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return groups


def _detail(old: str, new: str) -> str:
    """The words and numbers that differ, as `"30" → "45"`, `added "not"`, `removed "all"`."""
    a, b = list(_TOKEN.finditer(old)), list(_TOKEN.finditer(new))
    words = SequenceMatcher(None, [t.group() for t in a], [t.group() for t in b], autojunk=False)
    edits: list[str] = []
    for tag, i1, i2, j1, j2 in words.get_opcodes():
        was = old[a[i1].start():a[i2 - 1].end()] if i2 > i1 else ""
        now = new[b[j1].start():b[j2 - 1].end()] if j2 > j1 else ""
        if tag == "replace":
            edits.append(f'"{was}" → "{now}"')
        elif tag == "delete":
            edits.append(f'removed "{was}"')
        elif tag == "insert":
            edits.append(f'added "{now}"')
    if not edits:
        return "spacing"  # unreachable while keys are token strings
    more = len(edits) - DETAIL_EDITS
    return "; ".join(edits[:DETAIL_EDITS]) + (f"; and {more} more" if more > 0 else "")


def _change(group: list[_Entry], old: Sequence[Clause], new: Sequence[Clause]) -> Change:
    olds = [old[e.i] for e in group if e.i is not None]
    news = [new[e.j] for e in group if e.j is not None]
    old_text = " ".join(c.text for c in olds) or None
    new_text = " ".join(c.text for c in news) or None
    detail = ""
    if group[0].kind is ChangeKind.CHANGED and olds and news:  # told apart by key: no renumbering
        detail = _detail(" ".join(c.key for c in olds), " ".join(c.key for c in news))
    return Change(group[0].kind, old_text, new_text, olds[0].place if olds else None,
                  news[0].place if news else None, detail, _end(olds), _end(news))


def _end(group: Sequence[Clause]) -> Place | None:
    """Where a change's last clause ends, when that is not where its first one starts."""
    if not group:
        return None
    last = group[-1].end or group[-1].place
    return last if last != group[0].place else None


def compare(old: Document, new: Document) -> Comparison:
    """Every changed, removed, added and moved clause from `old` to `new`, in reading order
    (a moved clause where it was). The same inputs give the same output."""
    before, after = clauses(old), clauses(new)
    entries = _find_moves(_entries(before, after), before, after)
    changes = tuple(_change(group, before, after) for group in _groups(entries))
    return Comparison(old.name, new.name, changes, len(before), len(after))


# -- a listing for the prompt and the terminal ----------------------------------------------

MAX_LISTED = 40  # changes listed; the rest are counted
MAX_CLAUSE_CHARS = 240  # of each clause's text in the listing


def _clip(text: str, limit: int, *, around: int = 0) -> str:
    """At most `limit` characters of `text`, a window that shows position `around`."""
    if len(text) <= limit:
        return text
    start = max(0, min(around - limit // 3, len(text) - limit))
    window = text[start:start + limit]
    return ("…" if start else "") + window + ("…" if start + limit < len(text) else "")


def _first_difference(a: str, b: str) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _line(change: Change, limit: int) -> str:
    where = " → ".join(label for label in (change.old_label, change.new_label) if label)
    if change.kind is ChangeKind.CHANGED and change.old and change.new:
        at = _first_difference(change.old, change.new)
        quoted = f'"{_clip(change.old, limit, around=at)}" → "{_clip(change.new, limit, around=at)}"'
        return f"{change.kind.value}: {where}: {quoted} ({change.detail})"
    text = change.old if change.old is not None else change.new or ""
    return f'{change.kind.value}: {where}: "{_clip(text, limit)}"'


def render_changes(comparison: Comparison, *, old_name: str, new_name: str,
                   max_changes: int = MAX_LISTED, max_chars: int = MAX_CLAUSE_CHARS) -> str:
    """The comparison as compact text for a prompt or a terminal: a summary line, then one
    line per change; past `max_changes` the rest are counted, so a rewrite cannot blow the
    budget. Document text passes the special-token neutraliser."""
    changes = comparison.changes
    if not changes:
        head = (f"No changes from {old_name} to {new_name} "
                f"({comparison.old_clauses:,} clauses compared; layout, whitespace and page breaks aside).")
        return neutralise_special_tokens(head + "\n")
    counts = ", ".join(f"{n:,} {kind}" for kind, n in comparison.counts().items() if n)
    lines = [f"{len(changes):,} changes from {old_name} to {new_name}: {counts}."]
    lines += [_line(change, max_chars) for change in changes[:max_changes]]
    if len(changes) > max_changes:
        lines.append(f"… and {len(changes) - max_changes:,} more changes not listed.")
    return neutralise_special_tokens("\n".join(lines) + "\n")


def looks_like_versions(comparison: Comparison) -> bool:
    """Two documents are versions of one when most of their clauses are the same: then what
    changed between them is worth sending with them."""
    most = max(comparison.old_clauses, comparison.new_clauses)
    return most > 0 and len(comparison.changes) <= VERSION_CHANGE_SHARE * most


VERSION_CHANGE_SHARE = 0.5


def with_changes(document: Document) -> Document:
    """A set of two versions of one document with what changed from the first to the second
    as its appendix (sent after both documents); any other document as it is."""
    if len(document.members) != 2:
        return replace(document, appendix="") if document.appendix else document
    text = _APPENDICES.get(document.content_hash)
    if text is None:  # a set's key names its members: compared once per set, not per rerun
        old, new = (member_document(document, member) for member in document.members)
        comparison = compare(old, new)
        text = ""
        if looks_like_versions(comparison):
            text = ("What changed from the first document to the second, found by sparkdocs' "
                    "own clause-by-clause comparison (exact, not the model's reading):\n"
                    + render_changes(comparison, old_name=old.name, new_name=new.name))
        with _APPENDICES_LOCK:
            _APPENDICES[document.content_hash] = text
            while len(_APPENDICES) > 32:
                _APPENDICES.popitem(last=False)
    return replace(document, appendix=text) if text else document


_APPENDICES: OrderedDict[str, str] = OrderedDict()  # set key → its appendix ("" for none)
_APPENDICES_LOCK = threading.Lock()
