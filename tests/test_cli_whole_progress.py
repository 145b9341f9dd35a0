"""`ask --whole` says the parts' states on stderr as they change ("parts: 1 done · 2 prefilling"),
never on stdout, which holds the --json alone. Judged by the process's own stderr lines in order
against the parts the fake server received, and by stdout parsing as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from itertools import pairwise

import pytest
from builders import make_pdf
from corpus import contract_pages
from fakeserver import FakeServer
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdocs.parts import PartProgress, PartState, ProgressWatch, progress_text

PAGES = 30
STATES = [s.value for s in PartState]


def _counts(line: str) -> dict[str, int]:
    """"1 done · 2 prefilling" → {"done": 1, "prefilling": 2}; every state named is a known one."""
    counts = {}
    for item in line.split(" · "):
        number, state = item.split(" ", 1)
        assert state in STATES, line
        counts[state] = int(number)
    return counts


@pytest.mark.integration
def test_whole_says_each_change_of_the_parts_states_on_stderr_and_stdout_stays_json(tmp_path):
    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_pdf(contract_pages(PAGES, per_page=9)))
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
           "SPARKDOCS_MAX_RETRIES": "0", "SPARKDOCS_WARM_UP": "false",
           "SPARKDOCS_ANSWER_TOKENS": "200"}
    with FakeServer() as server:
        server.behaviour.max_model_len = 4_000
        server.behaviour.max_num_seqs = 2  # the gauges: this server's own requests in flight
        server.behaviour.latency_s = 0.6  # each part takes a moment: its states can be seen
        server.behaviour.token_delay_s = 0.1
        env["SPARKDOCS_BASE_URL"] = server.base_url
        run = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", str(pdf), "Who pays?",
                              "--whole", "--json"], capture_output=True, text=True, timeout=300,
                             check=False, env=env)
        parts_sent = sum("<document" in r["messages"][-1]["content"]
                         for r in server.behaviour.requests)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)  # stdout is the JSON alone
    assert printed["coverage"] == "all" and len(printed["parts"]) == parts_sent >= 2
    lines = [m.group(1) for m in re.finditer(r"^  parts: (.+)$", run.stderr, re.M)]
    assert len(lines) >= 3, run.stderr  # not only the start and the end
    counts = [_counts(line) for line in lines]
    assert all(sum(c.values()) == parts_sent for c in counts)
    assert all(a != b for a, b in pairwise(lines))  # a line only when the summary changes
    done = [c.get("done", 0) for c in counts]
    not_sent = [c.get("not sent yet", 0) for c in counts]
    assert done == sorted(done) and not_sent == sorted(not_sent, reverse=True)  # forward only
    assert done[0] < parts_sent and counts[-1] == {"done": parts_sent}  # the last: all done
    assert any(c.keys() - {"done", "not sent yet"} for c in counts)  # seen while in flight
    assert "parts:" not in run.stdout


@settings(deadline=None)  # a thread per example: its start is the machine's, not the code's
@given(events=st.lists(st.tuples(st.sampled_from(["sent", "first", "read", "failed"]),
                                 st.integers(1, 4)), max_size=30))
def test_a_watch_says_each_summary_once_and_the_last_states_on_leaving(events):
    """Driven by hand (no thread timing): what the watch says on leaving is the summary of the
    states then, and it never says the same summary twice in a row."""
    progress = PartProgress(4)
    said: list[str] = []
    with ProgressWatch(progress, said.append, every_s=0.001):
        for kind, number in events:
            if kind == "sent":
                progress.sent(number)
            elif kind == "first":
                progress.first_token(number)
            else:
                progress.ended(number, read=kind == "read")
    assert said and said[-1] == progress_text(progress.states())
    assert all(a != b for a, b in pairwise(said))
