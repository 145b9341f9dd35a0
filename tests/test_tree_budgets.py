"""Budgets on codebases of every shape (issue #20): the prompt that auto-fit builds, and every
part of summarize's map-reduce, fits its context by the reference chat template's token count
(Hugging Face `tokenizers`, what vLLM uses), or the refusal names the file tree and the
omission note with their numbers. Pure core: documents are built here, not ingested."""

from __future__ import annotations

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from sparkdocs.documents import Document, DocumentKind, Section, SectionKind, render_tree
from sparkdocs.errors import BudgetError
from sparkdocs.parts import plan_parts, prepared_part
from sparkdocs.prompts import PromptBuilder, prepare_document
from sparkdocs.tokens import count_document

QUESTION = "Which module reads the configuration, and where is it called from?"


@pytest.fixture(scope="module")
def builder() -> PromptBuilder:
    return PromptBuilder()


def oracle_tokens(hf: Tokenizer, template: jinja2.Template, messages: list[dict]) -> int:
    text = template.render(messages=messages, bos_token="<|begin_of_text|>", add_generation_prompt=True)
    return len(hf.encode(text, add_special_tokens=False).ids)


def codebase(files: dict[str, str]) -> Document:
    paths = sorted(files)
    sections = [Section(SectionKind.TREE, "files", render_tree(paths))]
    sections += [Section(SectionKind.FILE, path, files[path]) for path in paths]
    return count_document(Document("repo", DocumentKind.CODEBASE, f"h{hash(tuple(paths))}",
                                   tuple(sections)))


def folders_of_one_file(n: int) -> dict[str, str]:
    return {f"folder_{i:03d}/main.py": f"print({i})\n" * 30 for i in range(n)}


def check_auto_fit(document: Document, builder: PromptBuilder, hf, template, *, context: int,
                   answer: int) -> None:
    """Auto-fit keeps a selection whose question prompt fits, or says the tree/note is why."""
    try:
        keep = builder.fit(document, context=context, answer_reserve=answer)
    except BudgetError as error:
        assert_names_the_cause(str(error), context=context)
        # and it is true: the smallest file alone, without the tree, is over by the oracle
        files = [i for i, s in enumerate(document.sections) if s.kind is SectionKind.FILE]
        smallest = min(files, key=lambda i: document.sections[i].tokens)
        alone = builder.question(prepare_document(document, keep=(smallest,)), QUESTION)
        assert oracle_tokens(hf, template, alone.as_dicts()) + answer > context - 256
        return
    prompt = builder.question(prepare_document(document, keep=keep), QUESTION)
    assert oracle_tokens(hf, template, prompt.as_dicts()) + answer <= context
    assert any(document.sections[i].kind is SectionKind.FILE for i in keep)


def check_summary_parts(document: Document, builder: PromptBuilder, hf, template, *,
                        context: int, answer: int) -> None:
    """Every part of summarize's map-reduce, as sent, fits with the answer reserve."""
    plan = plan_parts(document, builder, prompt_for=builder.summary, context=context,
                      answer_tokens=answer)  # files are cut to fit: never a refusal here
    files = [i for i, s in enumerate(plan.document.sections) if s.kind is SectionKind.FILE]
    covered = [i for part in plan.parts for i in part.sections
               if plan.document.sections[i].kind is SectionKind.FILE]
    assert covered == files  # every file in one part, in order
    for number in range(1, len(plan.parts) + 1):
        prepared = prepared_part(plan.document, builder, plan.parts, number)
        prompt = builder.summary(prepared)
        assert oracle_tokens(hf, template, prompt.as_dicts()) + answer <= context, number


def assert_names_the_cause(message: str, *, context: int) -> None:
    assert "tree" in message and "note" in message and "available" in message, message
    assert "raise the context length" in message, message


# -- the reported case ----------------------------------------------------------------------

def test_600_folders_of_one_file_auto_fit_at_8k_keeps_files_and_fits(builder, hf, template):
    document = codebase(folders_of_one_file(600))
    keep = builder.fit(document, context=8192, answer_reserve=512)
    prepared = prepare_document(document, keep=keep)
    prompt = builder.question(prepared, QUESTION)
    assert oracle_tokens(hf, template, prompt.as_dicts()) + 512 <= 8192
    assert len(keep) > 20  # the tree was collapsed, not the files given up
    assert "folders" in prepared.block and "left out" in prepared.block


def test_600_folders_of_one_file_summarised_at_8k_every_part_fits(builder, hf, template):
    document = codebase(folders_of_one_file(600))
    plan = plan_parts(document, builder, prompt_for=builder.summary, context=8192,
                      answer_tokens=512)
    assert len(plan.parts) < 40  # parts of many files each, not one file per part
    check_summary_parts(document, builder, hf, template, context=8192, answer=512)


def test_when_nothing_fits_the_message_names_tree_note_and_available(builder):
    document = codebase({f"d{i}/f.py": "value = 1\n" * 400 for i in range(50)})
    with pytest.raises(BudgetError) as raised:
        builder.fit(document, context=2048, answer_reserve=512)
    message = str(raised.value)
    assert_names_the_cause(message, context=2048)
    assert "file d0/f.py" in message or "file d" in message  # the smallest part is named


# -- every shape ----------------------------------------------------------------------------

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
LONG_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=40, max_size=120)


@st.composite
def trees(draw) -> dict[str, str]:
    shape = draw(st.sampled_from(["wide", "deep", "long names", "many tiny", "mixed"]))
    size = draw(st.sampled_from(["x = 1\n", "def f():\n    return 1\n" * 5, "y = 2\n" * 60]))
    if shape == "wide":
        n = draw(st.integers(50, 300))
        return {f"{draw(NAME)}_{i}/file.py": size for i in range(n)}
    if shape == "deep":
        depth = draw(st.integers(10, 60))
        chain = "/".join(f"level_{k}" for k in range(depth))
        n = draw(st.integers(1, 30))
        return {f"{chain[:draw(st.integers(1, len(chain)))].rstrip('/')}/f{i}.py": size
                for i in range(n)}
    if shape == "long names":
        n = draw(st.integers(5, 120))
        return {f"{draw(LONG_NAME)}/{draw(LONG_NAME)}_{i}.py": size for i in range(n)}
    if shape == "many tiny":
        n = draw(st.integers(100, 300))
        return {f"pkg_{i % 17}/sub_{i % 5}/m{i}.py": "x\n" for i in range(n)}
    paths = draw(st.lists(st.lists(NAME, min_size=1, max_size=8), min_size=1, max_size=150))
    return {"/".join(parts) + f"_{i}.py": size for i, parts in enumerate(paths)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(files=trees(), context=st.sampled_from([2048, 3072, 4096, 6144, 8192]),
       answer=st.sampled_from([256, 512]))
def test_any_tree_auto_fit_and_summary_parts_fit_or_name_the_cause(files, context, answer,
                                                                   builder, hf, template):
    document = codebase(files)
    check_auto_fit(document, builder, hf, template, context=context, answer=answer)
    check_summary_parts(document, builder, hf, template, context=context, answer=answer)
