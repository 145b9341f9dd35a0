"""Two vLLM CPU engines behind the real vLLM router against one engine alone: the makespan of
`summarize` over 12 small documents, one request in flight per engine, beside the ideal (one
summary's time alone × 12 / engines). Real engines, so the figure includes the machine's noise:
on a shared 2-core box two engines also share the cores.

    python tests/benchmarks/bench_router.py [--docs 12]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_e2e_router import Cluster, _documents, _start_router, _summarize  # noqa: E402
from vllm_tier import start_vllm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=12)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkdocs-router-bench-"))
    with ThreadPoolExecutor(2) as pool:
        engines = list(pool.map(lambda i: start_vllm(work / f"engine{i}", max_model_len=8192,
                                                     kv_cache_gib=2), (1, 2)))
    router = None
    try:
        router, port, log = _start_router(work, [e.root_url for e in engines])
        both = Cluster(engines, router, port, log)
        docs = _documents(work / "docs", 2 * args.docs + 1, seed=700)
        alone = _summarize(both, work / "alone", docs[-1:], concurrency=1)[1]
        _, routed, _ = _summarize(both, work / "routed", docs[:args.docs], concurrency=1)
        os.killpg(router.pid, signal.SIGTERM)
        router, port, log = _start_router(work, [engines[0].root_url])
        one = Cluster(engines[:1], router, port, log)
        _, single, _ = _summarize(one, work / "single", docs[args.docs:2 * args.docs], concurrency=2)
        print(f"one summary alone: {alone:.1f} s; {args.docs} summaries, 2 in flight:")
        print("| set-up | makespan | ideal | ratio |\n| --- | --- | --- | --- |")
        for name, seconds, engines_n in (("2 engines behind the router", routed, 2),
                                         ("1 engine", single, 1)):
            ideal = alone * args.docs / engines_n
            print(f"| {name} | {seconds:.1f} s | {ideal:.1f} s | {seconds / ideal:.2f} |")
    finally:
        if router is not None and router.poll() is None:
            os.killpg(router.pid, signal.SIGTERM)
        for engine in engines:
            engine.stop()


if __name__ == "__main__":
    main()
