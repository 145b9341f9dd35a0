"""The demo model's supervisor against the real llama.cpp server (llama-cpp-python + SmolLM2):
its output lands in a log, a crash (a real SIGKILL/SIGSEGV of the real server) is reaped,
reported in plain words and restarted once on the same port, and a second crash leaves it down
with the log named. The CLI commands are run as a user runs them and stopped with SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sparkdocs.local_model import (
    LocalModelSupervisor,
    ServerState,
    SupervisorStatus,
    describe_exit,
    free_port,
    log_tail,
)

ROOT = Path(__file__).resolve().parent.parent


def _until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _reaped(process: subprocess.Popen[bytes], pid: int) -> bool:
    """Exited, waited for (returncode set) and gone from /proc or at least not a zombie."""
    if process.returncode is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state != "Z"


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.integration
def test_exit_codes_and_log_tail_in_plain_words(tmp_path: Path) -> None:
    assert describe_exit(-11) == "exit code -11 (signal SIGSEGV)"
    assert describe_exit(-9) == "exit code -9 (signal SIGKILL)"
    assert describe_exit(1) == "exit code 1"
    log = tmp_path / "server.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(2000)) + b"\n\n")
    assert log_tail(log, lines=3) == "line 1997 | line 1998 | line 1999"
    assert log_tail(tmp_path / "missing.log").startswith("(log unreadable")


@pytest.mark.e2e
def test_server_output_goes_to_the_log_and_stop_reaps_it(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "local-model.log"
    supervisor = LocalModelSupervisor(log_path=log_path, port=free_port()).start()
    try:
        process = supervisor.process
        assert process is not None
        status = supervisor.status()
        assert status == SupervisorStatus(ServerState.RUNNING, status.message, log_path, 0)
        assert supervisor.base_url in status.message
        text = log_path.read_text(errors="replace")
        assert "Uvicorn running" in text and "llama_model_loader" in text  # stderr of both layers
    finally:
        supervisor.stop(timeout_s=15)
    assert _reaped(process, process.pid)
    assert process.returncode is not None and process.returncode != -signal.SIGKILL  # terminated
    assert supervisor.status().state is ServerState.STOPPED
    assert not _answers(supervisor.base_url)


@pytest.mark.e2e
def test_crash_is_reaped_reported_restarted_once_then_left_down(tmp_path: Path) -> None:
    log_path = tmp_path / "local-model.log"
    seen: list[SupervisorStatus] = []
    supervisor = LocalModelSupervisor(log_path=log_path, port=free_port(), poll_s=0.2,
                                      on_status=seen.append).start()
    try:
        first = supervisor.process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)

        # reaped and reported in plain words, then restarted once on the same port
        _until(lambda: first.returncode is not None, timeout_s=10, what="the crash to be seen")
        assert _reaped(first, first.pid)
        _until(lambda: supervisor.status().state is ServerState.RUNNING
               and supervisor.process is not first, timeout_s=240, what="the restart")
        restarting = [s for s in seen if s.state is ServerState.RESTARTING]
        assert len(restarting) == 1 and restarting[0].restarts == 1
        assert ("The demo model server (llama-cpp-python) stopped unexpectedly with exit code -9 "
                "(signal SIGKILL); last log lines: ") in restarting[0].message
        assert restarting[0].message.endswith("restarting it once.")
        assert supervisor.status().restarts == 1

        # the restarted server is real: a chat completion on the same URL
        response = httpx.post(f"{supervisor.base_url}/chat/completions", timeout=120, json={
            "model": "any", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hi."}]})
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] >= 1

        # a second crash: down for good, and the status names the log
        second = supervisor.process
        assert second is not None
        os.kill(second.pid, signal.SIGSEGV)
        _until(lambda: supervisor.status().state is ServerState.FAILED, timeout_s=10,
               what="the failed state")
        assert _reaped(second, second.pid)
        failed = supervisor.status()
        assert "stopped unexpectedly with exit code -11 (signal SIGSEGV)" in failed.message
        assert "stays down" in failed.message and str(log_path) in failed.message
        assert failed.log_path == log_path and failed.restarts == 1
        time.sleep(1)  # several poll intervals: no third start
        assert supervisor.process is second and not _answers(supervisor.base_url)
        # both runs wrote to the same (appended) log
        server_lines = [line for line in log_path.read_text(errors="replace").splitlines()
                        if not line.startswith("[sparkdocs local-model")]  # not its quotes
        assert sum("Uvicorn running" in line for line in server_lines) == 2
    finally:
        supervisor.stop(timeout_s=15)
    assert supervisor.status().state is ServerState.FAILED  # stop() keeps the failure visible


@pytest.mark.e2e
def test_app_names_url_and_log_passes_log_to_streamlit_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    app_port = free_port()
    cli = subprocess.Popen(
        [sys.executable, "-m", "sparkdocs", "app", "--local-model", "--port", str(app_port),
         "--base-url", "http://127.0.0.1:9/v1"],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        assert cli.stderr is not None
        line = ""
        deadline = time.monotonic() + 240
        while "Demo model" not in line and time.monotonic() < deadline:
            line = cli.stderr.readline()
            assert line or cli.poll() is None, "sparkdocs app exited before the model started"
        log_path = cache / "local-model.log"
        match = re.search(r"at (http://127\.0\.0\.1:\d+/v1) — log: (.+?); point the CLI at it "
                          r"with SPARKDOCS_BASE_URL=(\S+)", line)
        assert match, line
        base_url = match.group(1)
        assert match.group(2) == str(log_path) and match.group(3) == base_url
        assert _answers(base_url) and "Uvicorn running" in log_path.read_text(errors="replace")

        def streamlit_env() -> dict[str, str]:
            for pid in _children(cli.pid):
                raw = Path(f"/proc/{pid}/environ").read_bytes()
                if b"streamlit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    items = raw.decode().split("\0")
                    return dict(item.split("=", 1) for item in items if "=" in item)
            return {}

        _until(lambda: bool(streamlit_env()), timeout_s=30, what="the streamlit child")
        child_env = streamlit_env()
        assert child_env["SPARKDOCS_LOCAL_MODEL_LOG"] == str(log_path)
        assert child_env["SPARKDOCS_BASE_URL"] == base_url

        children = _children(cli.pid)  # the llama.cpp server and streamlit
        assert len(children) == 2, children
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 143
        assert not _answers(base_url)
        _until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
               timeout_s=10, what="both children to be gone")
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


@pytest.mark.e2e
def test_local_model_ctrl_c_from_a_terminal_stops_it_without_a_restart(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group, the server included: the supervisor
    must see a shutdown, not a crash to restart."""
    log_path = tmp_path / "demo.log"
    # as from an interactive shell: SIGINT raises KeyboardInterrupt, whatever runs this test
    code = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv = ['sparkdocs', *sys.argv[1:]]; "
            "runpy.run_module('sparkdocs', run_name='__main__')")
    cli = subprocess.Popen(
        [sys.executable, "-c", code, "local-model", "--port", str(free_port()),
         "--log-file", str(log_path)],
        env={**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")}, cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        process_group=0)
    try:
        assert cli.stderr is not None
        lines = []
        while not lines or "Ctrl-C stops it." not in lines[-1]:
            lines.append(cli.stderr.readline())
            assert lines[-1] or cli.poll() is None, "".join(lines)
        assert any(f"log: {log_path};" in line for line in lines), lines
        server = _children(cli.pid)
        assert len(server) == 1
        time.sleep(0.5)
        os.killpg(cli.pid, signal.SIGINT)
        assert cli.wait(timeout=60) == 130
        rest = cli.stderr.read()
        assert "restarting" not in rest and "stopped unexpectedly" not in rest, rest
        _until(lambda: not Path(f"/proc/{server[0]}").exists(), timeout_s=10,
               what="the server to be gone")
        server_lines = [line for line in log_path.read_text(errors="replace").splitlines()
                        if not line.startswith("[sparkdocs local-model")]  # not its quotes
        assert sum("Uvicorn running" in line for line in server_lines) == 1
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
