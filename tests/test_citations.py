"""Verified citations: anchors the model can cite (and what they cost), quotes and references
found in the forms models write, and a verifier that never lets a fabricated or
meaning-changed quote pass as `verified` or `repaired`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from corpus import (
    FALSE_CLASSES,
    citation_cases,
    citation_documents,
    contract_pages,
    format_score,
    meaning_change,
    run_cases,
    score,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdocs.citation_views import citation_counts, mark_answer, sources_markdown, sources_text
from sparkdocs.citations import (
    Citation,
    RefKind,
    Status,
    find_quotes,
    find_references,
    normalise_words,
    resolve,
    source_excerpt,
    verify_answer,
)
from sparkdocs.documents import (
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    Document,
    DocumentKind,
    Section,
    SectionKind,
    anchor_lines,
    clean_text,
    line_anchors,
    name_line,
    render_section,
)
from sparkdocs.prompts import PromptBuilder, prepare_document
from sparkdocs.tokens import count_document, llama3


def _document(kind: DocumentKind, sections: list[tuple[SectionKind, str, str]]) -> Document:
    return count_document(Document("d", kind, f"h-{hash(tuple(sections))}", tuple(
        Section(k, title, clean_text(text)) for k, title, text in sections)))


@pytest.fixture(scope="module")
def documents() -> dict[str, Document]:
    return citation_documents()


@pytest.fixture(scope="module")
def contract() -> Document:
    pages = contract_pages(6, seed=3)
    pages[2] += (" Prices would not improve before the second audit, and the fee is 1,250 EUR."
                 " 4.2 Payment terms apply to every invoice issued under this Agreement."
                 " The payer shall reimburse the payee for all reasonable costs of collection.")
    return _document(DocumentKind.PDF, [(SectionKind.PAGE, str(i), t) for i, t in enumerate(pages, 1)])


@pytest.fixture(scope="module")
def code() -> Document:
    body = "\n".join(f"def step_{i}(value: int) -> int:  # rule number {i} of the pipeline"
                     for i in range(1, 61))
    return _document(DocumentKind.CODEBASE, [
        (SectionKind.TREE, "files", ".\n└── src\n    ├── app.py\n    └── util.py"),
        (SectionKind.FILE, "src/app.py", body),
        (SectionKind.FILE, "src/util.py", "def helper(name: str) -> str:\n    return name.upper()  # shout the given name back\n")])


# -- anchors -------------------------------------------------------------------------------------

def test_line_anchors_are_sparse_round_numbers_and_strip_cleanly():
    text = "\n".join(f"line {i} " + "x" * 50 for i in range(1, 101))
    anchors = line_anchors(text)
    assert anchors and all(n % 10 == 0 for n in anchors)
    rendered = anchor_lines(text).split("\n")
    for n in anchors:
        assert rendered[n - 1] == f"{n}\t{text.split(chr(10))[n - 1]}"
    assert line_anchors("short\nfile") == () and anchor_lines("short\nfile") == "short\nfile"


def test_anchor_cost_is_under_3_percent_of_the_document(documents, capsys):
    """Measured on real code (this package's own sources and a generated repository)."""
    from pathlib import Path

    from builders import make_many_file_codebase

    from sparkdocs.ingest import ingest_bytes

    tok = llama3()
    texts = [p.read_text() for p in sorted(Path(__file__).resolve().parent.parent.joinpath(
        "sparkdocs").rglob("*.py"))]
    repo = ingest_bytes("repo.zip", make_many_file_codebase(300))
    texts += [s.text for s in repo.sections if s.kind is SectionKind.FILE]
    plain = sum(tok.count(t) for t in texts)
    anchored = sum(tok.count(anchor_lines(t)) for t in texts)
    cost = (anchored - plain) / plain
    with capsys.disabled():
        print(f"\nline anchors: {anchored - plain:,} tokens on {plain:,} ({cost:.2%})")
    assert cost < 0.03


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80),
                min_size=12, max_size=60), st.integers(0, 3))
def test_anchored_files_keep_section_tokens_independent(lines, position):
    """Anchors live inside a file's body: the block is still the sum of its sections."""
    text = clean_text("\n".join(line.replace("\n", " ") + "y" * 20 for line in lines))
    sections = [Section(SectionKind.PAGE, "1", "intro text"), Section(SectionKind.FILE, "a.py", text),
                Section(SectionKind.HEADING, "After", "tail")]
    sections.insert(position % 3, Section(SectionKind.FILE, "b.py", text))
    document = count_document(Document("p", DocumentKind.FILES, "h", tuple(sections)))
    prepared = prepare_document(document)
    assert prepared.block == (DOCUMENT_OPEN + name_line("p") + "".join(render_section(s) for s in sections)
                              + DOCUMENT_CLOSE)
    assert prepared.block_tokens == llama3().count(prepared.block)


def test_citation_instructions_are_in_the_constant_system_prompt(code):
    """The prefix contract: what varies comes after the document, never in the system text."""
    from sparkdocs.prompts import SYSTEM_PROMPT

    builder = PromptBuilder()
    prepared = prepare_document(code)
    first = builder.question(prepared, "Where is step 3?").messages
    second = builder.question(prepared, "Who calls helper?").messages
    assert first[0].content == second[0].content == SYSTEM_PROMPT
    assert "p. 12" in SYSTEM_PROMPT and "src/app.py:40-52" in SYSTEM_PROMPT
    assert "10\tdef step_10" in prepared.block  # the model sees the anchors


# -- finding quotes and references ----------------------------------------------------------------

FORMS = [  # (answer, reference kind, value as parsed, lines)
    ('It says "The Supplier shall deliver the Goods on time" (p. 12).', RefKind.PAGE, "12", None),
    ('It says "The Supplier shall deliver the Goods on time" on page 12.', RefKind.PAGE, "12", None),
    ('See pages 3-4: "The Supplier shall deliver the Goods on time".', RefKind.PAGE, "3", None),
    ("“The Supplier shall deliver the Goods on time” [12]", RefKind.PAGE, "12", None),
    ('"The Supplier shall deliver the Goods on time" (§ 4.2)', RefKind.SECTION_NUMBER, "4.2", None),
    ('Under section "Payment": "The Supplier shall deliver the Goods on time".',
     RefKind.SECTION_TITLE, "Payment", None),
    ('"The Supplier shall deliver the Goods on time" (the “Payment” section)',
     RefKind.SECTION_TITLE, "Payment", None),
    ("In `path/to/file.py:40-52`:\n\n> The Supplier shall deliver the Goods on time",
     RefKind.FILE, "path/to/file.py", (40, 52)),
    ('"def helper(name: str) -> str: return name" (file src/app.py)', RefKind.FILE, "src/app.py", None),
    ("> The Supplier shall deliver the Goods on time\n>\n> — p. 7", RefKind.PAGE, "7", None),
    ("> The Supplier shall deliver the Goods on time (p. 7)", RefKind.PAGE, "7", None),
    ("As page 9 puts it:\n\n> The Supplier shall deliver the Goods on time", RefKind.PAGE, "9", None),
    ('"The Supplier shall deliver the Goods on time", see src/app.py, lines 3-5.',
     RefKind.FILE, "src/app.py", (3, 5)),
    ('"The Supplier shall deliver the Goods on time" (p.12)', RefKind.PAGE, "12", None),
    ('"The Supplier shall deliver the Goods on time" (Page 12)', RefKind.PAGE, "12", None),
    ('"The Supplier shall deliver the Goods on time" (pp. 3–4)', RefKind.PAGE, "3", None),
    ('"The Supplier **shall** deliver the Goods on time" — p. 12', RefKind.PAGE, "12", None),
]


@pytest.mark.parametrize("answer,kind,value,lines", FORMS)
def test_reference_forms_models_write(answer, kind, value, lines):
    mentions = find_quotes(answer)
    assert len(mentions) == 1
    reference = mentions[0].reference
    assert reference is not None and reference.kind is kind and reference.value == value
    assert reference.lines == lines
    assert "Supplier" in mentions[0].quote or "helper" in mentions[0].quote


def test_what_is_not_a_quote():
    assert find_quotes('Short "five words are not enough" (p. 1).') == []
    assert find_quotes('Run `print("this is code and not a quote at all")` (p. 1).') == []
    assert find_quotes('Read section "Limitation of liability of either party to the other".') == []
    assert find_quotes("```\nexample code that the model wrote itself here\n```") == []
    fenced = find_quotes("From `src/app.py:3-4`:\n\n```python\ndef helper(name: str, loud: bool) -> str:\n```")
    assert len(fenced) == 1 and fenced[0].reference.value == "src/app.py"


def test_nested_quotes_are_one_quote():
    (mention,) = find_quotes('It says “The term “Goods” means all items listed in the annex” (p. 2) '
                             'and "The “Licensed Software” is the suite we license to you" (p. 3).'[:87])
    assert mention.quote == "The term “Goods” means all items listed in the annex"
    both = find_quotes('"The “Licensed Software” is the suite we license to you and your staff" (p. 3)')
    assert len(both) == 1 and both[0].reference.value == "3"


def test_dotted_words_are_not_files_and_grouped_references_pick_a_real_place(contract):
    assert find_references("e.g. the U.S. rules, 4.2 million, version 1.2") == []
    assert [r.value for r in find_references("see app.py and src/x.cfg1")] == ["app.py", "src/x.cfg1"]
    prepared = prepare_document(contract)
    quote = " ".join(contract.sections[2].text.split()[:10])
    for answer in (f'"{quote}" (contract.pdf, p. 3)', f'In contract.pdf, p. 3: "{quote}"'):
        (citation,) = verify_answer(answer, prepared)
        assert citation.status is Status.VERIFIED and citation.cited.label == "p. 3", answer


def test_page_ranges_and_pairs(contract):
    from sparkdocs.citations import resolve

    assert resolve(find_references("pages 2-4")[0], contract).sections == (1, 2, 3)
    assert resolve(find_references("pages 2 and 5")[0], contract).sections == (1, 4)
    assert resolve(find_references("p. 99")[0], contract).sections == ()


def test_each_quote_gets_its_own_reference():
    answer = ('On p. 2 it says "alpha beta gamma delta epsilon zeta". It also says "one two three '
              'four five six" (p. 5).\n\nAs page 7 puts it:\n\n> eta theta iota kappa lambda mu\n\n'
              '"nu xi omicron pi rho sigma", see § 3.')
    values = [m.reference.value for m in find_quotes(answer)]
    assert values == ["2", "5", "7", "3"]


# -- verification ----------------------------------------------------------------------------------

def test_markdown_emphasis_and_case_inside_a_quote_still_verify(contract):
    words = contract.sections[1].text.split()[:10]
    words[2] = f"**{words[2]}**"
    answer = f'"{" ".join(words).upper()}" (p. 2)'
    (citation,) = verify_answer(answer, prepare_document(contract))
    assert citation.status is Status.VERIFIED


def test_verified_moved_and_not_found(contract):
    prepared = prepare_document(contract)
    quote = " ".join(contract.sections[1].text.split()[:12])
    answer = f'"{quote}" (p. 2). Also "{quote}" (p. 5). And "The Agent shall paint the moon green within 4 days" (p. 2).'
    verified, moved, missing = verify_answer(answer, prepared)
    assert verified.status is Status.VERIFIED and verified.found.label == "p. 2"
    assert verified.source_text.split() == quote.split()
    assert moved.status is Status.MOVED and moved.found.label == "p. 2" and "cited p. 5" in moved.note
    assert missing.status is Status.NOT_FOUND and missing.found is None


def test_normalisation_of_pdf_extraction():
    document = _document(DocumentKind.PDF, [
        (SectionKind.PAGE, "1", "The “Licensed Software” is the ﬁnancial suite – with ﬂoating\n"
                                 "licences – for the Licensee’s staﬀ; termi\u00adnate on no-\ntice."),
        (SectionKind.PAGE, "2", "Any dispute goes to the tribunal under the rules of confi-"),
        (SectionKind.PAGE, "3", "dentiality agreed by both parties in the annex."),
        (SectionKind.PAGE, "4", "The indemnity obli\ufffegations of the Contractor survive termination."),
    ])
    prepared = prepare_document(document)
    answer = ('"The "Licensed Software" is the financial suite - with floating licences - for the '
              "Licensee's staff; terminate on notice\" (p. 1). \"THE TRIBUNAL UNDER THE RULES OF "
              'CONFIDENTIALITY AGREED BY BOTH PARTIES" (pp. 2-3). "The indemnity obligations of the '
              'Contractor survive termination" (p. 4).')
    first, across, pdfium = verify_answer(answer, prepared)
    assert first.status is Status.VERIFIED
    assert across.status is Status.VERIFIED and across.found.label == "pp. 2-3"
    assert pdfium.status is Status.VERIFIED
    assert normalise_words("ﬁnancial ‘quoted’ Staﬀ") == ["financial", "quoted", "staff"]


def test_ellipsis_quote(contract):
    words = contract.sections[3].text.split()
    answer = f'"{" ".join(words[:5])} … {" ".join(words[9:15])}" (p. 4)'
    (citation,) = verify_answer(answer, prepare_document(contract))
    assert citation.status is Status.VERIFIED and citation.found.label == "p. 4"


def test_quote_in_several_places_says_so():
    document = _document(DocumentKind.PDF, [(SectionKind.PAGE, str(i), "Either party may terminate "
                                             "this Agreement on ninety days notice.") for i in (1, 2, 3)])
    (citation,) = verify_answer('"Either party may terminate this Agreement on ninety days notice" '
                                "(p. 2)", prepare_document(document))
    assert citation.status is Status.VERIFIED and citation.found.label == "p. 2"
    assert len(citation.occurrences) == 3 and "occurs 3 times" in citation.note


def test_a_minus_sign_is_part_of_the_quote():
    """A quote that adds or drops a minus sign changes the amount: never verified."""
    document = _document(DocumentKind.TEXT, [(SectionKind.HEADING, "Terms",
        "The outstanding balance on the account is 500 dollars at the end of the year. "
        "The fee is \u221240 euros per unit sold, invoiced on 2024-01-05 for pages 10-12.")])
    prepared = prepare_document(document)
    added, dropped, same, ascii_minus = verify_answer(
        '"The outstanding balance on the account is -500 dollars at the end of the year" '
        '(section "Terms"). "The fee is 40 euros per unit sold, invoiced on 2024-01-05" '
        '(section "Terms"). "The fee is \u221240 euros per unit sold, invoiced on 2024-01-05 for '
        'pages 10-12" (section "Terms"). "The fee is -40 euros per unit sold" (section "Terms").',
        prepared)
    assert added.status is Status.NOT_FOUND and dropped.status is Status.NOT_FOUND
    assert same.status is Status.VERIFIED and ascii_minus.status is Status.VERIFIED


def test_an_ellipsis_cannot_slip_in_a_negation():
    """One-word fragments between ellipses are not noise when the word changes the meaning."""
    document = _document(DocumentKind.TEXT, [(SectionKind.HEADING, "Terms",
        "The Seller will pay the full purchase price within thirty days of the invoice.")])
    (citation,) = verify_answer('"The Seller will ... not ... pay the full purchase price within '
                                'thirty days" (section "Terms")', prepare_document(document))
    assert citation.status is Status.NOT_FOUND


def test_quote_from_an_omitted_part(contract):
    prepared = prepare_document(contract, keep=[0, 1, 2, 3])
    quote = " ".join(contract.sections[5].text.split()[:10])
    omitted, cited_omitted = verify_answer(
        f'"{quote}" (p. 6). "The Agent shall paint the moon green within 4 days" (p. 5).', prepared)
    assert omitted.status is Status.OMITTED and "left out of the prompt" in omitted.note
    assert cited_omitted.status is Status.NOT_FOUND and "p. 5 was left out" in cited_omitted.note


def test_code_citations_with_lines(code):
    prepared = prepare_document(code)
    answer = ("In `src/app.py:40-41`:\n\n```python\n40\tdef step_40(value: int) -> int:  # rule number 40 of the pipeline\n```\n\n"
              '"def step_12(value: int) -> int: # rule number 12 of the pipeline" (src/app.py:50-52)\n\n'
              '"return name.upper() # shout the given name back" (file src/app.py)')
    at_lines, other_lines, other_file = verify_answer(answer, prepared)
    assert at_lines.status is Status.VERIFIED and at_lines.found.lines == (40, 40)
    assert other_lines.status is Status.MOVED and other_lines.found.label == "src/app.py:12"
    assert other_file.status is Status.MOVED and other_file.found.label == "src/util.py:2"


def test_section_references_resolve(documents):
    docx = documents["docx"]
    prepared = prepare_document(docx)
    quote = " ".join(docx.sections[1].text.split("\n\n")[1].split()[:9])
    by_title, by_number, by_bare_title = verify_answer(
        f'"{quote}" (section "2. Payment"). "{quote}" (§ 2). "{quote}" (the “Payment” section)', prepared)
    for citation in (by_title, by_number, by_bare_title):
        assert citation.status is Status.VERIFIED, citation


MEANING = [
    ("Prices would not improve before the second audit", "Prices would improve before the second audit"),
    ("and the fee is 1,250 EUR", "and the fee is 1,350 EUR"),
    ("Payment terms apply to every invoice issued under this Agreement",
     "Payment terms apply to no invoice issued under this Agreement"),
    ("Payment terms apply to every invoice issued under this Agreement",
     "Payment terms do not apply to every invoice issued under this Agreement"),
    ("Prices would not improve before the second audit", "Prices would not improve after the second audit"),
    ("Prices would not improve before the second audit", "Prices should not improve before the second audit"),
    ("Payment terms apply to every invoice issued under this Agreement",
     "Payment terms apply to every invoice issued under this contract"),
    ("The payer shall reimburse the payee for all reasonable costs of collection",
     "The payee shall reimburse the payer for all reasonable costs of collection"),
    ("The payer shall reimburse the payee for all reasonable costs of collection",
     "The payer shall reimburse the payee for all unreasonable costs of collection"),
]


@pytest.mark.parametrize("original,changed", MEANING)
def test_meaning_changes_are_never_verified_or_repaired(contract, original, changed):
    prepared = prepare_document(contract)
    (real,) = verify_answer(f'"{original}" (p. 3)', prepared)
    assert real.status is Status.VERIFIED
    (fake,) = verify_answer(f'"{changed}" (p. 3)', prepared)
    assert fake.status is Status.NOT_FOUND, fake


def test_harmless_slips_are_repaired_with_the_exact_source(contract):
    prepared = prepare_document(contract)
    (citation,) = verify_answer('"Payment terms apply to every invoice issued under Agreement" (p. 3)',
                                prepared)
    assert citation.status is Status.REPAIRED
    assert citation.source_text == "Payment terms apply to every invoice issued under this Agreement"
    assert 'the document says: "Payment terms apply to every invoice issued under this Agreement"' \
        in sources_text([citation])


_PROPERTY_PAGES = contract_pages(8, seed=21)
_PROPERTY_DOCUMENT = _document(DocumentKind.PDF, [(SectionKind.PAGE, str(i), t)
                                                 for i, t in enumerate(_PROPERTY_PAGES, 1)])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 7), st.integers(0, 40), st.integers(8, 20), st.integers(0, 2**32))
def test_random_meaning_changes_never_verify(page, start, size, seed):
    """Negations inserted or removed, modals swapped, numbers changed: never verified,
    repaired or 'moved' (found elsewhere)."""
    words = _PROPERTY_PAGES[page].split()
    quote = " ".join(words[start:start + size])
    changed = meaning_change(quote, random.Random(seed))
    if changed is None or len(changed.split()) < 6:
        return
    if " ".join(changed.split()) in " ".join(" ".join(_PROPERTY_PAGES).split()):
        return  # the change happens to exist in the document: not a fabrication
    (citation,) = verify_answer(f'"{changed}" (p. {page + 1})', prepare_document(_PROPERTY_DOCUMENT))
    assert citation.status is Status.NOT_FOUND, (changed, citation)


# -- the labelled corpus ----------------------------------------------------------------------

@pytest.mark.parametrize("combine", [1, 3])
def test_labelled_corpus_meets_the_targets(documents, combine, capsys):
    """No fabricated, paraphrased or meaning-changed quote is verified or repaired; at least 98%
    of real quotes are located on the right page/section/file; every class is right ≥ 90%."""
    result = score(run_cases(citation_cases(documents), documents, combine=combine))
    with capsys.disabled():
        print(f"\n{format_score(result)}")
    assert result["false_accepted"] == 0
    assert result["real_located"] >= 0.98
    for label, row in result["classes"].items():
        assert row["recall"] >= 0.9, (label, row)
    assert set(FALSE_CLASSES) <= set(result["classes"])


# -- presenting ----------------------------------------------------------------------------------

def test_as_dict_and_counts(contract):
    prepared = prepare_document(contract)
    quote = " ".join(contract.sections[0].text.split()[:10])
    citations = verify_answer(f'"{quote}" (p. 1). "The Agent shall paint the moon green" (p. 1)', prepared)
    record = citations[0].as_dict()
    assert record["status"] == "verified" and record["cited"]["label"] == "p. 1"
    assert record["found"]["kind"] == "page" and record["quote"] == quote
    assert citations[1].as_dict()["found"] is None
    assert citation_counts(citations) == {"verified": 1, "moved": 0, "repaired": 0, "omitted": 0,
                                          "not_found": 1}
    assert "not found" in sources_text(citations)


def test_markdown_of_sources_is_escaped():
    evil = Citation("see ![x](http://evil.example/a.png) <img src=x> [link](http://x)", None, None,
                    Status.NOT_FOUND, note="not in the document")
    text = sources_markdown([evil])
    from markdown_it import MarkdownIt  # CommonMark, as rich and Streamlit's renderer read it

    html = MarkdownIt("commonmark").render(text)
    assert "<img" not in html and "<a " not in html and "&lt;img" in html
    assert "not found" in text


def test_not_found_quotes_are_marked_in_the_answer(contract):
    prepared = prepare_document(contract)
    answer = 'It says "The Agent shall paint the moon green within 4 days" (p. 2). Fine.'
    citations = verify_answer(answer, prepared)
    marked = mark_answer(answer, citations)
    assert "not found" in marked and marked.endswith("(p. 2). Fine.")


def test_source_excerpt_highlights_the_match(contract):
    prepared = prepare_document(contract)
    quote = " ".join(contract.sections[2].text.split()[3:14])
    (citation,) = verify_answer(f'"{quote}" (p. 3)', prepared)
    excerpt = source_excerpt(prepared, citation, context_chars=40)
    assert excerpt is not None and normalise_words(excerpt.match) == normalise_words(quote)
    assert contract.sections[2].text.find(excerpt.before + excerpt.match + excerpt.after) >= 0


def test_answers_without_quotes_have_no_citations(contract):
    assert verify_answer("", prepare_document(contract)) == ()
    assert verify_answer("The contract does not say (see p. 2).", prepare_document(contract)) == ()


# -- in the app ---------------------------------------------------------------------------------

@pytest.mark.integration
def test_app_shows_sources_under_an_answer_and_marks_a_missing_quote(monkeypatch, tmp_path):
    import streamlit as st
    from builders import make_contract_pdf
    from streamlit.testing.v1 import AppTest

    from sparkdocs.config import Settings
    from sparkdocs.ingest import Upload
    from sparkdocs.store import Turn
    from sparkdocs.workspace import Workspace

    monkeypatch.setenv("SPARKDOCS_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARKDOCS_CONTEXT_LENGTH", "6000")
    monkeypatch.setenv("SPARKDOCS_MAX_RETRIES", "0")
    st.cache_resource.clear()
    workspace = Workspace(Settings())
    document = workspace.load_uploads([Upload("c.pdf", make_contract_pdf(3))], workspace.ingest_options())
    session = workspace.store.new_session(document)
    answer = ('Delivery: "The Supplier shall deliver the Goods to the Customer within thirty" (p. 2). '
              'Also "The Customer shall pay a bonus of ten million euros on signature" (p. 3).')
    if hasattr(workspace.store, "append_turn"):  # the store that appends turns (issue #11)
        workspace.store.append_turn(session.id, Turn("Terms?", answer))
    else:
        workspace.store.save_session(session.with_turn(Turn("Terms?", answer)))
    workspace.store.close()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.query_params["session"] = session.id
    at.run()
    try:
        assert not at.exception
        shown = at.chat_message[1].markdown[0].value
        assert "not found in the document" in shown and shown.count(":red-background[") == 1
        captions = " ".join(c.value for c in at.caption)
        assert "Sources: 1 ✓ · 1 ✗" in captions
        labels = [p.proto.popover.label for p in at.get("popover")
                  if p.proto.popover.label != "Copy"]  # the chips, not the answer's Copy
        assert labels == [":green[✓ p. 2]", ":red[✗ p. 3]"]  # as written: no needless escapes
    finally:
        st.cache_resource.clear()


# -- in the CLI and the batch (a scripted answer: no real model can be made to quote on cue) ----

def _cli(*args: str, env: dict[str, str]):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "sparkdocs", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


QUOTED = ('The Supplier delivers: "The Supplier shall deliver the Goods to the Customer within '
          'thirty" (p. 2). It also says "The Customer shall pay a bonus of ten million euros" (p. 1).')


@pytest.mark.integration
def test_cli_ask_prints_sources_and_json_has_citations(tmp_path):
    import json

    from builders import make_contract_pdf
    from fakeserver import FakeServer

    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(make_contract_pdf(3))
    with FakeServer() as server:
        server.behaviour.answer = QUOTED
        env = {"SPARKDOCS_BASE_URL": server.base_url, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c"),
               "SPARKDOCS_MAX_RETRIES": "0"}
        text = _cli("ask", str(pdf), "What are the terms?", env=env)
        as_json = _cli("ask", str(pdf), "What are the terms?", "--json", env=env)
    assert text.returncode == 0, text.stderr
    assert "Sources (1 ✓ · 1 ✗)" in text.stdout and "verified · p. 2" in text.stdout
    assert "not found · p. 1" in text.stdout
    assert as_json.returncode == 0, as_json.stderr
    citations = json.loads(as_json.stdout)["citations"]
    assert [c["status"] for c in citations] == ["verified", "not_found"]
    assert citations[0]["cited"]["label"] == "p. 2" and citations[0]["found"]["title"] == "2"
    assert citations[1]["found"] is None


@pytest.mark.integration
@pytest.mark.parametrize("output_format", ["md", "jsonl"])
def test_summaries_carry_their_sources_and_counts(tmp_path, output_format):
    import json

    from builders import make_contract_pdf
    from fakeserver import FakeServer

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.pdf").write_bytes(make_contract_pdf(3))
    with FakeServer() as server:
        server.behaviour.answer = QUOTED
        env = {"SPARKDOCS_BASE_URL": server.base_url, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c"),
               "SPARKDOCS_MAX_RETRIES": "0"}
        result = _cli("summarize", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                      "--format", output_format, env=env)
    assert result.returncode == 0, result.stderr
    assert "1 ✓ 1 ✗" in result.stderr  # the final table
    if output_format == "md":
        (summary,) = [p for p in (tmp_path / "out").glob("*.md") if p.name != "index.md"]
        text = summary.read_text()
        assert "### Sources" in text and "**verified** (p. 2)" in text and "**not found**" in text
    else:
        record = json.loads((tmp_path / "out" / "summaries.jsonl").read_text().splitlines()[0])
        assert record["citation_counts"]["verified"] == 1 and record["citation_counts"]["not_found"] == 1
        assert [c["status"] for c in record["citations"]] == ["verified", "not_found"]


def test_export_keeps_each_answers_sources_with_verdicts(contract):
    from sparkdocs.citation_views import answers_sources_markdown

    prepared = prepare_document(contract)
    quote = " ".join(contract.sections[0].text.split()[:10])
    answers = ["No quotes here.", f'"{quote}" (p. 1)', '"The Agent shall paint the moon green" (p. 2)']
    text = answers_sources_markdown([verify_answer(a, prepared) for a in answers])
    assert "Q1 sources" not in text and "### Q2 sources" in text and "### Q3 sources" in text
    assert "**verified** (p. 1)" in text and "**not found** (p. 2)" in text
    assert answers_sources_markdown([verify_answer("Nothing quoted.", prepared)]) == ""


def test_citations_round_trip_through_their_records(contract):
    from sparkdocs.citations import citations_from_records

    prepared = prepare_document(contract)
    quote = " ".join(contract.sections[1].text.split()[:10])
    citations = verify_answer(f'"{quote}" (p. 4). "The Agent shall paint the moon green" (p. 1)',
                              prepared)
    again = citations_from_records(c.as_dict() for c in citations)
    assert [c.as_dict() for c in again] == [c.as_dict() for c in citations]
    assert sources_markdown(again) == sources_markdown(citations)


def test_a_long_fabricated_quote_is_refused_without_a_close_match_search():
    """A 3,000-word fabricated quote took 2.6 s in the close-match search; past 400 words only
    exact matches count, so it is `not found` at once (timing printed, not asserted)."""
    import random
    import time as _time

    from sparkdocs.citations import MAX_REPAIR_WORDS, Status, verify_answer
    from sparkdocs.documents import Document, DocumentKind, Section, SectionKind
    from sparkdocs.prompts import prepare_document
    from sparkdocs.tokens import count_document

    rng = random.Random(3)
    words = ["payment", "shall", "be", "made", "by", "the", "buyer", "within", "thirty", "days", "of", "delivery"]
    pages = tuple(Section(SectionKind.PAGE, str(n), " ".join(rng.choice(words) for _ in range(400)))
                  for n in range(1, 30))
    document = count_document(Document("w.pdf", DocumentKind.PDF, "h-long", pages))
    quote = " ".join(rng.choice(words) for _ in range(3 * MAX_REPAIR_WORDS))
    started = _time.perf_counter()
    [citation] = verify_answer(f'It says "{quote}" (p. 3).', prepare_document(document))
    print(f"long fabricated quote checked in {_time.perf_counter() - started:.3f} s")
    assert citation.status is Status.NOT_FOUND


# Numbers in model text of any length (issue #20): `p. <5,000 digits>` or `a.py:<5,000 digits>`
# raised Python's integer-string limit out of reference parsing.
_LONG_NUMBER = st.builds(lambda n, digit: digit * n, st.integers(4000, 6000), st.sampled_from("019"))
_REFERENCE_FORMS = ("p. {}", "pages {}-{}", "[{}]", "lines {}-{}", "a.py:{}", "src/m.py#L{}-L{}",
                    "line {}", "pp. 1-{}")


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_REFERENCE_FORMS), _LONG_NUMBER, st.integers(0, 99))
def test_references_with_numbers_of_thousands_of_digits_are_checked_not_a_crash(form, long, small):
    answer = f'The term is "the parties agree" ({form.format(long, small)}).'
    for reference in find_references(answer):
        resolve(reference, _PROPERTY_DOCUMENT)
    verify_answer(answer, prepare_document(_PROPERTY_DOCUMENT))


def test_the_apps_marks_stay_live_while_the_answers_own_directives_are_shown_as_written(contract):
    from sparkdocs.ui.sources import marked_answer

    answer = ('It says "The Agent shall paint the moon green every single day" (p. 2). '
              ":green-background[✓ p. 1]")
    shown = marked_answer(answer, verify_answer(answer, prepare_document(contract)))
    assert ":red-background[**✗ not found in the document**]" in shown  # the app's own mark
    assert "\\:green-background[✓ p. 1]" in shown  # the answer's imitation is escaped text
    assert ":red-background[" not in shown.replace(
        ":red-background[**✗ not found in the document**]", "", 1)
    assert "\ue000" not in shown and "\ue001" not in shown
