"""A document over the context warms its parts as soon as it opens, before any page is chosen
("Answer from every page" is then on by default); a selection the user then chooses is warmed as
before. Judged by the warm-up requests (max_tokens 1) the fake server received: which pages each
carried."""

from __future__ import annotations

import re
import threading
import time

import pytest
from builders import make_contract_pdf
from fakeserver import FakeServer
from hypothesis import given
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest
from test_app import APP, app_env, upload  # noqa: F401  # app_env: the fixture

from sparkdocs.client import WarmUpResult
from sparkdocs.documents import Document, DocumentKind
from sparkdocs.warmup import WarmStatus, WarmUps, chosen_elsewhere, warms_every_part

PAGES = 40
selections = st.none() | st.lists(st.integers(0, PAGES - 1), min_size=1, unique=True).map(
    lambda xs: tuple(sorted(xs)))


@given(whole=st.none() | st.booleans(), fits=st.booleans(), chosen=st.booleans(),
       possible=st.booleans())
def test_parts_are_warmed_unless_a_choice_of_pages_is_what_is_asked(whole, fits, chosen,
                                                                    possible):
    expected = whole if whole is not None else (not fits and not chosen and possible)
    assert warms_every_part(whole_chosen=whole, fits=fits, pages_chosen=chosen,
                            whole_possible=possible) is expected


def test_the_cases_by_name():
    assert warms_every_part(whole_chosen=None, fits=False, pages_chosen=False)
    assert not warms_every_part(whole_chosen=None, fits=False, pages_chosen=True)
    assert not warms_every_part(whole_chosen=None, fits=True, pages_chosen=False)
    assert warms_every_part(whole_chosen=True, fits=False, pages_chosen=True)
    assert not warms_every_part(whole_chosen=False, fits=False, pages_chosen=False)
    assert not warms_every_part(whole_chosen=None, fits=False, pages_chosen=False,
                                whole_possible=False)


@given(kept=selections, fitted=selections)
def test_a_session_not_seen_choosing_keeps_the_users_pages_unless_they_are_the_apps(kept, fitted):
    """Made by the command line or opened by a reload: every page and the auto-fit are the
    app's; any other selection was chosen by someone."""
    mine = kept is None or kept == fitted
    assert chosen_elsewhere(kept=kept, fitted=fitted) is not mine


class _Parts:
    """A stand-in for QuestionAnswering.warm_parts / warm_up: sends parts one after another
    as the real loop does (`on_part` before each), each held until the test releases it."""

    def __init__(self, parts: int) -> None:
        self.parts, self.sent = parts, []
        self.release = threading.Event()
        self.groups: list = []

    def warm_parts(self, document, *, owner=None, streams=None, on_part=None):
        self.groups.append(streams)
        for number in range(1, self.parts + 1):
            on_part(number - 1, self.parts)
            self.sent.append(("part", number))
            assert self.release.wait(10)
        on_part(self.parts, self.parts)
        return WarmUpResult(0.0, None, None)

    def warm_up(self, document, keep, *, owner=None, streams=None, on_part=None):
        self.groups.append(streams)
        on_part(0, 1)
        self.sent.append(("selection", keep))
        on_part(1, 1)
        return WarmUpResult(0.0, None, None)


def _until(condition) -> None:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_a_flipped_decision_cancels_the_parts_and_no_part_is_sent_after():
    doc = Document("c.pdf", DocumentKind.PDF, "hash-c", ())
    qa = _Parts(parts=5)
    warmups = WarmUps(qa)  # type: ignore[arg-type]
    key, state = warmups.serve(doc, (0, 1), whole=True)
    assert state.status is WarmStatus.WARMING
    _until(lambda: qa.sent == [("part", 1)])
    again, _ = warmups.serve(doc, (0, 1), whole=True, replacing=key)
    assert again == key and len(qa.groups) == 1  # the same decision: the same warm-up
    selection, _ = warmups.serve(doc, (0, 1), whole=False, replacing=key)  # switched off
    assert qa.groups[0].cancelled  # the parts' requests closed
    assert warmups.state(doc, (0, 1), whole=True).status is WarmStatus.CANCELLED
    _until(lambda: ("selection", (0, 1)) in qa.sent)
    qa.release.set()  # the part in flight ends: the loop must not send the next one
    _until(lambda: not warmups._streams.get(key))
    assert [s for s in qa.sent if s[0] == "part"] == [("part", 1)]
    _until(lambda: warmups.state(doc, (0, 1)).status is WarmStatus.WARM)
    _, back = warmups.serve(doc, (0, 1), whole=True, replacing=selection)  # switched on again
    assert back.status is WarmStatus.WARMING  # started afresh though it had been cancelled
    _until(lambda: ("part", 2) in qa.sent)


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
