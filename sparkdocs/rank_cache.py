"""The Llama 3 BPE ranks kept in the cache folder in a form that loads ~4x faster than Meta's
base64 file (marshal: ~30 ms instead of ~125 ms), so a one-shot command starts sooner.

The file is versioned by name (the source's sha256, this format, Python's marshal version), so
a new tokenizer or format never reads an old file. It is written whole to a temporary file and
renamed into place (two processes writing at once each rename a complete file), and checked on
every read (a regular file of a sane size, header, sha256 of the payload, its shape): a
damaged file is rebuilt from the source, never used, and a FIFO or a device in its place is
never opened. The payload is the tokens in rank order, so the ranks are 0…127,999 by
construction. marshal is not meant for untrusted bytes, but this file lives
beside the store, which anyone able to write it could already change."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import marshal
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .tokens import LLAMA3_RANKS_SHA256, NUM_BASE_TOKENS, llama3_source_ranks

log = logging.getLogger(__name__)

FORMAT = 2  # 1 was a marshalled dict
MAGIC = b"sparkdocs llama3 ranks\n"
MAX_BYTES = 8 * 2**20  # the file is ~1.5 MB
_DIGEST = 32  # sha256 of the payload, right after MAGIC


def rank_cache_path(cache_dir: Path) -> Path:
    """Where the ranks of this source and format live under the cache folder."""
    return (cache_dir / "tokenizer"
            / f"llama3-{LLAMA3_RANKS_SHA256[:16]}-f{FORMAT}-m{marshal.version}.ranks")


def read_ranks(path: Path) -> dict[bytes, int] | None:
    """The ranks in `path`, or None when it is missing or damaged in any way (logged)."""
    try:
        found = path.stat()
        if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_BYTES:
            log.warning("the tokenizer cache %s is not a file of ranks; building it again", path)
            return None
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
        tokens = marshal.loads(payload)
    except Exception as exc:  # any damage, even a crafted code object, means rebuild
        log.warning("the tokenizer cache %s is unreadable (%s); building it again", path, exc)
        return None
    well_formed = (type(tokens) is list and len(tokens) == NUM_BASE_TOKENS
                   and set(map(type, tokens)) == {bytes})
    ranks = dict(zip(tokens, range(NUM_BASE_TOKENS), strict=True)) if well_formed else {}
    if len(ranks) != NUM_BASE_TOKENS:  # not a list of bytes, or a token twice
        log.warning("the tokenizer cache %s does not hold %d distinct tokens; building it again",
                    path, NUM_BASE_TOKENS)
        return None
    return ranks


def write_ranks(path: Path, ranks: dict[bytes, int]) -> None:
    """Write `ranks` to `path` atomically; a folder that cannot be written only costs speed."""
    payload = marshal.dumps(sorted(ranks, key=ranks.__getitem__))
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".",
                                             suffix=".tmp")
        os.fchmod(handle, 0o644)  # a shared cache folder: other users read it too
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

