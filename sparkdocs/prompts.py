"""The prefix contract: every request is `system` (one constant text) → `user` opening with the
rendered document → whatever varies. Anything that changes between requests comes after the
document, so vLLM's prefix cache reuses the document's blocks for every question, follow-up,
summary and instruction set. The document is rendered and counted once (`prepare_document`);
building a question afterwards only encodes the question.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .documents import (
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    Document,
    Member,
    Section,
    SectionKind,
    appendix_block,
    clean_text,
    name_line,
    neutralise_special_tokens,
    omission_note,
    part_note,
    render_section,
    render_tree,
)
from .errors import BudgetError, SparkdocsError
from .tokens import Budget, ChatEncoder, ChatMessage, Llama3Tokenizer, document_frame_tokens, llama3

# One system text for every task: questions, follow-ups and summaries all share the cached
# document prefix. Task-specific wording goes after the document.
SYSTEM_PROMPT = (
    "You are sparkdocs, a careful analyst. The user gives you one or more whole documents "
    "(contracts, papers or codebases), each between <document> tags and named by its <name>, "
    "then a task. Answer only from the documents. Cite where you found things: the page number "
    "for <page> sections (p. 12), the title for <section> sections (section \"Payment\"), the "
    "path and lines for <file> sections (src/app.py:40-52; every tenth line or so of a file "
    "starts with its line number and a tab, which is not part of the file). When there are "
    "several documents, name the document in every citation (contract-2025.pdf, p. 14). When "
    "you quote, copy the words exactly, in double quotes or a > blockquote, with the citation "
    "right after the quote; sparkdocs checks every quote against the documents. If the "
    "documents do not say, say so. If an <omitted> note lists parts that were left out, do not "
    "guess what they contain."
)
QUESTION_LEAD = "Question:"
TASK_LEAD = "Task:"
DEFAULT_SUMMARY_INSTRUCTIONS = (
    "Summarise this document for a busy expert reader. Start with one paragraph on what it is "
    "and its purpose, then the key points as a bulleted list with citations, then any risks, "
    "obligations, open questions or surprises."
)
SUMMARY_STYLES: dict[str, str] = {
    "brief": DEFAULT_SUMMARY_INSTRUCTIONS,
    "contract": (
        "Summarise this contract: parties, term, payment, obligations of each party, "
        "termination, liability and indemnity, governing law, and unusual or risky clauses, "
        "each with the page or section it comes from."
    ),
    "paper": (
        "Summarise this paper: the problem, the method, the main results with numbers, the "
        "limitations, and what a practitioner should take away, with page citations."
    ),
    "code": (
        "Summarise this codebase: what it does, its architecture (main modules and how they "
        "depend on each other), entry points, external dependencies, and notable risks or "
        "technical debt, citing file paths."
    ),
}
MERGE_INSTRUCTIONS = (
    "The document was too long for one pass, so it was summarised in parts, given below in "
    "order with the pages or files each part covers. Combine them into one summary of the whole "
    "document, following these instructions:\n\n"
)
PART_RULE = (
    "This is one part of a longer document; the other parts are read separately. Answer only "
    "from this part, quoting its exact words with their citations. If this part says nothing "
    "about the question, answer only: Nothing relevant in this part."
)
ANSWER_MERGE_INSTRUCTIONS = (
    "The document was too long for one pass, so the question was asked of each part "
    "separately; their answers are given above in order, with the pages or files each part "
    "covers. Combine them into one answer to the question. Keep every quote exactly as written, "
    "with its citation; leave out the parts that found nothing relevant; add nothing that no "
    "part says.\n\n"
)
QUESTION_RESERVE_TOKENS = 256
# A file tree drawn for a selection may take as many characters as the kept files, or this.
TREE_FLOOR_CHARS = 1_200


class Task(StrEnum):
    QUESTION = "question"
    FOLLOW_UP = "follow-up"
    SUMMARY = "summary"
    WARM_UP = "warm-up"


@dataclass(frozen=True)
class PreparedDocument:
    """A document rendered once for prompting: the exact block text and its token count."""

    document: Document
    kept: tuple[int, ...]
    omitted: tuple[int, ...]
    block: str
    block_tokens: int

    @property
    def omitted_sections(self) -> tuple[Section, ...]:
        return tuple(self.document.sections[i] for i in self.omitted)


@dataclass(frozen=True)
class Prompt:
    task: Task
    messages: tuple[ChatMessage, ...]
    prompt_tokens: int

    def as_dicts(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]


def prepare_document(document: Document, *, keep: Iterable[int] | None = None,
                     tokenizer: Llama3Tokenizer | None = None, note: str | None = None
                     ) -> PreparedDocument:
    """Render the kept sections (all by default) in document order, with a stated omission.
    `note` replaces the omission list (map-reduce parts say which part they are instead).
    When files are left out, the file tree is drawn for the selection (omitted folders as
    counts), so the tree never costs more than what is kept."""
    kept, omitted, text, tokens = _block(document, keep=keep, tok=tokenizer or llama3(),
                                         note=note, render=True)
    return PreparedDocument(document, kept, omitted, text, tokens)


def block_tokens(document: Document, *, keep: Iterable[int] | None = None,
                 tokenizer: Llama3Tokenizer | None = None, note: str | None = None) -> int:
    """`prepare_document(...).block_tokens` without rendering the kept sections (their counts
    are known): fitting and splitting try many selections of a large document."""
    return _block(document, keep=keep, tok=tokenizer or llama3(), note=note, render=False)[3]


def _block(document: Document, *, keep: Iterable[int] | None, tok: Llama3Tokenizer,
           note: str | None, render: bool) -> tuple[tuple[int, ...], tuple[int, ...], str, int]:
    """(kept, omitted, the block as sent or "" when not `render`, its tokens)."""
    if not document.counted:
        raise SparkdocsError(f"{document.name}: count its tokens (tokens.count_document) first.")
    sections = document.sections
    all_indices = range(len(sections))
    kept = tuple(sorted(set(all_indices if keep is None else keep)))
    if any(i < 0 or i >= len(sections) for i in kept):
        raise SparkdocsError(f"{document.name}: section index out of range in the selection.")
    kept_set = set(kept)
    omitted = tuple(i for i in all_indices if i not in kept_set)
    blocks: list[str] = []
    tokens = 0
    first = True
    for member in document.blocks:
        if note is not None and not any(i in kept_set for i in member.indices):
            continue  # a part holds only the documents it reads
        text, count = _member_block(document, member, kept_set, tok,
                                    note=note if first else None, render=render)
        first = False
        blocks.append(text)
        tokens += count
    if document.appendix and note is None:
        appendix = appendix_block(document.appendix)
        blocks.append(appendix if render else "")
        tokens += tok.count(appendix)
    return kept, omitted, "".join(blocks), tokens


def _member_block(document: Document, member: Member, kept: set[int], tok: Llama3Tokenizer, *,
                  note: str | None, render: bool) -> tuple[str, int]:
    """One document's block as sent (or "" when not `render`), and its tokens: the frame, its
    name, the part note or what was left out of it, then its kept sections."""
    sections = document.sections[member.first:member.first + member.count]
    kept_here = {i - member.first for i in kept if i in member.indices}
    omitted = tuple(i for i in range(len(sections)) if i not in kept_here)
    tree = _selection_tree(sections, kept_here, omitted)
    head = name_line(member.name)
    tokens = tok.count(DOCUMENT_OPEN) + tok.count(DOCUMENT_CLOSE) + tok.count(head)
    body: list[str] = []
    for i in sorted(kept_here):
        if tree is not None and sections[i].kind is SectionKind.TREE:
            rendered = render_section(sections[i], text=tree)
            tokens += tok.count(rendered)
        else:
            rendered = render_section(sections[i]) if render else ""
            tokens += sections[i].tokens
        body.append(rendered)
    if note is not None:
        note_text = part_note(note)
    else:
        note_text = omission_note(sections, omitted) if omitted else ""
    note_text = neutralise_special_tokens(note_text)
    tokens += tok.count(note_text) if note_text else 0
    if not render:
        return "", tokens
    return DOCUMENT_OPEN + head + note_text + "".join(body) + DOCUMENT_CLOSE, tokens


def _selection_tree(sections: Sequence[Section], kept: set[int], omitted: Sequence[int]
                    ) -> str | None:
    """The file tree re-drawn for a selection that leaves files out; None to use the stored one."""
    if not any(sections[i].kind is SectionKind.FILE for i in omitted):
        return None
    if not any(sections[i].kind is SectionKind.TREE for i in kept):
        return None
    paths = [s.title for i, s in enumerate(sections) if i in kept and s.kind is SectionKind.FILE]
    gone = [sections[i].title for i in omitted if sections[i].kind is SectionKind.FILE]
    allowance = max(TREE_FLOOR_CHARS, sum(len(sections[i].text) + len(sections[i].title)
                                          for i in kept if sections[i].kind is SectionKind.FILE))
    tree = render_tree(paths, omitted=gone)
    if len(tree) <= allowance:
        return tree
    # deeper folders as counts, as deep as the allowance lets the tree go (found by bisection)
    low, high = 0, max((p.count("/") for p in paths), default=0)
    while high > low:
        middle = (low + high + 1) // 2
        if len(render_tree(paths, omitted=gone, depth=middle)) <= allowance:
            low = middle
        else:
            high = middle - 1
    return render_tree(paths, omitted=gone, depth=low)


def clean_question(question: str) -> str:
    text = clean_text(question).strip()
    if not text:
        raise SparkdocsError("The question is empty: type a question about the document.")
    return text


class PromptBuilder:
    """Builds messages and their exact Llama 3.3 token count. Keeps the constant parts'
    counts, so a question over a 65K-token document costs only the question's encoding."""

    def __init__(self, tokenizer: Llama3Tokenizer | None = None) -> None:
        self._tok = tokenizer or llama3()
        self._enc = ChatEncoder(self._tok)
        self._system_tokens = len(self._enc.system_ids(SYSTEM_PROMPT))
        self._user_open_tokens = len(self._enc.user_with_prefix_ids([], ""))
        self._generation_tokens = len(self._enc.generation_prompt_ids())

    @property
    def tokenizer(self) -> Llama3Tokenizer:
        return self._tok

    @property
    def encoder(self) -> ChatEncoder:
        return self._enc

    def _first_turn_tokens(self, block_tokens: int, tail: str) -> int:
        # system + user header/eot + "\n\n" + block + tail (independent segments, see tokens.py)
        return (self._system_tokens + self._user_open_tokens + block_tokens
                + (self._tok.count(tail) if tail else 0))

    def question(self, prepared: PreparedDocument, question: str) -> Prompt:
        """An independent question: document + question, nothing else."""
        tail = f"{QUESTION_LEAD} {clean_question(question)}"
        messages = (ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", prepared.block + tail))
        tokens = self._first_turn_tokens(prepared.block_tokens, tail) + self._generation_tokens
        return Prompt(Task.QUESTION, messages, tokens)

    def follow_up(self, prepared: PreparedDocument, history: Sequence[tuple[str, str]],
                  question: str) -> Prompt:
        """A question that sees earlier (question, answer) pairs; the first pair's question rides
        in the document turn so the prefix matches an independent first question."""
        if not history:
            return self.question(prepared, question)
        first_q, first_a = history[0]
        first = self.question(prepared, first_q)
        messages = list(first.messages)
        tokens = first.prompt_tokens - self._generation_tokens
        turns: list[ChatMessage] = [ChatMessage("assistant", clean_text(first_a))]
        for q, a in history[1:]:
            turns += [ChatMessage("user", clean_question(q)), ChatMessage("assistant", clean_text(a))]
        turns.append(ChatMessage("user", clean_question(question)))
        for turn in turns:
            tokens += len(self._enc.message_ids(turn))
        messages += turns
        return Prompt(Task.FOLLOW_UP, tuple(messages), tokens + self._generation_tokens)

    def summary(self, prepared: PreparedDocument, instructions: str | None = None) -> Prompt:
        text = clean_text(instructions or DEFAULT_SUMMARY_INSTRUCTIONS).strip()
        if not text:
            raise SparkdocsError("The summary instructions are empty: give instructions or a style.")
        tail = f"{TASK_LEAD} {text}"
        messages = (ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", prepared.block + tail))
        return Prompt(Task.SUMMARY, messages,
                      self._first_turn_tokens(prepared.block_tokens, tail) + self._generation_tokens)

    def merge(self, part_summaries: Sequence[tuple[str, str]], instructions: str | None = None
              ) -> Prompt:
        """Combine per-part summaries (label, text) into one; a map-reduce's reduce step."""
        body = "\n\n".join(f"## Part {i}: {label}\n\n{clean_text(text)}"
                           for i, (label, text) in enumerate(part_summaries, 1))
        tail = MERGE_INSTRUCTIONS + clean_text(instructions or DEFAULT_SUMMARY_INSTRUCTIONS)
        messages = (ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", f"{body}\n\n{tail}"))
        return Prompt(Task.SUMMARY, messages, len(self._enc.chat_ids(messages)))

    def part_question(self, prepared: PreparedDocument, question: str) -> Prompt:
        """A question asked of one part of a document beyond the context: the part's block
        (warmed like any document), then the question, then the rule to answer only from it."""
        tail = f"{QUESTION_LEAD} {clean_question(question)}\n\n{PART_RULE}"
        messages = (ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", prepared.block + tail))
        tokens = self._first_turn_tokens(prepared.block_tokens, tail) + self._generation_tokens
        return Prompt(Task.QUESTION, messages, tokens)

    def merge_answers(self, part_answers: Sequence[tuple[str, str]], question: str) -> Prompt:
        """Combine the answers of every part (label, text) into one answer to the question."""
        body = "\n\n".join(f"## Part {i}: {label}\n\n{clean_text(text)}"
                           for i, (label, text) in enumerate(part_answers, 1))
        tail = f"{ANSWER_MERGE_INSTRUCTIONS}{QUESTION_LEAD} {clean_question(question)}"
        messages = (ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", f"{body}\n\n{tail}"))
        return Prompt(Task.QUESTION, messages, len(self._enc.chat_ids(messages)))

    def warm_up(self, prepared: PreparedDocument) -> Prompt:
        """The exact prefix every question will start with (send with max_tokens=1)."""
        messages = (ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", prepared.block + QUESTION_LEAD))
        return Prompt(Task.WARM_UP, messages, self.prefix_tokens(prepared.block_tokens))

    def prefix_tokens(self, block_tokens: int) -> int:
        """The tokens of the warm-up prompt (the prefix every question starts with) around a
        block of `block_tokens`: known without rendering the block."""
        return self._first_turn_tokens(block_tokens, QUESTION_LEAD) + self._generation_tokens

    def overhead_tokens(self, *, question_reserve: int = QUESTION_RESERVE_TOKENS) -> int:
        """Everything in a question prompt except the document's sections: template, system text,
        document frame, question lead, and room for the question itself."""
        frame = self._tok.count(DOCUMENT_OPEN) + self._tok.count(DOCUMENT_CLOSE)
        return (self._system_tokens + self._user_open_tokens + frame
                + self._tok.count(QUESTION_LEAD) + self._generation_tokens + question_reserve)

    def budget(self, document: Document, *, context: int, answer_reserve: int,
               keep: Iterable[int] | None = None) -> Budget:
        """The budget of the block that is sent: kept sections, the omission note and the tree
        as drawn for this selection (the frame is part of the overhead)."""
        used = block_tokens(document, keep=keep, tokenizer=self._tok)
        return Budget(context=context, answer_reserve=answer_reserve,
                      prompt_overhead=self.overhead_tokens(),
                      used=used - document_frame_tokens(self._tok))

    def fit(self, document: Document, *, context: int, answer_reserve: int) -> tuple[int, ...]:
        """A selection whose whole prompt fits (see `fit_sections`)."""
        available = Budget(context=context, answer_reserve=answer_reserve,
                           prompt_overhead=self.overhead_tokens(), used=0).available
        return fit_sections(document, available, tokenizer=self._tok)


def rank_sections(document: Document) -> list[int]:
    """Section indices, most expensive first (the parts editor's order)."""
    return sorted(range(len(document.sections)),
                  key=lambda i: (-document.sections[i].tokens, i))


def drop_order(document: Document) -> list[int]:
    """The order in which auto-fit leaves parts out. Files are independent, so the most
    expensive go first; pages and sections are read in order, so a reader keeps a contiguous
    run from the start and the end goes first. The file tree always stays."""
    sections = document.sections
    if any(s.kind is SectionKind.FILE for s in sections):
        order = rank_sections(document)
    else:
        order = list(reversed(range(len(sections))))
    return [i for i in order if sections[i].kind is not SectionKind.TREE]


def fit_sections(document: Document, available: int, *,
                 tokenizer: Llama3Tokenizer | None = None) -> tuple[int, ...]:
    """The sections to keep so that the block as sent (kept sections, the omission note, the
    tree drawn for the selection) uses at most `available` tokens besides its frame. Leaves
    out the fewest parts in `drop_order`, found by bisection over exact counts. When not even
    one part fits beside the file tree (collapsed as far as it goes), the tree is left out
    too; when one part does not fit even then, the refusal names what takes the room."""
    tok = tokenizer or llama3()
    keep = _fit_in_order(document, available, tok, drop_order(document))
    if keep is not None:
        return keep
    trees = [i for i, s in enumerate(document.sections) if s.kind is SectionKind.TREE]
    if trees:
        keep = _fit_in_order(document, available, tok, trees + drop_order(document))
        if keep is not None:
            return keep
    raise BudgetError(_nothing_fits(document, available, tok))


def _nothing_fits(document: Document, available: int, tok: Llama3Tokenizer) -> str:
    """Why not even one part fits, with the numbers: the part, the note, the tree."""
    frame = document_frame_tokens(tok)
    content = [i for i, s in enumerate(document.sections) if s.kind is not SectionKind.TREE]
    trees = tuple(i for i, s in enumerate(document.sections) if s.kind is SectionKind.TREE)
    smallest = min(content, key=lambda i: (document.sections[i].tokens, i))
    section = document.sections[smallest]
    alone = block_tokens(document, keep=(smallest,), tokenizer=tok) - frame
    note = alone - section.tokens
    if not trees:
        tree_text = "there is no file tree"
    else:
        with_tree = block_tokens(document, keep=trees + (smallest,), tokenizer=tok)
        tree_text = (f"the file tree drawn for it {with_tree - frame - alone:,} "
                     "(left out too, and it still does not fit)")
    return (f"{document.name}: no part fits in the {available:,} tokens available for the "
            f"document: the smallest part ({section.locator}) takes {section.tokens:,}, the "
            f"omission note and name {note:,}, {tree_text}; raise the context length or "
            "lower the answer reserve.")


def _fit_in_order(document: Document, available: int, tok: Llama3Tokenizer,
                  order: Sequence[int]) -> tuple[int, ...] | None:
    """The fewest sections of `order` to leave out so the block fits; None when keeping only
    the last one of `order` does not fit either."""
    frame = document_frame_tokens(tok)
    everything = range(len(document.sections))

    def keep_after(dropped: int) -> tuple[int, ...]:
        gone = set(order[:dropped])
        return tuple(i for i in everything if i not in gone)

    def fits(dropped: int) -> bool:
        return block_tokens(document, keep=keep_after(dropped), tokenizer=tok) - frame <= available

    if fits(0):
        return tuple(everything)
    low, high = 0, len(order) - 1  # keep at least one part: fits(low) is False
    if high < 1 or not fits(high):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return keep_after(high)


@dataclass(frozen=True)
class Part:
    """One map-reduce part: consecutive sections (and the file tree, drawn for the part)."""

    label: str
    sections: tuple[int, ...]
    tokens: int  # of the whole block as sent, note and frame included


PartNote = Callable[[int, int, str], str]  # (number, total, label) → the part's note


def part_label(document: Document, indices: Sequence[int]) -> str:
    content = [i for i in indices if document.sections[i].kind is not SectionKind.TREE]
    first, last = (_named_locator(document, content[0]), _named_locator(document, content[-1]))
    if first == last:  # one section, or pieces of one split page
        return first
    return f"{first} to {last}"


def _named_locator(document: Document, index: int) -> str:
    """A section's locator, with its document's name in a set of several ("b.pdf page 3")."""
    member = document.member_of(index) if len(document.members) > 1 else None
    locator = document.sections[index].locator
    return f"{member.name} {locator}" if member else locator


def split_into_parts(document: Document, available: int, *, note: PartNote,
                     tokenizer: Llama3Tokenizer | None = None) -> list[Part]:
    """Consecutive sections grouped into parts whose blocks as sent (part note, the tree drawn
    for the part, frame) each use at most `available` tokens. Each part is the longest run that
    fits, found by bisection over exact counts; the note is measured with a 4-digit part count,
    an upper bound for the real one. A part that does not fit beside the file tree even with
    one section is sent without the tree."""
    tok = tokenizer or llama3()
    sections = document.sections
    trees = tuple(i for i, s in enumerate(sections) if s.kind is SectionKind.TREE)
    content = [i for i, s in enumerate(sections) if s.kind is not SectionKind.TREE]

    def span_tokens(start: int, end: int, tree: tuple[int, ...], number: int = 9999,
                    total: int = 9999) -> int:
        keep = tree + tuple(content[start:end])
        text = note(number, total, part_label(document, keep))
        return block_tokens(document, keep=keep, tokenizer=tok, note=text)

    spans: list[tuple[int, int, tuple[int, ...]]] = []
    start = 0
    while start < len(content):
        tree = trees
        if span_tokens(start, start + 1, tree) > available:
            tree = ()
            if span_tokens(start, start + 1, tree) > available:
                raise BudgetError(_part_too_large(document, content[start], available,
                                                  span_tokens(start, start + 1, tree), trees))
        fits = functools.partial(_span_fits, span_tokens, start, tree, available)
        spans.append((start, _longest_run(fits, start, len(content)), tree))
        start = spans[-1][1]
    parts = []
    for number, (first, end, tree) in enumerate(spans, 1):
        keep = tree + tuple(content[first:end])
        parts.append(Part(part_label(document, keep), keep,
                          span_tokens(first, end, tree, number, len(spans))))
    return parts


def _span_fits(span_tokens: Callable[[int, int, tuple[int, ...]], int], start: int,
               tree: tuple[int, ...], available: int, end: int) -> bool:
    return span_tokens(start, end, tree) <= available


def _longest_run(fits: Callable[[int], bool], start: int, size: int) -> int:
    """The largest end such that the run from `start` to it fits (start + 1 does)."""
    low, step = start + 1, 1  # gallop, then bisect
    while low + step <= size and fits(low + step):
        low, step = low + step, step * 2
    high = min(low + step, size + 1)  # the run to `high` does not fit (or is past the end)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def _part_too_large(document: Document, index: int, available: int, alone: int,
                    trees: tuple[int, ...]) -> str:
    section = document.sections[index]
    tree = ("the file tree is left out and it still does not fit" if trees
            else "there is no file tree")
    return (f"{document.name}: {section.locator} alone needs {section.tokens:,} tokens, and with "
            f"its part note and name {alone:,}, over the {available:,} available per request "
            f"({tree}); raise the context length or lower --max-tokens.")
