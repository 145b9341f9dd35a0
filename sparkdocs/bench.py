"""`sparkdocs bench`: what the user's own server does with long documents, and what the prefix
contract buys. Every document is fresh (a random nonce opens it), so "cold" really is cold."""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .client import AnswerResult, ModelClient, ServerKind, StreamEnd
from .documents import Document, DocumentKind, Section, SectionKind, clean_text
from .errors import ServiceError
from .literal import redact_url
from .prompts import SYSTEM_PROMPT, PreparedDocument, prepare_document
from .streams import StreamGroup
from .tokens import ChatMessage, count_document
from .workspace import LoadRequest, Workspace

log = logging.getLogger(__name__)
QUESTIONS = ("What is this document about? Answer in three sentences.",
             "List the three most important obligations it states.",
             "Which numbers appear most often, and where?")
_WORDS = ["contract", "party", "clause", "obligation", "shall", "term", "payment", "liability", "notice", "agreement", "data", "model", "token", "cache", "prefix", "budget", "server", "request", "answer", "document", "page", "supplier", "customer", "invoice", "delivery", "warranty", "termination", "indemnity", "confidential"]


@dataclass(frozen=True)
class BenchOptions:
    tokens: int = 4000
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    max_tokens: int = 64
    path: Path | None = None


@dataclass(frozen=True)
class Sample:
    """One measured request: its label and the client's record of it."""

    label: str
    result: AnswerResult

    def __getattr__(self, name: str):  # ttft_s, prompt_tokens, … straight from the record
        if name.startswith("__") or name == "result":
            raise AttributeError(name)
        return getattr(self.result, name)

    @property
    def cached_fraction(self) -> float | None:
        if self.cached_tokens is None or not self.prompt_tokens:
            return None
        return self.cached_tokens / self.prompt_tokens


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int
    wall_s: float
    aggregate_decode_tokens_per_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None


@dataclass
class BenchReport:
    base_url: str
    model: str
    server_kind: ServerKind
    document_tokens: int
    prompt_tokens_llama3: int
    samples: list[Sample] = field(default_factory=list)
    warm_up_s: float | None = None
    levels: list[LevelResult] = field(default_factory=list)
    started: str = ""
    notes: list[str] = field(default_factory=list)

    def sample(self, label: str) -> Sample | None:
        return next((s for s in self.samples if s.label == label), None)

    def ratios(self) -> dict[str, float | None]:
        cold = self.sample("cold first question")

        def ratio(label: str) -> float | None:
            other = self.sample(label)
            if not cold or not other or not cold.ttft_s or other.ttft_s is None:
                return None
            return other.ttft_s / cold.ttft_s

        return {"follow-up / cold": ratio("follow-up question"),
                "warmed first / cold": ratio("first question after warm-up"),
                "bad layout second / cold": ratio("bad layout: second question")}

    def prefill_tokens_per_s(self) -> float | None:
        cold = self.sample("cold first question")
        tokens = (cold.prompt_tokens if cold and cold.prompt_tokens else self.prompt_tokens_llama3)
        return tokens / cold.ttft_s if cold and cold.ttft_s else None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["samples"] = [{"label": s.label, **s.result.as_dict(), "cached_fraction": s.cached_fraction}
                           for s in self.samples]
        for raw in data["samples"]:
            raw.pop("answer", None)
        data["ratios"] = self.ratios()
        data["prefill_tokens_per_s"] = self.prefill_tokens_per_s()
        return data

    def to_markdown(self) -> str:
        def fmt(value: float | None, spec: str = ".3f", unit: str = "") -> str:
            return "n/a" if value is None else f"{value:{spec}}{unit}"

        lines = [f"# sparkdocs bench — {self.started}", "",
                 f"Server `{self.base_url}` ({self.server_kind}), model `{self.model}`; fresh "
                 f"documents of {self.document_tokens:,} tokens (prompt {self.prompt_tokens_llama3:,} "
                 "Llama 3 tokens).", "",
                 "| request | TTFT | decode tok/s | prompt tokens | cached | cached fraction |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for s in self.samples:
            lines.append(f"| {s.label} | {fmt(s.ttft_s, '.3f', ' s')} | {fmt(s.decode_tokens_per_s, '.1f')} | "
                         f"{s.prompt_tokens if s.prompt_tokens is not None else 'not reported'} | "
                         f"{s.cached_tokens if s.cached_tokens is not None else 'not reported'} | "
                         f"{fmt(s.cached_fraction, '.0%')} |")
        if self.warm_up_s is not None:
            lines += ["", f"Warm-up request (max_tokens=1): {self.warm_up_s:.2f} s."]
        lines += ["", "| ratio | value |", "| --- | --- |"]
        lines += [f"| {k} | {fmt(v, '.2%')} |" for k, v in self.ratios().items()]
        lines += [f"| prefill tokens/s (cold) | {fmt(self.prefill_tokens_per_s(), ',.0f')} |"]
        if self.levels:
            lines += ["", "Concurrency (distinct fresh documents, one question each):", "",
                      "| concurrency | requests | wall | aggregate output tok/s | TTFT p50 | TTFT p95 |",
                      "| --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {lv.concurrency} | {lv.requests} | {lv.wall_s:.1f} s | "
                      f"{fmt(lv.aggregate_decode_tokens_per_s, '.1f')} | {fmt(lv.ttft_p50_s, '.2f', ' s')} | "
                      f"{fmt(lv.ttft_p95_s, '.2f', ' s')} |" for lv in self.levels]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def synthetic_document(tokens: int, *, rng: random.Random) -> Document:
    """A deterministic-looking but unique document of about `tokens` Llama 3 tokens."""
    nonce = f"{rng.getrandbits(64):016x}"
    pages: list[Section] = []
    page_words = 400
    total_words = max(50, int(tokens / 1.3))
    for number in range(1, total_words // page_words + 2):
        words = [rng.choice(_WORDS) for _ in range(page_words)]
        for i in range(0, len(words), 37):
            words[i] = f"{words[i]} {rng.randint(1, 9999)}."
        text = f"Reference {nonce}-{number}. " + " ".join(words)
        pages.append(Section(SectionKind.PAGE, str(number), clean_text(text)))
    return count_document(Document(f"synthetic-{nonce}", DocumentKind.TEXT, nonce, tuple(pages)))


def _trim_to(document: Document, tokens: int) -> Document:
    kept: list[Section] = []
    total = 0
    for section in document.sections:
        if total + section.tokens > tokens and kept:
            break
        kept.append(section)
        total += section.tokens
    return Document(document.name, document.kind, document.content_hash, tuple(kept), counted=True)


class Bench:
    def __init__(self, workspace: Workspace, client: ModelClient, options: BenchOptions, *,
                 on_step: Callable[[str], None] | None = None) -> None:
        self.workspace = workspace
        self.client = client
        self.options = options
        self._on_step = on_step or (lambda step: None)
        self._rng = random.Random()
        self._streams = StreamGroup()
        self._base: Document | None = None

    def cancel(self) -> None:
        """Ctrl-C: start nothing new and close every stream in flight."""
        self._streams.cancel()

    def _run_one(self, messages: Sequence[ChatMessage], label: str | None = None) -> AnswerResult:
        """One measured request. An answer that did not finish (cut, stalled, past its deadline
        or length bound) is no measurement: its timings would be wrong, so the bench stops."""
        if self._streams.cancelled:
            raise KeyboardInterrupt
        stream = self.client.stream(messages, max_tokens=self.options.max_tokens, temperature=0.0)
        with self._streams.member(stream):
            result = stream.run()
        if result.end is StreamEnd.STOPPED:
            raise KeyboardInterrupt
        if result.end is not StreamEnd.FINISHED:
            which = f"the {label!r} request" if label else "a request"
            raise ServiceError(f"bench: {which} did not finish: {result.error}; its figures "
                               "would be wrong, so the bench stopped.")
        return result

    def _fresh(self) -> PreparedDocument:
        """A document the server has not seen: the user's file with a new nonce page first, or
        a synthetic one."""
        if self._base is None:
            return prepare_document(synthetic_document(self.options.tokens, rng=self._rng))
        nonce = Section(SectionKind.HEADING, "bench nonce", f"Run {self._rng.getrandbits(64):016x}.")
        document = count_document(Document(self._base.name, self._base.kind, "bench",
                                           (nonce,) + self._base.sections))
        return prepare_document(document)

    def _ask(self, label: str, messages: Sequence[ChatMessage]) -> Sample:
        self._on_step(label)
        return _sample(label, self._run_one(messages, label))

    def run(self) -> BenchReport:
        caps = self.client.capabilities()
        model = self.client.resolve_model()
        if self.options.path is not None:
            loaded = self.workspace.load(LoadRequest((str(self.options.path),)))
            self._base = _trim_to(loaded, self.options.tokens)
        builder = self.workspace.prompts
        probe = self._fresh()
        report = BenchReport(redact_url(self.client.settings.base_url), model, caps.server_kind,
                             probe.block_tokens, builder.question(probe, QUESTIONS[0]).prompt_tokens,
                             started=time.strftime("%Y-%m-%d %H:%M:%S"))
        if caps.server_kind is not ServerKind.VLLM:
            report.notes.append("Not a vLLM server: cached tokens are not reported; llama.cpp reuses "
                                "only the previous request's prefix and serves one request at a time.")
        # 0: one untimed request of the same size, so one-time work in the engine (kernel
        # compilation for new shapes on vLLM's CPU build, lazy allocation) is not counted as cold.
        self._on_step("priming the engine")
        self._run_one(builder.question(self._fresh(), QUESTIONS[0]).messages)
        # 1-2: cold question, then a second question over the same document.
        report.samples.append(self._ask("cold first question", builder.question(probe, QUESTIONS[0]).messages))
        report.samples.append(self._ask("follow-up question", builder.question(probe, QUESTIONS[1]).messages))
        # 3: warm-up, then the first question.
        warm = self._fresh()
        self._on_step("warm-up")
        report.warm_up_s = self.client.warm_up(builder.warm_up(warm).messages).seconds
        report.samples.append(self._ask("first question after warm-up",
                                        builder.question(warm, QUESTIONS[0]).messages))
        # 4: the bad layout — question before the document — defeats the prefix cache.
        bad = self._fresh()
        report.samples.append(self._ask("bad layout: first question", _bad_layout(bad, QUESTIONS[0])))
        report.samples.append(self._ask("bad layout: second question", _bad_layout(bad, QUESTIONS[1])))
        # 5: concurrency with distinct fresh documents.
        for level in self.options.concurrency:
            if self._streams.cancelled:
                break
            self._on_step(f"concurrency {level}")
            report.levels.append(self._level(level))
        return report

    def _level(self, level: int) -> LevelResult:
        builder = self.workspace.prompts
        prompts = [builder.question(self._fresh(), QUESTIONS[i % len(QUESTIONS)]).messages
                   for i in range(level)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=level) as pool:
            try:
                results = list(pool.map(self._run_one, prompts))
            except KeyboardInterrupt:
                self.cancel()  # before the pool's exit waits for its threads
                raise
        wall = time.perf_counter() - started
        ttfts = sorted(r.ttft_s for r in results if r.ttft_s is not None)
        produced = [n for n in (_completion_tokens(r) for r in results) if n is not None]
        aggregate = sum(produced) / wall if produced and wall > 0 else None  # output throughput
        return LevelResult(level, len(results), wall, aggregate,
                           statistics.median(ttfts) if ttfts else None,
                           ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))] if ttfts else None)


def _completion_tokens(result: AnswerResult) -> float | None:
    """Reported completion tokens, else what the decode rate implies (llama.cpp reports none)."""
    if result.completion_tokens is not None:
        return result.completion_tokens
    if result.decode_tokens_per_s and result.ttft_s is not None:
        return 1 + result.decode_tokens_per_s * (result.total_s - result.ttft_s)
    return None


def _bad_layout(prepared: PreparedDocument, question: str) -> list[ChatMessage]:
    """What many tools do: the question first, the document after it."""
    return [ChatMessage("system", SYSTEM_PROMPT),
            ChatMessage("user", f"Question: {question}\n\n{prepared.block}")]


def _sample(label: str, result: AnswerResult) -> Sample:
    return Sample(label, result)


def write_report(report: BenchReport, out_dir: Path) -> list[Path]:
    """Markdown, JSON and (with matplotlib) PNG charts; returns the files written."""
    from .files import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.md", out_dir / "report.json"]
    markdown = report.to_markdown()
    charts = _charts(report, out_dir)
    if charts:
        markdown += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in charts) + "\n"
    atomic_write(written[0], markdown)
    atomic_write(written[1], json.dumps(report.as_dict(), indent=2))
    return written + charts


def _charts(report: BenchReport, out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no charts (pip install 'sparkdocs[bench]')")
        return []
    paths = []
    labels = [s.label for s in report.samples if s.ttft_s is not None]
    values = [s.ttft_s for s in report.samples if s.ttft_s is not None]
    figure, axis = plt.subplots(figsize=(8, 3.5))
    axis.barh(labels, values, color=["#d62728" if "cold" in label or "bad" in label else "#1f77b4" for label in labels])
    axis.set_xlabel("time to first token (s)")
    axis.set_title(f"TTFT, {report.document_tokens:,}-token documents")
    axis.invert_yaxis()
    figure.tight_layout()
    paths.append(out_dir / "ttft.png")
    figure.savefig(paths[-1], dpi=120)
    plt.close(figure)
    levels = [lv for lv in report.levels if lv.aggregate_decode_tokens_per_s is not None]
    if levels:
        figure, axis = plt.subplots(figsize=(6, 3.5))
        axis.plot([lv.concurrency for lv in levels],
                  [lv.aggregate_decode_tokens_per_s or 0.0 for lv in levels], marker="o")
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel("aggregate output tokens/s")
        axis.set_xscale("log", base=2)
        axis.set_title("Throughput vs concurrency")
        figure.tight_layout()
        paths.append(out_dir / "throughput.png")
        figure.savefig(paths[-1], dpi=120)
        plt.close(figure)
    return paths
