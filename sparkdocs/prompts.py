"""The prefix contract: every request is `system` (one constant text) → `user` opening with the
rendered document → whatever varies. Anything that changes between requests comes after the
document, so vLLM's prefix cache reuses the document's blocks for every question, follow-up,
summary and instruction set. The document is rendered and counted once (`prepare_document`);
building a question afterwards only encodes the question.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable, Sequence

from .documents import (
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    Document,
    Section,
    SectionKind,
    clean_text,
    omission_note,
    part_note,
    render_section,
)
from .errors import BudgetError, SparkdocsError
from .tokens import Budget, ChatEncoder, ChatMessage, Llama3Tokenizer, llama3

# One system text for every task: questions, follow-ups and summaries all share the cached
# document prefix. Task-specific wording goes after the document.
SYSTEM_PROMPT = (
    "You are sparkdocs, a careful analyst. The user gives you one whole document (a contract, "
    "a paper or a codebase) between <document> tags, then a task. Answer only from the "
    "document. Cite where you found things: page numbers for <page> sections, headings for "
    "<section> sections, file paths for <file> sections. If the document does not say, say so. "
    "If an <omitted> note lists parts that were left out, do not guess what they contain."
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
QUESTION_RESERVE_TOKENS = 256


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
    `note` replaces the omission list (map-reduce parts say which part they are instead)."""
    tok = tokenizer or llama3()
    if not document.counted:
        raise SparkdocsError(f"{document.name}: count its tokens (tokens.count_document) first.")
    all_indices = range(len(document.sections))
    kept = tuple(sorted(set(all_indices if keep is None else keep)))
    if any(i < 0 or i >= len(document.sections) for i in kept):
        raise SparkdocsError(f"{document.name}: section index out of range in the selection.")
    kept_set = set(kept)
    omitted = tuple(i for i in all_indices if i not in kept_set)
    body = [render_section(document.sections[i]) for i in kept]
    if note is not None:
        note = part_note(note)
    else:
        note = omission_note(document.sections[i] for i in omitted) if omitted else ""
    block = DOCUMENT_OPEN + note + "".join(body) + DOCUMENT_CLOSE
    tokens = (tok.count(DOCUMENT_OPEN) + (tok.count(note) if note else 0)
              + sum(document.sections[i].tokens for i in kept) + tok.count(DOCUMENT_CLOSE))
    return PreparedDocument(document, kept, omitted, block, tokens)


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

    def _first_turn_tokens(self, prepared: PreparedDocument, tail: str) -> int:
        # system + user header/eot + "\n\n" + block + tail (independent segments, see tokens.py)
        return (self._system_tokens + self._user_open_tokens + prepared.block_tokens
                + (self._tok.count(tail) if tail else 0))

    def question(self, prepared: PreparedDocument, question: str) -> Prompt:
        """An independent question: document + question, nothing else."""
        tail = f"{QUESTION_LEAD} {clean_question(question)}"
        messages = (ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", prepared.block + tail))
        tokens = self._first_turn_tokens(prepared, tail) + self._generation_tokens
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
                      self._first_turn_tokens(prepared, tail) + self._generation_tokens)

    def merge(self, part_summaries: Sequence[tuple[str, str]], instructions: str | None = None
              ) -> Prompt:
        """Combine per-part summaries (label, text) into one; a map-reduce's reduce step."""
        body = "\n\n".join(f"## Part {i}: {label}\n\n{clean_text(text)}"
                           for i, (label, text) in enumerate(part_summaries, 1))
        tail = MERGE_INSTRUCTIONS + clean_text(instructions or DEFAULT_SUMMARY_INSTRUCTIONS)
        messages = (ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", f"{body}\n\n{tail}"))
        return Prompt(Task.SUMMARY, messages, len(self._enc.chat_ids(messages)))

    def warm_up(self, prepared: PreparedDocument) -> Prompt:
        """The exact prefix every question will start with (send with max_tokens=1)."""
        messages = (ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", prepared.block + QUESTION_LEAD))
        return Prompt(Task.WARM_UP, messages,
                      self._first_turn_tokens(prepared, QUESTION_LEAD) + self._generation_tokens)

    def overhead_tokens(self, *, question_reserve: int = QUESTION_RESERVE_TOKENS) -> int:
        """Everything in a question prompt except the document's sections: template, system text,
        document frame, question lead, and room for the question itself."""
        frame = self._tok.count(DOCUMENT_OPEN) + self._tok.count(DOCUMENT_CLOSE)
        return (self._system_tokens + self._user_open_tokens + frame
                + self._tok.count(QUESTION_LEAD) + self._generation_tokens + question_reserve)

    def budget(self, document: Document, *, context: int, answer_reserve: int,
               keep: Iterable[int] | None = None) -> Budget:
        kept = range(len(document.sections)) if keep is None else keep
        used = sum(document.sections[i].tokens for i in kept)
        return Budget(context=context, answer_reserve=answer_reserve,
                      prompt_overhead=self.overhead_tokens(), used=used)


def rank_sections(document: Document) -> list[int]:
    """Section indices, most expensive first: the order in which to consider dropping them."""
    return sorted(range(len(document.sections)),
                  key=lambda i: (-document.sections[i].tokens, i))


def fit_sections(document: Document, available: int) -> tuple[int, ...]:
    """Keep as many sections as fit by dropping the most expensive first; the file tree of a
    codebase always stays. Raises when even that cannot fit."""
    keep = set(range(len(document.sections)))
    total = document.section_tokens
    for index in rank_sections(document):
        if total <= available:
            break
        if document.sections[index].kind is SectionKind.TREE:
            continue
        keep.discard(index)
        total -= document.sections[index].tokens
    # Re-add cheap sections that fit again after a big one left (keeps the most content).
    for index in sorted(set(range(len(document.sections))) - keep,
                        key=lambda i: document.sections[i].tokens):
        if total + document.sections[index].tokens <= available:
            keep.add(index)
            total += document.sections[index].tokens
    content = [i for i in keep if document.sections[i].kind is not SectionKind.TREE]
    if total > available or not content:
        smallest = min((s.tokens for s in document.sections if s.kind is not SectionKind.TREE),
                       default=0)
        raise BudgetError(
            f"{document.name}: no part fits: the smallest needs {smallest:,} tokens (with the "
            f"file tree {total + smallest:,}) but only {available:,} are available; raise the "
            "context length or lower the answer reserve."
        )
    return tuple(sorted(keep))


def reusable_prefix_tokens(previous_ids: Sequence[int], next_ids: Sequence[int], *,
                           block_size: int = 16) -> int:
    """Tokens of `next_ids` that vLLM's prefix cache can serve after `previous_ids`: the common
    prefix in full blocks, never the last prompt token (it must be computed)."""
    limit = min(len(previous_ids), len(next_ids) - 1)
    common = 0
    while common < limit and previous_ids[common] == next_ids[common]:
        common += 1
    return (common // block_size) * block_size
