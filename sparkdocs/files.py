"""Files written whole or not at all: a temporary file beside the target, flushed to disk, then
renamed over it, so a crash, a full disk or a Ctrl-C never leaves half a file."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: Path, text: str, *, private: bool = False) -> Path:
    """Write `text` to `path` atomically. The file's mode is the umask's, as for any file the
    user writes, or owner-only with `private` (answers kept for recovery)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
