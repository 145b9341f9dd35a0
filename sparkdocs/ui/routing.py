"""The app's routing, in one place for app.py and the page files. Streamlit runs a `pages/`
file by itself when a fresh process's first request is a deep link (`/server`): that run must
still go through the routing, so the layout, the navigation and team mode's login gate come
first, whichever file Streamlit started with."""

from __future__ import annotations

import threading

import streamlit as st

from . import team
from .services import services

_routed = threading.local()  # set while the navigation runs a page (one script run per thread)


def run_app() -> None:
    """app.py's whole body: the page config, then only the pages this request may see."""
    st.set_page_config(page_title="sparkdocs", page_icon="📄", layout="wide")
    navigation = st.navigation(team.allowed_pages(services(), [
        st.Page("pages/ask.py", title="Ask", icon=":material/chat:", default=True),
        st.Page("pages/library.py", title="Library", icon=":material/library_books:"),
        st.Page("pages/server.py", title="Server", icon=":material/dns:"),
    ]), position="top")  # only the login page until the user is known (team mode)
    _routed.active = True
    try:
        navigation.run()
    finally:
        _routed.active = False


def through_the_app() -> None:
    """First line of every page file: a page Streamlit started by itself runs the app instead
    (which then runs this page, routed), and this unrouted run ends here."""
    if not getattr(_routed, "active", False):
        run_app()
        st.stop()
