"""Questions over one document: the flow shared by `sparkdocs ask` and the Ask page.
Prepared documents are kept per (document, selection), so a question costs only its own
encoding; every answer is appended to its session as what it was: finished, cut, stopped,
broke off or failed (a failed request keeps its question and the real error)."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypedDict

from .changes import with_changes
from .citations import Citation, Locator, Status, verify_answer
from .client import AnswerResult, AnswerStream, ModelClient, Waiting, WarmUpResult, routing_key
from .documents import Document, DocumentKind, SectionKind, combine_documents, member_document
from .errors import BudgetError, PasswordRequiredError, SparkdocsError, StoreError
from .parts import (
    PartAnswer,
    PartPlan,
    PartProgress,
    PartRequests,
    WholePlan,
    ask_parts,
    combine,
    parts_cached_at_once,
    plan_whole,
    prefill_speed,
    prepared_part,
    whole_parts,
)
from .prompts import PreparedDocument, Prompt
from .served_tokens import ServedCount, ServedTokenizer, effective_context
from .store import PartRecord, Session, SessionDocument, Turn, TurnStatus
from .store.busy import SessionBusyError, whole_answer_lock
from .store.recovery import append_kept
from .streams import StreamGroup
from .tokens import Budget
from .workspace import DocumentSet, Workspace, new_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingAnswer:
    prompt: Prompt
    stream: AnswerStream
    question: str
    follow_up: bool
    prepared: PreparedDocument  # what was sent: the answer's quotes are checked against it


@dataclass(frozen=True)
class AddedDocument:
    """A session after a document was added (or found to be in it already), the set it now
    asks about, and what was said on the way."""

    session: Session
    document: Document
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TurnOutcome:
    """A question's turn as stored, and the request's own record (None: it was never sent)."""

    session: Session  # as stored right after the append: its last turn is this one
    result: AnswerResult | None

    @property
    def turn(self) -> Turn:
        return self.session.turns[-1]


class QuestionAnswering:
    def __init__(self, workspace: Workspace, client: ModelClient) -> None:
        self.workspace = workspace
        self.client = client
        self._prepared: dict[tuple[str, tuple[int, ...] | None], PreparedDocument] = {}
        self._secret: bytes | None = None  # keys the cache salts (auth.install_secret)
        self._parts: dict[tuple[str, int, int], PartPlan] = {}
        self._plans: dict[tuple[str, int, int, str], WholePlan] = {}
        self._lock = threading.Lock()
        self.served = ServedTokenizer(client, workspace.prompts.tokenizer)

    def served_count(self, document: Document, keep: Sequence[int] | None = None) -> ServedCount:
        """How the served model counts this selection (exact Llama 3 unless it is another)."""
        return self.served.count(self.prepared(document, keep))

    def budget(self, document: Document, keep: Sequence[int] | None = None) -> Budget:
        """The budget against the served context, in the served model's tokens."""
        context = self.client.capabilities().context_length
        ratio = self.served_count(document, keep).ratio
        return self.workspace.budget(document, keep=keep, context=context).scaled(ratio)

    def fit(self, document: Document) -> tuple[int, ...] | None:
        """Auto-fit (see `Workspace.fit`) against the served context, in served tokens."""
        context = self.client.capabilities().context_length
        answer = self.workspace.settings.answer_tokens
        ratio = self.served_count(document).ratio
        return self.workspace.fit(document, context=effective_context(context, answer, ratio),
                                  answer_tokens=answer)

    def prepared(self, document: Document, keep: Sequence[int] | None = None) -> PreparedDocument:
        key = (document.content_hash, tuple(keep) if keep is not None else None)
        with self._lock:
            if key not in self._prepared:
                if len(self._prepared) > 16:
                    self._prepared.pop(next(iter(self._prepared)))
                self._prepared[key] = self.workspace.prepare(document, keep=keep)
            return self._prepared[key]

    def session_for(self, document: Document, *, follow_up_of: str | None = None,
                    owner: str | None = None, keep: Sequence[int] | None = None,
                    whole: bool = False) -> Session:
        """The owner's session to continue (it must be about this document) or a new one over
        `keep` (None: the whole document), which must fit the served budget unless it is read
        `whole`, in parts: the CLI has no
        picker, so the error names the excess and a `--pages`/`--parts` selection that fits.
        The owner defaults to the settings' user (the CLI's --user)."""
        store = self.workspace.store
        owner = owner or self.workspace.settings.user
        if follow_up_of:
            session = store.get_session(follow_up_of, owner=owner)
            if session.document_key != document.content_hash:
                raise SparkdocsError(
                    f"Session {follow_up_of} is about {session.document_name!r}"
                    f"{self._files_of(session, owner=owner)}, not these paths; give that "
                    "document's paths, add another document with --add PATH, or start a new "
                    "session.")
            return session
        if not whole:  # read in parts, the whole document need not fit one request
            self.check_budget(document, keep)
        return new_session(store, document, owner=owner, keep=keep)

    def check_budget(self, document: Document, keep: Sequence[int] | None) -> None:
        """A BudgetError naming the excess and a selection that fits, unless `keep` fits the
        served context (see `Workspace.check_selection`)."""
        context = self.client.capabilities().context_length
        self.workspace.check_selection(document, keep, context=context,
                                       ratio=self.served_count(document, keep).ratio)

    def add_document(self, session: Session, current: Document, added: Document, *,
                     name: str | None = None, folder: str | None = None, whole: bool = False
                     ) -> AddedDocument:
        """`added` after the session's documents: the earlier documents' blocks stay as they
        were (their cached prefix serves the next question), the new one costs only its own
        tokens. The whole set must fit unless it is read `whole`. The same document again is
        said, not added."""
        if session.documents and len(current.blocks) != len(session.documents):
            present = {m.content_hash for m in current.blocks}
            missing = [d for d in session.documents if d.key not in present]
            if added.content_hash in {d.key for d in missing}:  # read again: back in the store
                stored = self.workspace.store.get_session(session.id, owner=session.owner)
                opened = self.open_documents(stored)
                back = next(d.name for d in missing if d.key == added.content_hash)
                if opened.keep is not None or opened.missing:
                    stored = replace(stored, kept_sections=opened.keep)
                return AddedDocument(stored, opened.document,
                                     (f"{back} is back: the session has it in its place again.",
                                      *opened.notes))
            raise SparkdocsError(
                f"This session's {', '.join(d.name for d in missing)} is no longer in the "
                "store: add it back first (--add its file, or upload it again), or start a new "
                "session with these documents.")
        combined = self.workspace.with_added(current, added, name=name, folder=folder)
        if combined.document is current:
            return AddedDocument(session, current, combined.notes)
        keep = session.kept_sections
        if keep is not None:
            keep = (*keep, *range(len(current.sections), len(combined.document.sections)))
        if not whole:
            try:
                self.check_budget(combined.document, keep)
            except BudgetError as exc:  # its fix (--pages/--parts) is for a new session
                over = str(exc).split(";", 1)[0]
                raise BudgetError(
                    f"{over}: with {combined.document.members[-1].name} added, these documents "
                    "do not fit the context. Ask with --whole to read every page in parts, or "
                    "start a new session with the documents and the parts to keep (--documents "
                    "--parts …; `sparkdocs count --documents` numbers them).") from exc
        first, new = combined.document.members[0], combined.document.members[-1]
        stored = self.workspace.store.add_session_document(
            session.id, SessionDocument(new.content_hash, new.name, new.count),
            key=combined.document.content_hash, name=combined.document.name,
            kept_sections=keep, first=SessionDocument(first.content_hash, first.name, first.count),
            expected_key=session.document_key, owner=session.owner)
        return AddedDocument(stored, combined.document, combined.notes)

    def follow_up(self, session_id: str, *, given: DocumentSet | None = None,
                  owner: str | None = None, password: str | None = None) -> AddedDocument:
        """A session to go on with and the documents it asks about: the paths given again
        (they must be its documents, under the names the session gave them), or without paths
        its documents from the store — a document no longer there is named and the others
        open."""
        owner = owner or self.workspace.settings.user
        session = self.workspace.store.get_session(session_id, owner=owner)
        if given is None:  # `password` opens whichever of its documents is encrypted
            keys = [d.key for d in session.documents] or [session.document_key]
            passwords = {key: password for key in keys} if password is not None else None
            opened = self.open_documents(session, passwords=passwords)
            if opened.keep is not None or opened.missing:
                session = replace(session, kept_sections=opened.keep)
            return AddedDocument(session, opened.document, opened.notes)
        document = given.document
        if session.documents:
            document = self._as_in_session(session, given.document)
        self.session_for(document, follow_up_of=session_id, owner=owner)
        return AddedDocument(session, document, given.notes)

    def _as_in_session(self, session: Session, given: Document) -> Document:
        """The documents given, in the session's order and under its names."""
        by_key = {m.content_hash: m for m in given.blocks}
        wanted = [d.key for d in session.documents]
        extra = [m.name for m in given.blocks if m.content_hash not in wanted]
        absent = [d.name for d in session.documents if d.key not in by_key]
        if extra or absent:
            problem = (f"{', '.join(extra)} is not in it (add it with --add)" if extra
                       else f"{', '.join(absent)} is missing from the paths")
            raise SparkdocsError(
                f"Session {session.id} holds {session.document_name}; {problem}. Give its "
                "documents' paths, or none to reopen them from the store.")
        parts = [member_document(given, by_key[key]) for key in wanted]
        return with_changes(combine_documents(parts, names=[d.name for d in session.documents]))

    def open_documents(self, session: Session, *, passwords: Mapping[str, str] | None = None
                       ) -> DocumentSet:
        """A session's documents from the store (several, or its one): what the Library and
        `ask --follow-up-of` without paths reopen."""
        if session.documents:
            return self.workspace.reopen(session, owner=session.owner, passwords=passwords)
        document = self.workspace.store.get_document(
            session.document_key, owner=session.owner,
            password=(passwords or {}).get(session.document_key))
        if document is None:
            raise StoreError(f"{session.document_name} is no longer in the store; upload it "
                             "again (or give its paths) to go on with this session.")
        return DocumentSet(document)

    def _files_of(self, session: Session, *, owner: str) -> str:
        """` (a.txt, b.txt, in this order)` for a session about several files: the order given
        is part of the document, so the same files the other way round are another one."""
        try:
            stored = self.workspace.store.get_document(session.document_key, owner=owner)
        except PasswordRequiredError:
            return ""
        if stored is None or stored.kind is not DocumentKind.FILES:
            return ""
        names: list[str] = []
        for section in stored.sections:  # a PDF's pages and an archive's parts carry its name
            name = section.title
            if section.kind is SectionKind.PAGE:
                name = name.rsplit(" p.", 1)[0]
            elif section.kind is SectionKind.TREE:  # an archive: its tree, then its files
                name = name.rsplit("/", 1)[0]
            elif names and name.startswith(f"{names[-1]}/"):
                name = names[-1]
            if not names or names[-1] != name:
                names.append(name)
        return f" ({', '.join(names)}, in this order)" if names else ""

    def build(self, document: Document, session: Session, question: str, *, follow_up: bool
              ) -> Prompt:
        prepared = self.prepared(document, session.kept_sections)
        history = [(t.question, t.answer) for t in session.turns
                   if t.answer and t.status.complete]
        if follow_up and history:
            return self.workspace.prompts.follow_up(prepared, history, question)
        return self.workspace.prompts.question(prepared, question)

    def check_fits(self, prompt: Prompt, *, max_tokens: int, ratio: float = 1.0) -> None:
        context = self.client.capabilities().context_length
        needed = math.ceil(prompt.prompt_tokens * ratio)
        if needed + max_tokens > context:
            raise BudgetError(
                f"This prompt needs {needed:,} tokens plus {max_tokens:,} for the "
                f"answer, over the served context of {context:,}; leave out parts of the document, "
                "switch off follow-up mode, or lower the answer length.")

    def ask(self, document: Document, session: Session, question: str, *, follow_up: bool = False,
            max_tokens: int | None = None) -> PendingAnswer:
        answer_tokens = max_tokens or self.workspace.settings.answer_tokens
        prompt = self.build(document, session, question, follow_up=follow_up)
        self.check_fits(prompt, max_tokens=answer_tokens,
                        ratio=self.served_count(document, session.kept_sections).ratio)
        stream = self.client.stream(prompt.messages, max_tokens=answer_tokens,
                                    cache_salt=self.cache_salt(session.owner),
                                    routing_key=routing_key(document.blocks[0].content_hash, session.owner))
        return PendingAnswer(prompt, stream, question, follow_up,
                             self.prepared(document, session.kept_sections))

    def run_turn(self, document: Document, session: Session, question: str, *,
                 follow_up: bool = False, max_tokens: int | None = None,
                 on_text: Callable[[str], None] | None = None,
                 on_wait: Callable[[Waiting], None] | None = None,
                 stop_reasons: Mapping[type[BaseException], str] | None = None,
                 streams: StreamGroup | None = None) -> TurnOutcome:
        """One question, the one way every face asks it: build and check the prompt, stream
        the answer (`on_text` per chunk, `on_wait` while none comes), then append the turn with
        its quotes verified, whatever happened.

        How it ends: a request that fails is recorded as failed and its error raised; a
        KeyboardInterrupt (Ctrl-C) stops the answer, which is recorded and returned as stopped;
        any other BaseException (SIGTERM's SystemExit, a page rerun after a Stop click) stops
        and records it, then goes on up. `stop_reasons` words each kind of stop for the
        record. `streams` lets a caller cancel this answer with others."""
        reasons = stop_reasons or {}
        try:
            pending = self.ask(document, session, question, follow_up=follow_up,
                               max_tokens=max_tokens)
        except BaseException as exc:  # never sent (over budget, service down): still history
            with signals_held():
                recorded = self.record_failure(session, question, follow_up=follow_up,
                                               **_ending(exc, reasons))
            if isinstance(exc, KeyboardInterrupt):
                return TurnOutcome(recorded, None)
            raise
        group = streams if streams is not None else StreamGroup()
        stream = pending.stream
        try:
            with group.member(stream), stream as answer:  # leaving it ends the request
                for event in answer.events():
                    if isinstance(event, Waiting):
                        if on_wait is not None:
                            on_wait(event)
                    elif on_text is not None:
                        on_text(event)
        except BaseException as exc:  # failed (kept with the server's own error) or stopped
            stream.cancel()
            with signals_held():
                recorded = self.record(session, pending, **_ending(exc, reasons))
            if isinstance(exc, KeyboardInterrupt):
                return TurnOutcome(recorded, stream.result)
            raise
        with signals_held():
            return TurnOutcome(self.record(session, pending), stream.result)

    def whole_parts(self, document: Document) -> PartPlan:
        """The parts every question over the whole document reads (kept per document and
        served context: cutting a long document costs a second or two of counting)."""
        context = self.whole_context(document)
        answer = self.workspace.settings.answer_tokens
        key = (document.content_hash, context, answer)
        with self._lock:
            parts = self._parts.get(key)
        if parts is None:
            parts = whole_parts(document, self.workspace.prompts, context=context,
                                answer_tokens=answer)
            with self._lock:
                if len(self._parts) > 16:
                    self._parts.pop(next(iter(self._parts)))
                self._parts[key] = parts
        return parts

    def whole_context(self, document: Document) -> int:
        """The served context in Llama 3 tokens for this document's parts: a served model that
        counts more tokens for the same text (the demo model) leaves less room."""
        context = self.client.capabilities().context_length
        answer = self.workspace.settings.answer_tokens
        return effective_context(context, answer, self.served_count(document).ratio)

    def plan_whole(self, document: Document, question: str) -> WholePlan:
        """Answering from every page: the parts, their prompts and how many go at once (kept
        per question: the app shows the cost of a document on every rerun)."""
        context = self.whole_context(document)
        key = (document.content_hash, context, self.workspace.settings.answer_tokens, question)
        with self._lock:
            plan = self._plans.get(key)
        if plan is None:
            plan = plan_whole(document, self.workspace.prompts, self.client, question,
                              cut=self.whole_parts(document), context=context,
                              answer_tokens=self.workspace.settings.answer_tokens)
            with self._lock:
                if len(self._plans) > 16:
                    self._plans.pop(next(iter(self._plans)))
                self._plans[key] = plan
        return plan

    def prefill_speed(self, owner: str) -> float | None:
        """Prefill tokens/s measured on the owner's recent answers, if any read enough."""
        turns = [t for s in self.workspace.store.list_sessions(owner=owner)[:20] for t in s.turns]
        return prefill_speed([(t.prompt_tokens, t.cached_tokens, t.ttft_s) for t in turns])

    def run_whole(self, document: Document, session: Session, question: str, *,
                  wait_turn: bool = False,
                  on_plan: Callable[[WholePlan], None] | None = None,
                  on_part: Callable[[PartAnswer], None] | None = None,
                  stop_reasons: Mapping[type[BaseException], str] | None = None,
                  streams: StreamGroup | None = None,
                  progress: PartProgress | None = None) -> TurnOutcome:
        """`_run_whole` while holding the session's whole-answer lock: a second such question
        on the session at once is refused (`wait_turn` False: the CLI) or waits (the app).
        `progress` follows each part (queued, prefilling, answering, done)."""
        try:
            with whole_answer_lock(self.workspace.settings.cache_dir, session.id,
                                   wait=wait_turn):
                return self._run_whole(document, session, question, on_plan=on_plan,
                                       on_part=on_part, stop_reasons=stop_reasons,
                                       streams=streams, progress=progress)
        except SessionBusyError as exc:
            self.record_failure(session, question, follow_up=False, failure=exc)
            raise

    def _run_whole(self, document: Document, session: Session, question: str, *,
                   on_plan: Callable[[WholePlan], None] | None = None,
                   on_part: Callable[[PartAnswer], None] | None = None,
                   stop_reasons: Mapping[type[BaseException], str] | None = None,
                   streams: StreamGroup | None = None,
                   progress: PartProgress | None = None) -> TurnOutcome:
        """A question answered from every part of the document (see parts.py), recorded as one
        turn that says what was read, keeps each part's answer, and has its quotes verified
        against the whole document. `on_plan` sees the cost before anything is sent.

        Ends like `run_turn`: a question that cannot be planned or whose parts all fail is
        recorded and its error raised; a Ctrl-C, or a cancel of `streams` by its holder,
        stops every part in flight and is returned as stopped; other stops are recorded, then
        go on up. When parts were answered but combining them failed, the failed turn is
        returned (not raised), so that the faces can show the part answers it keeps."""
        reasons = stop_reasons or {}
        try:
            plan = self.plan_whole(document, question)
        except BaseException as exc:
            with signals_held():
                recorded = self.record_failure(session, question, follow_up=False,
                                               **_ending(exc, reasons))
            if isinstance(exc, KeyboardInterrupt):
                return TurnOutcome(recorded, None)
            raise
        if progress is not None:
            progress.planned(len(plan.parts))
        if on_plan is not None:
            on_plan(plan)
        settings = self.workspace.settings
        requests = PartRequests(self.client, model=self.client.resolve_model(),
                                max_tokens=settings.answer_tokens,
                                cache_salt=self.cache_salt(session.owner),
                                streams=streams if streams is not None else StreamGroup(),
                                routing=routing_key(document.blocks[0].content_hash, session.owner),
                                progress=progress)
        done: list[PartAnswer] = []

        def part_done(answer: PartAnswer) -> None:
            done.append(answer)
            if on_part is not None:
                on_part(answer)

        asked = time.time()
        stage = "read"
        try:
            answers = ask_parts(document, plan, requests=requests, on_part=part_done)
            stage = "combine"
            answer = combine(document, self.workspace.prompts, plan, answers, question,
                             requests=requests, context=self.whole_context(document),
                             answer_tokens=settings.answer_tokens)
        except BaseException as exc:
            ending = _ending(exc, reasons)
            if requests.streams.cancelled and isinstance(exc, SparkdocsError):
                ending = {"failure": None, "stopped": STOPPED_BY_USER}  # the holder's Stop
            requests.streams.cancel()
            recorded = self._record_unfinished(session, question, plan, done, asked, ending)
            if (isinstance(exc, KeyboardInterrupt) or ending["stopped"] == STOPPED_BY_USER
                    and isinstance(exc, Exception) or stage == "combine"
                    and isinstance(exc, SparkdocsError)):
                return TurnOutcome(recorded, None)
            raise
        results = answer.results
        final = results[-1]
        turn = Turn(question, answer.answer,
                    status=TurnStatus.CUT if final.finish_reason == "length" else TurnStatus.FINISHED,
                    finish_reason=final.finish_reason,
                    prompt_tokens=_total([r.prompt_tokens for r in results]),
                    completion_tokens=_total([r.completion_tokens for r in results]),
                    cached_tokens=_total([r.cached_tokens for r in results]), asked_at=asked,
                    citations=verify_answer(answer.answer, self.prepared(document)),
                    read=answer.read, parts=_part_records(answer.parts))
        with signals_held():
            return TurnOutcome(self._append(session, turn), final)

    def _record_unfinished(self, session: Session, question: str, plan: WholePlan,
                           done: Sequence[PartAnswer], asked: float, ending: _Ending) -> Session:
        """A whole-document answer that was stopped or failed, with every part answer it got."""
        stopped = ending["stopped"]
        total = len(plan.parts)
        read = (f"stopped after {len(done)} of {total} parts" if stopped is not None
                else f"{sum(1 for a in done if a.result)} of {total} parts answered; not combined")
        results = [a.result for a in done if a.result is not None]
        turn = Turn(question, "", status=TurnStatus.STOPPED if stopped else TurnStatus.FAILED,
                    error=stopped or str(ending["failure"]), asked_at=asked, citations=(),
                    prompt_tokens=_total([r.prompt_tokens for r in results]),
                    cached_tokens=_total([r.cached_tokens for r in results]),
                    parts=_part_records(done), read=read)
        with signals_held():
            return self._append(session, turn)

    def _append(self, session: Session, turn: Turn) -> Session:
        """Every turn is stored through here: retried while the store is locked, handed back
        in TurnNotStoredError for the face to keep when it is not stored (store/recovery.py)."""
        return append_kept(self.workspace.store, session, turn,
                           retry_s=self.workspace.settings.store_retry_s)

    def record(self, session: Session, pending: PendingAnswer, *,
               failure: SparkdocsError | None = None, stopped: str | None = None) -> Session:
        """Append the turn, whatever happened, as what it was: finished, cut, stopped, broke
        off or failed, with its quotes checked against what was sent (once: every face shows
        these stored verdicts). `failure` is the error the request raised; `stopped` says who
        stopped it. Returns the session as stored just after the append."""
        turn = turn_from(pending.question, pending.stream.result, follow_up=pending.follow_up,
                         partial=pending.stream.text, failure=failure, stopped=stopped)
        citations = verify_answer(turn.answer, pending.prepared)
        return self._append(session, replace(turn, citations=citations))

    def record_failure(self, session: Session, question: str, *, follow_up: bool,
                       failure: SparkdocsError | None = None, stopped: str | None = None
                       ) -> Session:
        """A question that never got a stream (over budget, service down, stopped while its
        prompt was built) still enters the history, with the reason, so the user sees what was
        asked and why nothing came back."""
        status = TurnStatus.STOPPED if failure is None else TurnStatus.FAILED
        turn = Turn(question, "", status=status,
                    error=str(failure) if failure is not None else stopped or STOPPED_BY_USER,
                    follow_up=follow_up, asked_at=time.time(), citations=())
        return self._append(session, turn)

    def citations_of(self, turn: Turn, prepared: PreparedDocument | None) -> tuple[Citation, ...]:
        """The turn's stored verdicts; a turn recorded before verdicts were stored, or whose
        stored verdicts do not fit its document, is checked now (the same verifier over the
        same document)."""
        stored = valid_citations(turn.citations, prepared)
        if stored is not None:
            return stored
        if prepared is None or not turn.answer:
            return ()
        return verify_answer(turn.answer, prepared)

    def warm_up(self, document: Document, keep: Sequence[int] | None = None, *,
                owner: str | None = None, streams: StreamGroup | None = None,
                on_part: Callable[[int, int], None] | None = None) -> WarmUpResult:
        """Warm the owner's prefix: under per-user isolation another user's warm-up would not
        serve them. `streams.cancel()` ends it on the server; `on_part(done, total)` says
        how far it is."""
        prepared = self.prepared(document, keep)
        owner = owner or self.workspace.settings.user
        if on_part:
            on_part(0, 1)
        result = self.client.warm_up(self.workspace.prompts.warm_up(prepared).messages,
                                     cache_salt=self.cache_salt(owner),
                                     routing_key=routing_key(document.blocks[0].content_hash, owner),
                                     streams=streams)
        if on_part:
            on_part(1, 1)
        return result

    def warm_parts(self, document: Document, *, owner: str | None = None,
                   streams: StreamGroup | None = None,
                   on_part: Callable[[int, int], None] | None = None) -> WarmUpResult:
        """Warm the prefixes of a document beyond the context, part by part from the first,
        as many as the KV cache holds at once (the rest would only push the first ones out);
        `on_part(done, total)` after each, `streams.cancel()` ends the one in flight."""
        owner = owner or self.workspace.settings.user
        cut = self.whole_parts(document)
        metrics = self.client.capabilities().metrics
        held = parts_cached_at_once(cut.parts, metrics.kv_capacity_tokens if metrics else None)
        count = len(cut.parts) if held is None else held
        builder, salt = self.workspace.prompts, self.cache_salt(owner)
        routing = routing_key(document.blocks[0].content_hash, owner)
        results: list[WarmUpResult] = []
        for number in range(1, count + 1):
            if on_part:
                on_part(number - 1, count)
            results.append(self.client.warm_up(builder.warm_up(prepared_part(
                cut.document, builder, cut.parts, number)).messages, cache_salt=salt,
                routing_key=routing if len(cut.parts) == 1 else routing_key(routing, None, part=number),
                streams=streams))
        if on_part:
            on_part(count, count)
        return WarmUpResult(sum(r.seconds for r in results),
                            _total([r.prompt_tokens for r in results]),
                            _total([r.cached_tokens for r in results]))

    def cache_salt(self, owner: str) -> str | None:
        """The owner's vLLM cache salt, or None when the prefix cache is shared (auth.py)."""
        from .auth import cache_salt_for, install_secret, isolation
        from .config import CacheIsolation

        settings = self.workspace.settings
        if isolation(settings) is CacheIsolation.SHARED:
            return None  # no secret file is needed (or made) for a shared cache
        if self._secret is None:
            self._secret = install_secret(settings.cache_dir)
        return cache_salt_for(owner, secret=self._secret, settings=settings)


STOPPED_BY_USER = "stopped by the user"


class _Ending(TypedDict):
    failure: SparkdocsError | None
    stopped: str | None


def _ending(exc: BaseException, reasons: Mapping[type[BaseException], str]) -> _Ending:
    """How an exception ends a turn: a sparkdocs error is its failure; any other Exception is
    a failure nobody foresaw, named; the rest (Ctrl-C, SIGTERM, a page rerun) are stops."""
    if isinstance(exc, SparkdocsError):
        return {"failure": exc, "stopped": None}
    if isinstance(exc, Exception):
        return {"failure": unforeseen(exc), "stopped": None}
    return {"failure": None, "stopped": _stop_reason(exc, reasons)}


def _total(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def unforeseen(exc: BaseException) -> SparkdocsError:
    """An error no part of sparkdocs mapped, as the failure a turn records."""
    return SparkdocsError(f"sparkdocs failed unexpectedly ({exc.__class__.__name__}: {exc}); "
                          "the question is kept — please report this")


def valid_citations(citations: tuple[Citation, ...] | None, prepared: PreparedDocument | None
                    ) -> tuple[Citation, ...] | None:
    """Stored verdicts as they may be shown over `prepared`, or None when any is not what the
    verifier makes (a damaged or foreign row): the faces then check the answer again."""
    if citations is None:
        return None
    count = len(prepared.document.sections) if prepared is not None else 0

    def place_ok(place: object) -> bool:
        return place is None or (
            isinstance(place, Locator) and isinstance(place.label, str)
            and isinstance(place.title, str)
            and all(isinstance(i, int) and 0 <= i < count for i in place.sections)
            and (place.lines is None or all(isinstance(n, int) for n in place.lines)))

    def ok(c: object) -> bool:
        return (isinstance(c, Citation) and isinstance(c.quote, str) and isinstance(c.note, str)
                and isinstance(c.source_text, str) and isinstance(c.status, Status)
                and place_ok(c.cited) and place_ok(c.found)
                and all(place_ok(o) and o is not None for o in c.occurrences)
                and all(isinstance(n, int) for n in c.span)
                and (c.source_offsets is None or all(isinstance(n, int) for n in c.source_offsets)))

    return citations if all(ok(c) for c in citations) else None


def _part_records(answers: Sequence[PartAnswer]) -> tuple[PartRecord, ...]:
    records = []
    for answer in sorted(answers, key=lambda a: a.number):
        result = answer.result
        records.append(PartRecord(
            answer.number, answer.label, "read" if answer.error is None else "not read",
            result.answer if result is not None else "", answer.error,
            result.prompt_tokens if result is not None else None,
            result.cached_tokens if result is not None else None))
    return tuple(records)


def _stop_reason(exc: BaseException, reasons: Mapping[type[BaseException], str]) -> str:
    for kind, reason in reasons.items():
        if isinstance(exc, kind):
            return reason
    return STOPPED_BY_USER


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A Ctrl-C or SIGTERM inside the append would roll it back and lose the turn: hold them
    until it has committed (they are delivered right after). Only the main thread gets
    signals; elsewhere (a Streamlit script thread) there is nothing to hold."""
    held = {signal.SIGINT, signal.SIGTERM}
    if (not hasattr(signal, "pthread_sigmask")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def turn_from(question: str, result: AnswerResult | None, *, follow_up: bool, partial: str = "",
              failure: SparkdocsError | None = None, stopped: str | None = None) -> Turn:
    """The turn to store for one request. An answer that ended by itself is finished or cut,
    even if a stop arrived after its last chunk; otherwise the failure, then the stop, then the
    stream's own account (a cut connection) says what happened."""
    now = time.time()
    if result is not None and not result.interrupted and failure is None:
        status = TurnStatus.CUT if result.finish_reason == "length" else TurnStatus.FINISHED
        error = None
    elif failure is not None:
        status, error = TurnStatus.FAILED, str(failure)
    elif stopped is not None or (result is not None and result.error == STOPPED_BY_USER):
        status, error = TurnStatus.STOPPED, stopped or STOPPED_BY_USER
    else:
        status = TurnStatus.BROKE_OFF
        error = (result.error if result is not None and result.error
                 else "the answer did not finish")
    if result is None:
        return Turn(question, partial, status=status, error=error, follow_up=follow_up,
                    asked_at=now)
    return Turn(question, result.answer or partial, status=status, error=error,
                follow_up=follow_up, finish_reason=result.finish_reason, ttft_s=result.ttft_s,
                decode_tokens_per_s=result.decode_tokens_per_s, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, cached_tokens=result.cached_tokens,
                asked_at=now)
