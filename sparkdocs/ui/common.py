"""What every page shares: the error boundary and
which session this tab works on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import streamlit as st

from ..documents import Document
from ..errors import SparkdocsError, StoreError
from ..safe_text import safe_markdown
from ..store import Session
from . import team
from .services import Services

log = logging.getLogger(__name__)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Every sparkdocs error becomes a readable message with its fix; the session goes on."""
    try:
        yield
    except SparkdocsError as exc:
        st.error(safe_markdown(str(exc)), icon=":material/warning:")
    except Exception as exc:
        if type(exc).__module__.startswith("streamlit"):
            raise  # reruns and stops are control flow, not errors
        log.exception("unexpected error in the app")
        st.error(safe_markdown(f"Something unexpected went wrong ({exc.__class__.__name__}: "
                               f"{exc}). Your session is saved; reload the page, and report "
                               "this if it happens again."))


def _session_id() -> str | None:
    return st.session_state.get("session_id") or st.query_params.get("session")


def open_session_in_tab(session: Session) -> None:
    st.session_state["session_id"] = session.id
    if st.query_params.get("session") != session.id:
        st.query_params.pop("follow", None)  # the follow-up choice was the other session's
    st.query_params["session"] = session.id  # a reload finds the session again


def active_session(svc: Services) -> tuple[Document, Session] | None:
    """The document and session this browser tab is working on, if any."""
    session_id = _session_id()
    if not session_id:
        return None
    saving = st.session_state.get("answer_saved")
    if saving is not None:  # Stop or any click mid-answer: wait for the partial answer's save
        saving.wait(timeout=10)
    store = svc.workspace.store
    try:  # another user's session is "not found", exactly like a missing one
        session = store.get_session(session_id, owner=team.current_user())
    except StoreError as exc:
        st.session_state.pop("session_id", None)
        st.query_params.pop("session", None)
        st.warning(safe_markdown(str(exc)))
        return None
    if st.query_params.get("session") != session.id:
        st.query_params["session"] = session.id  # st.switch_page drops it; a reload needs it
    if session.documents:  # several documents, each from the store
        return team.session_documents(svc.qa, session)
    document = team.session_document(store, session)  # asks an encrypted PDF's password
    if document is None:
        return None
    return document, session
