"""A document over the context warms its parts as soon as it opens, before any page is chosen
("Answer from every page" is then on by default); a selection the user then chooses is warmed as
before. Judged by the warm-up requests (max_tokens 1) the fake server received: which pages each
carried."""

from __future__ import annotations

import re
import time

import pytest
from builders import make_contract_pdf
from fakeserver import FakeServer
from hypothesis import given
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest
from test_app import APP, app_env, upload  # noqa: F401  # app_env: the fixture

from sparkdocs.warmup import warms_every_part

PAGES = 40
selections = st.none() | st.lists(st.integers(0, PAGES - 1), min_size=1, unique=True).map(
    lambda xs: tuple(sorted(xs)))


@given(whole=st.none() | st.booleans(), fits=st.booleans(), kept=selections, fitted=selections,
       possible=st.booleans())
def test_parts_are_warmed_unless_a_choice_of_pages_is_what_is_asked(whole, fits, kept, fitted,
                                                                    possible):
    chosen_pages = kept is not None and kept != fitted  # the user's own choice, not auto-fit's
    expected = whole if whole is not None else (not fits and not chosen_pages and possible)
    assert warms_every_part(whole_chosen=whole, fits=fits, kept=kept, fitted=fitted,
                            whole_possible=possible) is expected


def test_the_cases_by_name():
    assert warms_every_part(whole_chosen=None, fits=False, kept=(0, 1), fitted=(0, 1))
    assert warms_every_part(whole_chosen=None, fits=False, kept=None, fitted=(0, 1))
    assert not warms_every_part(whole_chosen=None, fits=False, kept=(1, 2), fitted=(0, 1))
    assert not warms_every_part(whole_chosen=None, fits=True, kept=None, fitted=None)
    assert warms_every_part(whole_chosen=True, fits=False, kept=(1, 2), fitted=(0, 1))
    assert not warms_every_part(whole_chosen=False, fits=False, kept=(0, 1), fitted=(0, 1))


def _warm_ups(server: FakeServer) -> list[str]:
    return [r["messages"][-1]["content"] for r in list(server.behaviour.requests)
            if r.get("max_tokens") == 1]


def _settled(server: FakeServer, count: int, *, timeout_s: float = 60.0) -> list[str]:
    """The warm-ups received once more than `count` arrived and no new one came for 2 s."""
    deadline = time.monotonic() + timeout_s
    seen, quiet_since = _warm_ups(server), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _warm_ups(server)
        if len(now) != len(seen):
            seen, quiet_since = now, time.monotonic()
        elif len(seen) > count and time.monotonic() - quiet_since > 2.0:
            break
    return seen


def _pages(prompt: str) -> list[int]:
    return [int(n) for n in re.findall(r'<page number="(\d+)"', prompt)]


@pytest.mark.integration
def test_an_over_budget_document_warms_every_part_on_open_then_the_chosen_pages(app_env):  # noqa: F811
    with FakeServer() as server:
        server.behaviour.max_model_len = 2048
        app_env(base_url=server.base_url, context=2048)
        at = upload(AppTest.from_file(APP, default_timeout=60).run(), "c.pdf",
                    make_contract_pdf(PAGES))
        assert not at.exception
        whole = [t for t in at.toggle if t.label.startswith("Answer from every page")]
        assert whole and whole[0].value  # no pages chosen: answered from every page
        opened = _settled(server, 0)
        parts = [p for p in opened if re.search(r"Part \d+ of \d+ of the document", p)]
        assert len(parts) >= 2, opened  # the document's parts, not the auto-fit selection
        assert sorted(n for p in parts for n in _pages(p)) == list(range(1, PAGES + 1))
        assert len(parts) == len(opened)  # nothing but the parts was warmed

        box = next(t for t in at.text_input if t.label.startswith("Pages to keep"))
        box.set_value("2-5").run()
        assert not at.exception
        chosen = _settled(server, len(opened))[len(opened):]
    assert [_pages(p) for p in chosen] == [[2, 3, 4, 5]]
    assert not re.search(r"Part \d+ of", chosen[0])
