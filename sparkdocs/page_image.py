"""A cited PDF page as the reader sees it: one page rendered by PDFium, the quoted words under
a translucent highlight, as PNG bytes for the page to show beside the extracted text.

Bounded work: one page, its longer side at most `max_side` pixels (a poster-sized page is
scaled down, never rendered at full size), the quote found on that page only, and all of it in
a child process under memory and CPU limits (page_worker.py) with a deadline. Words are found
as PDFium lays them out: whitespace and case are ignored, so a quote that runs over a line
break in the PDF still lights up every line it covers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from .errors import SparkdocsError

log = logging.getLogger(__name__)

MAX_SIDE_PX = 1400  # the longer side of a rendered page, in pixels
MAX_SCALE = 2.0  # pixels per PDF point: a small page is not blown up further than this
HIGHLIGHT = (255, 213, 0, 110)  # RGBA: translucent, the words stay readable
OUTLINE = (214, 148, 0, 255)
MEMORY_BYTES = 1024 * 2**20  # the drawing child's address space
CPU_SECONDS = 20  # the drawing child's CPU time; the wall-clock deadline is twice that
_WORKER = Path(__file__).with_name("page_worker.py")


class PageImageError(SparkdocsError):
    """The page cannot be drawn (no such page, a damaged or locked PDF, over the limits)."""


def page_png(pdf: bytes, page_number: int, *, quote: str = "", password: str | None = None,
             max_side: int = MAX_SIDE_PX, memory_bytes: int = MEMORY_BYTES,
             cpu_seconds: int = CPU_SECONDS) -> bytes:
    """Page `page_number` (from 1) of `pdf` as PNG bytes, with `quote` highlighted where it
    stands on that page (nothing highlighted when it is not there)."""
    request = {"page": page_number, "quote": quote, "password": password,
               "max_side": max_side, "max_scale": MAX_SCALE, "fill": HIGHLIGHT,
               "outline": OUTLINE}
    command = [sys.executable, "-I", str(_WORKER), str(memory_bytes), str(cpu_seconds)]
    try:
        done = subprocess.run(command, input=json.dumps(request).encode() + b"\n" + pdf,
                              capture_output=True, timeout=2 * cpu_seconds + 10, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PageImageError(f"Drawing page {page_number} took over {2 * cpu_seconds + 10} s; "
                             "the text beside it is what the page says.") from exc
    if done.returncode == 0 and done.stdout.startswith(b"\x89PNG"):
        return done.stdout
    try:
        message = json.loads(done.stderr.decode(errors="replace").strip().splitlines()[-1])["message"]
    except (ValueError, IndexError, KeyError, TypeError):
        message = (f"the drawing process ended with status {done.returncode} (over its "
                   f"{memory_bytes // 2**20} MiB or {cpu_seconds} s CPU limit?)")
    raise PageImageError(f"Page {page_number} cannot be drawn: {message}.")
