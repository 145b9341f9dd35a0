"""A session's documents on the Ask page: each with its tokens, and "Add a document" after
those it has (the earlier documents stay in the model's prefix cache)."""

from __future__ import annotations

import streamlit as st

from ..documents import Document
from ..ingest import Upload
from ..safe_text import safe_markdown
from ..store import Session
from ..views import added_text, documents_line, rearrange_text
from . import team
from .common import friendly_errors, open_session_in_tab
from .services import Services

_ADDED = "added_document"


def documents_panel(svc: Services, document: Document, session: Session) -> None:
    """The documents of the session in the main area, and the uploader that adds one in the
    sidebar."""
    line = documents_line(document, session.kept_sections)
    if line:
        st.caption(safe_markdown(f"Documents, in the prompt's order: {line}"))
    if document.appendix:
        with st.expander("What changed between the two versions — sparkdocs' own comparison, "
                         "sent with every question after both documents"):
            st.text(document.appendix)
    if len(document.members) > 1:
        _rearrange(svc, document)
    for note in st.session_state.pop(_ADDED, ()):
        st.success(safe_markdown(note), icon=":material/library_add:")
    limit_mb = svc.settings.max_upload_mb
    with st.sidebar:
        upload = st.file_uploader(
            f"Add a document to this session (up to {limit_mb} MB): it goes after the ones it "
            "has, so they stay cached and only the new one is read", key=f"add-{session.id}")
    if upload is None or st.session_state.get(f"added-{session.id}") == upload.file_id:
        return
    if upload.size > svc.settings.max_upload_bytes:
        st.error(safe_markdown(f"{upload.name}: over the {limit_mb} MB upload limit "
                               "(SPARKDOCS_MAX_UPLOAD_MB); split the file or raise the limit."))
        return
    with friendly_errors(), st.spinner(safe_markdown(f"Reading {upload.name}…")):
        options = svc.workspace.ingest_options()
        added = svc.workspace.load_uploads([Upload(upload.name, upload.getvalue())], options,
                                           owner=team.current_user())
        result = svc.qa.add_document(session, document, added, name=upload.name)
        st.session_state[f"added-{session.id}"] = upload.file_id
        st.session_state[_ADDED] = list(result.notes) or [added_text(document, result.document)]
        st.rerun()


def _rearrange(svc: Services, document: Document) -> None:
    """Remove or reorder the documents: said before it is done, then a new session."""
    names = [m.name for m in document.members]
    with st.expander("Remove or reorder documents"):
        order = st.multiselect("Documents, in the order to send them (remove one to leave it "
                               "out; remove and add again to move it to the end)", names,
                               default=names, key=f"order-{document.content_hash}")
        if order == names:
            return
        st.warning(safe_markdown(rearrange_text(document, order)))
        if st.button("Start a new session with these documents", disabled=not order):
            with friendly_errors():
                arranged = svc.workspace.rearranged(document, order)
                session = svc.workspace.open_session(arranged.document,
                                                     keep=svc.qa.fit(arranged.document),
                                                     owner=team.current_user())
                open_session_in_tab(session)
                st.rerun()
