"""The Llama 3 BPE ranks kept in the cache folder in a form that loads ~4x faster than Meta's
base64 file (marshal: ~20 ms instead of ~70 ms), so a one-shot command starts sooner.

The file is versioned by name (the source's sha256, this format, Python's marshal version), so
a new tokenizer or format never reads an old file. It is written whole to a temporary file and
renamed into place (two processes writing at once each rename a complete file), and checked on
every read (header, length, sha256 of the payload, entry count): a damaged file is rebuilt
from the source, never used. marshal is not meant for untrusted bytes, but this file lives
beside the store, which anyone able to write it could already change."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import marshal
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .tokens import LLAMA3_RANKS_SHA256, NUM_BASE_TOKENS, llama3_source_ranks

log = logging.getLogger(__name__)

FORMAT = 1
MAGIC = b"sparkdocs llama3 ranks\n"
_DIGEST = 32  # sha256 of the payload, right after MAGIC


def rank_cache_path(cache_dir: Path) -> Path:
    """Where the ranks of this source and format live under the cache folder."""
    return (cache_dir / "tokenizer"
            / f"llama3-{LLAMA3_RANKS_SHA256[:16]}-f{FORMAT}-m{marshal.version}.ranks")


def read_ranks(path: Path) -> dict[bytes, int] | None:
    """The ranks in `path`, or None when it is missing or damaged in any way (logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the tokenizer cache %s (%s); building the ranks again", path, exc)
        return None
    start = len(MAGIC) + _DIGEST
    payload = memoryview(data)[start:]
    if (not data.startswith(MAGIC)
            or hashlib.sha256(payload).digest() != data[len(MAGIC):start]):
        log.warning("the tokenizer cache %s is damaged; building it again", path)
        return None
    try:
        ranks = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as exc:
        log.warning("the tokenizer cache %s is unreadable (%s); building it again", path, exc)
        return None
    if not isinstance(ranks, dict) or len(ranks) != NUM_BASE_TOKENS:
        log.warning("the tokenizer cache %s does not hold %d ranks; building it again", path,
                    NUM_BASE_TOKENS)
        return None
    return ranks


def write_ranks(path: Path, ranks: dict[bytes, int]) -> None:
    """Write `ranks` to `path` atomically; a folder that cannot be written only costs speed."""
    payload = marshal.dumps(ranks)
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".",
                                             suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(MAGIC + hashlib.sha256(payload).digest() + payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        temporary = None
    except OSError as exc:
        log.warning("cannot write the tokenizer cache %s (%s); the next start will parse the "
                    "ranks again", path, exc)
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


@dataclass(frozen=True)
class CachedRanks:
    """A `tokens.RanksLoader`: the ranks from the cache file, else from the package file (then
    written to the cache for the next process)."""

    path: Path

    def __call__(self) -> dict[bytes, int]:
        ranks = read_ranks(self.path)
        if ranks is None:
            ranks = llama3_source_ranks()
            write_ranks(self.path, ranks)
        return ranks


def cached_ranks(cache_dir: Path) -> CachedRanks:
    return CachedRanks(rank_cache_path(cache_dir))

