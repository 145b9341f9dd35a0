"""A document over the context warms its parts as soon as it opens, before any page is chosen
("Answer from every page" is then on by default); a selection the user then chooses is warmed as
before. Judged by the warm-up requests (max_tokens 1) the fake server received: which pages each
carried."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st
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


class _HeldParts:
    """warm_parts that holds its first part until its requests are closed (a cancel), as a
    long prefill would; warm_up ends at once."""

    def __init__(self) -> None:
        self.groups: list = []

    def warm_parts(self, document, *, owner=None, streams=None, on_part=None):
        self.groups.append(streams)
        on_part(0, 3)
        while not streams.cancelled:
            time.sleep(0.005)
        on_part(1, 3)  # raises WarmUpCancelled, as the real loop's next part would
        return WarmUpResult(0.0, None, None)

    def warm_up(self, document, keep, *, owner=None, streams=None, on_part=None):
        return WarmUpResult(0.0, None, None)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=12))
def test_a_warm_up_is_cancelled_only_when_no_tab_still_wants_it(flips):
    """Tabs of one user on the same document, each on every page, then switching 'Answer from
    every page' off and on: the parts' warm-up runs while any tab is on, and is cancelled (its
    requests closed) as soon as none is."""
    doc = Document("c.pdf", DocumentKind.PDF, "hash-c", ())
    qa = _HeldParts()
    warmups = WarmUps(qa, workers=4)  # type: ignore[arg-type]
    served = {tab: warmups.serve(doc, (0,), whole=True, tab=tab)[0] for tab in "abc"}
    parts = served["a"]
    on = set("abc")
    for tab, whole in flips:
        served[tab], _ = warmups.serve(doc, (0,), whole=whole, tab=tab, replacing=served[tab])
        on = on | {tab} if whole else on - {tab}
        state = warmups.state(doc, (0,), whole=True)
        assert state.status is (WarmStatus.WARMING if on else WarmStatus.CANCELLED), (flips, on)
        streams = warmups._streams.get(parts)  # the requests of the parts' warm-up now
        assert (streams is not None and not streams.cancelled) if on else \
            (streams is None or streams.cancelled)
    for tab in "abc":
        warmups.serve(doc, (0,), whole=False, tab=tab, replacing=served[tab])
    _until(lambda: all(g.cancelled for g in qa.groups) and not warmups._streams)


def test_a_tab_gone_quiet_no_longer_keeps_a_warm_up():
    """A closed or reloaded tab never says it switched off: once it has not asked for the
    warm-up for the tab lifetime, the last live tab switching off cancels it."""
    doc = Document("c.pdf", DocumentKind.PDF, "hash-c", ())
    qa = _HeldParts()
    warmups = WarmUps(qa, tab_ttl_s=0.2)  # type: ignore[arg-type]
    whole, _ = warmups.serve(doc, (0,), whole=True, tab="closed")
    warmups.serve(doc, (0,), whole=True, tab="open")
    time.sleep(0.1)
    warmups.state(doc, (0,), whole=True, tab="open")  # the live tab polls its warm-up
    time.sleep(0.15)
    warmups.serve(doc, (0,), whole=False, tab="open", replacing=whole)
    assert warmups.state(doc, (0,), whole=True).status is WarmStatus.CANCELLED
    _until(lambda: bool(qa.groups) and qa.groups[0].cancelled and not warmups._streams)
