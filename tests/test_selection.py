"""Parts chosen by hand: --pages / --parts parse strictly, and the hint reproduces a fit."""

from __future__ import annotations

import pytest
from builders import make_contract_pdf, make_many_file_codebase
from hypothesis import given
from hypothesis import strategies as st

from sparkdocs.errors import SelectionError
from sparkdocs.ingest import ingest_bytes
from sparkdocs.prompts import fit_sections
from sparkdocs.selection import format_ranges, parse_ranges, select, selection_hint
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
