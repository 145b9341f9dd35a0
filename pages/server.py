"""Server: what the model service serves and how its cache is doing."""

import streamlit as st

from sparkdocs import ui
from sparkdocs.safe_text import safe_markdown

svc = ui.services()
st.title("Model service")
st.caption(safe_markdown(f"{svc.settings.base_url}"))
with ui.friendly_errors():
    ui.server_status(svc)
