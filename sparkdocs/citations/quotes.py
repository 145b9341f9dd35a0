"""Finding the quotes in an answer and the references (pages, sections, files, lines) that
cite them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..documents import bounded_number
from .values import MIN_QUOTE_WORDS, RefKind


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
    """The references written together with the first one: "(contract.pdf, p. 3)",
    "(a.pdf, p. 3; b.pdf, p. 7)"."""
    if not references:
        return ()
    group = [references[0]]
    for reference in references[1:]:
        between = text_of[group[-1].span[1] - offset:reference.span[0] - offset]
        # a document's name between two references is blanked to spaces ("p. 3; b.pdf, p. 7")
        if (len(re.sub(r"[ \t]+", " ", between)) > 12 or re.search(r"\n[ \t]*\n", between)
                or not re.fullmatch(r"[\s,;:/]*(?:and|&|at|on|in)?[\s,;:/]*", between)):
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


def find_quotes(answer: str, *, names: Sequence[str] = ()) -> list[QuoteMention]:  # noqa: C901 (over the limit; split when next changed)
    """The quotes of an answer (double-quoted text and blockquotes of MIN_QUOTE_WORDS words or
    more, and code blocks that cite a file), each with the reference written nearest to it, in
    answer order. `names` are the documents of a set: written with a reference ("(Annual
    Report.pdf, p. 3)") they are read as part of the citation, never as a file or as text
    between a quote and its reference."""
    scan = _masked(_masked(answer, _FENCE), _INLINE_CODE)
    cited = _blanked(answer, names)  # where references are looked for
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
        last = cited[run[-1].start(1):run[-1].end(1)]
        rest = set(_WORD_COUNT.findall(_REFERENCE.sub(" ", last.replace("`", " ")).lower()))
        if len(contents) > 1 and rest <= _ATTRIBUTION_WORDS:
            references = _group(find_references(last, offset=run[-1].start(1)), last,
                                run[-1].start(1))
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
        attached.append(references or _attached_reference(cited, end, limit))
    mentions = []
    for number, (start, end, text, _) in enumerate(everything):
        references = attached[number]
        if not references:
            floor = everything[number - 1][1] if number else 0
            if number and attached[number - 1]:
                floor = max(floor, attached[number - 1][-1].span[1])
            limit = everything[number + 1][0] if number + 1 < len(everything) else len(answer)
            references = (_reference_before(cited, start, floor, block=start in block_starts)
                          or _reference_after(cited, end, limit))
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


def _blanked(answer: str, names: Sequence[str]) -> str:
    """`answer` with every written document name blanked to spaces (offsets kept), longest
    first, so "2024/contract.pdf" goes whole before "contract.pdf" could match inside it."""
    if not names:
        return answer
    pattern = re.compile("|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True)
                                  if n), re.IGNORECASE)
    return pattern.sub(lambda m: " " * len(m.group()), answer)


_ATTACHED_REACH = 2000  # a citation may list many documents' places: "(a.pdf, p. 3; b.pdf, p. 7; …)"


def _attached_reference(answer: str, end: int, limit: int) -> Refs:
    """The references written right after the quote: `"…" (p. 12)`, `"…", see p. 12`, or an
    attribution line under a blockquote (`— p. 12`)."""
    window = answer[end:min(limit, end + _ATTACHED_REACH)]
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
