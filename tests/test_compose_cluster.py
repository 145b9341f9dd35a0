"""The cluster set-ups (deploy/cluster/): several Sparks behind vLLM's router, and two Sparks as
one engine. Read from the files, rendered by a real Compose parser, and the router's flags
checked against the installed `vllm-router` itself."""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_compose import _flag, _published

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "deploy" / "cluster"
ROUTER_BINARY = Path.home() / ".cache" / "sparkdocs" / "router-venv" / "bin" / "vllm-router"
pytestmark = pytest.mark.integration


def _render(file: str, env_file: str | None, *, key: str | None = "test-key",
            profile: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:  # .ci/run installs it, so CI always runs these
        pytest.skip("docker-compose is not installed (apt install docker-compose; .ci/run does)")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("VLLM_", "SPARKDOCS_", "RAY_", "SPARK_", "ENGINE_", "ROUTER_"))}
    if key:
        clean["VLLM_API_KEY"] = key
    clean.update(env)
    args = [binary, "-f", str(CLUSTER / file)]
    if env_file:
        args += ["--env-file", str(CLUSTER / env_file)]
    if profile:
        args += ["--profile", profile]
    return subprocess.run([*args, "config"], capture_output=True, text=True, env=clean, cwd=ROOT)


def _services(file: str, env_file: str | None, **kwargs: str) -> dict:
    result = _render(file, env_file, **kwargs)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def _env_file(name: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (CLUSTER / name).read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k: v for k, v in pairs}


def test_a_real_compose_parser_accepts_every_set_up_and_refuses_a_missing_key():
    for file, env_file in [("compose.router.yaml", "spark1.env"), ("compose.engine.yaml", "spark2.env")]:
        assert _render(file, env_file).returncode == 0
        missing = _render(file, env_file, key=None)
        assert missing.returncode != 0 and "VLLM_API_KEY" in missing.stderr
    for profile in ("head", "worker"):
        assert _render("compose.tp2.yaml", "tp2.env", profile=profile).returncode == 0
    no_link = _render("compose.engine.yaml", None)
    assert no_link.returncode != 0 and "SPARK_LINK_ADDR" in no_link.stderr


def test_the_router_fronts_every_engine_with_cache_aware_routing_and_retries():
    services = _services("compose.router.yaml", "spark1.env")
    router = services["router"]
    workers = router["environment"]["ENGINE_URLS"].split()
    assert workers == _env_file("spark1.env")["ENGINE_URLS"].split()
    assert workers[0] == "http://vllm:8000" and len(workers) >= 2
    assert all(url.startswith("http://") and url.endswith(":8000") for url in workers)
    script = router["entrypoint"][2]
    # the worker list is split into one argument per engine; the key is quoted, never a flag value
    assert shlex.split(script)[-2:] == ["--worker-urls", "$$ENGINE_URLS"]
    assert '--api-key "$$VLLM_API_KEY"' in script
    assert router["environment"]["VLLM_API_KEY"] == "test-key"
    command = [str(c) for c in router["command"]]
    assert _flag(command, "--policy") == "cache_aware"
    assert int(_flag(command, "--retry-max-retries")) >= 1
    assert int(_flag(command, "--request-timeout-secs")) >= 1800  # a whole-document prefill
    assert services["app"]["environment"]["SPARKDOCS_BASE_URL"] == "http://router:8100/v1"
    assert services["app"]["depends_on"]["router"]["condition"] == "service_healthy"
    assert router["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_every_router_flag_is_one_the_installed_router_knows():
    if not ROUTER_BINARY.exists():
        pytest.fail("vllm-router is not installed: run .ci/install-vllm-router (.ci/run does)")
    shown = subprocess.run([str(ROUTER_BINARY), "--help"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    router = yaml.safe_load((CLUSTER / "compose.router.yaml").read_text())["services"]["router"]
    flags = [str(c) for c in router["command"] if str(c).startswith("--")]
    flags += [w for w in shlex.split(router["entrypoint"][2]) if w.startswith("--")]
    unknown = [flag for flag in flags if f"{flag} " not in shown.stdout and f"{flag}\n" not in shown.stdout]
    assert unknown == []
    assert "cache_aware" in shown.stdout and "consistent_hash" in shown.stdout


def test_each_engine_serves_with_todays_flags():
    today = yaml.safe_load(_render("../../compose.yaml", None).stdout)["services"]["vllm"]
    head = _services("compose.router.yaml", "spark1.env")["vllm"]
    second = _services("compose.engine.yaml", "spark2.env")["vllm"]
    for engine in (head, second):
        assert engine["command"] == today["command"]
        assert engine["image"] == today["image"]
        assert engine["environment"]["VLLM_API_KEY"] == "test-key"


def test_no_engine_or_router_port_beyond_loopback_but_the_direct_link():
    """vLLM's --api-key guards only /v1/*: an engine's port is on loopback, and a second Spark's
    also on its direct-link address (a private point-to-point network, the README's LAN section),
    never 0.0.0.0 or the LAN."""
    head = _services("compose.router.yaml", "spark1.env")
    assert _published(head["vllm"]) == [("127.0.0.1", "8000", "8000")]
    assert _published(head["router"]) == [("127.0.0.1", "8100", "8100")]
    assert _published(head["app"]) == [("127.0.0.1", "8501", "8501")]
    lan = _services("compose.router.yaml", "spark1.env", SPARKDOCS_BIND="0.0.0.0")
    assert _published(lan["app"]) == [("0.0.0.0", "8501", "8501")]
    assert _published(lan["vllm"]) == [("127.0.0.1", "8000", "8000")]
    assert _published(lan["router"]) == [("127.0.0.1", "8100", "8100")]
    second = _services("compose.engine.yaml", "spark2.env")["vllm"]
    link = _env_file("spark2.env")["SPARK_LINK_ADDR"]
    assert _published(second) == [("127.0.0.1", "8000", "8000"), (link, "8000", "8000")]
    assert ipaddress.ip_address(link).is_private and link != "0.0.0.0"
    assert f"http://{link}:8000" in _env_file("spark1.env")["ENGINE_URLS"].split()
    lan_section = (ROOT / "README.md").read_text().split("### Exposing the app on a LAN")[1]
    assert "SPARK_LINK_ADDR" in lan_section.split("\n### ")[0]


def test_two_sparks_as_one_engine_tensor_parallel_over_ray():
    services = _services("compose.tp2.yaml", "tp2.env", profile="head")
    head, worker, app = services["vllm-head"], services["ray-worker"], services["app"]
    command = [str(c) for c in head["command"]]
    assert _flag(command, "--tensor-parallel-size") == "2"
    assert _flag(command, "--distributed-executor-backend") == "ray"
    assert _flag(command, "--host") == "127.0.0.1"  # host network: vLLM itself on loopback
    assert "--enable-prefix-caching" in command and "--enable-prompt-tokens-details" in command
    assert _flag(command, "--max-model-len") == app["environment"]["SPARKDOCS_CONTEXT_LENGTH"] == "131072"
    assert head["image"] == worker["image"]  # Ray and vLLM must match on both Sparks
    for service in (head, worker, app):
        assert service["network_mode"] == "host" and not service.get("ports")
    # start-up checks: Ray head on the link, both GPUs joined, and only then vLLM
    script = head["entrypoint"][2]
    order = [script.index(s) for s in ('ray start --head --node-ip-address="$$RAY_HEAD_ADDR"',
                                       'ray.cluster_resources().get("GPU", 0) < 2',
                                       "exec vllm serve")]
    assert order == sorted(order)
    assert "sys.exit(" in script
    assert '--address="$$RAY_HEAD_ADDR:6379"' in worker["entrypoint"][2]
    assert head["healthcheck"]["start_period"] == "30m"
    assert "--server.address=127.0.0.1" in app["command"]
    assert app["environment"]["SPARKDOCS_BASE_URL"] == "http://127.0.0.1:8000/v1"
    assert ipaddress.ip_address(head["environment"]["RAY_HEAD_ADDR"]).is_private
