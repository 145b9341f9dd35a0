"""What the pages show, computed without Streamlit: budget segments, section breakdowns, the
stats line under an answer, and the Markdown export of a session."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt

from .citation_views import answers_sources_markdown
from .citations import Citation
from .client import Capabilities
from .documents import Document, DocumentKind, SectionKind
from .parts import ASSUMED_PREFILL_TOKENS_PER_S, parts_cached_at_once
from .prompts import Part
from .safe_text import safe_markdown
from .store import DocumentInfo, Session, Turn, TurnStatus
from .tokens import Budget, TokenCounting

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BACKTICKS = re.compile(r"`+")


def code_span(text: str) -> str:
    """`text` as one Markdown code span that shows it exactly as written, whatever it holds:
    fenced longer than any backtick run inside (a name with a backtick broke out of a
    one-backtick span into a live link); control characters (a newline would end a list item
    or a line) show as U+FFFD."""
    text = _CONTROL.sub("\ufffd", text)
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    return f"{fence} {text} {fence}"  # one space each side is stripped again


SKIPPED_LISTED = 500  # a page lists this many skipped files; rendering 10,000 took seconds


def skipped_markdown(skipped: Sequence[str], *, limit: int = SKIPPED_LISTED) -> str:
    """The files left out of a document as a Markdown list, each `path: reason` shown exactly as
    written: an archive's names are anyone's text. Past `limit`, a last line says how many more
    and where the whole list is."""
    lines = [f"- {code_span(item)}" for item in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"- … and {len(skipped) - limit:,} more (`sparkdocs count --json` lists "
                     "every one)")
    return "\n".join(lines)


@dataclass(frozen=True)
class BudgetSegment:
    label: str
    tokens: int


def budget_segments(budget: Budget) -> list[BudgetSegment]:
    """The context split into what the bar shows, in order. Over budget, 'over' is the excess."""
    free = budget.free
    return [
        BudgetSegment("document", budget.used),
        BudgetSegment("prompt overhead", budget.prompt_overhead),
        BudgetSegment("answer reserve", budget.answer_reserve),
        BudgetSegment("free" if free >= 0 else "over budget", abs(free)),
    ]


def budget_summary(budget: Budget) -> str:
    """The budget line; says when the counts are the served model's (not Llama 3's), since
    then they differ from what `sparkdocs count` prints."""
    how = (" Counted with the server's tokenizer (the served model is not Llama 3)."
           if budget.counting is TokenCounting.SERVER else "")
    if budget.fits:
        return (f"{budget.used:,} document tokens of {budget.available:,} available "
                f"({budget.context:,} context − {budget.answer_reserve:,} answer reserve − "
                f"{budget.prompt_overhead:,} prompt overhead); {budget.free:,} free.{how}")
    return (f"Over budget by {-budget.free:,} tokens: the document has {budget.used:,} tokens but "
            f"{budget.available:,} are available. Choose the parts to keep below.{how}")


def section_rows(document: Document, kept: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per page/section/file. Files largest first (the order to consider dropping
    them); pages and sections in reading order. "#" is the part's number from 1, as `count`
    lists it and `--parts` takes it (a page's own number is in "part")."""
    keep = set(range(len(document.sections)) if kept is None else kept)
    rows = [{"#": i + 1, "part": s.locator, "tokens": s.tokens, "keep": i in keep}
            for i, s in enumerate(document.sections)]
    for member in document.members if len(document.members) > 1 else ():
        for i in member.indices:  # parts chosen per document: each names its own
            rows[i]["document"] = member.name
    if any(s.kind is SectionKind.FILE for s in document.sections):
        return sorted(rows, key=lambda r: (-r["tokens"], r["#"]))
    return rows


def fit_button_label(document: Document) -> str:
    """What auto-fit does to this document (see `prompts.drop_order`), said on its button."""
    if any(s.kind is SectionKind.FILE for s in document.sections):
        return "Fit automatically: leave out the largest files until it fits"
    unit = "pages" if document.kind is DocumentKind.PDF else "parts"
    return f"Fit automatically: keep {unit} from the start, as many as fit"


def kept_summary(document: Document, kept: Sequence[int]) -> str:
    """Which parts a session keeps and which it leaves out, by number: the info under the
    budget (the prompt tells the model the same)."""
    from .selection import SelectBy, select_by, selection_text

    unit = "pages" if select_by(document) is SelectBy.PAGES else "parts"
    content = [i for i, s in enumerate(document.sections) if s.kind is not SectionKind.TREE]
    left_out = [i for i in content if i not in set(kept)]
    return (f"Keeping {unit} {selection_text(document, kept)} of {len(content)}; "
            f"{len(left_out)} left out ({selection_text(document, left_out)}). The prompt says "
            "so, so the model will not guess them.")


def whole_summary(document: Document, kept: Sequence[int] | None) -> str:
    """The info under the budget while a question is answered from every page: that no page
    is left out, and what "off" would ask instead (the session's selection)."""
    from .selection import SelectBy, select_by, selection_text

    unit = "pages" if select_by(document) is SelectBy.PAGES else "parts"
    content = [i for i, s in enumerate(document.sections) if s.kind is not SectionKind.TREE]
    said = (f"Every one of the {len(content)} {unit} is read, in parts whose answers are "
            "combined (\"Answer from every page\").")
    if kept is None:
        return said
    left_out = [i for i in content if i not in set(kept)]
    return (f"{said} Switched off, only {unit} {selection_text(document, kept)} of "
            f"{len(content)} are asked ({len(left_out)} left out: "
            f"{selection_text(document, left_out)}).")


def stats_line(turn: Turn) -> str:
    if turn.status is TurnStatus.FAILED:
        return "request failed: no answer" + (" · follow-up" if turn.follow_up else "")
    parts = []
    if turn.ttft_s is not None:
        parts.append(f"first token {turn.ttft_s:.2f} s")
    if turn.decode_tokens_per_s is not None:
        parts.append(f"{turn.decode_tokens_per_s:.1f} tok/s")
    parts.append(f"prompt {turn.prompt_tokens:,} tokens" if turn.prompt_tokens is not None
                 else "prompt tokens not reported by this server")
    parts.append(f"cached {turn.cached_tokens:,}" if turn.cached_tokens is not None
                 else "cached tokens not reported by this server")
    parts.append(f"finish: {turn.finish_reason or 'none'}")
    if turn.status is TurnStatus.CUT:
        parts.append("cut off at the answer limit")
    if turn.follow_up:
        parts.append("follow-up")
    if turn.read:
        parts.append(f"read: {turn.read}")
    return " · ".join(parts)


STATUS_LABELS = {
    TurnStatus.FINISHED: "Finished",
    TurnStatus.CUT: "Cut off at the answer limit",
    TurnStatus.STOPPED: "Stopped",
    TurnStatus.BROKE_OFF: "Broke off",
    TurnStatus.FAILED: "Failed",
}


def turn_status(turn: Turn) -> str | None:
    """What to show under an answer that did not simply finish, or None. Each ending is named
    as what it was, with its own words (the server's error for a failed request)."""
    label = STATUS_LABELS[turn.status]
    if turn.status is TurnStatus.FINISHED:
        return None
    if turn.status is TurnStatus.CUT:
        return (f"{label}: the answer is incomplete; raise the answer length or ask the model "
                "to go on.")
    error = turn.error or ""
    if turn.status is TurnStatus.STOPPED and error.lower().startswith("stopped"):
        text = error[0].upper() + error[1:]  # "stopped by the user" reads as it is
    else:
        text = f"{label}: {turn.error or 'the answer did not finish'}"
    text = text.rstrip(".")
    if turn.answer and "partial answer is kept" not in text:
        text += ". The partial answer is kept"
    return text + "."


def status_counts(session: Session) -> str:
    """'3 question(s)', with how many did not finish: the Library's line per session."""
    counts: dict[TurnStatus, int] = {}
    for turn in session.turns:
        counts[turn.status] = counts.get(turn.status, 0) + 1
    others = [f"{n} {status.value}" for status, n in counts.items()
              if status is not TurnStatus.FINISHED]
    return f"{len(session.turns)} question(s)" + (f" ({', '.join(others)})" if others else "")


def demo_model_note(model: str | None) -> str | None:
    """Said on the Ask page when answers come from the tiny demo model, so nobody judges
    sparkdocs (or their document) by a 135M-parameter model's answers."""
    from .local_model import LOCAL_MODEL_ALIAS, is_demo_model

    if not is_demo_model(model):
        return None
    return (f"Answers come from {LOCAL_MODEL_ALIAS}: a 135M-parameter model for trying "
            "sparkdocs out, whose answers are poor and whose tokenizer is not Llama 3's. For real "
            "answers, point SPARKDOCS_BASE_URL at vLLM serving Llama 3.3 70B. If it stops "
            "answering, the Server page shows its log.")


def session_title(session: Session, *, width: int = 70) -> str:
    """The title a person gave the session, else its first question (shortened to `width`)."""
    renamed = session.title != session.document_name
    first = session.turns[0].question if session.turns else ""
    title = " ".join((session.title if renamed else (first or "no questions yet")).split())
    return title if len(title) <= width else title[:width - 1].rstrip() + "…"


def session_label(session: Session, *, width: int = 70) -> str:
    """What a person recognises a session by: its first question (or the title they gave it),
    when it was last used, and how many questions it holds — not its id."""
    title = session_title(session, width=width)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.updated_at or session.created_at))
    with_others = ""
    if len(session.documents) > 1:
        with_others = f" · {len(session.documents)} documents: " + ", ".join(
            d.name for d in session.documents)
    return f"{title} · {when} · {status_counts(session)}{with_others}"


@dataclass(frozen=True)
class LibraryVariant:
    """One way a document was opened (its options gave other text, hence another key)."""

    info: DocumentInfo
    sessions: tuple[Session, ...]


@dataclass(frozen=True)
class LibraryEntry:
    """One document as a person thinks of it: the same file opened with different options
    (PDF password, include/exclude, lock files) is one entry with several variants."""

    name: str
    kind: str
    variants: tuple[LibraryVariant, ...]

    @property
    def sessions(self) -> tuple[Session, ...]:
        every = [s for v in self.variants for s in v.sessions]
        return tuple(sorted(every, key=lambda s: s.updated_at, reverse=True))

    @property
    def detail(self) -> str:
        """'' for one variant; else the variants' token counts, to tell them apart."""
        if len(self.variants) == 1:
            return ""
        counts = ", ".join(f"{v.info.tokens:,}" for v in self.variants)
        return (f"opened {len(self.variants)} ways with different options ({counts} tokens)")


def library_entries(infos: Sequence[DocumentInfo], sessions: Sequence[Session]
                    ) -> tuple[list[LibraryEntry], list[DocumentInfo]]:
    """The Library's documents, grouped by name and kind, newest first — only those with a
    session holding a question; the second list holds documents that were only read or counted
    (`sparkdocs count`, `prompt`, a batch), which the Library mentions apart."""
    by_key: dict[str, list[Session]] = {}
    for session in sessions:  # an upload with no question yet is no session to go back to
        if session.turns:  # a session of several documents is listed under each of them
            for key in dict.fromkeys([session.document_key, *(d.key for d in session.documents)]):
                by_key.setdefault(key, []).append(session)
    grouped: dict[tuple[str, str], list[LibraryVariant]] = {}
    counted_only: list[DocumentInfo] = []
    for info in infos:  # newest first, as the store lists them
        if info.key not in by_key:
            counted_only.append(info)
            continue
        grouped.setdefault((info.name, info.kind), []).append(
            LibraryVariant(info, tuple(by_key[info.key])))
    entries = [LibraryEntry(name, kind, tuple(variants))
               for (name, kind), variants in grouped.items()]
    return entries, counted_only


def library_search(entries: Sequence[LibraryEntry], counted_only: Sequence[DocumentInfo],
                   query: str) -> tuple[list[LibraryEntry], list[DocumentInfo]]:
    """The Library narrowed to `query` (any case, words in any order): a document whose name
    holds it keeps all its sessions; otherwise only its sessions whose title or first
    question holds it are kept."""
    words = query.casefold().split()
    if not words:
        return list(entries), list(counted_only)

    def matches(text: str) -> bool:
        folded = text.casefold()
        return all(word in folded for word in words)

    found = []
    for entry in entries:
        if matches(entry.name):
            found.append(entry)
            continue
        variants = [LibraryVariant(v.info, kept) for v in entry.variants
                    if (kept := tuple(s for s in v.sessions if matches(session_title(s, width=10**6))
                                      or any(matches(t.question) for t in s.turns[:1])))]
        if variants:
            found.append(LibraryEntry(entry.name, entry.kind, tuple(variants)))
    return found, [info for info in counted_only if matches(info.name)]


_COMMONMARK = MarkdownIt("commonmark")
_LINES = re.compile(r"\r\n|\r|\n")  # as CommonMark ends lines


@lru_cache(maxsize=256)  # the export is composed again on every rerun of the Ask page
def closed_fences(text: str) -> str:
    """`text` with the code fence it leaves open closed at its end: an answer stopped inside
    a code block would otherwise take the stop notice, the stats and the sources after it into
    the code. The fence is found as CommonMark reads it (``` or ~~~ of any length, indented
    up to three spaces); one inside a list item or block quote ends with it by itself."""
    probe = secrets.token_hex(8)  # a last paragraph no text can have written
    for token in _COMMONMARK.parse(f"{text}\n\n{probe}"):
        if (token.type == "fence" and token.map
                and token.content.rstrip("\n").endswith(probe)):
            # indented as the opening line: then every reading (safe_markdown's too, which
            # also considers the fence a list item's) takes it for the closing one
            opening = _LINES.split(text)[token.map[0]]
            return f"{text}\n{opening[:len(opening) - len(opening.lstrip(' '))]}{token.markup}"
    return text


def _export_block(text: str) -> str:
    """One block of an export (a heading, an answer, a notice), made safe on its own and with
    any fence it leaves open closed, so no block can take the next ones into its code."""
    return closed_fences(safe_markdown(text, keep_tags={"sub"}))


def session_markdown(session: Session) -> str:
    """The whole session as Markdown: document, questions, answers and their stats. Each block
    is made safe where it stands (an export opened in a viewer fetches nothing) and closed."""
    blocks = [f"# {session.title}\n\nDocument: {session.document_name} "
              f"(`{session.document_key[:12]}`)"]
    if session.kept_sections is not None:
        blocks.append(f"Sections kept: {len(session.kept_sections)} (others left out to fit).")
    for number, turn in enumerate(session.turns, 1):
        blocks += [f"## Q{number}. {turn.question}", turn.answer or "_(no answer)_"]
        status = turn_status(turn)
        blocks.append((f"> {status}\n\n" if status else "") + f"<sub>{stats_line(turn)}</sub>")
    return "\n\n".join(_export_block(block) for block in blocks) + "\n"


def session_export(session: Session, verdicts: Sequence[Sequence[Citation]]) -> str:
    """The exported file: the session, then each answer's quotes with their verdicts
    (`verdicts`, one list per turn), made safe to open in any Markdown viewer."""
    sources = answers_sources_markdown(verdicts)
    return session_markdown(session) + (f"\n{_export_block(sources)}\n" if sources else "")


def parts_fit(parts: Sequence[Part], kv_capacity: int | None, speed: float | None) -> str:
    """For a document read in parts: how many of them the KV cache keeps at once, and what
    each question then re-reads."""
    held = parts_cached_at_once(parts, kv_capacity)
    if held is None:
        return (f"This document is read in {len(parts)} parts; the server does not say how "
                "many it keeps cached.")
    if held >= len(parts):
        return (f"All {len(parts)} parts of this document stay cached at once "
                f"({sum(p.tokens for p in parts):,} of {kv_capacity:,} KV tokens): a second "
                "question reads only itself.")
    reread = sum(p.tokens for p in parts[held:])
    rate = speed or ASSUMED_PREFILL_TOKENS_PER_S
    return (f"{held} of this document's {len(parts)} parts stay cached at once (KV cache "
            f"{kv_capacity:,} tokens): each question re-reads about {reread:,} tokens, "
            f"~{reread / rate:,.0f} s at {rate:,.0f} tokens/s.")


def kv_fit(caps: Capabilities, document_tokens: int) -> str | None:
    """How many documents of this size the server's KV cache holds at once."""
    metrics = caps.metrics
    if metrics is None or metrics.kv_capacity_tokens is None or document_tokens <= 0:
        return None
    copies = metrics.kv_capacity_tokens // document_tokens
    return (f"KV cache holds {metrics.kv_capacity_tokens:,} tokens: {copies} documents of "
            f"{document_tokens:,} tokens stay cached at once.")


def documents_line(document: Document, keep: Sequence[int] | None = None) -> str | None:
    """Each document of a session of several with its tokens (and what is kept of it), in
    the prompt's order; None for one document."""
    if len(document.members) < 2:
        return None
    kept = set(range(len(document.sections)) if keep is None else keep)
    items = []
    for number, member in enumerate(document.members, 1):
        tokens = sum(document.sections[i].tokens for i in member.indices if i in kept)
        left = sum(1 for i in member.indices if i not in kept)
        items.append(f"{number}. {member.name}: {tokens:,} tokens"
                     + (f" ({left:,} of {member.count:,} parts left out)" if left else ""))
    return " · ".join(items)


def added_text(before: Document, after: Document) -> str:
    """What adding a document costs: only its own tokens; the documents before it stay in
    the model's prefix cache."""
    new = after.members[-1]
    tokens = sum(after.sections[i].tokens for i in new.indices)
    return (f"Added {new.name}: the next question reads its {tokens:,} tokens; the "
            f"{before.section_tokens:,} tokens of the documents before it stay cached. "
            "Citations now name the document.")


def rearrange_text(document: Document, order: Sequence[str]) -> str:
    """What removing or reordering the documents of a session costs, said before it is done:
    every document from the first one that moves or goes is read again."""
    names = [m.name for m in document.members]
    same = 0
    while same < min(len(names), len(order)) and names[same] == order[same]:
        same += 1
    if same == len(names) == len(order):
        return "Nothing changes."
    reread = [m for m in document.members[same:] if m.name in order]
    tokens = sum(document.sections[i].tokens for m in reread for i in m.indices)
    gone = [name for name in names if name not in order]
    what = (f"Leaves out {', '.join(gone)}. " if gone else "")
    if not reread:
        return what + ("The documents kept stay as they are in the cache; a new session starts "
                       "(this one and its history stay in the Library).")
    return (what + f"The model reads again {', '.join(m.name for m in reread)} "
            f"({tokens:,} tokens) before the next answer: every document from the first one that "
            "moves or goes. A new session starts; this one and its history stay in the Library.")
