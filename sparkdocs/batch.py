"""Batch summarisation: many documents → one summary each, N requests always in flight, every
finished summary written atomically and never redone unless asked (resume by default).

Documents over budget go through an explicit map-reduce: consecutive budget-sized parts are
summarised in order, then combined; the parts and their page/file ranges are recorded.

Output names are planned for the whole batch at once (`plan_outputs`): each input's path
relative to the inputs' common folder, made safe, and disambiguated by a short digest of that
path when two inputs would otherwise share one file (`x/y.txt` and `x__y.txt`, `A.txt` and
`a.txt` on a case-insensitive disk). The same inputs always get the same names, so resume (by
job key, read back from each file) never flips between two documents. `index.md` — the file a
person opens first — lists every document, its status and where its summary is."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .client import AnswerResult, ModelClient, routing_key
from .cluster import engines_up
from .config import OutputFormat
from .documents import Document
from .errors import SparkdocsError
from .files import atomic_write
from .literal import strip_controls
from .parts import PartRequests, merge, plan_parts, prepared_part
from .prompts import DEFAULT_SUMMARY_INSTRUCTIONS, Part, PromptBuilder, prepare_document
from .safe_text import safe_markdown
from .served_tokens import ServedTokenizer, effective_context
from .streams import StreamGroup
from .workspace import Workspace

log = logging.getLogger(__name__)
FORMAT_VERSION = "1"
INDEX_NAME = "index.md"
JSONL_NAME = "summaries.jsonl"
JSONL_INDEX_NAME = "index.jsonl"
_RESERVED = {INDEX_NAME, JSONL_NAME, JSONL_INDEX_NAME}
_MAX_NAME_BYTES = 200  # file names stop at 255 bytes on most disks; room for a digest and .md


@dataclass(frozen=True)
class BatchItem:
    """One document to summarise: where it comes from and how to load it."""

    source: str
    load: Callable[[], Document]


@dataclass(frozen=True)
class BatchOptions:
    out_dir: Path
    instructions: str = DEFAULT_SUMMARY_INSTRUCTIONS
    output_format: OutputFormat = OutputFormat.MD
    concurrency: int = 8
    max_tokens: int = 1024
    force: bool = False
    attempts: int = 2  # per request, on top of the client's own retries of 5xx

    def __post_init__(self) -> None:  # "jsonl" from a caller is the enum; a typo fails here
        object.__setattr__(self, "output_format", OutputFormat(self.output_format))


class OutcomeStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # finished in an earlier run with the same job key
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Outcome:
    source: str
    status: OutcomeStatus
    output: str | None = None
    error: str | None = None
    content_hash: str | None = None
    citations: dict[str, int] | None = None  # quotes per verdict (citations.citation_counts)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    parts: tuple[Part, ...] = ()
    seconds: float = 0.0
    key: str | None = None
    document_tokens: int | None = None  # the document's own tokens (as `count` gives them)
    part_count: int = 0  # 1, or the parts of a map-reduce; 0 when not known (failed, cancelled)
    cut: str | None = None  # why the summary is incomplete: a request stopped at max_tokens


@dataclass
class Progress:
    """Counters the caller shows while the batch runs (read under no lock: display only)."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    in_flight: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.skipped - self.failed


@dataclass(frozen=True)
class OutputName:
    """Where one input's summary goes: `stem` + ".md" in the output folder; `relative` is the
    input as a person knows it (its path from the inputs' common folder)."""

    relative: str
    stem: str

    @property
    def file_name(self) -> str:
        return f"{self.stem}.md"


_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')


def _safe_component(part: str) -> str:
    """One path component as a portable file name: characters no disk accepts become `_`, and
    a leading dot too (a summary must not be a hidden file)."""
    cleaned = _UNSAFE.sub("_", part).rstrip(" .") or "_"
    return "_" + cleaned[1:] if cleaned.startswith(".") else cleaned


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def _shorten(stem: str) -> str:
    data = stem.encode("utf-8", "surrogateescape")
    if len(data) <= _MAX_NAME_BYTES:
        return stem
    return data[:_MAX_NAME_BYTES - 20].decode("utf-8", "ignore")


def plan_outputs(sources: Sequence[str]) -> dict[str, OutputName]:
    """Unique, readable output names for a whole batch, the same for the same inputs in any
    order: the path relative to the inputs' common folder with `__` between folders; where
    two inputs would share a name (also only by letter case, or with index.md), each of them
    gets `-` and a digest of its own relative path."""
    absolute = [os.path.abspath(source) for source in sources]
    try:
        common = os.path.commonpath([os.path.dirname(path) for path in absolute]) if absolute else ""
    except ValueError:  # different drives: no common folder
        common = ""
    planned: dict[str, OutputName] = {}
    for source, path in zip(sources, absolute, strict=True):
        relative = os.path.relpath(path, common) if common else path
        parts = [p for p in re.split(r"[\\/]+", relative) if p not in ("", ".")]
        relative = "/".join(parts) or os.path.basename(path) or "document"
        stem = "__".join(_safe_component(p) for p in parts) or "document"
        planned[source] = OutputName(relative, stem)
    length = 8
    while True:
        groups: dict[str, list[str]] = defaultdict(list)
        for source, name in planned.items():
            groups[name.file_name.casefold()].append(source)
        reserved = {name.casefold() for name in _RESERVED}
        clashes = [members for key, members in groups.items()
                   if len({planned[m].relative for m in members}) > 1 or key in reserved
                   or len(key.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES]
        if not clashes or length > 64:  # (the same file given twice shares its one output)
            return planned
        for members in clashes:
            for source in members:
                name = planned[source]
                base = _shorten(re.sub(r"-[0-9a-f]{8,64}$", "", name.stem)) if length > 8 else _shorten(name.stem)
                planned[source] = OutputName(name.relative, f"{base}-{_digest(name.relative, length)}")
        length *= 2


def job_key(content_hash: str, *, instructions: str, model: str, max_tokens: int) -> str:
    """What makes a summary the same summary: document bytes, instructions, model, options."""
    raw = json.dumps([FORMAT_VERSION, content_hash, instructions, model, max_tokens])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _header_value(text: str) -> str:
    """A name inside the summary's comment header: one line, no control characters, and it
    cannot close the comment (or fake a `key:` line)."""
    return (strip_controls(text).replace("\n", " ").replace("-->", "--&gt;")
            .replace("--!>", "--!&gt;"))  # a browser closes a comment at either


def _cell(text: str) -> str:
    """Text inside a Markdown table cell, literally, with nothing that can fetch (a file named
    `<img src=…>.txt` is shown as that name)."""
    return safe_markdown(strip_controls(text).replace("\n", " ")).replace("\n", " ").replace(
        "|", "\\|")


def _link_text(text: str) -> str:
    """A cell's text as a link's text: brackets escaped too, so no link or image forms inside
    it (a link inside a link is no link, and the name would then be read as Markdown)."""
    return re.sub(r"([\[\]])", r"\\\1", _cell(text))


@dataclass(frozen=True)
class Finished:
    """What is recorded of a finished summary, read back when a run resumes (its index row)."""

    parts: int
    prompt_tokens: int
    completion_tokens: int
    cut: str | None


_HEADER_CHARS = 64 * 1024  # a summary file's comment header: a map-reduce lists every part


class SummaryWriter:
    """Finished summaries on disk: one Markdown file each, or one JSONL record each, and the
    index of the run. Names come from `plan` (the whole batch at once)."""

    def __init__(self, options: BatchOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._jsonl = options.out_dir / JSONL_NAME
        self._done = self._read_jsonl() if options.output_format is OutputFormat.JSONL else {}
        self._names: dict[str, OutputName] = {}

    def plan(self, sources: Sequence[str]) -> None:
        self._names = plan_outputs(sources)

    def name_for(self, source: str) -> OutputName:
        if source not in self._names:  # a source outside the plan: it is a batch of its own
            self._names.update(plan_outputs([source]))
        return self._names[source]

    def _read_jsonl(self) -> dict[str, Finished]:
        done: dict[str, Finished] = {}
        if not self._jsonl.exists():
            return done
        for line in self._jsonl.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                done[record["key"]] = Finished(
                    parts=len(record.get("parts") or ()) or 1,
                    prompt_tokens=int(record.get("prompt_tokens") or 0),
                    completion_tokens=int(record.get("completion_tokens") or 0),
                    cut=record.get("cut") if isinstance(record.get("cut"), str) else None)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut by a crash: that document is simply redone
        return done

    def path_for(self, source: str) -> Path:
        if self.options.output_format is OutputFormat.JSONL:
            return self._jsonl
        return self.options.out_dir / self.name_for(source).file_name

    def is_done(self, source: str, key: str) -> bool:
        return self.finished(source, key) is not None

    def finished(self, source: str, key: str) -> Finished | None:
        """What an earlier run recorded of this summary (same job key), or None: it is to do."""
        if self.options.output_format is OutputFormat.JSONL:
            return self._done.get(key)
        path = self.path_for(source)
        if not path.exists():
            return None
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(_HEADER_CHARS)
        if f"\nkey: {key}\n" not in head[:2048]:
            return None
        fields = dict(re.findall(r"^([a-z_]+): (.*)$", head.split("-->", 1)[0], re.MULTILINE))
        parts = re.search(r"^map-reduce over (\d+) parts:", head, re.MULTILINE)

        def number(name: str, default: int = 0) -> int:
            value = fields.get(name, "")
            return int(value) if value.isdigit() and len(value) < 19 else default

        return Finished(parts=number("parts", int(parts.group(1)) if parts else 1),
                        prompt_tokens=number("prompt_tokens"),
                        completion_tokens=number("completion_tokens"), cut=fields.get("cut"))

    def write(self, *, source: str, key: str, document: Document, summary: str,
              stats: dict[str, Any], parts: Sequence[Part]) -> Path:
        path = self.path_for(source)
        if self.options.output_format is OutputFormat.JSONL:
            record = {"key": key, "source": source, "content_hash": document.content_hash,
                      "name": document.name, "document_tokens": document.section_tokens,
                      "summary": summary, **stats,
                      "parts": [asdict(p) for p in parts]}
            line = json.dumps(record, ensure_ascii=False) + "\n"
            with self._lock:
                self._ensure_out_dir()
                with self._jsonl.open("a+b") as handle:
                    handle.seek(0, os.SEEK_END)
                    if handle.tell():
                        handle.seek(-1, os.SEEK_END)
                        if handle.read(1) != b"\n":
                            handle.write(b"\n")  # a crash left half a line: close it off
                    handle.write(line.encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
                self._done[key] = Finished(len(parts), stats.get("prompt_tokens") or 0,
                                           stats.get("completion_tokens") or 0, stats.get("cut"))
            return path
        part_lines = "".join(f"#   - part {i}: {_header_value(p.label)} ({p.tokens:,} tokens)\n"
                             for i, p in enumerate(parts, 1)) if len(parts) > 1 else ""
        cut = stats.get("cut")
        header = (f"<!--\nsparkdocs summary\nkey: {key}\nsource: {_header_value(source)}\n"
                  f"content_hash: {document.content_hash}\n"
                  f"model: {_header_value(str(stats.get('model')))}\n"
                  f"document_tokens: {document.section_tokens}\nparts: {len(parts)}\n"
                  f"prompt_tokens: {stats.get('prompt_tokens') or 0}\n"
                  f"completion_tokens: {stats.get('completion_tokens') or 0}\n"
                  + (f"cut: {_header_value(cut)}\n" if cut else "")
                  + (f"map-reduce over {len(parts)} parts:\n{part_lines}" if part_lines else "")
                  + "-->\n\n")
        # said where it is read, not only in the index: a cut summary looks finished otherwise
        warning = (f"> **Cut at the answer limit:** {safe_markdown(cut)}. Raise `--max-tokens` "
                   "and run again with `--force` to redo it.\n\n" if cut else "")
        from .citation_views import sources_markdown
        from .citations import citations_from_records

        sources = sources_markdown(citations_from_records(stats.get("citations") or ()))
        # the summary is a model's text about an untrusted document, opened in Markdown
        # previews: no image or raw HTML in it (or in the name) may make the viewer fetch
        atomic_write(path, f"{header}# Summary of {safe_markdown(strip_controls(document.name))}"
                           f"\n\n{warning}{safe_markdown(strip_controls(summary))}\n"
                           + (f"\n{sources}" if sources else ""))
        return path

    def write_index(self, outcomes: Sequence[Outcome]) -> Path:
        """index.md (and index.jsonl beside summaries.jsonl): every document of this run, its
        status and where its summary is — the file to open first."""
        counts = {status: sum(1 for o in outcomes if o.status is status) for status in OutcomeStatus}
        jsonl = self.options.output_format is OutputFormat.JSONL
        cut = sum(1 for o in outcomes if o.cut)
        lines = ["# Summaries", "",
                 f"{len(outcomes)} documents: {counts[OutcomeStatus.DONE]} done, "
                 f"{counts[OutcomeStatus.SKIPPED]} already done before, "
                 f"{counts[OutcomeStatus.FAILED]} failed, {counts[OutcomeStatus.CANCELLED]} "
                 f"cancelled. Updated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
                 + (f" Summaries are the records of `{JSONL_NAME}` (one line each, by key)."
                    if jsonl else "")
                 + (f" **{cut} cut at the answer limit** (see the note): raise `--max-tokens` "
                    "and run again with `--force` to redo them." if cut else ""),
                 "", "| document | status | summary | document tokens | parts | tokens in/out | note |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        records = []
        for o in outcomes:
            name = self.name_for(o.source)
            if o.status in (OutcomeStatus.DONE, OutcomeStatus.SKIPPED):
                where = (f"record `{o.key}`" if jsonl and o.key
                         else f"[{_link_text(name.file_name)}](<{quote(name.file_name)}>)")
            else:
                where = _cell(o.error or "")
            tokens = (f"{o.prompt_tokens:,}/{o.completion_tokens:,}" if o.prompt_tokens
                      else "not reported" if o.status is OutcomeStatus.DONE else "")
            document_tokens = f"{o.document_tokens:,}" if o.document_tokens is not None else ""
            note = f"cut: {_cell(o.cut)}" if o.cut else ""
            lines.append(f"| {_cell(name.relative)} | {o.status.value} | {where} | "
                         f"{document_tokens} | {o.part_count or ''} | {tokens} | {note} |")
            records.append({"document": name.relative, "source": o.source, "status": o.status.value,
                            "key": o.key, "output": o.output, "error": o.error,
                            "document_tokens": o.document_tokens,
                            "prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
                            "parts": o.part_count, "cut": o.cut})
        self._ensure_out_dir()
        if jsonl:
            atomic_write(self.options.out_dir / JSONL_INDEX_NAME,
                         "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        path = self.options.out_dir / INDEX_NAME
        atomic_write(path, "\n".join(lines) + "\n")
        return path

    def _ensure_out_dir(self) -> None:
        self.options.out_dir.mkdir(parents=True, exist_ok=True)


class BatchSummarizer:
    def __init__(self, workspace: Workspace, client: ModelClient, options: BatchOptions, *,
                 on_progress: Callable[[Progress, Outcome | None], None] | None = None) -> None:
        self.workspace = workspace
        self.client = client
        self.options = options
        self.progress = Progress()
        self.on_progress = on_progress or (lambda progress, outcome: None)
        self._writer = SummaryWriter(options)
        self._streams = StreamGroup()
        self._lock = threading.Lock()  # the progress counters
        self._builder: PromptBuilder = workspace.prompts
        self._served = ServedTokenizer(client, workspace.prompts.tokenizer)
        self.index_path: Path | None = None
        self._cache_salt: str | None = None

    def _user_cache_salt(self) -> str | None:
        """The CLI user's vLLM cache salt, as their questions carry it (qa.py), or None when
        the prefix cache is shared: team mode keeps summaries' prefixes private too."""
        from .auth import cache_salt_for, install_secret, isolation
        from .config import CacheIsolation

        settings = self.workspace.settings
        if isolation(settings) is CacheIsolation.SHARED:
            return None
        return cache_salt_for(settings.user, secret=install_secret(settings.cache_dir),
                              settings=settings)

    def cancel(self) -> None:
        """Ctrl-C: stop starting work and close every stream in flight."""
        self._streams.cancel()

    def run(self, items: Sequence[BatchItem]) -> list[Outcome]:
        self.progress.total = len(items)
        model = self.client.resolve_model()
        context = self.client.capabilities().context_length
        self._cache_salt = self._user_cache_salt()  # once, before any request thread starts
        self._writer.plan([item.source for item in items])
        outcomes: dict[int, Outcome] = {}
        # `concurrency` per engine: behind vLLM's router, every engine that serves gets as many
        in_flight = max(1, self.options.concurrency) * engines_up(self.client.capabilities().engines)
        try:
            with ThreadPoolExecutor(max_workers=in_flight,
                                    thread_name_prefix="summarize") as pool:
                futures: dict[Future[Outcome], int] = {}
                pending = list(enumerate(items))
                try:
                    while pending or futures:
                        while pending and len(futures) < in_flight and not self._streams.cancelled:
                            index, item = pending.pop(0)
                            futures[pool.submit(self._one, item, model, context)] = index
                        if not futures:
                            break
                        finished, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                        for future in finished:
                            index = futures.pop(future)
                            outcomes[index] = future.result()
                            self._count(outcomes[index])
                except KeyboardInterrupt:
                    self.cancel()
                    for future, index in futures.items():
                        outcomes[index] = future.result()
                    raise
                finally:
                    for index, item in pending:
                        outcomes.setdefault(index, Outcome(item.source, OutcomeStatus.CANCELLED))
        finally:
            ordered = [outcomes[i] for i in range(len(items)) if i in outcomes]
            if ordered:
                try:
                    self.index_path = self._writer.write_index(ordered)
                except OSError as exc:  # the summaries are written; a missing index is no reason to fail
                    log.warning("could not write %s in %s: %s", INDEX_NAME, self.options.out_dir, exc)
        return [outcomes[i] for i in range(len(items))]

    def _count(self, outcome: Outcome) -> None:
        progress = self.progress
        if outcome.status is OutcomeStatus.DONE:
            progress.done += 1
        elif outcome.status is OutcomeStatus.SKIPPED:
            progress.skipped += 1
        elif outcome.status is OutcomeStatus.FAILED:
            progress.failed += 1
        self.on_progress(progress, outcome)

    def _one(self, item: BatchItem, model: str, context: int) -> Outcome:
        started = time.monotonic()
        if self._streams.cancelled:
            return Outcome(item.source, OutcomeStatus.CANCELLED)
        key: str | None = None
        tokens: int | None = None
        try:
            document = item.load()
            tokens = document.section_tokens
            key = job_key(document.content_hash, instructions=self.options.instructions,
                          model=model, max_tokens=self.options.max_tokens)
            earlier = None if self.options.force else self._writer.finished(item.source, key)
            if earlier is not None:
                return Outcome(item.source, OutcomeStatus.SKIPPED,
                               str(self._writer.path_for(item.source)),
                               content_hash=document.content_hash, key=key,
                               prompt_tokens=earlier.prompt_tokens,
                               completion_tokens=earlier.completion_tokens,
                               document_tokens=tokens, part_count=earlier.parts, cut=earlier.cut)
            summary, stats, parts = self._summarise(document, model, context)
            from .citation_views import citation_record
            from .citations import verify_answer

            sent = prepare_document(document, tokenizer=self._builder.tokenizer)  # every part
            stats = {**stats, **citation_record(verify_answer(summary, sent))}
            if self._streams.cancelled:
                return Outcome(item.source, OutcomeStatus.CANCELLED,
                               content_hash=document.content_hash, key=key)
            path = self._writer.write(source=item.source, key=key, document=document,
                                      summary=summary, stats=stats, parts=parts)
            return Outcome(item.source, OutcomeStatus.DONE, str(path),
                           content_hash=document.content_hash,
                           prompt_tokens=stats["prompt_tokens"] or 0,
                           completion_tokens=stats["completion_tokens"] or 0, parts=tuple(parts),
                           seconds=time.monotonic() - started, key=key,
                           citations=stats["citation_counts"], document_tokens=tokens,
                           part_count=len(parts), cut=stats["cut"])
        except SparkdocsError as exc:
            if self._streams.cancelled:
                return Outcome(item.source, OutcomeStatus.CANCELLED, key=key,
                               document_tokens=tokens)
            log.warning("%s: %s", item.source, exc)
            return Outcome(item.source, OutcomeStatus.FAILED, error=str(exc),
                           seconds=time.monotonic() - started, key=key, document_tokens=tokens)
        except OSError as exc:  # the file went away or cannot be read; the others go on
            log.warning("%s: %s", item.source, exc)
            return Outcome(item.source, OutcomeStatus.FAILED,
                           error=f"could not read or write it: {exc}", key=key,
                           seconds=time.monotonic() - started, document_tokens=tokens)

    def _summarise(self, document: Document, model: str, context: int
                   ) -> tuple[str, dict[str, Any], list[Part]]:
        """The whole document in one request when it fits, else map-reduce, stated: parts in
        order (the planner `ask --whole` uses), then the merge step (a tree if need be)."""
        instructions = self.options.instructions
        builder = self._builder
        # a served model that counts more tokens for the same text leaves less room
        ratio = self._served.count(
            prepare_document(document, tokenizer=builder.tokenizer)).ratio
        context = effective_context(context, self.options.max_tokens, ratio)
        plan = plan_parts(document, builder,
                          prompt_for=lambda prepared: builder.summary(prepared, instructions),
                          context=context, answer_tokens=self.options.max_tokens)
        parts, pieces = list(plan.parts), plan.document  # pieces: large pages split
        requests = self._requests(model, routing_key(document.content_hash,
                                                     self.workspace.settings.user))
        if len(parts) == 1:
            result = requests.run(builder.summary(prepared_part(pieces, builder, parts, 1),
                                                  instructions).messages)
            return result.answer, self._stats(result, [result], cut=self._cut(result)), parts
        log.info("%s: %d tokens over budget; map-reduce over %d parts", document.name,
                 document.section_tokens, len(parts))
        results: list[AnswerResult] = []
        partials: list[tuple[str, str]] = []
        for number, part in enumerate(parts, 1):
            prepared = prepared_part(pieces, builder, parts, number)
            result = requests.run(builder.summary(prepared, instructions).messages,
                                  routing=requests.part_key(number))
            results.append(result)
            partials.append((part.label, result.answer))
        text, merges = merge(partials, prompt_for=lambda pairs: builder.merge(pairs, instructions),
                             request=requests.run, context=context,
                             answer_tokens=self.options.max_tokens, name=document.name)
        results += merges
        cut_parts = [n for n, r in enumerate(results[:len(parts)], 1) if r.truncated]
        cut_merges = sum(1 for r in merges[:-1] if r.truncated)
        cut = "; ".join(filter(None, [
            self._cut(merges[-1]),
            (f"the {'summaries of parts' if len(cut_parts) > 1 else 'summary of part'} "
             f"{', '.join(map(str, cut_parts))} stopped at max_tokens {self.options.max_tokens}, "
             "so the end of what the part says is missing" if cut_parts else None),
            (f"{cut_merges} intermediate merge{'s' if cut_merges > 1 else ''} stopped at "
             f"max_tokens {self.options.max_tokens}" if cut_merges else None)])) or None
        return text, self._stats(merges[-1], results, cut=cut), parts

    def _requests(self, model: str, routing: str | None = None) -> PartRequests:
        def started() -> None:
            with self._lock:
                self.progress.in_flight += 1

        def ended(result: AnswerResult | None) -> None:
            with self._lock:
                self.progress.in_flight -= 1
                if result is not None:
                    self.progress.tokens_in += result.prompt_tokens or 0
                    self.progress.tokens_out += result.completion_tokens or 0

        return PartRequests(self.client, model=model, max_tokens=self.options.max_tokens,
                            cache_salt=self._cache_salt, attempts=self.options.attempts,
                            streams=self._streams, on_start=started, on_end=ended,
                            routing=routing)

    def _cut(self, final: AnswerResult) -> str | None:
        """Why a summary is incomplete, in words, when its last request stopped at the limit."""
        if not final.truncated:
            return None
        return (f"the summary stopped at max_tokens {self.options.max_tokens} (finish_reason "
                "\"length\") before it was finished")

    @staticmethod
    def _stats(final: AnswerResult, results: Sequence[AnswerResult], *,
               cut: str | None) -> dict[str, Any]:
        stats = final.as_dict()
        stats["cut"] = cut
        stats.pop("answer", None)
        stats["prompt_tokens"] = sum(r.prompt_tokens or 0 for r in results) or None
        stats["completion_tokens"] = sum(r.completion_tokens or 0 for r in results) or None
        stats["requests"] = len(results)
        return stats


def collect_items(workspace: Workspace, patterns: Sequence[str], *, codebase: bool = False,
                  include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[BatchItem]:
    """Files, globs or folders → documents. A folder with a `.git` (or with `codebase=True`) is
    one document; any other folder gives one document per file in it."""
    from .sources import expand_paths, iter_tree
    from .workspace import LoadRequest

    options = workspace.ingest_options(include=include, exclude=exclude)
    items: list[BatchItem] = []
    seen: set[str] = set()

    def add(source: str, request: LoadRequest) -> None:
        same = os.path.normcase(os.path.abspath(source))  # `a.txt` and `./a.txt` are one input
        if same not in seen:
            seen.add(same)
            items.append(BatchItem(source, lambda: workspace.load(request)))

    for path in expand_paths(patterns):
        if path.is_dir() and (codebase or (path / ".git").exists()):
            add(str(path), LoadRequest((str(path),), tuple(include), tuple(exclude), codebase=True))
        elif path.is_dir():
            notes: list[str] = []
            for entry in iter_tree(path, options, notes):
                add(str(entry.path), LoadRequest((str(entry.path),)))
            for note in notes:
                log.info("%s: %s", path, note)
        else:
            add(str(path), LoadRequest((str(path),)))
    return items
