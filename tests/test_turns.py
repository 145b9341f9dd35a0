"""One turn runner and one group of streams: the verdicts on an answer's quotes are checked once,
when the turn is recorded, and every face shows the stored ones; a group of streams cancels every
member, also one that joins after the cancel."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakeserver import FakeServer

from sparkdocs.store import DATABASE_NAME
from sparkdocs.streams import StreamGroup

ROOT = Path(__file__).resolve().parent.parent
CLAUSE = "The supplier shall deliver the goods within thirty days of the order"
DOCUMENT = f"# Terms\n\n{CLAUSE}.\n\nPayment is due within 45 days of the invoice.\n"
ANSWER = f'The contract says "{CLAUSE}" (section "Terms"), and "the moon is made of cheese".'


def _env(cache: Path, base_url: str) -> dict[str, str]:
    return {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache), "SPARKDOCS_BASE_URL": base_url,
            "SPARKDOCS_MAX_RETRIES": "0", "SPARKDOCS_WARM_UP": "false"}


def _stored_turns(cache: Path) -> list[dict]:
    """The turns as the SQLite file holds them: the judge, not the store's own reader."""
    db = sqlite3.connect(cache / DATABASE_NAME)
    try:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM turns ORDER BY seq")]
    finally:
        db.close()


def _rewrite_turn(cache: Path, change) -> None:
    db = sqlite3.connect(cache / DATABASE_NAME)
    try:
        seq, body = db.execute("SELECT seq, body FROM turns ORDER BY seq DESC").fetchone()
        record = json.loads(body)
        change(record)
        db.execute("UPDATE turns SET body = ? WHERE seq = ?", (json.dumps(record), seq))
        db.commit()
    finally:
        db.close()


# -- a group of streams ---------------------------------------------------------------------------

class _Stream:
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


def test_a_group_cancels_every_member_and_every_late_joiner():
    group = StreamGroup()
    first, second, late = _Stream(), _Stream(), _Stream()
    with group.member(first), group.member(second):
        assert len(group) == 2 and not group.cancelled
        group.cancel()
        assert (first.cancelled, second.cancelled) == (1, 1) and group.cancelled
    assert len(group) == 0
    with group.member(late):  # its thread sent the request after the cancel
        assert late.cancelled == 1
    assert first.cancelled == 1  # a member that left is not cancelled again


def test_cancel_races_with_joining_from_many_threads():
    """Whatever the interleaving, no member that joined escapes the cancel."""
    for _ in range(50):
        group = StreamGroup()
        streams = [_Stream() for _ in range(8)]
        gate = threading.Barrier(9)

        def join(stream: _Stream, group: StreamGroup, gate: threading.Barrier) -> None:
            gate.wait()
            with group.member(stream):
                pass

        threads = [threading.Thread(target=join, args=(s, group, gate)) for s in streams]
        for thread in threads:
            thread.start()
        gate.wait()
        group.cancel()
        for thread in threads:
            thread.join()
        # a stream either left before the cancel or was cancelled exactly once
        assert all(s.cancelled <= 1 for s in streams)
        with group.member(extra := _Stream()):
            assert extra.cancelled == 1


# -- verdicts checked once, stored with the turn -----------------------------------------------

@pytest.mark.integration
def test_ask_stores_each_quotes_verdict_with_its_turn(tmp_path):
    doc = tmp_path / "terms.md"
    doc.write_text(DOCUMENT)
    cache = tmp_path / "cache"
    with FakeServer() as server:
        server.behaviour.answer = ANSWER
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(doc), "When?",
                              "--json"], capture_output=True, text=True, timeout=120,
                             check=False, env=_env(cache, server.base_url))
    assert run.returncode == 0, run.stderr
    [stored] = _stored_turns(cache)
    verdicts = [(c["quote"], c["status"]) for c in stored["citations"]]
    assert verdicts == [(CLAUSE, "verified"), ("the moon is made of cheese", "not_found")]
    # the CLI prints the stored verdicts
    printed = json.loads(run.stdout)["citations"]
    assert [(c["quote"], c["status"]) for c in printed] == verdicts


@pytest.mark.integration
def test_the_app_shows_the_stored_verdicts_and_checks_only_turns_stored_without(tmp_path,
                                                                            monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    cache = tmp_path / "cache"
    with FakeServer() as server:
        for name, value in _env(cache, server.base_url).items():
            monkeypatch.setenv(name, value)
        server.behaviour.answer = ANSWER
        st.cache_resource.clear()
        try:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
            at.sidebar.file_uploader[0].set_value(
                ("terms.md", DOCUMENT.encode(), "text/markdown")).run()
            at.chat_input[0].set_value("When?").run()
            assert not at.exception

            def sources_line() -> str:
                return next(c.value for c in at.caption if c.value.startswith("Sources:"))

            assert sources_line().startswith("Sources: 1 ✓ · 1 ✗")
            # The stored verdict is what is shown: change it in the file and the page follows
            # (had the page checked the answer again, it would still say 1 ✓).
            _rewrite_turn(cache, lambda r: r["citations"][0].update(status="not_found"))
            at.run()
            assert sources_line().startswith("Sources: 2 ✗")
            # A turn stored before verdicts were kept is checked when shown.
            _rewrite_turn(cache, lambda r: r.pop("citations"))
            at.run()
            assert sources_line().startswith("Sources: 1 ✓ · 1 ✗")
        finally:
            st.cache_resource.clear()
