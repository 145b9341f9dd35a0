"""Parts chosen by hand: --pages / --parts parse strictly, and the hint reproduces a fit."""

from __future__ import annotations

import pytest
from builders import make_contract_pdf, make_many_file_codebase
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdocs.errors import SelectionError, SparkdocsError
from sparkdocs.ingest import ingest_bytes
from sparkdocs.prompts import fit_sections
from sparkdocs.selection import format_ranges, parse_ranges, select, select_typed, selection_hint
from sparkdocs.tokens import count_document


@given(st.sets(st.integers(min_value=1, max_value=300), min_size=1))
def test_format_and_parse_ranges_round_trip(numbers):
    assert parse_ranges(format_ranges(numbers), what="page", largest=300) == sorted(numbers)


@pytest.mark.parametrize("spec,message", [("0-3", "outside 1-20"), ("5-2", "backwards"),
                                          ("1-x", "not a number"), (" , ", "empty"),
                                          ("21", "outside 1-20")])
def test_bad_ranges_say_what_is_wrong(spec, message):
    with pytest.raises(SelectionError, match=message):
        parse_ranges(spec, what="page", largest=20)


def test_pages_select_by_page_number_and_the_hint_reproduces_a_fit():
    document = count_document(ingest_bytes("c.pdf", make_contract_pdf(40)))
    assert select(document, pages="1-3,40") == (0, 1, 2, 39)
    keep = fit_sections(document, 900)
    hint = selection_hint(document, keep)
    assert hint.startswith("--pages 1-")
    assert select(document, pages=hint.split()[1]) == keep
    with pytest.raises(SelectionError, match="no numbered pages"):
        select(count_document(ingest_bytes("n.md", b"# A\n\ntext\n\n# B\n\nmore")), pages="1")


def test_parts_of_a_codebase_keep_the_tree_and_the_hint_reproduces_a_fit():
    document = count_document(ingest_bytes("r.zip", make_many_file_codebase(60)))
    assert select(document, parts="3-4") == (0, 2, 3)
    keep = fit_sections(document, 3000)
    hint = selection_hint(document, keep)
    assert hint.startswith("--parts ") and select(document, parts=hint.split()[1]) == keep


# Whatever is typed (--pages, --parts, the app's box): a selection or a SparkdocsError, never
# another exception. `1-<5,000 digits>` raised Python's integer-string limit (issue #20).
_HUGE = st.builds(lambda head, n, sep, digit: head + sep + digit * n,
                  st.sampled_from(("", "1", "0", "3")), st.integers(4000, 6000),
                  st.sampled_from(("-", "–", ",", " - ", "")), st.sampled_from("019٠٩"))
_TYPED = st.one_of(st.text(max_size=40), st.from_regex(r"\A[0-9٠-٩\s,\-–]{0,30}\Z"), _HUGE)
_PDF = ingest_bytes("c.pdf", make_contract_pdf(12))
_CODEBASE = ingest_bytes("r.zip", make_many_file_codebase(5))


@settings(max_examples=400, deadline=None)
@given(_TYPED)
def test_any_typed_selection_is_a_selection_or_a_clear_error(text: str):
    for document in (_PDF, _CODEBASE):
        try:
            chosen = select_typed(document, text)
        except SparkdocsError as error:
            assert len(str(error)) < 500  # says what is wrong without echoing 5,000 digits
            continue
        assert chosen and all(0 <= i < len(document.sections) for i in chosen)


@pytest.mark.parametrize("spec", ["1-" + "9" * 5000, "9" * 5000, "0" * 5000 + "1-2"])
def test_numbers_of_thousands_of_digits_are_out_of_range_not_a_crash(spec: str):
    if spec.startswith("0"):
        assert parse_ranges(spec, what="page", largest=20) == [1, 2]
        return
    with pytest.raises(SelectionError, match="outside 1-20"):
        parse_ranges(spec, what="page", largest=20)
