"""Close matches, and the meaning guard that accepts one only when what differs cannot change
the meaning (no number, negation, modal or quantifier added, dropped or changed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from .index import _SENTINEL, CitationIndex, _Hit
from .values import REPAIR_THRESHOLD

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
