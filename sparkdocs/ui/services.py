"""The app's long-lived parts, built once per process and shared by every browser session."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ..client import ModelClient
from ..config import Settings
from ..qa import QuestionAnswering
from ..warmup import WarmUps
from ..workspace import Workspace


@dataclass(frozen=True)
class Services:
    settings: Settings
    workspace: Workspace
    client: ModelClient
    qa: QuestionAnswering
    warmups: WarmUps


@st.cache_resource
def services() -> Services:
    """Built once per process and shared by every browser session (all are thread-safe)."""
    settings = Settings()  # type: ignore[call-arg]  # every field has a default
    workspace = Workspace(settings)
    client = ModelClient(settings)
    qa = QuestionAnswering(workspace, client)
    return Services(settings, workspace, client, qa, WarmUps(qa))
