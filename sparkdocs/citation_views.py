"""Checked quotes for people: the verdict marks and labels, the sources block under an answer
(terminal and Markdown), the answer with its unfound quotes marked. Presentation only: the
checking itself is `sparkdocs.citations`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .citations import Citation, Status

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


# What can start Markdown anywhere in a line: escapes, code, emphasis, links (and so images),
# HTML, GFM tables and strikethrough; `_` only where it can be emphasis (not inside a word);
# `&` only where it starts an entity. A `.` or `#` in mid-line is only text: escaping it left
# `www\.example\.org` and `p\. 4` in every file and viewer that shows the source.
_MARKDOWN_SPECIAL = re.compile(
    r"[\\`*\[\]<|~]|(?<![^\W_])_|_(?![^\W_])|&(?=#?[0-9A-Za-z]+;)")
# A line's start that would make a block: a heading, quote, list item or thematic break.
_BLOCK_START = re.compile(r"^([ \t]*)(?:([#>+\-=])|(\d{1,9})([.)]))", re.M)


def escape_markdown(text: str) -> str:
    """`text` shown as written by any CommonMark renderer (no links, images, HTML or
    emphasis), with a backslash only before what Markdown would read: `p. 4` and
    `www.example.org` stay as they are."""
    text = _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return _BLOCK_START.sub(lambda m: m.group(1) + (f"\\{m.group(2)}" if m.group(2)
                                                    else f"{m.group(3)}\\{m.group(4)}"), text)


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


def mark_answer(answer: str, citations: Sequence[Citation], *,
                mark: Callable[[str], str] = lambda text: text) -> str:
    """The answer with each quote that was not found (or only in a left-out part) marked in
    place, for Markdown renderers that know Streamlit's `:red-background[…]`; `mark` wraps
    each mark (a page puts a placeholder there until the text is made safe)."""
    marked = answer
    for c in sorted(citations, key=lambda c: c.span[0], reverse=True):
        if c.status not in (Status.NOT_FOUND, Status.OMITTED) or c.span == (0, 0):
            continue
        end = c.span[1]
        label = ("not found in the document" if c.status is Status.NOT_FOUND
                 else "from a left-out part")
        gap = "\n\n" if marked[:end].rstrip().endswith(("```", "~~~")) else " "  # after a fence
        marked = (marked[:end] + gap
                  + mark(f":red-background[**{STATUS_MARKS[c.status]} {label}**]")
                  + marked[end:])
    return marked
