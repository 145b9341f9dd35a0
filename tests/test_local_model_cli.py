"""`sparkdocs local-model` as a user runs it, without the real model (issue #22, the first
hour): a stand-in `llama_cpp.server` on PYTHONPATH takes the real one's place, so the command,
its supervisor and its log are real and the test takes seconds. The demo model does not take
vLLM's port 8000, and it keeps its own log under the cache folder, named before it starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sparkdocs.local_model import LOCAL_MODEL_PORT, LocalModelSupervisor, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent

# `python -m llama_cpp.server`, as the supervisor starts it: prints its command line (into the
# log), then either exits at once (FAKE_LLAMA_EXIT) or answers /v1/models until terminated.
FAKE_SERVER = textwrap.dedent('''
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    print("fake llama_cpp.server", " ".join(sys.argv[1:]), flush=True)
    if os.environ.get("FAKE_LLAMA_EXIT"):
        print("fake: refusing to start", flush=True)
        sys.exit(int(os.environ["FAKE_LLAMA_EXIT"]))
    args = sys.argv[1:]
    host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    print("Uvicorn running (fake)", flush=True)
    ThreadingHTTPServer((host, port), Handler).serve_forever()
''')


@pytest.fixture
def fake_llama(tmp_path: Path) -> Path:
    root = tmp_path / "fake-site"
    server = root / "llama_cpp" / "server"
    server.mkdir(parents=True)
    (root / "llama_cpp" / "__init__.py").write_text("")
    (server / "__init__.py").write_text("")
    (server / "__main__.py").write_text(FAKE_SERVER)
    return root


def _env(fake_llama: Path, cache: Path, **more: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_llama), str(ROOT)]),
            "SPARKDOCS_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1", **more}


def test_the_default_port_is_not_vllms_and_help_says_which(tmp_path: Path):
    assert LOCAL_MODEL_PORT != 8000  # vLLM's port (compose, SPARKDOCS_BASE_URL's default)
    result = subprocess.run([sys.executable, "-m", "sparkdocs", "local-model", "--help"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "COLUMNS": "100"})
    assert f"[default: {LOCAL_MODEL_PORT}]" in result.stdout, result.stdout
    assert "[default: 8000]" not in result.stdout


def test_a_start_that_fails_names_the_log_first_and_the_log_holds_why(tmp_path: Path,
                                                                      fake_llama: Path):
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-m", "sparkdocs", "local-model"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=_env(fake_llama, cache, FAKE_LLAMA_EXIT="3"))
    assert result.returncode == 2, result.stderr
    log_path = cache / "local-model.log"
    first = result.stderr.splitlines()[0]
    assert f"log: {log_path}" in first, result.stderr  # said before anything can go wrong
    log = log_path.read_text()
    # the server was asked for the default port, and its output is in the log
    assert f"--port {LOCAL_MODEL_PORT}" in log and "fake: refusing to start" in log
    # the command's own account is in the log too: what failed and why
    assert "exited with exit code 3 while starting" in log, log


def test_a_running_demo_model_logs_its_start_and_stop(tmp_path: Path, fake_llama: Path):
    cache = tmp_path / "cache"
    port = free_port()
    cli = subprocess.Popen([sys.executable, "-m", "sparkdocs", "local-model", "--port", str(port)],
                           env=_env(fake_llama, cache), cwd=tmp_path, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log_path = cache / "local-model.log"
    try:
        assert cli.stderr is not None
        lines: list[str] = []
        while not lines or "Ctrl-C stops it." not in lines[-1]:
            lines.append(cli.stderr.readline())
            assert lines[-1] or cli.poll() is None, "".join(lines)
        assert f"log: {log_path}" in lines[0], lines
        assert f"http://127.0.0.1:{port}/v1" in "".join(lines)
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 143
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    log = log_path.read_text()
    assert "Uvicorn running (fake)" in log
    assert f"answers at http://127.0.0.1:{port}/v1" in log  # the command's own lines
    assert log.rstrip().endswith("The demo model server was stopped."), log


def test_the_apps_demo_model_takes_the_same_port_when_it_is_free(tmp_path: Path):
    """`sparkdocs app --local-model` starts the same model: on the same port as `local-model`
    (so the URL it prints is the one the README names), or a free one when that is taken."""
    log_path = tmp_path / "local-model.log"
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", LOCAL_MODEL_PORT))
            held = True
        except OSError:  # something on this machine already has it
            held = False
        assert LocalModelSupervisor(log_path=log_path).port != LOCAL_MODEL_PORT
    if held:
        assert LocalModelSupervisor(log_path=log_path).port == LOCAL_MODEL_PORT
