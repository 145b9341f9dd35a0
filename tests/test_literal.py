"""Text from outside shown as itself: control sequences out, credentials in URLs hidden — the
helpers, and the Server page that shows the base URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkdocs.literal import ControlStripper, redact_url, redact_urls, strip_controls

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("url, shown", [
    ("http://user:pass@host:8000/v1", "http://***@host:8000/v1"),
    ("https://token@host/v1", "https://***@host/v1"),
    ("http://host:8000/v1", "http://host:8000/v1"),
    ("http://host/v1?api_key=abc&x=1", "http://host/v1?api_key=***&x=1"),
    ("http://u:p@[::1]:99999/v1", "http://***@[::1]:99999/v1"),  # a port urllib refuses
    ("alice:secretpw@host:8000/v1", "***@host:8000/v1"),  # no scheme
    ("http://alice:se/cret@host/v1", "http://***@host/v1"),  # a "/" in the password
    ("http:/alice:secretpw@host/v1", "***@host/v1"),  # one slash
    ("http://host/v1?api_key=a@b", "http://host/v1?api_key=***"),  # an @ in the query only
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_urls_in_free_text():
    assert redact_urls("failed: http://a:b@h/v1 and https://c@d/x") == "failed: http://***@h/v1 and https://***@d/x"


def test_strip_controls_keeps_everything_else_literally():
    text = "[bold]x[/] <b>y</b> `z` \t tab\nnext ünïcödé 中文 🙂"
    assert strip_controls(text) == text
    assert strip_controls("a\x1b[31mb\x1b[0m\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\c\r\nd\re\x00") == "ablinkc\nde"
    assert strip_controls("\x9b31mc1\x85") == "c1"


def test_the_stripper_holds_a_sequence_split_between_chunks():
    stripper = ControlStripper()
    pieces = [stripper.feed(c) for c in ["a\x1b", "]0;ti", "tle\x07b\r", "\nc\x1b["]]
    assert "".join(pieces) + stripper.flush() == "ab\nc"


@pytest.mark.integration
def test_server_page_shows_the_base_url_without_credentials(monkeypatch, tmp_path):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SPARKDOCS_BASE_URL", "http://alice:s3cret@127.0.0.1:9/v1")
    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARKDOCS_MAX_RETRIES", "0")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
        at.switch_page("pages/server.py").run()
        assert not at.exception
        shown = " ".join([c.value for c in at.caption] + [e.value for e in at.error])
        assert "s3cret" not in shown and "http://***@127.0.0.1:9/v1" in shown
    finally:
        st.cache_resource.clear()
