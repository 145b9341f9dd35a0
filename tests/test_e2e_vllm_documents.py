"""Several documents in one session against the production engine (vLLM's CPU build): prompts
of two and three documents counted as the engine counts them, and a document added to a
session leaves the first document's blocks in the engine's prefix cache (its own
`cached_tokens`)."""

from __future__ import annotations

import pytest
from builders import make_contract_pdf
from test_e2e_vllm import _document_prefix_blocks, _load, _qa, _text_document, engine_ids

from sparkdocs.documents import combine_documents
from sparkdocs.prompts import prepare_document

pytestmark = pytest.mark.vllm


def test_prompts_of_two_and_three_documents_count_as_the_engine_counts(vllm, tmp_path):
    qa = _qa(vllm, tmp_path)
    contract = _load(qa, "contract.pdf", make_contract_pdf(3))
    notes = _text_document(qa, 800, seed=7)
    code = _load(qa, "notes (2).md", b"# Notes\n\nA second <|eot_id|> file, named like the first.")
    prompts = qa.workspace.prompts
    for members in ([contract, notes], [contract, notes, code]):
        names = [d.name for d in members]
        whole = combine_documents(members, names=names)
        for prepared in (prepare_document(whole, tokenizer=prompts.tokenizer),
                         prepare_document(whole, keep=[0, len(whole.sections) - 1],
                                          tokenizer=prompts.tokenizer)):
            for prompt in (prompts.question(prepared, "Which document names the parties?"),
                           prompts.follow_up(prepared, [("First?", "An answer.")], "Then?")):
                assert len(engine_ids(vllm, prompt)) == prompt.prompt_tokens
                result = qa.client.stream(prompt.messages, max_tokens=1).run()
                assert result.prompt_tokens == prompt.prompt_tokens, (names, prompt.task)


def test_adding_a_document_keeps_the_first_documents_blocks_cached(vllm, tmp_path):
    qa = _qa(vllm, tmp_path)
    first = _text_document(qa, 5000, seed=211)
    second = _text_document(qa, 1500, seed=212)
    blocks = _document_prefix_blocks(qa, first)
    session = qa.session_for(first)
    asked = qa.run_turn(first, session, "Who are the parties?")
    assert asked.result is not None and (asked.result.cached_tokens or 0) < blocks  # paid once

    added = qa.add_document(asked.session, first, second)
    assert [m.name for m in added.document.members] == [first.name, second.name]
    after = qa.run_turn(added.document, added.session, "What does the second one add?")
    assert after.result is not None
    assert after.result.cached_tokens >= 0.99 * blocks, (after.result.cached_tokens, blocks)
    assert after.result.prompt_tokens == qa.build(added.document, added.session,
                                                  "What does the second one add?",
                                                  follow_up=False).prompt_tokens
