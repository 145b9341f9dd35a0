"""A document over the context with no pages chosen by the user is answered from every page by
default ("Answer from every page" shows on); switched off, the auto-fit selection is asked; pages
the user chooses switch it off and are what is asked. Judged by the prompts the fake server
received: which pages each carried, and whether a merge followed."""

from __future__ import annotations

import re
import time

import pytest
from builders import make_contract_pdf
from fakeserver import FakeServer
from streamlit.testing.v1 import AppTest
from test_app import APP, app_env, upload  # noqa: F401  # app_env: the fixture

PAGES = 40


def _pages(prompt: str) -> list[int]:
    return [int(n) for n in re.findall(r'<page number="(\d+)"', prompt)]


def _asked(server: FakeServer, since: int) -> list[str]:
    """The questions' prompts (not the warm-ups, max_tokens 1) received after `since`."""
    return [r["messages"][-1]["content"] for r in list(server.behaviour.requests)[since:]
            if r.get("max_tokens") != 1]


def _quiet(server: FakeServer, *, quiet_s: float = 2.0, timeout_s: float = 60.0) -> int:
    """The number of requests received once none came for `quiet_s` (the warm-ups ended)."""
    deadline = time.monotonic() + timeout_s
    seen, since = len(server.behaviour.requests), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = len(server.behaviour.requests)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


def _open_over_budget(app_env, server: FakeServer, *, prefill_s: float | None = None  # noqa: F811
                      ) -> AppTest:
    """A 40-page contract uploaded to an app whose server has a 2,048-token context (and
    takes `prefill_s` for each warm-up's prefill, as an engine would)."""
    server.behaviour.max_model_len = 2048
    if prefill_s is not None:
        server.behaviour.prefill_s = prefill_s
    app_env(base_url=server.base_url, context=2048)
    at = upload(AppTest.from_file(APP, default_timeout=120).run(), "c.pdf",
                make_contract_pdf(PAGES))
    assert not at.exception
    return at


def part_warm_ups(server: FakeServer) -> int:
    """How many warm-ups of a part (not of a selection) the server received."""
    return sum(1 for r in list(server.behaviour.requests) if r.get("max_tokens") == 1
               and re.search(r"Part \d+ of \d+ of the document", r["messages"][-1]["content"]))


def _whole_toggle(at: AppTest):
    [toggle] = [t for t in at.toggle if t.label.startswith("Answer from every page")]
    return toggle


def _ask(at: AppTest, server: FakeServer, question: str) -> list[str]:
    before = _quiet(server)
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return _asked(server, before)


@pytest.mark.integration
def test_every_page_by_default_auto_fit_when_off_chosen_pages_switch_it_off(app_env):  # noqa: F811
    with FakeServer() as server:
        at = _open_over_budget(app_env, server)
        assert _whole_toggle(at).value  # over the context, no pages chosen: every page

        sent = _ask(at, server, "Who pays?")
        parts = [p for p in sent if _pages(p)]
        merges = [p for p in sent if not _pages(p)]
        assert len(parts) >= 2, sent
        assert sorted(n for p in parts for n in _pages(p)) == list(range(1, PAGES + 1))
        assert merges and sent[-1] in merges  # the part answers combined, last

        _whole_toggle(at).set_value(False).run()
        assert not at.exception and not _whole_toggle(at).value
        warmed_before = _quiet(server)
        sent = _ask(at, server, "Who pays?")
        [prompt] = sent  # one question, one prompt: the auto-fit pages
        fitted = _pages(prompt)
        assert fitted == list(range(1, len(fitted) + 1)) and len(fitted) < PAGES
        assert not re.search(r"Part \d+ of", prompt)
        warmed = [r["messages"][-1]["content"] for r in server.behaviour.requests[:warmed_before]
                  if r.get("max_tokens") == 1]
        assert _pages(warmed[-1]) == fitted  # what was warmed last is what was asked

        box = next(t for t in at.text_input if t.label.startswith("Pages to keep"))
        box.set_value("2-5").run()
        assert not at.exception and not _whole_toggle(at).value  # the user's choice is asked
        sent = _ask(at, server, "Who pays?")
    assert [_pages(p) for p in sent] == [[2, 3, 4, 5]]


@pytest.mark.integration
def test_a_document_too_large_to_read_whole_is_asked_as_the_app_kept_it(app_env, monkeypatch):  # noqa: F811
    """Past the limit of parts, every page cannot be read: the refusal is said where the toggle
    would be, and the question is asked of the auto-fit pages (not refused again)."""
    monkeypatch.setattr("sparkdocs.parts.MAX_PARTS", 2)
    with FakeServer() as server:
        at = _open_over_budget(app_env, server)
        assert not [t for t in at.toggle if t.label.startswith("Answer from every page")]
        assert any("over the limit of 2" in e.value for e in at.error)
        sent = _ask(at, server, "Who pays?")
    [prompt] = sent
    assert _pages(prompt) == list(range(1, len(_pages(prompt)) + 1)) and _pages(prompt)


@pytest.mark.integration
def test_fit_automatically_pressed_on_the_apps_own_pages_makes_them_the_users(app_env):  # noqa: F811
    """Pressing "Fit automatically" is a choice of pages, though it keeps the pages the app
    opened with: the toggle goes off, the parts' warm-up is cancelled (no part is sent after)
    and the question asks those pages."""
    with FakeServer() as server:
        at = _open_over_budget(app_env, server, prefill_s=1.0)
        assert _whole_toggle(at).value
        kept = next(t for t in at.text_input if t.label.startswith("Pages to keep")).value
        next(b for b in at.button if b.label.startswith("Fit automatically")).click().run()
        assert not at.exception and not _whole_toggle(at).value
        parts_then = len(_parts_warmed(server))
        sent = _ask(at, server, "Who pays?")
        assert len(_parts_warmed(server)) == parts_then  # none after the press
        assert next(t for t in at.text_input if t.label.startswith("Pages to keep")).value == kept
    [prompt] = sent
    first, last = (int(n) for n in re.fullmatch(r"(\d+)-(\d+)", kept).groups())
    assert _pages(prompt) == list(range(first, last + 1))


def _parts_warmed(server: FakeServer) -> list[str]:
    return [r["messages"][-1]["content"] for r in list(server.behaviour.requests)
            if r.get("max_tokens") == 1
            and re.search(r"Part \d+ of \d+ of the document", r["messages"][-1]["content"])]


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


@pytest.mark.integration
def test_an_over_budget_document_warms_every_part_on_open_then_the_chosen_pages(app_env):  # noqa: F811
    with FakeServer() as server:
        at = _open_over_budget(app_env, server)
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
