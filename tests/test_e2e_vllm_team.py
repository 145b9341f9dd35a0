"""Team mode, item 2, judged by vLLM's CPU build: under per-user cache isolation two users asking
about the same document share no cached tokens, while each one's own follow-up still hits; under
shared isolation the second user hits the first one's prefix. `sparkdocs doctor` sees the
server honour cache_salt."""

from __future__ import annotations

import pytest
from test_e2e_vllm import _document_prefix_blocks, _qa, _text_document
from vllm_tier import CPU_BLOCK_SIZE

from sparkdocs.config import AuthMode, CacheIsolation
from sparkdocs.salt_probe import cache_salt_check

pytestmark = pytest.mark.vllm


def test_each_users_prefix_cache_is_private_unless_shared(vllm, tmp_path):
    qa = _qa(vllm, tmp_path / "private", auth=AuthMode.PASSWORD)  # auto: per user
    document = _text_document(qa, 3000, seed=121)
    blocks = _document_prefix_blocks(qa, document)
    store = qa.workspace.store
    alice, bob = (store.new_session(document, owner=user) for user in ("alice", "bob"))
    alice_first = qa.ask(document, alice, "Who are the parties?").stream.run()
    alice_again = qa.ask(document, alice, "What is the payment term?").stream.run()
    bob_first = qa.ask(document, bob, "Who are the parties?").stream.run()
    bob_again = qa.ask(document, bob, "What is the payment term?").stream.run()
    assert (alice_first.cached_tokens or 0) < blocks
    assert alice_again.cached_tokens >= blocks  # the same user's follow-up still hits
    assert (bob_first.cached_tokens or 0) < CPU_BLOCK_SIZE  # nothing of alice's served bob
    assert bob_again.cached_tokens >= blocks

    shared = _qa(vllm, tmp_path / "shared", auth=AuthMode.PASSWORD,
                 cache_isolation=CacheIsolation.SHARED)
    other = _text_document(shared, 3000, seed=122)
    other_blocks = _document_prefix_blocks(shared, other)
    carol, dave = (shared.workspace.store.new_session(other, owner=u) for u in ("carol", "dave"))
    carol_first = shared.ask(other, carol, "Who are the parties?").stream.run()
    dave_first = shared.ask(other, dave, "Who are the parties?").stream.run()
    assert (carol_first.cached_tokens or 0) < other_blocks
    assert dave_first.cached_tokens >= other_blocks  # shared: carol's prefix served dave

    check = cache_salt_check(qa.client)
    assert check.status == "ok", check
