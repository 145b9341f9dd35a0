"""Library: stored documents and their sessions."""

import streamlit as st

from sparkdocs import ui

svc = ui.services()
st.title("Library")
with ui.friendly_errors():
    ui.library(svc)
