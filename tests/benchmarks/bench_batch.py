"""Batch scheduling benchmark: makespan against the ideal (total work / N) with a fake server
that injects a fixed latency per request, so the figure measures sparkdocs' scheduling alone.

    python tests/benchmarks/bench_batch.py [--docs 48] [--latency 0.5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from builders import synthetic_document_text  # noqa: E402

from sparkdocs.batch import BatchOptions, BatchSummarizer, collect_items  # noqa: E402
from sparkdocs.client import ModelClient  # noqa: E402
from sparkdocs.config import Settings  # noqa: E402
from sparkdocs.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkdocs-batch-"))
    (work / "in").mkdir()
    for i in range(args.docs):
        (work / "in" / f"d{i:03}.md").write_text(synthetic_document_text(2000, seed=i))
    server = subprocess.Popen([sys.executable, str(HERE.parent / "fakeserver.py"), str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()
    try:
        settings = Settings(base_url=base_url, cache_dir=work / "cache")
        workspace = Workspace(settings)
        items = collect_items(workspace, [str(work / "in")])
        for item in items:  # ingest first: the benchmark measures scheduling, not parsing
            item.load()
        options = BatchOptions(out_dir=work / "out", concurrency=args.concurrency, max_tokens=16)
        client = ModelClient(settings)
        client.capabilities()  # discovery once, outside the timed run
        started = time.perf_counter()
        outcomes = BatchSummarizer(workspace, client, options).run(items)
        makespan = time.perf_counter() - started
        stats = httpx.get(base_url.replace("/v1", "/stats")).json()
    finally:
        server.terminate()
    assert all(o.status == "done" for o in outcomes)
    ideal = args.docs * args.latency / args.concurrency
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("| documents | concurrency | latency/request | ideal | makespan | ratio | max in flight | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.docs} | {args.concurrency} | {args.latency:.2f} s | {ideal:.2f} s | {makespan:.2f} s | "
          f"{makespan / ideal:.3f}x (target <= 1.1x) | {stats['max_in_flight']} | {peak:.0f} MB |")


if __name__ == "__main__":
    main()
