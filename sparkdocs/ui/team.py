"""Streamlit side of team mode: the login page, who the current user is, and the
password prompt of a stored encrypted PDF. The decisions are auth.py's and the store's; this
module only shows forms and keeps per-tab state (a login, passwords proven in this tab)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from ..auth import (
    LOGIN_COOKIE,
    Login,
    LoginThrottle,
    Users,
    check_bind,
    install_secret,
    isolation,
    log_in,
    login_client,
    login_from_token,
    login_token,
    proxy_user,
    start_login,
)
from ..config import AuthMode, CacheIsolation, Settings
from ..documents import Document
from ..errors import LoginError, OpenAppError, PasswordRequiredError, StoreError
from ..safe_text import safe_markdown
from ..store import Session, Store

if TYPE_CHECKING:
    from ..qa import QuestionAnswering
    from .services import Services

log = logging.getLogger(__name__)

LOGIN_KEY = "sparkdocs_login"          # a Login (password mode)
_COOKIE_WRITTEN = "sparkdocs_login_cookie"  # the Login the browser's cookie holds
_COOKIE_CLEARED = "sparkdocs_login_cookie_cleared"  # logged out: ignore the stale cookie
_LOGGING_OUT = "sparkdocs_logging_out"  # the next run clears the cookie
USER_KEY = "sparkdocs_user"            # the user of this tab, once established
PASSWORDS_KEY = "sparkdocs_pdf_passwords"  # document key -> password proven in this tab
# per-user state of a tab, dropped when the user changes or logs out
_PER_USER_KEYS = ("session_id", "upload_signature", PASSWORDS_KEY, "answer_saved")


def allowed_pages(svc: Services, pages: Sequence[Any]) -> list[Any]:
    """The pages this request may see: all of them once the user is known, else only the login
    page (or a page saying why the app refuses). Used as `st.navigation(allowed_pages(...))`,
    so no page of the app runs for a request without a user."""
    settings = svc.settings
    try:
        user = _established_user(svc)
    except (LoginError, OpenAppError) as exc:
        message = str(exc)

        def refused() -> None:
            st.error(message, icon=":material/block:")

        return [st.Page(refused, title="sparkdocs", url_path="refused")]
    if user is None:
        return [st.Page(lambda: _login_form(svc), title="Log in", url_path="login")]
    if st.session_state.get(USER_KEY) != user:
        _forget_tab_state()
        st.session_state[USER_KEY] = user
    if settings.auth is not AuthMode.NONE:
        _account_sidebar(user, svc)
    return list(pages)


def current_user() -> str:
    """The user of this tab, as established by `allowed_pages` on this run. Fails closed: a page
    reached without a user is a bug, and nothing is shown."""
    user = st.session_state.get(USER_KEY)
    if not isinstance(user, str):
        st.error("Not logged in; reload the page to log in.")
        st.stop()
    return user


def _established_user(svc: Services) -> str | None:
    settings = svc.settings
    if settings.auth is AuthMode.NONE:
        check_bind(str(st.get_option("server.address") or ""), settings)
        return settings.user
    if settings.auth is AuthMode.PROXY:
        values = st.context.headers.get_all(settings.proxy_user_header)
        if len(values) > 1:
            raise LoginError(f"The request carries {len(values)} {settings.proxy_user_header} "
                             "headers; the proxy must replace the client's, not add to them.")
        return proxy_user(st.context.headers, peer=st.context.ip_address, settings=settings)
    login = st.session_state.get(LOGIN_KEY)
    if not isinstance(login, Login):
        login = _login_from_cookie(svc)  # a reload, or a new tab of a logged-in browser
        if login is not None:
            st.session_state[LOGIN_KEY] = login
    if isinstance(login, Login):
        _write_cookie_once(svc, login)
        if login.valid():
            return login.user
        del st.session_state[LOGIN_KEY]
        st.session_state["login_expired"] = True
        _clear_cookie()
    return None


def _login_from_cookie(svc: Services) -> Login | None:
    token = st.context.cookies.get(LOGIN_COOKIE)
    if not isinstance(token, str) or not token or st.session_state.get(_COOKIE_CLEARED):
        return None
    login = login_from_token(token, secret=_secret(svc.settings.cache_dir),
                             users=Users(svc.workspace.store))
    if login is None:
        _clear_cookie()  # forged, expired, or its user is gone or has a new password
    else:
        st.session_state[_COOKIE_WRITTEN] = login  # the browser has it already
    return login


def _write_cookie_once(svc: Services, login: Login) -> None:
    """Give the browser the signed login (once per login), so a reload stays logged in. The
    token holds the user name and expiry, nothing secret; SameSite=Strict keeps other sites
    from sending it."""
    if st.session_state.get(_COOKIE_WRITTEN) == login:
        return
    token = login_token(login, secret=_secret(svc.settings.cache_dir), users=Users(svc.workspace.store))
    _cookie_script(f"{LOGIN_COOKIE}={token}; Path=/; SameSite=Strict; "
                   f"Max-Age={max(int(login.expires_at - time.time()), 0)}")
    st.session_state[_COOKIE_WRITTEN] = login
    st.session_state.pop(_COOKIE_CLEARED, None)


def _clear_cookie() -> None:
    _cookie_script(f"{LOGIN_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0")
    st.session_state.pop(_COOKIE_WRITTEN, None)
    # until the browser reconnects, st.context.cookies still shows the old cookie
    st.session_state[_COOKIE_CLEARED] = True


def _cookie_script(cookie: str) -> None:
    secure = " + (location.protocol === 'https:' ? '; Secure' : '')"
    st.html(f"<script>document.cookie = {json.dumps(cookie)}{secure};</script>",
            unsafe_allow_javascript=True, width=1)


@st.cache_resource
def _secret(cache_dir: Path) -> bytes:
    return install_secret(cache_dir)


def _login_form(svc: Services) -> None:
    settings = svc.settings
    if st.session_state.pop(_LOGGING_OUT, False):
        _clear_cookie()  # rendered on this page's run, so the browser surely runs it
    st.title("Log in to sparkdocs")
    if st.session_state.pop("login_expired", False):
        _forget_tab_state()
        st.warning(f"Your login expired (after {settings.login_ttl_min:g} minutes); log in again.")
    wanted = st.query_params.get("session")  # a ?session= link: opened after the login
    with st.form("login"):
        name = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if not submitted:
        return
    try:
        client = login_client(st.context.headers, peer=st.context.ip_address, settings=settings)
        user = log_in(Users(svc.workspace.store), _throttle(), name.strip(), password,
                      client=client)
    except LoginError as exc:
        st.error(str(exc))
        return
    st.session_state[LOGIN_KEY] = start_login(user, ttl_min=settings.login_ttl_min)
    st.session_state[USER_KEY] = user
    _forget_tab_state()
    if wanted:
        st.session_state["session_id"] = wanted
    log.info("user %s logged in", user)
    st.rerun()


@st.cache_resource
def _throttle() -> LoginThrottle:
    """One per process, shared by every browser session: guesses from many tabs of one client
    add up, and no other client's guesses pause a user's own browser."""
    return LoginThrottle()


def _account_sidebar(user: str, svc: Services) -> None:
    with st.sidebar:
        st.caption(f":material/person: {user}")
        if svc.settings.auth is AuthMode.PASSWORD and st.button("Log out"):
            Users(svc.workspace.store).end_logins(user)  # every copy of the cookie ends too
            st.session_state.pop(LOGIN_KEY, None)
            st.session_state.pop(USER_KEY, None)
            _forget_tab_state()
            st.query_params.clear()
            st.session_state[_LOGGING_OUT] = True
            st.session_state[_COOKIE_CLEARED] = True  # this tab no longer trusts the cookie
            st.rerun()


def _forget_tab_state() -> None:
    for key in _PER_USER_KEYS:
        st.session_state.pop(key, None)


def remember_password(key: str, password: str | None) -> None:
    """The password this tab proved for a document (by opening it), so its sessions open in this
    tab without asking again. Kept in the tab's memory only, dropped on logout."""
    if password:
        st.session_state.setdefault(PASSWORDS_KEY, {})[key] = password


def remembered_password(key: str) -> str | None:
    return st.session_state.get(PASSWORDS_KEY, {}).get(key)


def start_session(svc: Services, key: str) -> Session:
    """A new session of this tab's user on one of their stored documents, fitted to the budget.
    An encrypted PDF whose password this tab has not proved gets a session all the same; its
    page then asks for the password before showing anything."""
    store, user = svc.workspace.store, current_user()
    try:
        document = store.get_document(key, owner=user, password=remembered_password(key))
    except PasswordRequiredError:
        return store.new_session_for_key(key, owner=user)
    if document is None:
        raise StoreError(f"No stored document {key[:12]}; it may have been evicted (upload it "
                         "again).")
    return svc.workspace.open_session(document, keep=svc.qa.fit(document), owner=user)


def session_documents(qa: QuestionAnswering, session: Session
                      ) -> tuple[Document, Session] | None:
    """The documents of a stored session of several, each from the store: one no longer there
    is named and the others open; an encrypted PDF asks for its password again."""
    passwords = {d.key: p for d in session.documents
                 if (p := remembered_password(d.key)) is not None}
    try:
        opened = qa.open_documents(session, passwords=passwords)
    except PasswordRequiredError as exc:
        store = qa.workspace.store
        locked = next((d.key for d in session.documents
                       if d.key not in passwords and store.document_is_locked(d.key)), None)
        _unlock_form(qa.workspace.store, session, str(exc), key=locked)
        return None
    for note in opened.notes:
        st.warning(safe_markdown(note))
    if opened.keep is not None or opened.missing:
        session = replace(session, kept_sections=opened.keep)
    return opened.document, session


def session_document(store: Store, session: Session) -> Document | None:
    """The document of a stored session, or None with the reason shown: evicted, or an
    encrypted PDF whose password this tab has not proved (then a form asks for it)."""
    key = session.document_key
    try:
        document = store.get_document(key, owner=session.owner, password=remembered_password(key))
    except PasswordRequiredError as exc:
        _unlock_form(store, session, str(exc))
        return None
    if document is None:
        st.warning(safe_markdown(f"The document of this session ({session.document_name}) is no "
                                 "longer in the cache; upload it again to go on."))
    return document


def _unlock_form(store: Store, session: Session, message: str, *, key: str | None = None
                 ) -> None:
    key = key or session.document_key
    st.info(safe_markdown(message), icon=":material/lock:")
    with st.form(f"unlock-{session.id}-{key[:12]}"):
        password = st.text_input("Password of this PDF", type="password")
        if not st.form_submit_button("Open"):
            return
    try:
        store.get_document(key, owner=session.owner, password=password)
    except PasswordRequiredError:
        st.error("That password does not open this PDF.")
        return
    remember_password(key, password)
    st.rerun()


def isolation_caption(settings: Settings) -> str:
    """How the model's prefix cache is shared, for the Server page."""
    if isolation(settings) is CacheIsolation.USER:
        return (":material/lock: Prefix cache: private per user (SPARKDOCS_CACHE_ISOLATION): "
                "one user's cached document never serves, or can be timed by, another.")
    return (":material/group: Prefix cache: shared (SPARKDOCS_CACHE_ISOLATION): a document "
            "cached for one user also speeds up another's questions about the same text.")
