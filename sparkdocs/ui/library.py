"""The Library page: this user's documents and sessions — reopen, rename, delete (asked first)."""

from __future__ import annotations

import logging

import streamlit as st

from ..safe_text import safe_markdown
from ..views import LibraryVariant, library_entries, library_search, session_label
from . import team
from .common import friendly_errors, open_session_in_tab
from .services import Services

log = logging.getLogger(__name__)


def library(svc: Services) -> None:
    """Documents opened to ask, one entry per document (however many option variants), with
    their sessions by first question and date: reopen, rename, delete (after a confirmation)."""
    store = svc.workspace.store
    user = team.current_user()
    entries, counted_only = library_entries(store.list_documents(owner=user),
                                            store.list_sessions(owner=user))
    query = st.text_input("Search", placeholder="Search documents and sessions by name or "
                          "first question", label_visibility="collapsed", key="library-search")
    if query.strip():
        entries, counted_only = library_search(entries, counted_only, query)
        if not entries and not counted_only:
            st.info(safe_markdown(f"Nothing in the Library matches “{query.strip()}”."))
    elif not entries:
        st.info("No documents with sessions yet: upload one on the Ask page and ask a question.")
    for entry in entries:
        several = len(entry.variants) > 1
        size = (f"opened {len(entry.variants)} ways" if several
                else f"{entry.variants[0].info.tokens:,} tokens")
        with st.expander(safe_markdown(f"{entry.name} — {entry.kind}, {size}, "
                                       f"{len(entry.sessions)} session(s)")):
            if entry.detail:
                st.caption(safe_markdown(entry.detail))
            for variant in entry.variants:  # each way with its own sessions under it
                _library_variant(svc, variant, several=several)
    if counted_only:
        with st.expander(f"{len(counted_only)} document(s) read or counted but never asked about"):
            for info in counted_only:
                st.write(safe_markdown(f"{info.name} — {info.kind}, {info.tokens:,} tokens"))
            if _confirmed_delete(st, "clear-counted", f"Take these {len(counted_only)} "
                                 "document(s) off this list? Their sessions, if any, stay; "
                                 "opening one again lists it again.",
                                 label="Clear this list", confirm="Yes, clear", warning=""):
                store.unlist_documents([info.key for info in counted_only], owner=user)
                st.rerun()


def _library_variant(svc: Services, variant: LibraryVariant, *, several: bool) -> None:
    store = svc.workspace.store
    info = variant.info
    if several:
        st.markdown(safe_markdown(f"**{info.tokens:,} tokens, {info.sections} parts** · "
                                  f"{len(variant.sessions)} session(s)"))
    user = team.current_user()
    name = st.text_input("Name", info.name, key=f"name-{info.key}")
    cols = st.columns(3)
    if cols[0].button("Rename", key=f"rename-{info.key}") and name != info.name:
        store.rename_document(info.key, name, owner=user)
        st.rerun()
    if cols[1].button("New session", key=f"new-{info.key}"):
        with friendly_errors():
            open_session_in_tab(team.start_session(svc, info.key))
            st.switch_page("pages/ask.py")
    if _confirmed_delete(cols[2], f"del-{info.key}",
                         f"Delete {info.name} and its {len(variant.sessions)} session(s)?",
                         label="Delete document and sessions"):
        store.delete_document(info.key, owner=user)
        st.rerun()
    for session in sorted(variant.sessions, key=lambda s: s.updated_at, reverse=True):
        c1, c2, c3 = st.columns([5, 1, 1])
        c1.write(safe_markdown(session_label(session)))
        if c2.button("Open", key=f"open-{session.id}"):
            open_session_in_tab(session)
            st.switch_page("pages/ask.py")
        if _confirmed_delete(c3, f"dels-{session.id}",
                             f"Delete the session “{session_label(session)}”?"):
            store.delete_session(session.id, owner=user)
            st.rerun()
    if several:
        st.divider()


def _confirmed_delete(where, key: str, question: str, *, label: str = "Delete",
                      confirm: str = "Yes, delete",
                      warning: str = "This cannot be undone.") -> bool:
    """A delete button that asks first: the first click shows the question with `confirm`
    and 'Cancel'; only `confirm` returns True. Nothing is deleted on one stray click."""
    asking = f"confirm-{key}"
    if where.button(label, key=key, type="secondary"):
        st.session_state[asking] = True
    if not st.session_state.get(asking):
        return False
    st.warning(safe_markdown(f"{question} {warning}".strip()))
    yes, no = st.columns(2)
    if no.button("Cancel", key=f"no-{key}"):
        st.session_state.pop(asking, None)
        st.rerun()
    if yes.button(confirm, key=f"yes-{key}", type="primary"):
        st.session_state.pop(asking, None)
        return True
    return False
