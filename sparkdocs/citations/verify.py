"""Verifying a quote, and every quote of an answer, against the document that was sent."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from ..documents import Member, SectionKind
from ..prompts import PreparedDocument
from .index import CitationIndex, _Hit, index_for, normalise_words
from .match import _guarded, _near_match
from .quotes import _ELLIPSIS, QuoteMention, Reference, find_quotes
from .resolve import resolve
from .values import LINE_TOLERANCE, MIN_QUOTE_WORDS, Citation, Locator, RefKind, Status


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
    """Every quote of an answer, checked against the document that was sent. In a set of
    documents, a quote's citation is looked for in the document it names, and a quote found in
    another one is `moved`, with the document it is really in."""
    if not answer:
        return ()
    index = index_for(prepared)
    members = index.document.members
    citations = []
    for mention in find_quotes(answer, names=[m.name for m in members]):
        references = (mention.reference, *mention.alternatives) if mention.reference else ()
        named = _named_places(answer, mention, members) if members else []
        if not named:
            citations.append(verify_quote(index, mention.quote, _cited(index, references, None),
                                          span=mention.span))
            continue
        verdicts = [verify_quote(index, mention.quote, _cited(index, refs, member),
                                 span=mention.span) for member, refs in named]
        citations.append(min(verdicts, key=_closeness))  # the first best, in the order named
    return tuple(citations)


def _cited(index: CitationIndex, references: Sequence[Reference], member: Member | None
           ) -> Locator | None:
    """The place references name, within `member` when the citation names a document of the
    set (its whole text when no reference names a place in it)."""
    cited = None
    for reference in references:
        if member is not None and _names_member(reference, member):
            continue  # "(b.pdf, p. 3)": the document, not a file inside it
        place = resolve(reference, index.document, pages=index.pages)
        if member is not None:
            place = replace(place, sections=tuple(i for i in place.sections
                                                  if i in member.indices))
        if cited is None or (place.sections and not cited.sections):
            cited = place  # the first that names a place in the document, else the first
    if member is None:
        return cited
    return (cited or Locator(index.document.sections[member.first].kind, member.name,
                             "the whole document", sections=tuple(member.indices))
            ).in_document(member.name)


def _closeness(verdict: Citation) -> int:
    """How well a verdict fits the place it was checked against: a citation naming several
    documents is judged by the one that holds the quote."""
    if verdict.status is Status.VERIFIED:
        return 0
    cited, found = verdict.cited, verdict.found
    if cited is not None and found is not None and cited.document == found.document:
        return 1  # in the named document, on another page
    return 2 if verdict.status is Status.REPAIRED else 3


def _names_member(reference: Reference, member: Member) -> bool:
    return reference.kind is RefKind.FILE and reference.value.casefold() in (
        member.name.casefold(), member.name.rsplit("/", 1)[-1].casefold())


def _named_places(answer: str, mention: QuoteMention, members: Sequence[Member]
                  ) -> list[tuple[Member, tuple[Reference, ...]]]:
    """The documents a quote's citation names, in the order written, each with the references
    that belong to it: those written after its name and before the next one ("(a.pdf, p. 3;
    b.pdf, p. 7)"); references written before any name belong to the first ("(p. 3 of a.pdf)").
    A citation after the quote runs to the end of its parenthesis or line (without references,
    the names in the brackets that open right after the quote). In a lead-in before the quote
    ("Unlike b.pdf, a.pdf says on p. 3:") only the name nearest its reference is the citation;
    the others are prose. The longest name wins where one contains another."""
    references = (mention.reference, *mention.alternatives) if mention.reference else ()
    quote_start, quote_end = mention.span
    lead_in = bool(references) and min(r.span[0] for r in references) < quote_end
    if references:
        first = min(r.span[0] for r in references)
        last = max(r.span[1] for r in references)
        start = quote_end if first >= quote_end else max(0, first - _NAME_REACH)
        closer = _CLOSER.search(answer, last, last + _NAME_REACH)
        end = closer.end() if closer and closer.group() != "\n" else last
        if lead_in:  # "p. 7 of b.pdf puts it:": the names up to the quote
            end = max(end, quote_start)
    else:
        start, end = quote_end, _citation_end(answer, quote_end)
    written = _written_names(answer[start:end], members, offset=start)
    if not written:
        return []
    owned: dict[int, list[Reference]] = {}
    for reference in references:
        owned.setdefault(_owner(answer, reference, written), []).append(reference)
    if lead_in:  # in prose, a name is the citation only with a place of its own
        kept = [i for i in range(len(written)) if i in owned] or [
            _nearest(written, min(r.span[0] for r in references))]
        written = [written[i] for i in kept]
        owned = {kept.index(i): refs for i, refs in owned.items() if i in kept}
    places: list[tuple[Member, tuple[Reference, ...]]] = []
    for i, (_, _, member) in enumerate(written):
        refs = tuple(owned.get(i, ()))
        if all(m is not member for m, _ in places):
            places.append((member, refs))
        elif refs:  # named twice: its references are added to its first mention
            places = [(m, r + refs if m is member else r) for m, r in places]
    return places


_CLOSER = re.compile(r"[)\]\n]")
_OPENS_CITATION = re.compile(r"[ \t]*[,;:—–-]?[ \t]*[(\[]")


_OF_NAME = re.compile(r"[ \t]*,?[ \t]*(?:of|in|from)[ \t]+(?:the[ \t]+)?", re.IGNORECASE)


def _owner(answer: str, reference: Reference, written: Sequence[tuple[int, int, Member]]) -> int:
    """Which written name a reference belongs to: the one it is "of" ("p. 7 of b.pdf"), else
    the nearest written before it ("b.pdf, p. 7"), else the first."""
    joined = _OF_NAME.match(answer, reference.span[1])
    if joined:
        after = [i for i, (at, _, _) in enumerate(written) if at == joined.end()]
        if after:
            return after[0]
    ahead = [i for i, (at, _, _) in enumerate(written) if at <= reference.span[0]]
    return ahead[-1] if ahead else 0


def _nearest(written: Sequence[tuple[int, int, Member]], at: int) -> int:
    """The name written last before `at`, else the first after it."""
    before = [i for i, (start, _, _) in enumerate(written) if start < at]
    return before[-1] if before else 0


def _citation_end(answer: str, quote_end: int) -> int:
    """Where a citation without references ends: its closing bracket when one opens right
    after the quote (however many names it lists), else _NAME_REACH on the same line."""
    opens = _OPENS_CITATION.match(answer, quote_end)
    if opens:
        closer = _CLOSER.search(answer, opens.end(), opens.end() + _CITATION_REACH)
        if closer and closer.group() != "\n":
            return closer.end()
    end = min(len(answer), quote_end + _NAME_REACH)
    newline = answer.find("\n", quote_end)
    return newline if 0 <= newline < end else end


def _written_names(window: str, members: Sequence[Member], *, offset: int
                   ) -> list[tuple[int, int, Member]]:
    """(start, end, member) of every document name written in `window`, in any case (case
    folded: "STRASSE.PDF" is "Straße.pdf"), in order; a name inside a longer one written there
    is not a name of its own. Offsets are the window's as written (folding may change a text's
    length: each folded character maps back to the one it came from)."""
    folded, origin = _folded(window)
    found: list[tuple[int, int, Member]] = []
    for member in members:
        name = member.name.casefold()
        at = folded.find(name) if name else -1
        while at >= 0:
            found.append((offset + origin[at], offset + origin[at + len(name) - 1] + 1, member))
            at = folded.find(name, at + len(name))
    found.sort(key=lambda f: (f[0], -f[1]))
    kept: list[tuple[int, int, Member]] = []
    for item in found:
        if not any(k[0] <= item[0] and item[1] <= k[1] for k in kept):
            kept.append(item)
    return kept


def _folded(text: str) -> tuple[str, list[int]]:
    """`text` case folded, and for each folded character the index of the one it came from."""
    pieces: list[str] = []
    origin: list[int] = []
    for index, character in enumerate(text):
        fold = character.casefold()
        pieces.append(fold)
        origin += [index] * len(fold)
    return "".join(pieces), origin


_CITATION_REACH = 2000  # characters of a bracketed citation that lists many documents
_NAME_REACH = 120  # characters around a reference where the document's name may be written
