"""Server: what the model service serves and how its cache is doing."""

import streamlit as st

from sparkdocs import ui

svc = ui.services()
st.title("Model service")
st.caption(f"{svc.settings.base_url}")
with ui.friendly_errors():
    ui.server_status(svc)
