"""Normalising words and indexing a document once: every section's text as a stream of
normalised words with an offset map back to the text, so a quote is a substring search."""

from __future__ import annotations

import bisect
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from ..documents import Document, Section, SectionKind, bounded_number
from ..prompts import PreparedDocument
from .values import Locator

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
        member_starts = {member.first for member in self.document.members}
        for index, section in enumerate(sections):
            if section.kind is SectionKind.TREE:
                continue
            if index in member_starts:
                hyphen_at_end = False  # a word never runs from one document into the next
            if previous is not None and (previous != index - 1 or index in member_starts
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
        place = self._place(hit)
        member = self.document.member_of(place.sections[0]) if place.sections else None
        return place.in_document(member.name) if member else place

    def _place(self, hit: _Hit) -> Locator:
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



def page_numbers(document: Document) -> dict[int, int]:
    """Section index → page number, for the pages of a document."""
    numbers = {}
    for i, s in enumerate(document.sections):
        if s.kind is SectionKind.PAGE and (number := _page_number(s.title)) is not None:
            numbers[i] = number
    return numbers


def _page_number(title: str) -> int | None:
    match = re.search(r"(\d+)$", title)
    return bounded_number(match.group(1)) if match else None
