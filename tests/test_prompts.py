"""The prefix contract, measured on token ids under vLLM's 16-token full-block rule."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest
from builders import synthetic_document_text

from sparkdocs.documents import Document, DocumentKind, Section, SectionKind
from sparkdocs.errors import BudgetError, SparkdocsError
from sparkdocs.ingest import ingest_bytes
from sparkdocs.prompts import (
    PromptBuilder,
    fit_sections,
    prepare_document,
    rank_sections,
)
from sparkdocs.tokens import count_document


@pytest.fixture(scope="module")
def builder() -> PromptBuilder:
    return PromptBuilder()


@pytest.fixture(scope="module")
def big_document() -> Document:
    text = synthetic_document_text(60_000)
    return count_document(ingest_bytes("big.md", text.encode()))


def reusable_prefix_tokens(previous_ids: Sequence[int], next_ids: Sequence[int], *,
                           block_size: int = 16) -> int:
    """The judge of prefix reuse, vLLM's block rule: the tokens of `next_ids` its prefix cache
    can serve after `previous_ids` are the common prefix in full blocks, never the last prompt
    token (it must be computed)."""
    limit = min(len(previous_ids), len(next_ids) - 1)
    common = 0
    while common < limit and previous_ids[common] == next_ids[common]:
        common += 1
    return (common // block_size) * block_size



def test_reusable_prefix_tokens_block_rule():
    a = list(range(100))
    assert reusable_prefix_tokens(a, a) == 96  # last token of the new prompt is never reused
    assert reusable_prefix_tokens(a, a[:40] + [999] + a[41:]) == 32
    assert reusable_prefix_tokens([], a) == 0
    assert reusable_prefix_tokens(a[:16], a[:17]) == 16


def test_two_questions_reuse_at_least_99_percent_of_the_document(builder, big_document):
    prepared = prepare_document(big_document)
    q1 = builder.encoder.chat_ids(builder.question(prepared, "Who are the parties?").messages)
    q2 = builder.encoder.chat_ids(builder.question(prepared, "What is the term?").messages)
    reused = reusable_prefix_tokens(q1, q2)
    assert reused >= 0.99 * prepared.block_tokens


def test_warm_up_prefix_serves_question_summary_and_follow_up(builder, big_document):
    prepared = prepare_document(big_document)
    warm = builder.encoder.chat_ids(builder.warm_up(prepared).messages)
    for built in (builder.question(prepared, "Anything?"), builder.summary(prepared),
                  builder.follow_up(prepared, [("A?", "B.")], "C?")):
        ids = builder.encoder.chat_ids(built.messages)
        assert reusable_prefix_tokens(warm, ids) >= 0.99 * prepared.block_tokens, built.task


def test_follow_up_extends_the_previous_request(builder, big_document):
    prepared = prepare_document(big_document)
    first = builder.question(prepared, "Q1?")
    second = builder.follow_up(prepared, [("Q1?", "A1.")], "Q2?")
    a, b = (builder.encoder.chat_ids(p.messages) for p in (first, second))
    assert reusable_prefix_tokens(a, b) >= len(a) - 16 - 4  # everything but the generation prompt tail


def test_asking_encodes_only_the_question(big_document):
    """The document is never re-rendered or re-tokenised per question (the benchmark shows the
    milliseconds); here we check what gets encoded."""
    encoded: list[int] = []

    class Spy(PromptBuilder().tokenizer.__class__):
        def __init__(self) -> None:  # share the loaded encoding, record input sizes
            self.__dict__.update(PromptBuilder().tokenizer.__dict__)

        def encode(self, text: str) -> list[int]:
            encoded.append(len(text))
            return super().encode(text)

    spy = Spy()
    builder = PromptBuilder(spy)
    prepared = prepare_document(big_document, tokenizer=spy)
    encoded.clear()
    built = builder.question(prepared, "Question about clause 7?")
    assert built.prompt_tokens > 60_000
    assert encoded and max(encoded) < 100


RENDER_SCRIPT = """
import sys, hashlib
sys.path.insert(0, 'tests')
from builders import make_contract_pdf
from sparkdocs.ingest import ingest_bytes
from sparkdocs.tokens import count_document
from sparkdocs.prompts import prepare_document
doc = count_document(ingest_bytes(sys.argv[1], make_contract_pdf(5)))
block = prepare_document(doc).block
name_line = block.split("\\n")[1]
print(hashlib.sha256(block.replace(name_line, "").encode()).hexdigest(), doc.content_hash,
      hashlib.sha256(block.encode()).hexdigest())
"""


@pytest.mark.integration
def test_same_document_renders_byte_identically_in_two_processes():
    """The same bytes under the same name render the same in any process; under another name
    only the block's name line differs (the name is what citations of several documents use)."""
    runs = [subprocess.run([sys.executable, "-c", RENDER_SCRIPT, name], capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}
                           ).stdout.split()
            for name, seed in (("a.pdf", "1"), ("a.pdf", "2"), ("renamed copy.pdf", "3"))]
    assert runs[0] == runs[1] and len(runs[0]) == 3
    assert runs[2][:2] == runs[0][:2] and runs[2][2] != runs[0][2]


def _doc(sizes: list[int]) -> Document:
    sections = tuple(Section(SectionKind.FILE, f"f{i}.py", "x") for i in range(len(sizes)))
    document = Document("d", DocumentKind.CODEBASE, "h", sections, counted=True)
    import dataclasses
    return dataclasses.replace(document, sections=tuple(
        dataclasses.replace(s, tokens=n) for s, n in zip(sections, sizes, strict=True)))


def test_rank_and_fit_sections_drop_largest_first_and_state_it():
    document = _doc([100, 5000, 300, 2000])
    assert rank_sections(document) == [1, 3, 2, 0]
    assert fit_sections(document, 2500) == (0, 2, 3)
    assert fit_sections(document, 10_000) == (0, 1, 2, 3)
    with pytest.raises(BudgetError, match="in the 50 tokens available"):
        fit_sections(document, 50)


def test_omission_is_stated_in_the_prompt(builder):
    document = count_document(ingest_bytes("c.pdf", __import__("builders").make_contract_pdf(3)))
    prepared = prepare_document(document, keep=[0, 2])
    assert "Left out to fit the context: page 2" in prepared.block
    assert prepared.omitted == (1,)


def test_empty_question_is_refused(builder, big_document):
    with pytest.raises(SparkdocsError, match="question is empty"):
        builder.question(prepare_document(big_document), "   ")


# -- budgets count the block as sent (judged by Hugging Face `tokenizers`, what vLLM uses) ----

def _oracle_block_tokens(hf, prepared) -> int:
    from sparkdocs.documents import DOCUMENT_CLOSE, DOCUMENT_OPEN

    frame = sum(len(hf.encode(t, add_special_tokens=False).ids) for t in (DOCUMENT_OPEN, DOCUMENT_CLOSE))
    return len(hf.encode(prepared.block, add_special_tokens=False).ids) - frame


@pytest.fixture(scope="module")
def contract() -> Document:
    from builders import make_contract_pdf

    return count_document(ingest_bytes("contract.pdf", make_contract_pdf(120)))


@pytest.fixture(scope="module")
def repository() -> Document:
    from builders import make_many_file_codebase

    return count_document(ingest_bytes("repo.zip", make_many_file_codebase(600)))


@pytest.mark.parametrize("available", [700, 2500, 6000])
def test_fit_keeps_pages_from_the_start_and_the_sent_block_fits(contract, hf, available):
    keep = fit_sections(contract, available)
    assert keep == tuple(range(len(keep)))  # one run from page 1, never holes
    assert _oracle_block_tokens(hf, prepare_document(contract, keep=keep)) <= available
    one_more = prepare_document(contract, keep=range(len(keep) + 1))
    assert _oracle_block_tokens(hf, one_more) > available  # and it keeps as much as fits


@pytest.mark.parametrize("available", [1500, 6000, 30_000])
def test_fit_of_a_big_codebase_collapses_the_tree_and_the_sent_block_fits(repository, hf,
                                                                          available):
    assert repository.sections[0].tokens > 6000  # the full tree alone would not fit
    keep = fit_sections(repository, available)
    prepared = prepare_document(repository, keep=keep)
    assert 0 in keep and _oracle_block_tokens(hf, prepared) <= available
    assert "files left out)" in prepared.block and f"of {len(repository.sections) - 1:,} files" in prepared.block


def test_budget_used_is_the_block_as_sent(repository, builder, hf):
    keep = fit_sections(repository, 4000)
    budget = builder.budget(repository, context=8192, answer_reserve=256, keep=keep)
    assert budget.used == _oracle_block_tokens(hf, prepare_document(repository, keep=keep))


@pytest.mark.parametrize("which", ["contract", "repository"])
def test_a_selection_counted_without_rendering_is_the_block_as_sent(which, request, hf):
    """`block_tokens` (what fitting and splitting try) against Hugging Face `tokenizers` over
    the block `prepare_document` renders, for generated selections, notes and trees."""
    from hypothesis import given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st

    from sparkdocs.documents import DOCUMENT_CLOSE, DOCUMENT_OPEN
    from sparkdocs.prompts import block_tokens

    document = request.getfixturevalue(which)
    frame = sum(len(hf.encode(t, add_special_tokens=False).ids) for t in (DOCUMENT_OPEN, DOCUMENT_CLOSE))
    everything = range(len(document.sections))

    @hypothesis_settings(max_examples=40, deadline=None)
    @given(st.sets(st.sampled_from(everything), min_size=1, max_size=60),
           st.sampled_from([None, "Part 3 of 7: pages 4 to 9.", "Part 1 of 1: <|eot_id|>"]))
    def check(keep: set[int], note: str | None) -> None:
        counted = block_tokens(document, keep=keep, note=note)
        prepared = prepare_document(document, keep=keep, note=note)
        assert counted == prepared.block_tokens
        assert counted - frame == _oracle_block_tokens(hf, prepared)

    check()


def test_parts_cover_the_document_in_order_and_each_block_fits(repository, hf):
    from sparkdocs.prompts import split_into_parts

    parts = split_into_parts(repository, 5000, note=lambda n, total, label: f"Part {n} of {total}: {label}.")
    content = [i for part in parts for i in part.sections if i != 0]
    assert content == list(range(1, len(repository.sections))) and len(parts) > 2
    for number, part in enumerate(parts, 1):
        prepared = prepare_document(repository, keep=part.sections,
                                    note=f"Part {number} of {len(parts)}: {part.label}.")
        assert part.tokens == prepared.block_tokens
        assert _oracle_block_tokens(hf, prepared) <= 5000


def test_omission_note_stays_short_however_much_is_left_out(contract, repository):
    from sparkdocs.tokens import llama3

    pages = prepare_document(contract, keep=range(0, len(contract.sections), 2))  # every other page
    files = prepare_document(repository, keep=[0, 5])
    for prepared in (pages, files):
        note = prepared.block.split("</omitted>")[0]
        assert "Left out to fit the context" in note and llama3().count(note) < 400
    assert "page 2 to page 2" not in pages.block and "more ranges" in pages.block


def test_tree_of_a_selection_accounts_for_every_file():
    import random
    import re

    from sparkdocs.documents import render_tree

    rng = random.Random(11)
    for _ in range(200):
        paths = sorted({"/".join(rng.choice("abc") + str(rng.randint(0, 2))
                                 for _ in range(rng.randint(1, 4))) + ".py" for _ in range(40)})
        kept = [p for p in paths if rng.random() < 0.3]
        omitted = [p for p in paths if p not in kept]
        tree = render_tree(kept, omitted=omitted)
        counted = sum(int(n) for n in re.findall(r"\((\d+) files? left out\)", tree))
        counted += sum(int(n) for n in re.findall(r"… (\d+) more files? left out", tree))
        assert counted == len(omitted)
        assert all(p.rsplit("/", 1)[-1] in tree for p in kept)
