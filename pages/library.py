"""Library: stored documents and their sessions."""

import streamlit as st

from sparkdocs import ui
from sparkdocs.ui.routing import through_the_app

through_the_app()  # opened by itself (a first deep link): route through the app

svc = ui.services()
st.title("Library")
with ui.friendly_errors():
    ui.library(svc)
