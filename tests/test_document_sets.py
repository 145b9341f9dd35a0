"""Several documents in one session (issue #19), the pure core: each document its own block
under its name, in the order added, so adding one appends to the prompt; citations name the
document, and a quote found in another document than the one named is `moved`.

Judges: Hugging Face `tokenizers` with the reference chat template (what vLLM counts), the
generator's own record of which text it put in which document."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdocs.citations import Status, verify_answer
from sparkdocs.documents import (
    Document,
    DocumentKind,
    Section,
    SectionKind,
    clean_text,
    combine_documents,
    display_name,
    unique_names,
)
from sparkdocs.prompts import PromptBuilder, prepare_document
from sparkdocs.tokens import count_document

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray"]


def _pages(seed: int, pages: int, name: str, kind: DocumentKind = DocumentKind.PDF) -> Document:
    rng = random.Random(seed)
    sections = tuple(
        Section(SectionKind.PAGE, str(n), clean_text(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + f" {name} page {n}."))
        for n in range(1, pages + 1))
    return count_document(Document(name, kind, f"hash-{name}-{seed}", sections))


def _files(seed: int, files: int, name: str) -> Document:
    rng = random.Random(seed)
    sections = [Section(SectionKind.TREE, "tree", ".\n" + "\n".join(f"├── f{n}.py"
                                                                        for n in range(files)))]
    sections += [Section(SectionKind.FILE, f"f{n}.py", "\n".join(
        f"x_{n}_{i} = '{rng.choice(WORDS)}'" for i in range(rng.randint(3, 40))))
        for n in range(files)]
    return count_document(Document(name, DocumentKind.CODEBASE, f"hash-{name}-{seed}",
                                   tuple(sections)))


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=30).filter(lambda n: n.strip())
documents = st.tuples(st.integers(0, 10_000), st.integers(1, 5), st.booleans(), names)


def _make(spec: tuple[int, int, bool, str]) -> Document:
    seed, size, code, name = spec
    return _files(seed, size, name) if code else _pages(seed, size, name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, min_size=1, max_size=4))
def test_adding_a_document_appends_to_the_prompt(hf, template, specs):
    """Every prefix of the set renders as the start of the whole set's prompt, token for
    token as the engine tokenises it; one document alone renders as a set of one; every
    count equals the reference template's."""
    docs = [_make(spec) for spec in specs]
    given_names = unique_names([d.name for d in docs])
    builder = PromptBuilder()
    previous_ids: list[int] | None = None
    for size in range(1, len(docs) + 1):
        whole = combine_documents(docs[:size], names=given_names[:size])
        prepared = prepare_document(whole)
        prompt = builder.warm_up(prepared)
        text = template.render(messages=prompt.as_dicts(), bos_token="<|begin_of_text|>",
                               add_generation_prompt=True)
        ids = hf.encode(text, add_special_tokens=False).ids
        assert prompt.prompt_tokens == len(ids)
        question = builder.question(prepared, "Which document says what?")
        assert question.prompt_tokens == len(hf.encode(template.render(
            messages=question.as_dicts(), bos_token="<|begin_of_text|>",
            add_generation_prompt=True), add_special_tokens=False).ids)
        if previous_ids is not None:
            # the earlier documents' blocks, all but the question lead and the generation prompt
            shared = len(previous_ids) - 8
            assert ids[:shared] == previous_ids[:shared]
        previous_ids = ids
    alone = prepare_document(docs[0])
    assert prepare_document(combine_documents(docs[:1], names=[docs[0].name])).block == alone.block


def test_each_document_is_its_own_block_in_order_under_its_name():
    a, b = _pages(1, 2, "a.pdf"), _pages(2, 3, "b.pdf")
    block = prepare_document(combine_documents([a, b], names=["a.pdf", "b.pdf"])).block
    assert block.count("<document>\n") == 2
    first, second = block.split("</document>\n\n")[:2]
    assert first.startswith("<document>\n<name>a.pdf</name>\n") and "a.pdf page 2." in first
    assert second.startswith("<document>\n<name>b.pdf</name>\n") and "b.pdf page 3." in second


def test_a_selection_of_a_set_says_what_was_left_out_of_each_document(hf):
    a, b = _pages(1, 4, "a.pdf"), _pages(2, 4, "b.pdf")
    whole = combine_documents([a, b], names=["a.pdf", "b.pdf"])
    prepared = prepare_document(whole, keep=[0, 1, 4])  # a: pages 1-2; b: page 1
    first, second = prepared.block.split("</document>\n\n")[:2]
    assert "page 3 to page 4" in first and "page 2 to page 4" in second
    assert prepared.block_tokens == len(hf.encode(prepared.block, add_special_tokens=False).ids)


def test_names_are_told_apart():
    assert unique_names(["contract.pdf", "contract.pdf"], folders=["2024", "2025"]) == [
        "2024/contract.pdf", "2025/contract.pdf"]
    assert unique_names(["contract.pdf", "contract.pdf"]) == ["contract.pdf", "contract (2).pdf"]
    assert unique_names(["contract.pdf"], taken=["contract.pdf"]) == ["contract (2).pdf"]
    assert unique_names(["Contract.PDF"], taken=["contract.pdf", "contract (2).pdf"]) == [
        "Contract (3).PDF"]
    assert unique_names(["notes"], taken=["notes"]) == ["notes (2)"]


@settings(max_examples=200, deadline=None)
@given(st.lists(names, min_size=1, max_size=8), st.lists(names, max_size=4))
def test_unique_names_never_repeat_and_never_rename_what_is_taken(given_names, taken):
    taken = unique_names(taken)
    result = unique_names(given_names, taken=taken)
    assert len(result) == len(given_names)
    assert all(display_name(name) == name for name in result)  # as the prompt shows them
    assert len({n.casefold() for n in [*taken, *result]}) == len(taken) + len(result)


# -- citations name the document ---------------------------------------------------------------

def _contract(year: int) -> Document:
    pages = [
        f"This agreement of {year} is made between the parties named below in good faith.",
        f"The supplier shall deliver the goods within {30 + year % 7} days of each order in {year}.",
        f"Either party may terminate this {year} agreement with ninety days written notice.",
    ]
    return count_document(Document(
        f"contract-{year}.pdf", DocumentKind.PDF, f"contract-{year}",
        tuple(Section(SectionKind.PAGE, str(n), text) for n, text in enumerate(pages, 1))))


@pytest.fixture(scope="module")
def contracts() -> Document:
    return combine_documents([_contract(2024), _contract(2025)],
                             names=["contract-2024.pdf", "contract-2025.pdf"])


def test_a_quote_from_each_document_is_verified_in_the_right_one(contracts):
    answer = (
        'The old one says "The supplier shall deliver the goods within 31 days of each order in '
        '2024" (contract-2024.pdf, p. 2), the new one "The supplier shall deliver the goods '
        'within 32 days of each order in 2025" (contract-2025.pdf, p. 2).')
    first, second = verify_answer(answer, prepare_document(contracts))
    assert (first.status, first.document, first.found.sections) == (Status.VERIFIED,
                                                                     "contract-2024.pdf", (1,))
    assert (second.status, second.document, second.found.sections) == (Status.VERIFIED,
                                                                       "contract-2025.pdf", (4,))
    record = second.as_dict()
    assert record["document"] == "contract-2025.pdf"
    assert record["found"]["label"] == "contract-2025.pdf, p. 2"


def test_a_quote_naming_the_wrong_document_is_moved(contracts):
    answer = ('It says "Either party may terminate this 2025 agreement with ninety days written '
              'notice" (contract-2024.pdf, p. 3).')
    (citation,) = verify_answer(answer, prepare_document(contracts))
    assert citation.status is Status.MOVED
    assert citation.document == "contract-2025.pdf"
    assert citation.cited.document == "contract-2024.pdf"
    assert "contract-2025.pdf, p. 3" in citation.note


file_names = st.from_regex(r"[A-Za-z][A-Za-z0-9 ._-]{0,20}\.(pdf|txt|md|zip)", fullmatch=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.lists(file_names, min_size=2, max_size=4), st.data())
def test_quotes_are_found_in_the_document_the_generator_put_them_in(seed, raw_names, data):
    """Several quotes, each of any page of any document, cited as the system text asks with a
    document name (the right one or another; names with spaces and dots, as files have): each
    quote keeps its own citation, verified when named right, moved to the right document when
    named wrong."""
    names = unique_names(raw_names)
    count = len(names)
    docs = [_pages(seed + n, 3, f"doc-{n}") for n in range(count)]
    whole = combine_documents(docs, names=names)
    prepared = prepare_document(whole)
    expected = []
    lines = []
    for _ in range(data.draw(st.integers(1, 3))):
        source = data.draw(st.integers(0, count - 1))
        named = data.draw(st.integers(0, count - 1))
        page = data.draw(st.integers(1, 3))
        words = docs[source].sections[page - 1].text.split()
        quote = " ".join(words[-9:]).rstrip(".")  # ends with "doc-N page P": unique
        lines.append(f'It says "{quote}" ({names[named]}, p. {page}).')
        expected.append((names[source], Status.VERIFIED if named == source else Status.MOVED,
                         (3 * source + page - 1,)))
    citations = verify_answer("\n".join(lines), prepared)
    assert [(c.document, c.status, c.found.sections) for c in citations] == expected


def test_a_quote_never_runs_from_one_document_into_the_next(contracts):
    tail = "ninety days written notice"
    head = "This agreement of 2025 is made"
    (citation,) = verify_answer(f'"{tail} {head}" (p. 3)', prepare_document(contracts))
    assert citation.status is Status.NOT_FOUND


# -- what changed, sent after two versions of one document --------------------------------------

def _version(year: int, *, days: int) -> Document:
    rng = random.Random(5)
    pages = [" ".join(f"Clause {page}.{n}. " + " ".join(rng.choice(WORDS) for _ in range(12)) + "."
                      for n in range(1, 4)) for page in range(1, 9)]
    pages[4] += f" The supplier shall deliver within {days} days of each order."
    return count_document(Document(
        f"contract-{year}.pdf", DocumentKind.PDF, f"version-{year}",
        tuple(Section(SectionKind.PAGE, str(n), text) for n, text in enumerate(pages, 1))))


def test_two_versions_carry_what_changed_after_both_blocks_and_a_third_document_drops_it(
        hf, template):
    from sparkdocs.changes import with_changes

    old, new = _version(2024, days=31), _version(2025, days=32)
    pair = with_changes(combine_documents([old, new], names=["contract-2024.pdf",
                                                              "contract-2025.pdf"]))
    prepared = prepare_document(pair)
    blocks = prepared.block.split("</document>\n\n")
    assert "<changes>" not in blocks[0] + blocks[1] and blocks[2].startswith("<changes>\n")
    assert "contract-2024.pdf to contract-2025.pdf" in blocks[2]
    assert '"31" → "32"' in blocks[2]  # the changed number, both sides
    prompt = PromptBuilder().question(prepared, "What changed?")
    assert prompt.prompt_tokens == len(hf.encode(template.render(
        messages=prompt.as_dicts(), bos_token="<|begin_of_text|>", add_generation_prompt=True),
        add_special_tokens=False).ids)
    third = with_changes(combine_documents([old, new, _pages(9, 2, "annex.pdf")],
                                           names=["contract-2024.pdf", "contract-2025.pdf",
                                                  "annex.pdf"]))
    assert not third.appendix
    both = blocks[0] + "</document>\n\n" + blocks[1] + "</document>\n\n"
    assert prepare_document(third).block.startswith(both)


def test_unrelated_documents_carry_no_comparison():
    from sparkdocs.changes import with_changes

    pair = with_changes(combine_documents([_pages(1, 3, "a.pdf"), _pages(2, 3, "b.pdf")],
                                          names=["a.pdf", "b.pdf"]))
    assert pair.appendix == ""


# -- behind vLLM's router, a session stays on the engine that holds its first document -----------

@pytest.mark.integration
def test_adding_a_document_keeps_the_sessions_routing_key(tmp_path):
    """The consistent-hash key names the session's first document, so the question after an
    added document goes to the engine whose cache holds the first one (judge: the header on
    the requests the router would receive)."""
    import json as jsonlib

    import httpx2

    from sparkdocs.client import ROUTING_HEADER, ModelClient
    from sparkdocs.config import Settings
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.workspace import Workspace

    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"data": [{"id": "m", "owned_by": "vllm",
                                                        "max_model_len": 65536}]})
        if request.url.path == "/v1/chat/completions" and jsonlib.loads(request.content).get("stream"):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=(
                b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}'
                b"\n\ndata: [DONE]\n\n"))
        return httpx2.Response(404)

    settings = Settings(base_url="http://router.test/v1", model="m", cache_dir=tmp_path)  # type: ignore[call-arg]
    qa = QuestionAnswering(Workspace(settings),
                           ModelClient(settings, transport=httpx2.MockTransport(handle)))
    first, second = _pages(1, 2, "a.pdf"), _pages(2, 2, "b.pdf")
    session = qa.session_for(first)
    qa.run_turn(first, session, "One?")
    added = qa.add_document(session, first, second)
    qa.run_turn(added.document, added.session, "Two?")
    keys = [r.headers.get(ROUTING_HEADER) for r in seen if r.url.path == "/v1/chat/completions"]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


def test_removing_or_reordering_says_what_is_read_again_and_keeps_the_rest():
    from sparkdocs.views import rearrange_text
    from sparkdocs.workspace import Workspace

    docs = [_pages(n, 2, f"{name}.pdf") for n, name in enumerate("abc")]
    whole = combine_documents(docs, names=[d.name for d in docs])
    tokens = {d.name: d.section_tokens for d in docs}
    said = rearrange_text(whole, ["a.pdf", "c.pdf"])
    assert "Leaves out b.pdf" in said and f"c.pdf ({tokens['c.pdf']:,} tokens)" in said
    said = rearrange_text(whole, ["b.pdf", "a.pdf", "c.pdf"])
    assert f"({tokens['a.pdf'] + tokens['b.pdf'] + tokens['c.pdf']:,} tokens)" in said
    assert "read again" not in rearrange_text(whole, ["a.pdf", "b.pdf"])
    arranged = Workspace.rearranged(whole, ["a.pdf", "c.pdf"]).document
    kept = prepare_document(arranged).block
    assert kept.startswith(prepare_document(docs[0]).block)
    assert "<name>b.pdf</name>" not in kept and "<name>c.pdf</name>" in kept
