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

import bisect
import logging
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import StrEnum
from typing import Any

from .documents import LINE_ANCHOR_EVERY, Document, Section, SectionKind, bounded_number
from .prompts import PreparedDocument

log = logging.getLogger(__name__)

MIN_QUOTE_WORDS = 6
REPAIR_THRESHOLD = 0.85  # 2·matched / (quote words + source words), over the aligned span
LINE_TOLERANCE = LINE_ANCHOR_EVERY  # cited lines may be off by one anchor interval


class Status(StrEnum):
    """What checking a quote found."""

    VERIFIED = "verified"  # found where cited (or found, when nothing was cited)
    MOVED = "moved"  # found, but on another page/section/file (or other lines) than cited
    REPAIRED = "repaired"  # only a close, meaning-preserving match: see source_text
    OMITTED = "omitted"  # found only in a part that was left out of the prompt
    NOT_FOUND = "not_found"


class RefKind(StrEnum):
    PAGE = "page"
    SECTION_TITLE = "section_title"
    SECTION_NUMBER = "section_number"
    FILE = "file"
    LINES = "lines"


@dataclass(frozen=True)
class Locator:
    """A place in the document: page(s), a heading section or a file (with lines)."""

    kind: SectionKind
    title: str  # page number, heading title (or section number as written) or file path
    label: str  # how it reads: "p. 12", "pp. 3-4", 'section "Payment"', "src/app.py:40-52"
    last: str | None = None  # the last page of a range of pages
    lines: tuple[int, int] | None = None
    sections: tuple[int, ...] = ()  # indices into document.sections it refers to

    def as_dict(self, *, full: bool = False) -> dict[str, Any]:
        """The public record; `full` adds the section indices, for a verdict stored with its
        turn and shown again (the page or file it opens)."""
        record: dict[str, Any] = {"kind": self.kind.value, "title": self.title, "label": self.label,
                  "last": self.last, "lines": list(self.lines) if self.lines else None}
        if full:
            record["sections"] = list(self.sections)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Locator:
        lines = record.get("lines")
        return cls(SectionKind(record["kind"]), record["title"], record["label"],
                   last=record.get("last"), lines=(lines[0], lines[1]) if lines else None,
                   sections=tuple(int(i) for i in record.get("sections") or ()))


@dataclass(frozen=True)
class Citation:
    """One quote of an answer and its verdict."""

    quote: str
    cited: Locator | None
    found: Locator | None
    status: Status
    source_text: str = ""  # the document's exact text where it was found
    occurrences: tuple[Locator, ...] = ()  # every place it was found (sent or omitted parts)
    span: tuple[int, int] = (0, 0)  # where the quote sits in the answer
    note: str = ""
    similarity: float = 0.0
    # (start in the found locator's first section, end in its last), for highlighting
    source_offsets: tuple[int, int] | None = None

    def as_dict(self, *, full: bool = False) -> dict[str, Any]:
        """The public record (`--json`, JSONL); `full` keeps all a page needs to show the
        verdict again without checking the answer anew: where the quote sits in the answer,
        the sections it was found in and the offsets to highlight."""
        record: dict[str, Any] = {
                  "quote": self.quote,
                  "cited": self.cited.as_dict(full=full) if self.cited else None,
                  "found": self.found.as_dict(full=full) if self.found else None,
                  "status": self.status.value, "source_text": self.source_text or None,
                  "occurrences": [o.as_dict(full=full) for o in self.occurrences],
                  "note": self.note or None}
        if full:
            record |= {"span": list(self.span), "similarity": self.similarity,
                       "source_offsets": (list(self.source_offsets)
                                          if self.source_offsets is not None else None)}
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Citation:
        """Back from `as_dict` (a JSONL record or a stored turn's verdicts)."""
        def place(value: dict[str, Any] | None) -> Locator | None:
            return Locator.from_dict(value) if value else None

        def pair(value: list[int] | None) -> tuple[int, int] | None:
            return (int(value[0]), int(value[1])) if value else None

        return cls(record["quote"], place(record.get("cited")), place(record.get("found")),
                   Status(record["status"]), record.get("source_text") or "",
                   tuple(Locator.from_dict(o) for o in record.get("occurrences") or ()),
                   pair(record.get("span")) or (0, 0), record.get("note") or "",
                   float(record.get("similarity") or 0.0), pair(record.get("source_offsets")))


def citations_from_records(records: Iterable[dict[str, Any]]) -> tuple[Citation, ...]:
    return tuple(Citation.from_dict(record) for record in records)


# -- normalisation ---------------------------------------------------------------------------

_LETTER = r"[^\W\d_]"
_HYPHENS = "\\-\u2010\u2011"
_SOFT_HYPHENS = "\u00ad\ufffe"  # PDFium gives U+FFFE for a hyphen it found at a line end
# A word is a run of word characters; words split by a hyphen (or soft hyphen) before a line
# or page break, or inside a compound, are one word: "termi-\nnate" = "terminate". A few
# symbols count as words so that code and formulas keep their operators, and so does a minus
# sign before a number ("-500" is not "500"; a hyphen between numbers, "10-12", is no sign).
_MINUS = "\u2212"
_WORD = re.compile(
    rf"(?:\w*{_LETTER}[{_HYPHENS}{_SOFT_HYPHENS}]\s*(?={_LETTER}))*\w+|[+=<>%$€£¥&|^~@/]"
    rf"|(?<![\w.,])[-{_MINUS}](?=\d)")
_FOLD = re.compile(rf"[\s{_HYPHENS}{_SOFT_HYPHENS}\u200b-\u200d\u2060\ufeff]")
_HYPHEN_AT_END = re.compile(rf"{_LETTER}[{_HYPHENS}{_SOFT_HYPHENS}]\s*$")
_SENTINEL = "\x01"  # between parts that were not adjacent in what was sent


class _Normaliser:
    """Word text → its comparable form (NFKC folds ligatures and full-width forms)."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, word: str) -> str:
        folded = self._cache.get(word)
        if folded is None:
            folded = (_MINUS if word in ("-", _MINUS)  # a sign: not folded away as a hyphen
                      else _FOLD.sub("", unicodedata.normalize("NFKC", word).casefold()))
            if len(self._cache) < 500_000:
                self._cache[word] = folded
        return folded

    def words(self, text: str) -> list[str]:
        return [w for w in (self(m.group()) for m in _WORD.finditer(text)) if w]


_NORMALISE = _Normaliser()


def normalise_words(text: str) -> list[str]:
    """The comparable words of a text, as the index stores them."""
    return _NORMALISE.words(text)


# -- the index ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Hit:
    first: int  # token indices, inclusive
    last: int


class CitationIndex:
    """Every section of a prepared document (kept and omitted) as normalised words with offsets
    into the section's text. Built once per prepared document (see `index_for`)."""

    def __init__(self, prepared: PreparedDocument) -> None:
        self.prepared = prepared
        self.document: Document = prepared.document
        sections = self.document.sections
        self.kept = frozenset(prepared.kept)
        words: list[str] = []
        owner: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        previous: int | None = None
        hyphen_at_end = False
        normalise = _NORMALISE
        for index, section in enumerate(sections):
            if section.kind is SectionKind.TREE:
                continue
            if previous is not None and (previous != index - 1
                                         or (previous in self.kept) != (index in self.kept)):
                words.append(_SENTINEL)  # no quote runs across a gap in what was sent
                owner.append(-1)
                starts.append(0)
                ends.append(0)
            joins = previous == index - 1 and hyphen_at_end
            previous = index
            for match in _WORD.finditer(section.text):
                word = normalise(match.group())
                if not word:
                    continue
                if joins and word[0].isalpha():  # "confi-" | next page | "dentiality"
                    words[-1] += word
                    joins = False
                    continue
                joins = False
                words.append(word)
                owner.append(index)
                starts.append(match.start())
                ends.append(match.end())
            hyphen_at_end = _HYPHEN_AT_END.search(section.text[-40:]) is not None
        self.words = words
        self.owner = owner
        self.starts = starts
        self.ends = ends
        self.joined = " " + " ".join(words) + " "
        offsets = []
        position = 1
        for word in words:
            offsets.append(position)
            position += len(word) + 1
        self._offsets = offsets
        positions: dict[str, list[int]] = {}
        for i, word in enumerate(words):
            positions.setdefault(word, []).append(i)
        self.positions = positions  # word → token indices, for near matches
        self._newlines: dict[int, list[int]] = {}
        self.pages = page_numbers(self.document)

    # exact search
    def find(self, needle_words: Sequence[str]) -> list[_Hit]:
        if not needle_words:
            return []
        needle = " " + " ".join(needle_words) + " "
        hits = []
        at = self.joined.find(needle)
        while at >= 0:
            first = bisect.bisect_left(self._offsets, at + 1)
            hits.append(_Hit(first, first + len(needle_words) - 1))
            at = self.joined.find(needle, at + 1)
        return hits

    def find_after(self, needle_words: Sequence[str], after: int, *, max_gap: int) -> _Hit | None:
        """The first occurrence starting after token `after`, within `max_gap` tokens."""
        if not needle_words or after + 1 >= len(self.words):
            return None
        needle = " " + " ".join(needle_words) + " "
        start = self._offsets[after + 1] - 1
        end_token = min(len(self.words) - 1, after + max_gap + len(needle_words))
        end = self._offsets[end_token] + len(self.words[end_token]) + 1
        at = self.joined.find(needle, start, end)
        if at < 0:
            return None
        first = bisect.bisect_left(self._offsets, at + 1)
        hit = _Hit(first, first + len(needle_words) - 1)
        return None if _SENTINEL in self.words[after:hit.first] else hit

    # where a hit is
    def line_of(self, section: int, offset: int) -> int:
        newlines = self._newlines.get(section)
        if newlines is None:
            text = self.document.sections[section].text
            newlines = [m.start() for m in re.finditer("\n", text)]
            self._newlines[section] = newlines
        return bisect.bisect_left(newlines, offset) + 1

    def hit_sections(self, hit: _Hit) -> list[int]:
        seen: list[int] = []
        for index in self.owner[hit.first:hit.last + 1]:
            if index >= 0 and (not seen or seen[-1] != index):
                seen.append(index)
        return seen

    def locator(self, hit: _Hit) -> Locator:
        indices = self.hit_sections(hit)
        sections = self.document.sections
        first, last = sections[indices[0]], sections[indices[-1]]
        if first.kind is SectionKind.FILE and len(indices) == 1:
            lines = (self.line_of(indices[0], self.starts[hit.first]),
                     self.line_of(indices[0], self.ends[hit.last] - 1))
            return file_locator(first.title, lines, (indices[0],))
        if first.kind is SectionKind.PAGE and len(indices) > 1 and last.kind is SectionKind.PAGE:
            return Locator(SectionKind.PAGE, first.title, f"pp. {first.title}-{last.title}",
                           last=last.title, sections=tuple(indices))
        return section_locator(first, indices[0])

    def source_text(self, hit: _Hit) -> str:
        indices = self.hit_sections(hit)
        sections = self.document.sections
        start, end = self.starts[hit.first], self.ends[hit.last]
        if len(indices) == 1:
            return sections[indices[0]].text[start:end]
        pieces = [sections[indices[0]].text[start:]]
        pieces += [sections[i].text for i in indices[1:-1]]
        pieces.append(sections[indices[-1]].text[:end])
        return "\n".join(pieces)

    def crosses_only_pages(self, hit: _Hit) -> bool:
        indices = self.hit_sections(hit)
        return len(indices) == 1 or all(self.document.sections[i].kind is SectionKind.PAGE
                                        for i in indices)

    def is_sent(self, hit: _Hit) -> bool:
        return any(i in self.kept for i in self.hit_sections(hit))


def section_locator(section: Section, index: int) -> Locator:
    if section.kind is SectionKind.PAGE:
        return Locator(SectionKind.PAGE, section.title, f"p. {section.title}", sections=(index,))
    if section.kind is SectionKind.FILE:
        return file_locator(section.title, None, (index,))
    return Locator(section.kind, section.title, section.locator, sections=(index,))


def file_locator(path: str, lines: tuple[int, int] | None, sections: tuple[int, ...]) -> Locator:
    if lines is None:
        return Locator(SectionKind.FILE, path, f"file {path}", sections=sections)
    span = str(lines[0]) if lines[0] == lines[1] else f"{lines[0]}-{lines[1]}"
    return Locator(SectionKind.FILE, path, f"{path}:{span}", lines=lines, sections=sections)


_INDEXES: OrderedDict[tuple[str, tuple[int, ...], tuple[int, ...]], CitationIndex] = OrderedDict()
_INDEXES_LOCK = threading.Lock()
_INDEXES_MAX = 8  # about 8 MB each for a 65K-token document


def index_for(prepared: PreparedDocument) -> CitationIndex:
    """The index of a prepared document, built once and kept for the last few documents."""
    key = (prepared.document.content_hash, prepared.kept, prepared.omitted)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is not None and index.document is prepared.document:
            _INDEXES.move_to_end(key)
            return index
    index = CitationIndex(prepared)
    with _INDEXES_LOCK:
        _INDEXES[key] = index
        while len(_INDEXES) > _INDEXES_MAX:
            _INDEXES.popitem(last=False)
    return index


# -- finding quotes and references in an answer ---------------------------------------------

@dataclass(frozen=True)
class Reference:
    """A place as the answer wrote it ("p. 12", "§ 4.2", "src/app.py:40-52")."""

    kind: RefKind
    text: str  # as written
    value: str = ""  # page number, title, section number or path
    last: str | None = None  # last page of a range
    lines: tuple[int, int] | None = None
    span: tuple[int, int] = (0, 0)


Refs = tuple[Reference, ...]


@dataclass(frozen=True)
class QuoteMention:
    quote: str
    span: tuple[int, int]
    reference: Reference | None
    # references written together with it ("(contract.pdf, p. 3)"): the first that names a
    # place in the document is the one used
    alternatives: tuple[Reference, ...] = ()


_PATH = r"[\w][\w.\-/]*\.[A-Za-z][A-Za-z0-9]{0,7}"
_CODE_EXTENSIONS = frozenset(
    ["py", "pyi", "ipynb", "js", "jsx", "ts", "tsx", "mjs", "cjs", "java", "kt", "kts", "scala", "go", "rs", "c", "h", "cc", "cpp", "hpp", "cxx", "cs", "rb", "php", "swift", "m", "mm", "r", "jl", "lua", "pl", "sh", "bash", "zsh", "ps1", "bat", "sql", "html", "htm", "css", "scss", "less", "vue", "svelte", "xml", "json", "yaml", "yml", "toml", "ini", "cfg", "conf", "env", "md", "rst", "txt", "csv", "tsv", "proto", "graphql", "gradle", "cmake", "mk", "dockerfile", "tf", "hcl", "lock", "pdf", "docx"])
_RANGE_SEP = r"\s*(?:-|–|—|to|through|and|&)\s*"
_REFERENCE = re.compile(
    rf"(?P<fpath>{_PATH})(?:(?::|#L)(?P<fl1>\d+)(?:\s*[-–]\s*L?(?P<fl2>\d+))?"
    rf"|,?\s*\(?lines?\s+(?P<fl3>\d+)(?:{_RANGE_SEP}(?P<fl4>\d+))?\)?)?"
    rf"|\bfile\s+`?(?P<fword>[\w][\w.\-/]*)`?"
    rf"|\b(?:pages?|pp?\.|pg\.?)\s*(?P<p1>\d+)(?:{_RANGE_SEP}(?P<p2>\d+))?"
    rf"|\[(?:p\.?\s*)?(?P<b>\d+)\]"
    rf"|\b(?:section|heading|chapter)\s+[\"“'‘](?P<title>[^\"”'’\n]{{1,120}})[\"”'’]"
    rf"|[\"“](?P<title2>[^\"”\n]{{1,120}})[\"”]\s+(?:section|heading)\b"
    rf"|(?:§+\s*|\b(?:section|clause|article|sec\.)\s+)(?P<num>\d+(?:\.\d+)*)"
    rf"|\blines?\s+(?P<l1>\d+)(?:{_RANGE_SEP}(?P<l2>\d+))?",
    re.IGNORECASE)

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_BLOCKQUOTE_LINE = re.compile(r"^[ \t]{0,3}>[ \t]?(.*)$", re.MULTILINE)
_STRAIGHT_QUOTED = re.compile(r"\"([^\"\n]+(?:\n(?![ \t]*\n)[^\"\n]+)*)\"")
_TITLE_BEFORE = re.compile(r"\b(?:section|heading|chapter|titled|entitled)\s*$", re.IGNORECASE)
_ELLIPSIS = re.compile(r"\[\s*(?:\.\s*){3}\]|\[…\]|\.\s*\.\s*\.|…")
_ANCHOR_PREFIX = re.compile(r"^(\s*)\d+\t", re.MULTILINE)
_TRAILING_REFERENCE = re.compile(r"\s*[\(\[]{1,2}([^()\[\]\n]{1,80})[\)\]]{1,2}[.,;]?\s*$")
_WORD_COUNT = re.compile(r"\w+")
_ATTRIBUTION_WORDS = {"see", "source", "from", "cf", "on", "at", "in", "the", "document", "quoted",
                      "p", "pp", "page", "pages"}


def _masked(text: str, pattern: re.Pattern[str]) -> str:
    """`text` with each match blanked out (newlines kept), so offsets stay valid."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match.group())
    return pattern.sub(blank, text)


def _reference(match: re.Match[str], offset: int = 0) -> Reference:
    g = match.groupdict()
    text = match.group()
    span = (match.start() + offset, match.end() + offset)
    if g["fpath"]:
        low = g["fl1"] or g["fl3"]
        high = g["fl2"] or g["fl4"] or low
        lines = (bounded_number(low), bounded_number(high)) if low else None
        return Reference(RefKind.FILE, text, g["fpath"], lines=lines, span=span)
    if g["fword"]:
        return Reference(RefKind.FILE, text, g["fword"], span=span)
    if g["p1"]:
        return Reference(RefKind.PAGE, text, g["p1"], last=g["p2"], span=span)
    if g["b"]:
        return Reference(RefKind.PAGE, text, g["b"], span=span)
    if g["title"] or g["title2"]:
        title = (g["title"] or g["title2"]).strip()
        return Reference(RefKind.SECTION_TITLE, text, title, span=span)
    if g["num"]:
        return Reference(RefKind.SECTION_NUMBER, text, g["num"], span=span)
    return Reference(RefKind.LINES, text, "", lines=(bounded_number(g["l1"]),
                                                      bounded_number(g["l2"] or g["l1"])),
                     span=span)


def find_references(text: str, *, offset: int = 0) -> list[Reference]:
    """Every page / section / file reference in a piece of text, in order. A dotted word is a
    file only if it looks like one ("src/app.py", "app.py"), not "e.g." or "U.S."."""
    references = []
    for match in _REFERENCE.finditer(text.replace("`", " ")):
        path = match.group("fpath")
        if path and "/" not in path and path.rsplit(".", 1)[1].lower() not in _CODE_EXTENSIONS:
            continue
        references.append(_reference(match, offset))
    return references


def _group(references: list[Reference], text_of: str, offset: int) -> tuple[Reference, ...]:
    """The references written together with the first one: "(contract.pdf, p. 3)"."""
    if not references:
        return ()
    group = [references[0]]
    for reference in references[1:]:
        between = text_of[group[-1].span[1] - offset:reference.span[0] - offset]
        if len(between) > 12 or not re.fullmatch(r"[\s,;:/]*(?:and|at|on|in)?[\s,;:/]*", between):
            break
        group.append(reference)
    return tuple(group)


def _word_count(text: str) -> int:
    return len(_WORD_COUNT.findall(_ELLIPSIS.sub(" ", text)))


def _strip_quote(text: str) -> str:
    text = _ANCHOR_PREFIX.sub(r"\1", text).strip()
    pairs = {'"': '"', "“": "”", "'": "'", "‘": "’", "*": "*", "_": "_"}
    for _ in range(3):
        if len(text) > 2 and text[0] in pairs and text[-1] == pairs[text[0]]:
            text = text[1:-1].strip()
    return text


def find_quotes(answer: str) -> list[QuoteMention]:  # noqa: C901 (over the limit; split when next changed)
    """The quotes of an answer (double-quoted text and blockquotes of MIN_QUOTE_WORDS words or
    more, and code blocks that cite a file), each with the reference written nearest to it, in
    answer order."""
    scan = _masked(_masked(answer, _FENCE), _INLINE_CODE)
    found: list[tuple[int, int, str, Refs]] = []
    # blockquotes: runs of `>` lines; a last line that is only a reference is the attribution
    runs: list[list[re.Match[str]]] = []
    for line in _BLOCKQUOTE_LINE.finditer(scan):
        if runs and scan[runs[-1][-1].end():line.start()].strip() == "" and scan.count(
                "\n", runs[-1][-1].end(), line.start()) <= 1:
            runs[-1].append(line)
        else:
            runs.append([line])
    blocked: list[tuple[int, int]] = []
    for run in runs:
        start, end = run[0].start(), run[-1].end()
        blocked.append((start, end))
        contents = [answer[m.start(1):m.end(1)] for m in run]
        references: Refs = ()
        last = contents[-1]
        rest = set(_WORD_COUNT.findall(_REFERENCE.sub(" ", last.replace("`", " ")).lower()))
        if len(contents) > 1 and rest <= _ATTRIBUTION_WORDS:
            references = _group(find_references(last), last, 0)
            if references:
                contents = contents[:-1]
        text, trailing = _split_trailing_reference("\n".join(contents))
        text = _strip_quote(text)
        if _word_count(text) >= MIN_QUOTE_WORDS:
            found.append((start, end, text, references or trailing))
    quoted = sorted([m.span() for m in _STRAIGHT_QUOTED.finditer(scan)] + _curly_spans(scan),
                    key=lambda span: (span[0], -span[1]))
    for start, end in quoted:
        if any(a <= start < b for a, b in blocked):
            continue  # inside a blockquote, or a quote inside a quote
        blocked.append((start, end))
        if _TITLE_BEFORE.search(scan[max(0, start - 20):start]):
            continue  # section "Limitation of liability of either party": a title, not a quote
        text, trailing = _split_trailing_reference(answer[start + 1:end - 1])
        text = _strip_quote(text)
        if _word_count(text) >= MIN_QUOTE_WORDS:
            found.append((start, end, text, trailing))
    fences: list[tuple[int, int, str, Refs]] = []
    for match in _FENCE.finditer(answer):  # code is a quote only when it cites a file
        body = match.group().split("\n", 1)[1].rsplit("\n", 1)[0]
        if _word_count(body) >= MIN_QUOTE_WORDS:
            fences.append((match.start(), match.end(), _ANCHOR_PREFIX.sub(r"\1", body), ()))
    everything = sorted(found + fences, key=lambda item: item[0])
    fence_starts = {f[0] for f in fences}
    block_starts = {start for start, _ in blocked} | fence_starts
    # first the references attached right after each quote, then, for quotes without one, the
    # last reference before the quote in its sentence or lead-in (not one attached to another)
    attached: list[Refs] = []
    for number, (_, end, _, references) in enumerate(everything):
        limit = everything[number + 1][0] if number + 1 < len(everything) else len(answer)
        attached.append(references or _attached_reference(answer, end, limit))
    mentions = []
    for number, (start, end, text, _) in enumerate(everything):
        references = attached[number]
        if not references:
            floor = everything[number - 1][1] if number else 0
            if number and attached[number - 1]:
                floor = max(floor, attached[number - 1][-1].span[1])
            limit = everything[number + 1][0] if number + 1 < len(everything) else len(answer)
            references = (_reference_before(answer, start, floor, block=start in block_starts)
                          or _reference_after(answer, end, limit))
        if start in fence_starts and not any(r.kind in (RefKind.FILE, RefKind.LINES)
                                             for r in references):
            continue  # code is a quote only when it cites a file
        mentions.append(QuoteMention(text, (start, end), references[0] if references else None,
                                     tuple(references[1:])))
    return mentions


_CONNECTOR = re.compile(
    r"(?P<punct>[\s,.;:()\[\]—–-]*)(?P<word>(?:see|cf\.?|on|at|in|from|per|according to|"
    r"as (?:stated|said|written|set out) (?:on|in)|quoted from|source:?)\s+(?:the\s+)?)?"
    r"[\s(\[`]*", re.IGNORECASE)


def _attached_reference(answer: str, end: int, limit: int) -> Refs:
    """The references written right after the quote: `"…" (p. 12)`, `"…", see p. 12`, or an
    attribution line under a blockquote (`— p. 12`)."""
    window = answer[end:min(limit, end + 200)]
    gap = _CONNECTOR.match(window)
    assert gap is not None
    between = window[:gap.end()]
    if gap.group("word") and re.search(r"[.!?]", gap.group("punct")):
        return ()  # "…". On p. 4 it says: a reference that opens the next sentence
    if re.search(r"\n[ \t]*\n", between) and re.search(r"[^\s—–-]", between):
        return ()  # a new paragraph that is not an attribution line
    references = find_references(window[gap.end():], offset=end + gap.end())
    if references and references[0].span[0] == end + gap.end():
        return _group(references, answer, 0)
    return ()


def _reference_before(answer: str, start: int, floor: int, *, block: bool) -> Refs:
    """The last references in the quote's own paragraph before it, or, for a blockquote or
    code block, in the paragraph that leads into it ("As p. 12 puts it:")."""
    before = answer[max(floor, start - 240):start]
    paragraphs = re.split(r"\n[ \t]*\n", before)
    own = paragraphs[-1]
    offset = start - len(own)
    if not own.strip() and block and len(paragraphs) > 1:
        own = paragraphs[-2]
        offset = start - len(before) + before.rfind(own)
    references = find_references(own, offset=offset)
    if not references:
        return ()
    cluster = [references[-1]]  # "In contract.pdf, p. 3:" — the page first, then the file
    for reference in reversed(references[:-1]):
        if cluster[-1].span[0] - reference.span[1] > 12:
            break
        cluster.append(reference)
    return tuple(cluster)


def _reference_after(answer: str, end: int, limit: int) -> Refs:
    """References later in the same paragraph (`"…", as the contract says on page 12`)."""
    after = answer[end:min(limit, end + 160)]
    paragraph = re.search(r"\n[ \t]*\n", after)
    if paragraph:
        after = after[:paragraph.start()]
    return _group(find_references(after, offset=end), answer, 0)


def _curly_spans(text: str) -> list[tuple[int, int]]:
    """Outermost “…” spans, nesting allowed (“The “Goods” are…”), within a paragraph."""
    spans = []
    depth = 0
    start = 0
    for match in re.finditer(r"[“”]|\n[ \t]*\n", text):
        mark = match.group()
        if mark == "“":
            if depth == 0:
                start = match.start()
            depth += 1
        elif mark == "”":
            if depth == 1:
                spans.append((start, match.end()))
            depth = max(0, depth - 1)
        else:
            depth = 0  # a paragraph break ends any open quote
    return spans


def _split_trailing_reference(text: str) -> tuple[str, Refs]:
    """A reference in brackets at the end of the quoted text: `… within 30 days (p. 3)`."""
    match = _TRAILING_REFERENCE.search(text)
    if match:
        references = find_references(match.group())
        if references:
            return text[:match.start()], _group(references, match.group(), 0)
    return text, ()


# -- resolving references ---------------------------------------------------------------------

_NUMBERED_LINE = r"^[ \t]*(?:§+\s*|(?:section|clause|article)\s+)?{number}(?![\d.]?\d)"
_TITLE_LEAD = {"section", "clause", "article", "chapter", "part"}


def page_numbers(document: Document) -> dict[int, int]:
    """Section index → page number, for the pages of a document."""
    numbers = {}
    for i, s in enumerate(document.sections):
        if s.kind is SectionKind.PAGE and (number := _page_number(s.title)) is not None:
            numbers[i] = number
    return numbers


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


def _page_number(title: str) -> int | None:
    match = re.search(r"(\d+)$", title)
    return bounded_number(match.group(1)) if match else None


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


# -- near matches --------------------------------------------------------------------------------

_NEGATIONS = {"not", "no", "never", "none", "nor", "neither", "nothing", "nobody", "nowhere",
              "without", "cannot", "cant", "t", "unless", "except", "non", "nt", "n"}
_MODALS = {"shall", "may", "must", "will", "would", "should", "can", "could", "might", "need",
           "required", "optional"}
_QUANTIFIERS = {"all", "any", "every", "each", "some", "only", "most", "least", "more", "less",
                "fewer", "many", "few", "both", "either", "and", "or", "but", "before", "after",
                "above", "below", "over", "under", "within", "exceed", "exceeds", "maximum",
                "minimum", "increase", "decrease", "higher", "lower", "always", "sometimes",
                "first", "last", "half", "double", "twice"}
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                 "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty",
                 "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million",
                 "billion", "second", "third", "fourth", "fifth", "tenth", "percent"}
_GUARDED = _NEGATIONS | _MODALS | _QUANTIFIERS | _NUMBER_WORDS
_FILLERS = {"the", "a", "an", "this", "that", "these", "those", "its", "their", "of", "to", "in",
            "on", "for", "by", "with", "as", "at", "is", "are", "be", "been", "was", "were", "it",
            "which", "such", "said"}
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "de", "anti", "counter", "mis")
_ROLE_ENDINGS = {"er", "ee", "or", "ed", "es", "ar"}
_SUFFIXES = ("ing", "ies", "ied", "es", "ed", "s", "d", "'s")


def _guarded(word: str) -> bool:
    return word in _GUARDED or any(ch.isdigit() for ch in word) or not word.isalnum()


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[:-len(suffix)]
    return word


def _one_edit(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1 or a == b:
        return a == b
    if len(a) > len(b):
        a, b = b, a
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return a[i + 1:] == b[i + 1:] if len(a) == len(b) else a[i:] == b[i + 1:]
    return True


def _negates(a: str, b: str) -> bool:
    """`b` is `a` (or one letter off it) with a negating prefix: "able"/"unable"."""
    for prefix in _NEGATING_PREFIXES:
        if b.startswith(prefix) and not a.startswith(prefix):
            rest = b[len(prefix):]
            if rest == a or _one_edit(rest, a):
                return True
    return False


def _benign_pair(a: str, b: str) -> bool:
    """A changed word that cannot change the meaning: an inflection or a one-letter typo."""
    if a == b:
        return True
    if _guarded(a) or _guarded(b):
        return False
    if _negates(a, b) or _negates(b, a):
        return False
    if min(len(a), len(b)) >= 4 and _stem(a) == _stem(b):
        return True
    if a[-2:] != b[-2:] and {a[-2:], b[-2:]} <= _ROLE_ENDINGS:
        return False  # payer/payee, insurer/insured, lessor/lessee: another party
    return min(len(a), len(b)) >= 5 and _one_edit(a, b) and a[0] == b[0]


def _benign_edits(quote: Sequence[str], source: Sequence[str]) -> tuple[bool, int]:
    """(every difference is harmless, number of words that differ)."""
    edits = 0
    for op, i1, i2, j1, j2 in SequenceMatcher(None, quote, source, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        q, s = quote[i1:i2], source[j1:j2]
        edits += max(len(q), len(s))
        if op == "replace":
            if "".join(q) == "".join(s):
                continue  # a word broken or joined by extraction: "with in" / "within"
            if len(q) != len(s) or not all(_benign_pair(a, b) for a, b in zip(q, s, strict=True)):
                return False, edits
        elif not all(w in _FILLERS for w in (q if op == "delete" else s)):
            return False, edits
    return True, edits


def _meaning_words(words: Iterable[str]) -> Counter[str]:
    return Counter(w for w in words if _guarded(w))


MAX_REPAIR_WORDS = 400


@dataclass(frozen=True)
class _Near:
    hit: _Hit
    similarity: float


def _near_match(index: CitationIndex, quote: Sequence[str], prefer: Iterable[int] = ()  # noqa: C901 (over the limit; split when next changed)
                ) -> _Near | None:
    """The best close match that passes the meaning guard, or None; a match in one of the
    `prefer`red (cited) sections wins over a closer one elsewhere."""
    n = len(quote)
    if n > MAX_REPAIR_WORDS:
        return None  # a close match of a whole passage costs seconds and proves little: exact only
    positions = index.positions
    if any(w not in positions for w in _meaning_words(quote)):
        return None  # a number, negation or modal the document never uses: no repair can keep it
    present = [(len(positions[w]), qi, w) for qi, w in enumerate(quote) if w in positions]
    if len(present) < max(3, n // 2):
        return None
    preferred = set(prefer)
    votes: Counter[int] = Counter()  # where the quote would start, by its rarest words
    budget = 0
    for used, (count, qi, word) in enumerate(sorted(present)[:6]):
        if used >= 3 and budget + count > 1500:
            break  # the rarest words place a quote; common ones only cost time
        budget += count
        for p in positions[word][:1000]:
            votes[p - qi] += 1
    scores = Counter({start: votes[start - 1] + votes[start] + votes[start + 1]
                      for start in votes
                      if votes[start] > 1 or votes[start - 1] or votes[start + 1]})
    owner = index.owner
    cited = Counter({s: v for s, v in scores.items()
                     if 0 <= s < len(owner) and owner[s] in preferred})
    starts = [s for s, _ in cited.most_common(3)] + [s for s, _ in scores.most_common(8)]
    best: _Near | None = None
    best_cited = False
    seen: set[int] = set()
    for candidate in starts:
        if candidate in seen or scores[candidate] < 2:
            continue
        seen.add(candidate)
        start = max(0, candidate - 3)
        window = index.words[start:candidate + n + 3]
        matcher = SequenceMatcher(None, quote, window, autojunk=False)
        blocks = [b for b in matcher.get_matching_blocks() if b.size]
        if not blocks:
            continue
        first, last = blocks[0].b, blocks[-1].b + blocks[-1].size
        # unmatched words at the quote's ends are set against the words beside the match, so
        # a changed first or last word is judged as a change, not as an addition
        first = max(0, first - blocks[0].a)
        last = min(len(window), last + n - (blocks[-1].a + blocks[-1].size))
        source = window[first:last]
        if _SENTINEL in source:
            continue
        matched = sum(b.size for b in blocks)
        similarity = 2 * matched / (n + len(source))
        hit = _Hit(start + first, start + last - 1)
        if not index.crosses_only_pages(hit):
            continue
        in_cited = bool(preferred & set(index.hit_sections(hit)))
        if best is not None and (best_cited, best.similarity) >= (in_cited, similarity):
            continue
        if similarity < REPAIR_THRESHOLD:
            continue
        if _meaning_words(quote) != _meaning_words(source):
            continue
        benign, edits = _benign_edits(quote, source)
        if not benign or edits > max(2, n // 5):
            continue
        best, best_cited = _Near(hit, similarity), in_cited
    return best


# -- verification ---------------------------------------------------------------------------------

def _matches_cited(index: CitationIndex, hit: _Hit, cited: Locator) -> tuple[bool, bool]:
    """(same place, same section but other lines)."""
    sections = set(index.hit_sections(hit))
    if not sections & set(cited.sections):
        return False, False
    if cited.kind is SectionKind.FILE and cited.lines is not None:
        found = index.locator(hit)
        if found.lines is not None and (found.lines[1] < cited.lines[0] - LINE_TOLERANCE
                                        or found.lines[0] > cited.lines[1] + LINE_TOLERANCE):
            return False, True
    return True, False


def _find_exact(index: CitationIndex, quote: str) -> list[_Hit]:
    """Where the quote's words occur. A quote may run across a page break, never from one
    file or heading section into the next."""
    return [h for h in _exact_hits(index, quote) if index.crosses_only_pages(h)]


def _exact_hits(index: CitationIndex, quote: str) -> list[_Hit]:
    fragments = [normalise_words(f) for f in _ELLIPSIS.split(quote)]
    # one-word fragments are dropped as noise, unless the word can change the meaning
    # ("will ... not ... pay" must find its "not")
    fragments = ([f for f in fragments if len(f) >= 2 or any(map(_guarded, f))]
                 or [f for f in fragments if f])
    if not fragments:
        return []
    if len(fragments) == 1:
        return index.find(fragments[0])
    shortest: dict[int, _Hit] = {}  # by last token: the latest start, the tightest span
    for hit in index.find(fragments[0])[:200]:
        current = hit
        for fragment in fragments[1:]:
            following = index.find_after(fragment, current.last, max_gap=400)
            if following is None:
                break
            current = following
        else:
            if current.last not in shortest or shortest[current.last].first < hit.first:
                shortest[current.last] = _Hit(hit.first, current.last)
    return sorted(shortest.values(), key=lambda h: h.first)


def _omitted_note(index: CitationIndex, cited: Locator | None) -> str:
    if cited is None or not cited.sections:
        return ""
    if all(i not in index.kept for i in cited.sections):
        return f"{cited.label} was left out of the prompt, so the model could not read it."
    return ""


def verify_quote(index: CitationIndex, quote: str, cited: Locator | None, *,
                 span: tuple[int, int] = (0, 0)) -> Citation:
    """The verdict on one quote (see Status)."""
    hits = _find_exact(index, quote)
    sent = [h for h in hits if index.is_sent(h)]
    occurrences = tuple(index.locator(h) for h in hits)
    several = f"occurs {len(hits)} times" if len(hits) > 1 else ""
    unknown = (f"{cited.label} is not in the document" if cited is not None and not cited.sections
               else "")

    def make(status: Status, hit: _Hit | None, note: str, similarity: float = 1.0) -> Citation:
        notes = "; ".join(n for n in (note, several) if n)
        return Citation(quote, cited, index.locator(hit) if hit else None, status,
                        index.source_text(hit) if hit else "", occurrences, span, notes,
                        similarity if hit else 0.0,
                        (index.starts[hit.first], index.ends[hit.last]) if hit else None)

    if sent:
        if cited is None:
            return make(Status.VERIFIED, sent[0], "")
        other_lines = None
        for hit in sent:
            same, lines_differ = _matches_cited(index, hit, cited)
            if same:
                return make(Status.VERIFIED, hit, "")
            if lines_differ and other_lines is None:
                other_lines = hit
        if other_lines is not None:
            found = index.locator(other_lines)
            return make(Status.MOVED, other_lines, f"cited {cited.label}, found at {found.label}")
        found = index.locator(sent[0])
        return make(Status.MOVED, sent[0],
                    unknown or f"cited {cited.label}, found on {found.label}")
    if hits:
        found = index.locator(hits[0])
        return make(Status.OMITTED, hits[0],
                    f"found only on {found.label}, which was left out of the prompt")
    words = normalise_words(_ELLIPSIS.sub(" ", quote))
    near = None
    if len(words) >= MIN_QUOTE_WORDS:
        near = _near_match(index, words, cited.sections if cited else ())
    if near is not None and index.is_sent(near.hit):
        found = index.locator(near.hit)
        where = ""
        if cited is not None and not _matches_cited(index, near.hit, cited)[0]:
            where = f"; cited {cited.label}, found on {found.label}"
        return make(Status.REPAIRED, near.hit,
                    f"not verbatim: the document says this ({near.similarity:.0%} alike){where}",
                    near.similarity)
    note = _omitted_note(index, cited) or unknown or "not in the document"
    return Citation(quote, cited, None, Status.NOT_FOUND, "", (), span, note, 0.0)


def verify_answer(answer: str, prepared: PreparedDocument) -> tuple[Citation, ...]:
    """Every quote of an answer, checked against the document that was sent."""
    if not answer:
        return ()
    index = index_for(prepared)
    citations = []
    for mention in find_quotes(answer):
        cited = None
        for reference in ((mention.reference, *mention.alternatives) if mention.reference else ()):
            place = resolve(reference, index.document, pages=index.pages)
            if cited is None or (place.sections and not cited.sections):
                cited = place  # the first that names a place in the document, else the first
        citations.append(verify_quote(index, mention.quote, cited, span=mention.span))
    return tuple(citations)


# -- presenting ---------------------------------------------------------------------------------

STATUS_LABELS: dict[Status, str] = {
    Status.VERIFIED: "verified", Status.MOVED: "found elsewhere", Status.REPAIRED: "close match",
    Status.OMITTED: "from a left-out part", Status.NOT_FOUND: "not found",
}
STATUS_MARKS: dict[Status, str] = {
    Status.VERIFIED: "✓", Status.MOVED: "→", Status.REPAIRED: "≈", Status.OMITTED: "∅",
    Status.NOT_FOUND: "✗",
}


def citation_counts(citations: Iterable[Citation]) -> dict[str, int]:
    """Quotes per verdict, every verdict present (for JSONL records and tables)."""
    counts = Counter(c.status for c in citations)
    return {status.value: counts.get(status, 0) for status in Status}


def citation_record(citations: Sequence[Citation]) -> dict[str, Any]:
    """The fields a JSONL summary record gets: every quote with its verdict, and the counts."""
    return {"citations": [c.as_dict() for c in citations],
            "citation_counts": citation_counts(citations)}


def counts_text(counts: dict[str, int] | None) -> str:
    """"3 ✓ 1 → 1 ✗" from `citation_counts`, for tables ("" when nothing was quoted)."""
    if not counts:
        return ""
    return " ".join(f"{n} {STATUS_MARKS[Status(s)]}" for s, n in counts.items() if n)


def total_counts(counts: Iterable[dict[str, int] | None]) -> dict[str, int]:
    """Verdict counts summed over many summaries (None for those that were not checked)."""
    total = {status.value: 0 for status in Status}
    for one in counts:
        for status, n in (one or {}).items():
            total[status] = total.get(status, 0) + n
    return total


def counts_line(citations: Sequence[Citation]) -> str:
    """"3 ✓ · 1 → · 1 ✗", or "" when there are no quotes."""
    counts = Counter(c.status for c in citations)
    return " · ".join(f"{counts[s]} {STATUS_MARKS[s]}" for s in Status if counts[s])


def _short(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def citation_line(citation: Citation) -> str:
    """One line per quote, for terminals and logs."""
    where = citation.found.label if citation.found else (citation.cited.label if citation.cited
                                                         else "no reference")
    line = (f"{STATUS_MARKS[citation.status]} {STATUS_LABELS[citation.status]} · {where} · "
            f"\"{_short(citation.quote, 80)}\"")
    if citation.note and citation.status is not Status.VERIFIED:
        line += f" ({citation.note})"
    if citation.status is Status.REPAIRED and citation.source_text:
        line += f" — the document says: \"{_short(citation.source_text, 160)}\""
    return line


def sources_text(citations: Sequence[Citation]) -> str:
    """The sources block printed after an answer by `sparkdocs ask`."""
    if not citations:
        return ""
    return "\n".join([f"Sources ({counts_line(citations)}):"]
                     + [f"  {citation_line(c)}" for c in citations])


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def escape_markdown(text: str) -> str:
    """Text shown literally by any CommonMark renderer: no links, images, HTML or emphasis."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def sources_markdown(citations: Sequence[Citation], *, heading: str = "Sources") -> str:
    """A Markdown sources section with each quote's verdict (exports and summary files);
    empty when the text quotes nothing."""
    if not citations:
        return ""
    counts = citation_counts(citations)
    lines = [f"### {heading}", "", f"{len(citations)} quote(s): "
             + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n), ""]
    for number, c in enumerate(citations, 1):
        where = c.found.label if c.found else (c.cited.label if c.cited else "no reference")
        line = (f"{number}. **{STATUS_LABELS[c.status]}** ({escape_markdown(where)}): "
                f"“{escape_markdown(_short(c.quote, 160))}”")
        if c.note and c.status is not Status.VERIFIED:
            line += f" — {escape_markdown(c.note)}"
        lines.append(line)
        if c.status is Status.REPAIRED and c.source_text:
            lines.append(f"   - the document says: “{escape_markdown(_short(c.source_text, 240))}”")
    return "\n".join(lines) + "\n"


def answers_sources_markdown(verdicts: Sequence[Sequence[Citation]]) -> str:
    """One sources section per answer that quotes the document ("Q2 sources"), from each
    answer's verdicts, for exports; "" when no answer quotes anything."""
    blocks = []
    for number, citations in enumerate(verdicts, 1):
        section = sources_markdown(citations, heading=f"Q{number} sources")
        if section:
            blocks.append(section)
    if not blocks:
        return ""
    return "## Sources, checked against the document\n\n" + "\n".join(blocks)


def mark_answer(answer: str, citations: Sequence[Citation]) -> str:
    """The answer with each quote that was not found (or only in a left-out part) marked in
    place, for Markdown renderers that know Streamlit's `:red-background[…]`."""
    marked = answer
    for c in sorted(citations, key=lambda c: c.span[0], reverse=True):
        if c.status not in (Status.NOT_FOUND, Status.OMITTED) or c.span == (0, 0):
            continue
        end = c.span[1]
        label = ("not found in the document" if c.status is Status.NOT_FOUND
                 else "from a left-out part")
        gap = "\n\n" if marked[:end].rstrip().endswith(("```", "~~~")) else " "  # after a fence
        marked = (marked[:end] + f"{gap}:red-background[**{STATUS_MARKS[c.status]} {label}**]"
                  + marked[end:])
    return marked


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
