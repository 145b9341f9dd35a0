"""The tokenizer built beside a one-shot command (sparkdocs.token_child): its ids are Hugging Face
`tokenizers`' ids, a child really runs (the kernel's process table says so), a dead child costs
only time, and no child outlives the command."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import CORPUS

from sparkdocs.tokens import llama3

pytestmark = pytest.mark.integration

SCRIPT = """
import json, os, signal, sys, time
from pathlib import Path
from sparkdocs.rank_cache import cached_ranks
from sparkdocs.token_child import tokenizer_beside

texts = json.loads(Path(sys.argv[1]).read_text())
tok = tokenizer_beside(cached_ranks(Path(sys.argv[2])))
me = os.getpid()
children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
if sys.argv[3] == "kill":
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.2)
ids = [tok.encode(texts[0]), *tok.encode_many(texts[1:])]
counts = [tok.count(texts[0]), *tok.count_many(texts[1:])]
print(json.dumps({"children": children, "ids": ids, "counts": counts, "decoded": tok.decode(ids[0])}))
"""


def _texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "aé Z9\n\t.,;'\"ü中文ß€😀-–—_()[]{}<>|\\/" + "".join(map(chr, range(0x370, 0x3a0)))
    generated = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(60)]
    written = [text[:3000] for sections in CORPUS.values() for _, _, text in sections]
    return [*written, *generated, "<|eot_id|> is text here, never a control token", ""]


def _run(tmp_path: Path, mode: str) -> dict:
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(_texts(len(mode))))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(texts), str(tmp_path / "cache"), mode],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return {**json.loads(result.stdout), "texts": json.loads(texts.read_text())}


@pytest.mark.parametrize("mode", ["alive", "kill"])
def test_ids_from_the_child_are_hugging_faces(tmp_path: Path, hf, mode: str):
    """With the child serving, and with it killed before the first request (built here then)."""
    run = _run(tmp_path, mode)
    assert len(run["children"]) == 1, run["children"]  # it forked
    assert run["counts"] == [len(ids) for ids in run["ids"]]  # counted where the ids are
    for text, ids in zip(run["texts"], run["ids"], strict=True):
        if "<|" in text:  # Hugging Face reads control tokens in text; sparkdocs never does
            assert 128009 not in ids and ids == llama3().encode(text)
        else:
            assert ids == hf.encode(text, add_special_tokens=False).ids
    assert run["decoded"] == run["texts"][0]


PROBE = """
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of the command come here
done = subprocess.run(sys.argv[1:], capture_output=True, timeout=120)
time.sleep(0.5)
left = open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()
print(done.returncode, len(done.stdout), " ".join(left))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux")
def test_no_child_outlives_the_command(tmp_path: Path):
    tree = tmp_path / "repo"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "a.py").write_text("def f(x):\n    return x * 2\n")
    (tree / "README.md").write_text("# repo\n\nA small tree.\n")
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", PROBE, sys.executable, "-m", "sparkdocs",
                             "count", str(tree), "--json"], capture_output=True, text=True,
                            env=env, timeout=180)
    code, printed, *left = result.stdout.split()
    assert (code, left) == ("0", []), result.stdout + result.stderr
    assert int(printed) > 100  # it counted
