"""sparkdocs in the browser: `streamlit run app.py`. Routing only."""

import streamlit as st

from sparkdocs import ui
from sparkdocs.ui import team as ui_team

st.set_page_config(page_title="sparkdocs", page_icon="📄", layout="wide")
navigation = st.navigation(ui_team.allowed_pages(ui.services(), [
    st.Page("app_pages/ask.py", title="Ask", icon=":material/chat:", default=True),
    st.Page("app_pages/library.py", title="Library", icon=":material/library_books:"),
    st.Page("app_pages/server.py", title="Server", icon=":material/dns:"),
]))  # only the login page until the user is known (team mode)
navigation.run()
