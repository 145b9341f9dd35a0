"""Hostile inputs benchmark (issue #11): each bomb or hostile file is built here, then
`python -m sparkdocs count PATH` runs on it in its own child process. The table shows, side by
side, the input's size on disk, what it declares or inflates to, the configured limit that
applies, how the command ended, its peak RSS (ru_maxrss from wait4, which on Linux includes
the child's own waited-for children, such as the PDF reader) and its wall time.

    python tests/benchmarks/bench_bombs.py [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

from builders import (  # noqa: E402
    add_footnotes,
    make_docx,
    make_docx_of_paragraphs,
    make_docx_with_big_media,
    make_pdf_stream_bomb,
    make_tar_bz2_bomb,
    make_tar_header_bomb,
    make_zip,
    replace_docx_part,
)

TIMEOUT_S = 300
GIB = 2**30
MIB = 2**20
BACKTRACKING = "a*" * 30 + "b"


@dataclass(frozen=True)
class Case:
    name: str
    declared: str
    limit: str
    build: Callable[[Path], tuple[list[str], Path]]  # → (extra CLI args, path on disk)
    before: str  # what the same input did before issue #11, as reported there


def _file(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def backtracking_zip(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "backtrack.zip", make_zip({".gitignore": BACKTRACKING.encode() + b"\n",
                                                   "a" * 200: b"hello\n"}))


def backtracking_exclude(d: Path) -> tuple[list[str], Path]:
    return ["--exclude", BACKTRACKING], _file(d, "small.zip", make_zip({"a" * 200: b"hello\n"}))


def nested_gitignores(d: Path) -> tuple[list[str], Path]:
    root = d / "nested"
    for i in range(8000):
        folder = root / f"p{i % 20}" / f"d{i}"
        folder.mkdir(parents=True)
        (folder / ".gitignore").write_text("*.tmp\n")
        (folder / "m.py").write_text(f"x = {i}\n")
    return [], root


def docx_media(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "media.docx", make_docx_with_big_media(2 * GIB))


def docx_bad_footnotes(d: Path) -> tuple[list[str], Path]:
    data = replace_docx_part(add_footnotes(make_docx()), "word/footnotes.xml", b"<w:footnotes><x")
    return [], _file(d, "footnotes.docx", data)


def docx_million(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "million.docx", make_docx_of_paragraphs(1_000_000))


def pdf_stream(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "stream.pdf", make_pdf_stream_bomb(2 * GIB))


def tar_bz2(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "bomb.tar.bz2", make_tar_bz2_bomb(100 * GIB))


def tar_pax(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "pax.tar.bz2", make_tar_header_bomb(b"x", GIB))


def markdown_spaces(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "spaces.md", ("# Title" + " " * 20_000 + "x\n\nbody\n").encode())


def deep_zip(d: Path) -> tuple[list[str], Path]:
    return [], _file(d, "deep.zip", make_zip({"/".join(["d"] * 2000) + "/f.py": b"x = 1\n",
                                              "a.py": b"y = 2\n"}))


def fifo(d: Path) -> tuple[list[str], Path]:
    path = d / "pipe.txt"
    os.mkfifo(path)
    return [], path


def dev_zero(d: Path) -> tuple[list[str], Path]:
    return [], Path("/dev/zero")


def link_loop(d: Path) -> tuple[list[str], Path]:
    (d / "loop-a").symlink_to(d / "loop-b")
    (d / "loop-b").symlink_to(d / "loop-a")
    return [], d / "loop-a"


def one_line_50mb(d: Path) -> tuple[list[str], Path]:
    import random

    rng = random.Random(11)  # random letters: the most tokens per byte, the harshest count
    line = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(MIB))
    return [], _file(d, "line.txt", line * 50 + b" caf\xe9")


def stray_byte_4mb(d: Path) -> tuple[list[str], Path]:
    line = "Grüße aus München — naïve résumé. " * 10 + "\n"
    data = (line * (4 * MIB // len(line.encode()))).encode() + b"caf\xe9\n"
    return [], _file(d, "stray.txt", data)


CASES = [
    Case("zip whose .gitignore is `a*`×30`b`", "31 wildcards", "3 wildcards (≤2 `**`) per pattern", backtracking_zip, "hung the whole app (GIL held)"),
    Case("`--exclude a*`×30`b`", "31 wildcards", "3 wildcards per pattern", backtracking_exclude, "hung"),
    Case("8,000 folders, a .gitignore in each", "8,000 .gitignore files", "ancestor look-ups; 30 s matching budget", nested_gitignores, "74 s"),
    Case("DOCX with a 2 GiB media part", "2,048 MiB", "XML parts ≤ 64 MiB; media never inflated", docx_media, "4.3 GB RSS"),
    Case("DOCX with malformed word/footnotes.xml", "–", "every XML part parsed once, safely", docx_bad_footnotes, "traceback"),
    Case("DOCX of a million one-word paragraphs", "37 MB of XML", "XML ≤ 64 MiB; body streamed, one paragraph at a time", docx_million, "~750 MB (issue #20)"),
    Case("PDF whose content stream inflates to 2 GiB", "2,048 MiB", "PDF reader child: 1,024 MiB address space, 300 s CPU", pdf_stream, "3.3 GB RSS"),
    Case("tar.bz2 declaring 100 GiB", "102,400 MiB", "512 MiB unpacked, ratio 200:1, by stream position", tar_bz2, "minutes (decompressed it all)"),
    Case("tar.bz2 whose pax header declares 1 GiB", "1,024 MiB", "the same budget, charged before tarfile reads", tar_pax, "1.1 GB RSS, 17 s (measured here)"),
    Case("Markdown heading + 20,000 spaces + `x`", "1 line", "linear heading parse", markdown_spaces, "hung (19 s at 2,000 spaces; cubic)"),
    Case("zip with a path 2,000 folders deep", "2,000 levels", "128 folders deep", deep_zip, "RecursionError traceback"),
    Case("a FIFO named directly", "–", "regular files only", fifo, "hung"),
    Case("/dev/zero", "endless", "regular files only", dev_zero, "read until out of memory"),
    Case("symbolic link loop", "–", "regular files only", link_loop, "traceback"),
    Case("50 MB one-line text (one Latin-1 byte)", "52,428,805 characters on one line", "charset sample 64 KiB; parts ≤ 64K chars", one_line_50mb, "42 s, 2.6 GB"),
    Case("4 MB UTF-8 with one stray Latin-1 byte", "1 invalid byte", "UTF-8 when valid ≥ stray bytes", stray_byte_4mb, "refused whole"),
]


def run_count(args: list[str], path: Path, cache: Path) -> tuple[int | None, float, float, str]:
    """(exit code or None on timeout, peak RSS MiB, seconds, first line of stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARKDOCS_CACHE_DIR": str(cache)}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "sparkdocs", "count", str(path), *args],
                                   stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = start + TIMEOUT_S
        code: int | None = None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline:
                process.kill()
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        process.returncode = code if code is not None else -9
        err.seek(0)
        text = err.read().decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any("Traceback" in line for line in lines):
        return code, usage.ru_maxrss / 1024, elapsed, "TRACEBACK: " + lines[-1]
    # The CLI's console wraps long messages; a message starts at "error:" or "warning:".
    joined = " ".join(lines)
    starts = [i for i in (joined.find("error:"), joined.find("warning:")) if i >= 0]
    return code, usage.ru_maxrss / 1024, elapsed, joined[min(starts):] if starts else joined


AT_ONCE = """
import json, resource, sys, threading, time
from pathlib import Path
from sparkdocs.config import Settings
from sparkdocs.ingest import Upload
from sparkdocs.workspace import Workspace

cache, slots, paths = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
workspace = Workspace(Settings(cache_dir=cache, max_concurrent_ingests=slots))
workspace.store.list_sessions()
tokenizer = workspace.prompts.tokenizer
tokenizer.count("warm")
uploads = [Upload(f"upload-{n}.docx", Path(p).read_bytes()) for n, p in enumerate(paths)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
times = []

def read(upload):
    start = time.perf_counter()
    workspace.load_uploads([upload], workspace.ingest_options())
    times.append(time.perf_counter() - start)

threads = [threading.Thread(target=read, args=(u,)) for u in uploads]
start = time.perf_counter()
for thread in threads:
    thread.start()
worst = 0.0
note = "A page of another user: its sessions listed and a question counted. " * 15
while any(t.is_alive() for t in threads):  # another user's page, every half second
    tick = time.perf_counter()
    workspace.store.list_sessions()
    tokenizer.count(note)
    worst = max(worst, time.perf_counter() - tick)
    time.sleep(0.5)
for thread in threads:
    thread.join()
print(json.dumps({"before": before, "wall": time.perf_counter() - start,
                  "each": sorted(times), "worst_page": worst}))
"""


def uploads_at_once(count: int, slots: int) -> str:
    """`count` different million-paragraph DOCX uploads read at once in one process, as the
    app reads them, with `slots` read at a time; another user's page is timed meanwhile."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = [_file(directory, f"u{n}.docx", make_docx_of_paragraphs(1_000_000, seed=n))
                 for n in range(count)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with tempfile.TemporaryFile() as out:
            process = subprocess.Popen([sys.executable, "-c", AT_ONCE, str(directory / "cache"),
                                        str(slots), *map(str, paths)], stdout=out, env=env)
            _, status, usage = os.wait4(process.pid, 0)
            out.seek(0)
            text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        return f"| {count} at once, {slots} read at a time | failed: {text[-200:]} |"
    report = json.loads(text)
    each = report["each"]
    peak = usage.ru_maxrss / 1024
    return (f"| {count} DOCX uploads of a million paragraphs at once, {slots} read at a time "
            f"| {peak:,.0f} MB (idle {report['before']:,} MB; target < 1,024 MB) "
            f"| {report['wall']:.0f} s | {each[0]:.0f}–{each[-1]:.0f} s "
            f"| {report['worst_page']:.2f} s (target ≤ 5 s) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="Also write the table to this file.")
    parser.add_argument("--only-uploads", action="store_true",
                        help="Only the uploads-at-once rows (a few minutes).")
    args = parser.parse_args()
    uploads = [
        "",
        "Uploads at once in one process (the app), issue #20: before, four took the app from "
        "262 MB to 2.7 GB and other users' pages waited up to 9 s.",
        "",
        "| uploads | peak RSS | all read in | each upload (waiting included) | another user's page, worst |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for count, slots in ((1, 2), (4, 2), (4, 4)):
        uploads.append(uploads_at_once(count, slots))
        print(uploads[-1], file=sys.stderr, flush=True)
    if args.only_uploads:
        print("\n".join(uploads))
        return
    rows = [
        f"Hostile inputs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; `sparkdocs count` each in "
        f"its own process (timeout {TIMEOUT_S} s).",
        "",
        "| case | on disk | declares / inflates to | before (#11) | limit that applies | exit | peak RSS | time | what the user sees |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            extra, path = case.build(directory)
            if path.is_dir():
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            elif path.is_file():
                size = path.stat().st_size
            else:
                size = 0
            code, peak, seconds, first = run_count(extra, path, directory / "cache")
        shown = first if len(first) <= 220 else first[:220] + "…"
        rows.append(f"| {case.name} | {size:,} B | {case.declared} | {case.before} | {case.limit} | "
                    f"{'timeout' if code is None else code} | {peak:,.0f} MB | {seconds:.1f} s | "
                    f"{shown.replace('|', '/')} |")
        print(rows[-1], file=sys.stderr, flush=True)
    table = "\n".join(rows + uploads)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
