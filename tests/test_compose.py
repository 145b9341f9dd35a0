"""compose.yaml wiring, checked from the file and by a real Compose parser (no Docker engine
runs here, so `docker-compose config` is the strongest check available)."""

from __future__ import annotations

import os
import shutil
import subprocess
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
    for service in compose["services"].values():
        for port in service["ports"]:
            assert port.startswith("${SPARKDOCS_BIND:-127.0.0.1}:")


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


def _config(*extra: str, key: str | None = "test-key") -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: .ci/run installs Debian's docker-compose"
    env = {k: v for k, v in os.environ.items() if k not in {"VLLM_API_KEY", "SPARKDOCS_BIND"}}
    if key:
        env["VLLM_API_KEY"] = key
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
