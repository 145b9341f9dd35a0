"""Counting in the served model's tokens when it is not Llama 3.

sparkdocs budgets with the exact Llama 3 tokenizer. A different served model (the tiny demo
model under llama.cpp, say) splits the same text into 13-20% more tokens, so a budget that
looked fine overflows the served context and the server cuts the answer short. One probe text,
counted once by the server's tokenize endpoint, tells whether its tokenizer is Llama 3's. If
it is, nothing changes (no request per question). If not, each rendered document block is
counted once by the server and the budget is scaled by server tokens per Llama 3 token."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from dataclasses import dataclass

from .client import ModelClient
from .prompts import PreparedDocument
from .tokens import Llama3Tokenizer, TokenCounting

log = logging.getLogger(__name__)

# Words, digits, punctuation and accents: tokenizers that differ from Llama 3 differ on this.
PROBE_TEXT = ("sparkdocs tokenizer probe: The Supplier shall deliver 12,345 units within thirty "
              "(30) days of the Effective Date; naïve café façade — Überprüfung 2026-11-28.")


@dataclass(frozen=True)
class ServedCount:
    """How the served model counts: `ratio` server tokens per Llama 3 token (1.0 for Llama 3)."""

    counting: TokenCounting
    ratio: float = 1.0


LLAMA3_COUNT = ServedCount(TokenCounting.LLAMA3)


class ServedTokenizer:
    """Per model service: is its tokenizer Llama 3's, and how many of its tokens a document
    block takes. Each answer is asked of the server once and kept (thread-safe)."""

    def __init__(self, client: ModelClient, tokenizer: Llama3Tokenizer) -> None:
        self._client = client
        self._tok = tokenizer
        self._llama3: dict[tuple[str | None, str | None], bool] = {}
        self._blocks: dict[tuple[str | None, str], ServedCount] = {}
        self._lock = threading.Lock()

    def _model(self) -> tuple[str | None, str | None]:
        caps = self._client.capabilities()
        return caps.model, self._client.tokenize_path()

    def is_llama3(self) -> bool:
        """True when the server counts the probe as Llama 3 does — or cannot count at all
        (then there is nothing better than the local count)."""
        model = self._model()
        with self._lock:
            known = self._llama3.get(model)
        if known is not None:
            return known
        served = self._client.count_tokens(PROBE_TEXT) if model[1] else None
        local = self._tok.count(PROBE_TEXT)
        same = served is None or served == local
        if not same:
            log.info("served model %s counts the probe as %d tokens, Llama 3 as %d: budgeting "
                     "with the server's tokenizer", model[0], served, local)
        if served is not None or not model[1]:  # a failed probe is asked again next time
            with self._lock:
                self._llama3[model] = same
        return same

    def count(self, prepared: PreparedDocument) -> ServedCount:
        """Server tokens per Llama 3 token for this rendered block; LLAMA3_COUNT on a Llama 3
        server (no request) or when the server will not count the block."""
        if self.is_llama3():
            return LLAMA3_COUNT
        key = (self._model()[0], _block_key(prepared))
        with self._lock:
            known = self._blocks.get(key)
        if known is not None:
            return known
        served = self._client.count_tokens(prepared.block)
        if served is None or prepared.block_tokens <= 0:
            log.warning("the server did not count the document; budgeting with Llama 3 counts")
            return LLAMA3_COUNT
        counted = ServedCount(TokenCounting.SERVER, served / prepared.block_tokens)
        with self._lock:
            if len(self._blocks) > 64:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[key] = counted
        return counted


def _block_key(prepared: PreparedDocument) -> str:
    return hashlib.sha256(prepared.block.encode("utf-8")).hexdigest()


def effective_context(context: int, answer_tokens: int, ratio: float) -> int:
    """The context in Llama 3 tokens that leaves the same room as `context` server tokens:
    the answer reserve is server tokens; the prompt takes `ratio` server tokens per Llama 3
    token."""
    if ratio == 1.0:
        return context
    # two tokens of slack: the scaled budget rounds each of its parts up
    return answer_tokens + max(0, math.floor(max(0, context - answer_tokens) / ratio) - 2)
