"""Ask: upload (or reopen) a document, see its budget, ask questions, watch answers stream."""

import streamlit as st

from sparkdocs import ui
from sparkdocs.notices import document_heading
from sparkdocs.safe_text import safe_markdown
from sparkdocs.ui.routing import through_the_app

through_the_app()  # opened by itself (a first deep link): route through the app

svc = ui.services()
st.title("Ask your document")
ui.demo_model_notice(svc)

with st.sidebar:
    ui.upload_panel(svc)
    ui.reopen_panel(svc)
ui.upload_notice()  # why an upload could not be read, in the main area

with ui.friendly_errors():
    active = ui.active_session(svc)
    if active is None:
        st.info("Upload a contract, paper or codebase in the sidebar to begin. sparkdocs sends the "
                "whole document with every question — no retrieval — and keeps it in the model's "
                "prefix cache so only the first question pays to read it.")
        st.stop()
    document, session = active
    st.subheader(safe_markdown(document_heading(document, llama3_served=svc.qa.served.is_llama3())))
    ui.documents_panel(svc, document, session)
    session = ui.budget_view(svc, document, session)
    ui.warm_status(svc, document, session)
    session = ui.chat(svc, document, session)
    with st.sidebar:  # never under an open source, which opens downwards over the page
        ui.export_button(svc, session, prepared=svc.qa.prepared(document, session.kept_sections))
