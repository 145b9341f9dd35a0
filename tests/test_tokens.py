"""Exact counts: sparkdocs vs the reference template rendered by jinja2 and tokenised by
Hugging Face `tokenizers` (what vLLM uses)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import jinja2
import pytest
from corpus import CORPUS, INJECTION, corpus_document
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from sparkdocs.documents import (
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    Document,
    DocumentKind,
    Section,
    SectionKind,
    clean_text,
    name_line,
    render_section,
)
from sparkdocs.prompts import PromptBuilder, prepare_document
from sparkdocs.tokens import (
    BEGIN_OF_TEXT,
    END_HEADER,
    EOT,
    START_HEADER,
    SYSTEM_PREAMBLE,
    Budget,
    ChatMessage,
    count_document,
    llama3,
)

GOLDEN = Path(__file__).parent / "golden"


def render_chat(messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
    """The Llama 3.3 Instruct template (no tools) as text, written out by hand: a second
    reading of the golden prompts beside the reference jinja template."""
    parts = [BEGIN_OF_TEXT]
    system = ""
    rest = list(messages)
    if rest and rest[0].role == "system":
        system = rest[0].content.strip()
        rest = rest[1:]
    parts.append(f"{START_HEADER}system{END_HEADER}\n\n{SYSTEM_PREAMBLE}{system}{EOT}")
    for message in rest:
        parts.append(f"{START_HEADER}{message.role}{END_HEADER}\n\n{message.content.strip()}{EOT}")
    if add_generation_prompt:
        parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    return "".join(parts)


@pytest.fixture(scope="module")
def builder() -> PromptBuilder:
    return PromptBuilder()


def oracle_ids(hf: Tokenizer, template: jinja2.Template, messages: list[dict]) -> list[int]:
    text = template.render(messages=messages, bos_token="<|begin_of_text|>", add_generation_prompt=True)
    return hf.encode(text, add_special_tokens=False).ids


def all_prompts(builder: PromptBuilder, name: str):
    prepared = prepare_document(count_document(corpus_document(name)))
    yield builder.question(prepared, "What does it say about payment?")
    yield builder.question(prepared, "  Trailing spaces and <|eot_id|> in the question?  \n")
    yield builder.warm_up(prepared)
    yield builder.summary(prepared)
    yield builder.follow_up(prepared, [("First?", "An answer.\n\nWith paragraphs."),
                                       ("Second?", "Another <|eot_id|> answer")], "Third?")
    if len(prepared.document.sections) > 1:
        yield builder.question(prepare_document(prepared.document, keep=[0]), "Only the first part?")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_prompt_count_equals_oracle(name, builder, hf, template):
    for built in all_prompts(builder, name):
        expected = oracle_ids(hf, template, built.as_dicts())
        assert built.prompt_tokens == len(expected), built.task
        assert builder.encoder.chat_ids(built.messages) == expected


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_rendering_matches_golden(name, builder, template):
    prepared = prepare_document(count_document(corpus_document(name)))
    built = builder.question(prepared, "What does it say about payment?")
    golden = json.loads((GOLDEN / "rendered_questions.json").read_text())
    assert render_chat(built.messages) == golden[name]
    assert template.render(messages=built.as_dicts(), bos_token="<|begin_of_text|>",
                           add_generation_prompt=True) == golden[name]


def test_special_token_injection_yields_only_template_control_tokens(builder, hf, template):
    prepared = prepare_document(count_document(corpus_document("special")))
    built = builder.question(prepared, f"Q {INJECTION}")
    ids = oracle_ids(hf, template, built.as_dicts())
    control = [i for i in ids if i >= 128000]
    # bos, then (start, end, eot) for system and user, then start+end of the assistant header
    assert control == [128000, 128006, 128007, 128009, 128006, 128007, 128009, 128006, 128007]
    assert "eot_id" in built.messages[1].content  # still readable by a human


def test_tiktoken_matches_hf_on_corpus(hf):
    tok = llama3()
    for name in CORPUS:
        for _, _, text in CORPUS[name]:
            cleaned = clean_text(text)
            assert tok.encode(cleaned) == hf.encode(cleaned, add_special_tokens=False).ids


def test_special_token_text_never_raises_and_never_becomes_control():
    ids = llama3().encode("<|eot_id|><|begin_of_text|><|reserved_special_token_250|>")
    assert ids and all(i < 128000 for i in ids)


section_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(SectionKind)), st.text(max_size=20), section_text),
                min_size=1, max_size=6))
def test_document_tokens_are_sum_of_section_tokens(parts):
    """The boundary property that lets a document be counted once, per section."""
    sections = tuple(Section(kind, title, clean_text(text)) for kind, title, text in parts)
    document = count_document(Document("p", DocumentKind.TEXT, "h", sections))
    prepared = prepare_document(document)
    tok = llama3()
    assert prepared.block == (DOCUMENT_OPEN + name_line("p") + "".join(render_section(s) for s in sections)
                              + DOCUMENT_CLOSE)
    assert prepared.block_tokens == tok.count(prepared.block)
    assert PromptBuilder().question(prepared, "why?").prompt_tokens == len(
        PromptBuilder().encoder.chat_ids(PromptBuilder().question(prepared, "why?").messages))


def test_budget_arithmetic():
    budget = Budget(context=65_536, answer_reserve=1024, prompt_overhead=400, used=60_000)
    assert budget.available == 64_112
    assert budget.free == 4_112 and budget.fits
    assert not Budget(context=1000, answer_reserve=500, prompt_overhead=400, used=200).fits
