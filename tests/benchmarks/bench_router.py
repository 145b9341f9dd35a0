"""Two vLLM CPU engines behind the real vLLM router against one engine alone: the makespan of
`summarize` over 12 small documents, one request in flight per engine, beside the ideal (one
summary's time alone × 12 / engines).

One engine per machine, as on Sparks: each engine is pinned to a core of its own (engine 1 on
core 0, engine 2 on core 1; every process and thread, see vllm_tier.start_vllm). "Alone" is one
summary on one pinned engine with the other idle, the compute one engine has in the batch; the
one-engine row is engine 1 on its one core. The client (this process) and the router are not
pinned: they have no machine of their own here, so they take turns on the engines' cores, and
the per-phase CPU seconds printed below show how much. Each engine is warmed by one untimed
summary first, so no row pays for a cold engine. Real engines, so the figures include the
machine's noise.

    python tests/benchmarks/bench_router.py [--docs 12]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_e2e_router import Cluster, _documents, _start_router, _summarize  # noqa: E402
from vllm_tier import VllmServer, engine_cores, session_pids, start_vllm  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
# vLLM's own per-request histograms (their _sum, summed over labels), seconds
PHASES = {"e2e_request_latency_seconds": "e2e", "request_queue_time_seconds": "queue",
          "request_prefill_time_seconds": "prefill", "request_decode_time_seconds": "decode"}


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _machine_busy() -> float:
    """CPU seconds every core spent on any work (user, nice, system, irq, softirq), from
    /proc/stat: what the benchmark's own processes did not use of it, others did."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / TICKS


def _engine_sums(engine: VllmServer) -> dict[str, float]:
    """The engine's own counters: requests finished and its per-request time sums."""
    text = httpx.get(f"{engine.root_url}/metrics", timeout=10).text
    sums = dict.fromkeys(("requests", *PHASES), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:request_success_total" \
                    and sample.labels.get("finished_reason") != "abort":
                sums["requests"] += sample.value
            for phase in PHASES:
                if sample.name == f"vllm:{phase}_sum":
                    sums[phase] += sample.value
    return sums


@dataclass(frozen=True)
class Snapshot:
    at: float
    client_cpu: float
    router_cpu: float
    engine_cpu: tuple[float, ...]
    engines: tuple[dict[str, float], ...]
    machine_busy: float


def _snapshot(engines: list[VllmServer], router_pid: int) -> Snapshot:
    times = os.times()
    return Snapshot(time.monotonic(), times.user + times.system, _cpu_seconds([router_pid]),
                    tuple(_cpu_seconds(session_pids(e.process.pid)) for e in engines),
                    tuple(_engine_sums(e) for e in engines), _machine_busy())


def _report(name: str, before: Snapshot, after: Snapshot) -> list[float]:
    """One phase's line: wall, CPU seconds of each party, each engine's own time split.
    Returns the requests each engine finished."""
    served = [a["requests"] - b["requests"] for a, b in zip(after.engines, before.engines, strict=True)]
    cpu = [a - b for a, b in zip(after.engine_cpu, before.engine_cpu, strict=True)]
    client, router = after.client_cpu - before.client_cpu, after.router_cpu - before.router_cpu
    others = after.machine_busy - before.machine_busy - client - router - sum(cpu)
    print(f"  {name}: wall {after.at - before.at:.1f} s; CPU s: client {client:.1f}, router "
          f"{router:.1f}, " + ", ".join(f"engine {i + 1} {c:.1f}" for i, c in enumerate(cpu))
          + f", other processes on the machine {others:.1f}")
    for i, (a, b) in enumerate(zip(after.engines, before.engines, strict=True)):
        n = served[i]
        if n:
            split = ", ".join(f"{label} {(a[p] - b[p]) / n:.2f}" for p, label in PHASES.items())
            print(f"    engine {i + 1}: {n:.0f} requests; mean s per request: {split}")
    return served


def _measured(engines: list[VllmServer], router_pid: int, name: str,
              run: Callable[[], float]) -> tuple[float, list[float]]:
    before = _snapshot(engines, router_pid)
    seconds = run()
    return seconds, _report(name, before, _snapshot(engines, router_pid))


def _direct(engine: VllmServer) -> Cluster:
    """A Cluster whose base URL is the engine itself (no router): for warming it."""
    return Cluster([engine], engine.process, engine.port, engine.log_path)


def _start_engines(work: Path) -> list[VllmServer]:
    cores = engine_cores(2)
    with ThreadPoolExecutor(2) as pool:
        starts = [pool.submit(start_vllm, work / f"engine{i + 1}", max_model_len=8192,
                              kv_cache_gib=2, cpus=cores[i]) for i in (0, 1)]
    if any(start.exception() for start in starts):
        for start in starts:
            if start.exception() is None:
                start.result().stop()
    return [start.result() for start in starts]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=12)
    parser.add_argument("--alone", type=int, default=3, help="single summaries timed (median)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkdocs-router-bench-"))
    docs = _documents(work / "docs", 2 * args.docs + args.alone + 2, seed=700)
    batch, single_docs = docs[:args.docs], docs[args.docs:2 * args.docs]
    spare = docs[2 * args.docs:]
    engines = _start_engines(work)
    router = None
    try:
        print("engines pinned to cores " + ", ".join(str(e.cpus) for e in engines)
              + f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for n, engine in enumerate(engines):
            _summarize(_direct(engine), work / f"warm{n}", [spare[-1 - n]], concurrency=1)
        router, port, log = _start_router(work, [e.root_url for e in engines])
        both = Cluster(engines, router, port, log)
        alones = [_measured(engines, router.pid, f"alone #{n + 1}", lambda d=doc, n=n: _summarize(
                      both, work / f"alone{n}", [d], concurrency=1)[1])[0]
                  for n, doc in enumerate(spare[:args.alone])]
        alone = statistics.median(alones)
        routed, routed_served = _measured(engines, router.pid, "2 engines behind the router",
                                          lambda: _summarize(both, work / "routed", batch,
                                                             concurrency=1)[1])
        os.killpg(router.pid, signal.SIGTERM)
        router.wait(timeout=30)
        router, port, log = _start_router(work, [engines[0].root_url])
        one = Cluster(engines[:1], router, port, log)
        single, single_served = _measured(engines, router.pid, "1 engine", lambda: _summarize(
            one, work / "single", single_docs, concurrency=2)[1])
        print(f"one summary alone: {alone:.1f} s (median of {', '.join(f'{a:.1f}' for a in alones)});"
              f" {args.docs} summaries, 2 in flight:")
        print("| set-up | makespan | ideal | ratio | requests per engine |\n| --- | --- | --- | --- | --- |")
        for name, seconds, engines_n, served in (
                ("2 engines behind the router", routed, 2, routed_served),
                ("1 engine", single, 1, single_served)):
            ideal = alone * args.docs / engines_n
            print(f"| {name} | {seconds:.1f} s | {ideal:.1f} s | {seconds / ideal:.2f} | "
                  f"{' / '.join(f'{s:.0f}' for s in served)} |")
        print("peak RSS per engine (VmHWM summed over its processes): "
              + ", ".join(f"{e.peak_rss_bytes() / 2**30:.1f} GiB" for e in engines)
              + f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if router is not None and router.poll() is None:
            os.killpg(router.pid, signal.SIGTERM)
        for engine in engines:
            engine.stop()


if __name__ == "__main__":
    main()
