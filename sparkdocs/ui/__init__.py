"""Streamlit building blocks for the pages, one module per page (ask, library, server) plus
what they share (common), team mode's login (team) and the source chips (sources). Logic lives
in the library modules these call; here widgets are only arranged."""

from .ask import (
                  budget_view,
                  chat,
                  demo_model_notice,
                  export_button,
                  reopen_panel,
                  show_turn,
                  upload_notice,
                  upload_panel,
                  warm_status,
)
from .common import active_session, friendly_errors
from .documents import documents_panel
from .library import library
from .server import server_status
from .services import Services, services

__all__ = ["Services", "active_session", "budget_view", "chat", "demo_model_notice", "documents_panel",
           "export_button", "friendly_errors", "library", "reopen_panel", "server_status",
           "services", "show_turn", "upload_notice", "upload_panel", "warm_status"]
