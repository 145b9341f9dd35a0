"""Server: what the model service serves and how its cache is doing."""

import streamlit as st

from sparkdocs import ui
from sparkdocs.literal import redact_url
from sparkdocs.safe_text import safe_markdown
from sparkdocs.ui.routing import through_the_app

through_the_app()  # opened by itself (a first deep link): route through the app

svc = ui.services()
st.title("Model service")
st.caption(safe_markdown(redact_url(svc.settings.base_url)))  # never its credentials
with ui.friendly_errors():
    ui.server_status(svc)
