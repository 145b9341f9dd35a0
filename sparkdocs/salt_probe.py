"""The doctor's check that the model server honours `cache_salt`: the same prompt
sent twice with one salt must hit the prefix cache, and once with another salt must not. A
server that ignores the salt lets one user's cached document serve — and be timed by — another.
"""

from __future__ import annotations

import logging
import secrets

from .auth import isolation
from .checks import Check, CheckStatus
from .client import ModelClient
from .config import CacheIsolation
from .errors import SparkdocsError
from .tokens import ChatMessage

log = logging.getLogger(__name__)

# long enough for several KV blocks on any engine (16 tokens on GPU, 128 on vLLM's CPU build)
_FILLER = " ".join(f"Probe line {i}: the quick brown fox jumps over the lazy dog." for i in range(60))


def cache_salt_check(client: ModelClient) -> Check:
    """Three one-token requests: salt A (fills the cache), salt A again (must hit), salt B
    (must miss). Unknown when the server reports no cached tokens or caches nothing."""
    per_user = isolation(client.settings) is CacheIsolation.USER
    nonce = secrets.token_hex(8)  # a prompt no one has sent, so nothing is cached yet
    messages = [ChatMessage("user", f"[{nonce}] {_FILLER}\nSay OK.")]
    try:
        client.warm_up(messages, cache_salt=f"probe-a-{nonce}")
        same = client.warm_up(messages, cache_salt=f"probe-a-{nonce}")
        other = client.warm_up(messages, cache_salt=f"probe-b-{nonce}")
    except SparkdocsError as exc:
        return Check("cache salt", CheckStatus.FAIL if per_user else CheckStatus.WARN,
                     f"a request with cache_salt failed: {exc}",
                     "use vLLM 0.9 or later, or set SPARKDOCS_CACHE_ISOLATION=shared")
    if not same.cached_tokens:
        return Check("cache salt", CheckStatus.UNKNOWN,
                     "the server reported no cached tokens for a repeated prompt, so whether it "
                     "honours cache_salt cannot be seen",
                     "on vLLM, add --enable-prompt-tokens-details (and keep prefix caching on)")
    if not other.cached_tokens:
        mode = "private per user" if per_user else "shared (SPARKDOCS_CACHE_ISOLATION)"
        return Check("cache salt", CheckStatus.OK, f"honoured: a different salt got no cached tokens "
                     f"({same.cached_tokens} with the same salt); the prefix cache is {mode}")
    return Check("cache salt", CheckStatus.FAIL if per_user else CheckStatus.WARN,
                 f"ignored: a different salt still got {other.cached_tokens} cached tokens, so "
                 "users share cached prefixes (and can time each other's documents)",
                 "use vLLM 0.9 or later (it mixes cache_salt into the prefix hash)")
