"""Side-by-side measurement helpers: each contender runs as its own process, so wall time and
peak memory (ru_maxrss of exactly that child, from wait4) are comparable within one run."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float
    stdout: str


def _as_installed(env: dict[str, str]) -> dict[str, str]:
    """Every contender runs as a user's shell runs it: bytecode cached (a shell that sets
    PYTHONDONTWRITEBYTECODE makes an edited module compile on every run), output buffered."""
    return {key: value for key, value in env.items()
            if key not in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")}


def run_measured(command: list[str], *, env: dict[str, str] | None = None, repeat: int = 3) -> Measured:
    """Best of `repeat` runs (the machine is shared; the minimum is the least noisy figure)."""
    best: Measured | None = None
    for _ in range(repeat):
        with tempfile.TemporaryFile() as out:
            start = time.perf_counter()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL,
                                       env=_as_installed({**os.environ, **(env or {})}))
            _, status, usage = os.wait4(process.pid, 0)
            elapsed = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise RuntimeError(f"{' '.join(command[:4])} failed with {process.returncode}")
            out.seek(0)
            result = Measured(elapsed, usage.ru_maxrss / 1024, out.read().decode(errors="replace"))
        if best is None or result.seconds < best.seconds:
            best = result
    assert best is not None
    return best


def interleaved(first: list[str], second: list[str], *, pairs: int,
                env: dict[str, str] | None = None,
                before_each: Callable[[int], None] | None = None) -> tuple[list[Measured], list[Measured]]:
    """`pairs` runs of each command, alternating (first, second, first, ...), so a noisy moment
    on a shared machine hits both sides alike. `before_each(i)` runs untimed before pair i."""
    a: list[Measured] = []
    b: list[Measured] = []
    for i in range(pairs):
        if before_each is not None:
            before_each(i)
        a.append(run_measured(first, env=env, repeat=1))
        b.append(run_measured(second, env=env, repeat=1))
    return a, b


def summary(runs: list[Measured]) -> str:
    """'best s (median s), peak MB' of a list of runs."""
    seconds = sorted(r.seconds for r in runs)
    return (f"{seconds[0]:.2f} s (median {statistics.median(seconds):.2f}), "
            f"{max(r.peak_mb for r in runs):.0f} MB")
