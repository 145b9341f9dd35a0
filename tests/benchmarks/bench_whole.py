"""Whole-document answers on the production engine (vLLM's CPU build, tests/vllm_tier.py): a
document several times the context, answered from every page twice. Printed side by side from
one run (the machine is shared, so ratios, not absolute times, are the figures):

- the first answer's time against the sum of its parts' own times (what asking the parts one
  after another would cost) — the gain of asking them at once;
- the second question's time as a fraction of the first (target <= 10% on a Spark, where
  prefill dominates) and the share of its prompt tokens served from the cache;
- the peak memory of this process beside the times.

    python tests/benchmarks/bench_whole.py [--pages 60] [--context 8192] [--answer 32]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from builders import make_pdf  # noqa: E402
from corpus import contract_pages  # noqa: E402
from vllm_tier import API_KEY, start_vllm  # noqa: E402

from sparkdocs.client import ModelClient  # noqa: E402
from sparkdocs.config import Settings  # noqa: E402
from sparkdocs.ingest import Upload  # noqa: E402
from sparkdocs.parts import PartRequests, answer_whole  # noqa: E402
from sparkdocs.qa import QuestionAnswering  # noqa: E402
from sparkdocs.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--context", type=int, default=8_192)
    parser.add_argument("--answer", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkdocs-whole-"))
    server = start_vllm(work, max_model_len=args.context)
    try:
        settings = Settings(base_url=server.base_url, api_key=API_KEY,  # type: ignore[call-arg]
                            cache_dir=work / "cache", answer_tokens=args.answer,
                            temperature=0.0)
        workspace = Workspace(settings)
        qa = QuestionAnswering(workspace, ModelClient(settings))
        document = workspace.load_uploads(
            [Upload("contract.pdf", make_pdf(contract_pages(args.pages, per_page=9)))],
            workspace.ingest_options())
        rows = []
        for question in ("Who pays the invoices?", "When may either party end the agreement?"):
            plan = qa.plan_whole(document, question)
            requests = PartRequests(qa.client, model=qa.client.resolve_model(),
                                    max_tokens=args.answer, cache_salt=None)
            started = time.perf_counter()
            answer = answer_whole(document, workspace.prompts, plan, question, requests=requests,
                                  context=qa.whole_context(document), answer_tokens=args.answer)
            wall = time.perf_counter() - started
            parts = [p.result for p in answer.parts if p.result is not None]
            prompt = sum(r.prompt_tokens or 0 for r in parts)
            cached = sum(r.cached_tokens or 0 for r in parts)
            rows.append((question, len(plan.parts), plan.in_flight, wall,
                         sum(r.total_s for r in parts), prompt, cached))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        server.stop()
    print(f"{args.pages} pages ({document.section_tokens:,} tokens), context {args.context:,}, "
          f"answers of {args.answer} tokens; vLLM CPU build, dummy weights")
    print("| question | parts | at once | wall s | parts' own s (sum) | wall / sum | prompt "
          "tokens | cached |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for question, count, at_once, wall, own, prompt, cached in rows:
        print(f"| {question} | {count} | {at_once} | {wall:.1f} | {own:.1f} | {wall / own:.2f} | "
              f"{prompt:,} | {cached / prompt:.0%} |")
    first, second = rows
    print(f"second question / first: {second[3] / first[3]:.2f} of the time; "
          f"peak memory of this process {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
