"""compose.yaml wiring, checked from the file and by a real Compose parser (no Docker engine
runs here, so `docker-compose config` is the strongest check available)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _flag(command: list[str], name: str) -> str:
    return str(command[command.index(name) + 1])


def test_guide_flags_and_model(compose):
    command = [str(c) for c in compose["services"]["vllm"]["command"]]
    assert command[:3] == ["vllm", "serve", "nvidia/Llama-3.3-70B-Instruct-FP8"]
    assert compose["services"]["vllm"]["image"] == "nvcr.io/nvidia/vllm:25.09-py3"
    assert _flag(command, "--download-dir") == "/root/.cache/huggingface"
    assert _flag(command, "--gpu-memory-utilization") == "${VLLM_GPU_MEMORY_UTILIZATION:-0.80}"
    assert _flag(command, "--max-num-batched-tokens") == "${VLLM_MAX_NUM_BATCHED_TOKENS:-32768}"
    assert _flag(command, "--max-num-seqs") == "${VLLM_MAX_NUM_SEQS:-32}"
    assert "--enable-prefix-caching" in command and "--enable-prompt-tokens-details" in command
    assert "--trust-remote-code" not in command


def test_same_context_length_in_vllm_and_app(compose):
    vllm = [str(c) for c in compose["services"]["vllm"]["command"]]
    app = compose["services"]["app"]["environment"]
    assert _flag(vllm, "--max-model-len") == app["SPARKDOCS_CONTEXT_LENGTH"] == "${SPARKDOCS_CONTEXT_LENGTH:-65536}"


def test_same_required_api_key(compose):
    assert compose["services"]["vllm"]["environment"]["VLLM_API_KEY"].startswith("${VLLM_API_KEY:?")
    assert compose["services"]["app"]["environment"]["SPARKDOCS_API_KEY"].startswith("${VLLM_API_KEY:?")


def test_app_waits_for_a_healthy_model_service(compose):
    vllm, app = compose["services"]["vllm"], compose["services"]["app"]
    assert app["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert "/health" in " ".join(vllm["healthcheck"]["test"])
    assert vllm["healthcheck"]["start_period"] in {"15m", "20m"}
    assert app["environment"]["SPARKDOCS_BASE_URL"] == "http://vllm:8000/v1"
    assert app["volumes"][0].split(":")[1] == "/data" == app["environment"]["SPARKDOCS_CACHE_DIR"]


def test_ports_bound_to_loopback_by_default(compose):
    assert compose["services"]["app"]["ports"] == [
        "${SPARKDOCS_BIND:-127.0.0.1}:${SPARKDOCS_PORT:-8501}:8501"]


def test_vllm_port_never_follows_sparkdocs_bind(compose):
    """vLLM's --api-key guards only /v1/*: /metrics, /tokenize, /version and /health answer
    anyone who reaches the port, so it stays on loopback (the host's CLI uses it)."""
    assert compose["services"]["vllm"]["ports"] == ["127.0.0.1:${VLLM_PORT:-8000}:8000"]


def test_runtime_settings_from_the_guide(compose):
    vllm = compose["services"]["vllm"]
    assert vllm["ipc"] == "host" and vllm["restart"] == "unless-stopped"
    assert vllm["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "all"
    assert vllm["volumes"][0].endswith(":/root/.cache/huggingface")


def test_no_secrets_in_the_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "API_KEY" not in dockerfile and "HF_TOKEN" not in dockerfile
    assert ".env" in (ROOT / ".dockerignore").read_text()


def _config(*extra: str, key: str | None = "test-key",
            bind: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:  # .ci/run installs it, so CI always runs these
        pytest.skip("docker-compose is not installed (apt install docker-compose; .ci/run does)")
    env = {k: v for k, v in os.environ.items() if k not in {"VLLM_API_KEY", "SPARKDOCS_BIND"}}
    if key:
        env["VLLM_API_KEY"] = key
    if bind:
        env["SPARKDOCS_BIND"] = bind
    return subprocess.run([binary, "-f", str(ROOT / "compose.yaml"), *extra, "config"],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def test_a_real_compose_parser_accepts_it_and_refuses_a_missing_key():
    ok = _config()
    assert ok.returncode == 0, ok.stderr
    rendered = yaml.safe_load(ok.stdout)
    assert rendered["services"]["app"]["environment"]["SPARKDOCS_CONTEXT_LENGTH"] == "65536"
    missing = _config(key=None)
    assert missing.returncode != 0 and "VLLM_API_KEY" in missing.stderr


@pytest.mark.parametrize("profile,context,seqs", [("high-throughput", "16384", "48"), ("extended", "98304", "16"),
                                                  ("balanced", "32768", "32"), ("high-quality", "65536", "16")])
def test_profiles_switch_without_editing_yaml(profile, context, seqs):
    result = _config("--env-file", str(ROOT / "deploy" / "profiles" / f"{profile}.env"))
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    command = [str(c) for c in rendered["services"]["vllm"]["command"]]
    assert _flag(command, "--max-model-len") == context
    assert rendered["services"]["app"]["environment"]["SPARKDOCS_CONTEXT_LENGTH"] == context
    assert _flag(command, "--max-num-seqs") == seqs


def test_the_long_context_profile_serves_128k_with_an_fp8_kv_cache():
    """131,072 tokens of BF16 KV (320 KiB each, ~40 GB) do not fit beside the FP8 weights; in
    FP8 (160 KiB each, ~20 GB) they do: the profile must switch both together."""
    long = yaml.safe_load(_config("--env-file", str(ROOT / "deploy" / "profiles"
                                                    / "long-context.env")).stdout)
    command = [str(c) for c in long["services"]["vllm"]["command"]]
    assert _flag(command, "--max-model-len") == "131072"
    assert _flag(command, "--kv-cache-dtype") == "fp8"
    assert long["services"]["app"]["environment"]["SPARKDOCS_CONTEXT_LENGTH"] == "131072"
    default = yaml.safe_load(_config().stdout)
    assert _flag([str(c) for c in default["services"]["vllm"]["command"]],
                 "--kv-cache-dtype") == "auto"


def _published(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each port as Compose renders it."""
    published = []
    for port in service["ports"]:
        if isinstance(port, dict):  # Compose v2 renders the long syntax
            published.append((port.get("host_ip", ""), str(port["published"]), str(port["target"])))
        else:  # docker-compose 1.x: "0.0.0.0:8501:8501/tcp"
            host, host_port, target = port.rsplit(":", 2)
            published.append((host, host_port, target.split("/")[0]))
    return published


def test_exposing_the_app_keeps_vllm_on_loopback():
    """The LAN configuration, rendered by a real Compose parser: the app's port moves to the
    LAN address, vLLM's stays on 127.0.0.1, and the app still reaches vLLM by service name."""
    result = _config(bind="0.0.0.0")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert _published(services["app"]) == [("0.0.0.0", "8501", "8501")]
    assert _published(services["vllm"]) == [("127.0.0.1", "8000", "8000")]
    assert services["app"]["environment"]["SPARKDOCS_BASE_URL"] == "http://vllm:8000/v1"
    default = yaml.safe_load(_config().stdout)["services"]
    assert _published(default["app"]) == [("127.0.0.1", "8501", "8501")]


def test_app_container_is_hardened():
    """Read-only root filesystem with a writable data volume and a tmpfs /tmp, no Linux
    capabilities, no privilege gain: a compromised app process can change nothing but its
    own data."""
    result = _config(bind="0.0.0.0")
    assert result.returncode == 0, result.stderr
    app = yaml.safe_load(result.stdout)["services"]["app"]
    assert app["read_only"] is True
    assert app["cap_drop"] == ["ALL"] and not app.get("cap_add")
    assert "no-new-privileges:true" in app["security_opt"]
    tmpfs = app["tmpfs"] if isinstance(app["tmpfs"], list) else [app["tmpfs"]]
    assert "/tmp" in [t.split(":")[0] for t in tmpfs]
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in app["volumes"]]
    assert [v.split(":")[:2] for v in volumes] == [["sparkdocs-data", "/data"]]
    assert app["environment"]["SPARKDOCS_CACHE_DIR"] == "/data"
    assert "privileged" not in app or app["privileged"] is False
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER sparkdocs" in dockerfile and "PYTHONDONTWRITEBYTECODE=1" in dockerfile


def test_streamlit_shows_no_tracebacks_and_sends_no_statistics():
    """The installed Streamlit's own reading of .streamlit/config.toml (run from the project
    folder, as the image runs it), so a misspelt option or a value this version does not
    accept would show here."""
    from streamlit.config import ShowErrorDetailsConfigOptions

    assert "none" in {o.value for o in ShowErrorDetailsConfigOptions}
    names = ["client.showErrorDetails", "browser.gatherUsageStats", "logger.hideWelcomeMessage",
             "client.toolbarMode"]
    code = ("import json; from streamlit import config; "
            f"print(json.dumps({{name: config.get_option(name) for name in {names!r}}}))")
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, env={k: v for k, v in os.environ.items()
                                             if not k.startswith("STREAMLIT_")})
    assert shown.returncode == 0, shown.stderr
    options = json.loads(shown.stdout.strip().splitlines()[-1])
    assert options["client.showErrorDetails"] == "none"  # no tracebacks, types or messages
    assert options["browser.gatherUsageStats"] is False
    assert options["logger.hideWelcomeMessage"] is True  # else it looks up the public IP
    assert options["client.toolbarMode"] == "minimal"


# The app under an audit hook that logs every file it opens for writing, every directory it
# makes and every file it renames, removes or opens as a database (Python-level I/O: the app,
# Streamlit, diskcache's SQLite files, tokenizers' caches).
_AUDIT_WRITES = r"""
import os, runpy, sys
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.mkdir": 0, "os.remove": 0, "os.rmdir": 0, "os.rename": 1, "os.symlink": 1,
               "os.link": 1, "os.truncate": 0, "os.chmod": 0, "os.chown": 0, "os.utime": 0,
               "sqlite3.connect": 0, "shutil.copyfile": 1, "shutil.rmtree": 0}
def hook(event, args):
    if event == "open":
        target, flags = args[0], args[2]
        path = target if isinstance(flags, int) and flags & WRITE else None
    elif event in PATH_EVENTS:
        path = args[PATH_EVENTS[event]]
    else:
        return
    if path is None or isinstance(path, int):
        return
    path = os.path.abspath(os.fsdecode(os.fspath(path)))
    os.write(log, f"{event}\t{path}\n".encode())
sys.addaudithook(hook)
sys.argv = ["streamlit", *sys.argv[2:]]
runpy.run_module("streamlit", run_name="__main__", alter_sys=True)
"""


@pytest.mark.e2e
def test_the_app_writes_only_to_its_data_volume_and_tmp(tmp_path):
    """What makes `read_only: true` safe: through an upload, a question, an export and a
    reload, the app writes nowhere but its cache (the /data volume) and the temporary folder
    (the tmpfs /tmp) — not its home, not the image."""

    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright
    from test_e2e_browser import CHROMIUM_ARGS, wait_for_streamlit

    from sparkdocs.local_model import free_port

    cache, temp, home = tmp_path / "data", tmp_path / "tmp", tmp_path / "home"
    for folder in (temp, home):
        folder.mkdir()
    writes = tmp_path / "writes.log"
    port = free_port()
    with FakeServer() as server, (tmp_path / "streamlit.log").open("wb") as log:
        env = {**os.environ, "HOME": str(home), "TMPDIR": str(temp),
               "SPARKDOCS_CACHE_DIR": str(cache), "SPARKDOCS_BASE_URL": server.base_url,
               "PYTHONDONTWRITEBYTECODE": "1"}
        process = subprocess.Popen(
            [sys.executable, "-c", _AUDIT_WRITES, str(writes), "run", str(ROOT / "app.py"),
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_streamlit(url, process, tmp_path / "streamlit.log")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                            args=CHROMIUM_ARGS)
                page = browser.new_page(accept_downloads=True)
                page.goto(url)
                page.locator("input[type=file]").first.set_input_files(files=[
                    {"name": "note.md", "mimeType": "text/markdown",
                     "buffer": b"# Note\nThe supplier delivers within thirty days.\n"}])
                expect(page.get_by_text("note.md · text ·")).to_be_visible(timeout=60_000)
                box = page.get_by_placeholder("Ask about the document")
                box.fill("When is delivery?")
                box.press("Enter")
                expect(page.get_by_text("first token")).to_have_count(1, timeout=60_000)
                with page.expect_download():
                    page.get_by_role("button", name="Export session (Markdown)").click()
                page.reload()
                expect(page.get_by_text("When is delivery?")).to_be_visible(timeout=60_000)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)
    events = [line.split("\t", 1) for line in writes.read_text().splitlines()]
    assert any(path.startswith(str(cache)) for _, path in events)  # the hook saw the cache
    outside = sorted({f"{event} {path}" for event, path in events
                      if not path.startswith((str(cache), str(temp), "/dev/"))})
    assert outside == []
