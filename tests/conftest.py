from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sparkdocs.config import Settings  # noqa: E402
from sparkdocs.store import Store  # noqa: E402
from sparkdocs.workspace import Workspace  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", base_url="http://127.0.0.1:9/v1")


@pytest.fixture
def workspace(settings: Settings) -> Workspace:
    return Workspace(settings)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", size_limit_bytes=64 * 2**20)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
