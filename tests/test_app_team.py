"""Team mode in Streamlit's AppTest: the login page, another user's session link, the proxy's
header from the wrong address, and a stored encrypted PDF whose session asks for the password
again in a new tab."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from builders import make_pdf
from streamlit.testing.v1 import AppTest

from sparkdocs.auth import Users
from sparkdocs.config import Settings
from sparkdocs.ingest import Upload
from sparkdocs.store import Turn
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.integration
APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    def configure(**env: str) -> Settings:
        values = {"SPARKDOCS_BASE_URL": "http://127.0.0.1:9/v1", "SPARKDOCS_MAX_RETRIES": "0",
                  "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"), "SPARKDOCS_WARM_UP": "false",
                  **env}
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(st, "get_option", lambda key, real=st.get_option: (
            "127.0.0.1" if key == "server.address" else real(key)))
        st.cache_resource.clear()
        return Settings()
    yield configure
    st.cache_resource.clear()


def _log_in(at: AppTest, user: str, password: str) -> AppTest:
    fields = {field.label: field for field in at.text_input}
    fields["Username"].set_value(user)
    fields["Password"].set_value(password)
    return at.button[0].click().run()


def test_the_login_page_refuses_a_wrong_password_and_hides_other_users_sessions(app_env):
    settings = app_env(SPARKDOCS_AUTH="password")
    workspace = Workspace(settings)
    Users(workspace.store).add("alice", "alice-pass-1")
    Users(workspace.store).add("bob", "bob-pass-22")
    document = workspace.load_uploads([Upload("alice.txt", b"Alice's secret plan.")],
                                      workspace.ingest_options(), owner="alice")
    session = workspace.store.new_session(document, owner="alice")
    workspace.store.append_turn(session.id, Turn("What plan?", "The secret plan."))
    workspace.store.close()

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["session"] = session.id
    at.run()
    assert not at.exception
    assert [f.label for f in at.text_input] == ["Username", "Password"]
    at = _log_in(at, "alice", "wrong-password")
    assert any("Wrong username or password" in e.value for e in at.error)
    at = _log_in(at, "bob", "bob-pass-22")
    assert not at.exception
    assert any(f"No session '{session.id}'" in w.value for w in at.warning)
    assert not at.chat_message and "secret" not in str([m.value for m in at.markdown])

    alice = AppTest.from_file(APP, default_timeout=60)
    alice.query_params["session"] = session.id
    alice = _log_in(alice.run(), "alice", "alice-pass-1")
    assert not alice.exception
    assert [m.markdown[0].value for m in alice.chat_message] == ["What plan?", "The secret plan."]


def test_the_proxy_header_is_refused_from_another_address(app_env, monkeypatch):
    app_env(SPARKDOCS_AUTH="proxy", SPARKDOCS_TRUSTED_PROXIES="10.9.9.9")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("not the trusted proxy" in e.value for e in at.error)
    assert not at.file_uploader


def test_a_stored_encrypted_pdf_session_asks_for_its_password_again(app_env):
    settings = app_env()
    workspace = Workspace(settings)
    options = workspace.ingest_options(password="pdf-pass-7")
    document = workspace.load_uploads(
        [Upload("locked.pdf", make_pdf(["Clause 7. The price is forty-two million."],
                                       password="pdf-pass-7"))], options)
    session = workspace.store.new_session(document)
    workspace.store.close()

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["session"] = session.id
    at.run()
    assert not at.exception
    assert any("encrypted PDF" in i.value for i in at.info)
    assert not at.subheader  # no document shown
    password = next(f for f in at.text_input if f.label == "Password of this PDF")
    password.set_value("wrong")
    at = _submit(at)
    assert any("does not open this PDF" in e.value for e in at.error)
    password = next(f for f in at.text_input if f.label == "Password of this PDF")
    password.set_value("pdf-pass-7")
    at = _submit(at)
    assert not at.exception
    assert "locked.pdf" in at.subheader[0].value


def _submit(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Open" and b.key != "reopen").click().run()


def test_a_new_session_on_a_stored_encrypted_pdf_asks_for_the_password(app_env):
    settings = app_env()
    workspace = Workspace(settings)
    document = workspace.load_uploads(
        [Upload("locked.pdf", make_pdf(["Clause 7."], password="pdf-pass-7"))],
        workspace.ingest_options(password="pdf-pass-7"))
    session = workspace.store.new_session(document)  # the Library lists documents asked about
    workspace.store.append_turn(session.id, Turn("Clause 7?", "It says so."))
    workspace.store.close()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/library.py").run()
    at.button(key=f"new-{document.content_hash}").click().run()
    assert not at.exception
    assert any("encrypted PDF" in i.value for i in at.info) and not at.subheader
    next(f for f in at.text_input if f.label == "Password of this PDF").set_value("pdf-pass-7")
    at.switch_page("pages/ask.py")  # AppTest reruns the page it was told, not st.switch_page's
    at = _submit(at)
    assert not at.exception and "locked.pdf" in at.subheader[0].value


def test_an_open_address_without_logins_shows_only_the_refusal(app_env, monkeypatch):
    app_env()
    monkeypatch.setattr(st, "get_option", lambda key, real=st.get_option: (
        "0.0.0.0" if key == "server.address" else real(key)))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("SPARKDOCS_OPEN_APP" in e.value for e in at.error)
    assert not at.file_uploader and not at.title
    monkeypatch.setenv("SPARKDOCS_OPEN_APP", "true")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.error and at.file_uploader
