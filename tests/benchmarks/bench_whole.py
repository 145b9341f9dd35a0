"""Whole-document answers on the production engine (vLLM's CPU build, tests/vllm_tier.py): a
document several times the context, answered from every page twice. Printed side by side from
one run (the machine is shared, so ratios, not absolute times, are the figures):

- the first answer's time against the sum of its parts' own times (what asking the parts one
  after another would cost) — the gain of asking them at once;
- the second question's time as a fraction of the first (target <= 10% on a Spark, where
  prefill dominates) and the share of its prompt tokens served from the cache; beside it the
  same fraction of prefill only (the parts' times to first token summed, and the engine's own
  prefill seconds from its /metrics), which is what the prefix cache saves;
- the peak memory of this process beside the times.

Each part answers as a user asking for one sentence would have it (`--part-answer` tokens):
with dummy weights an answer never ends by itself, so a long answer limit would make the CPU
engine's decode, which no cache saves, most of both times. The parts are still cut with room for
`--answer` tokens, as the app cuts them.

    python tests/benchmarks/bench_whole.py [--pages 60] [--context 8192] [--answer 32]
        [--part-answer 12]
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

ENGINE_SECONDS = ("vllm:request_prefill_time_seconds_sum", "vllm:request_decode_time_seconds_sum")


def engine_seconds(client: ModelClient) -> dict[str, float]:
    """The engine's own prefill and decode seconds so far, summed over its requests."""
    from prometheus_client.parser import text_string_to_metric_families

    reply = client.get_url(f"{client.root_url}/metrics")
    assert reply is not None and reply.status == 200, "the engine's /metrics did not answer"
    totals = dict.fromkeys(ENGINE_SECONDS, 0.0)
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--context", type=int, default=8_192)
    parser.add_argument("--answer", type=int, default=32)
    parser.add_argument("--part-answer", type=int, default=12)
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
        for question in ("Who pays the invoices? Answer in one sentence.",
                         "When may either party end the agreement? Answer in one sentence."):
            plan = qa.plan_whole(document, question)
            requests = PartRequests(qa.client, model=qa.client.resolve_model(),
                                    max_tokens=args.part_answer, cache_salt=None)
            before = engine_seconds(qa.client)
            started = time.perf_counter()
            answer = answer_whole(document, workspace.prompts, plan, question, requests=requests,
                                  context=qa.whole_context(document), answer_tokens=args.answer)
            wall = time.perf_counter() - started
            after = engine_seconds(qa.client)
            prefill_s, decode_s = (after[name] - before[name] for name in ENGINE_SECONDS)
            parts = [p.result for p in answer.parts if p.result is not None]
            prompt = sum(r.prompt_tokens or 0 for r in parts)
            cached = sum(r.cached_tokens or 0 for r in parts)
            rows.append((question, len(plan.parts), plan.in_flight, wall,
                         sum(r.total_s for r in parts), prompt, cached,
                         sum(r.ttft_s or 0.0 for r in parts), prefill_s, decode_s))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        server.stop()
    print(f"{args.pages} pages ({document.section_tokens:,} tokens), context {args.context:,}, "
          f"parts cut for answers of {args.answer} tokens, answering in {args.part_answer}; "
          "vLLM CPU build, dummy weights")
    print("| question | parts | at once | wall s | parts' own s (sum) | wall / sum | prompt "
          "tokens | cached | parts' TTFT s (sum) | engine prefill s | engine decode s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for question, count, at_once, wall, own, prompt, cached, ttft, prefill, decode in rows:
        print(f"| {question} | {count} | {at_once} | {wall:.1f} | {own:.1f} | {wall / own:.2f} | "
              f"{prompt:,} | {cached / prompt:.0%} | {ttft:.1f} | {prefill:.1f} | {decode:.1f} |")
    first, second = rows

    def ratio(column: int) -> str:
        return f"{second[column] / first[column]:.2f}" if first[column] else "n/a"

    print(f"second question / first: whole time {ratio(3)}; prefill only: parts' TTFT "
          f"{ratio(7)}, engine prefill seconds {ratio(8)} (target <= 0.10); "
          f"peak memory of this process {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
