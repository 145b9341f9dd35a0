"""What the CLI and the pages share: settings, the store, the tokenizer and prompt builder,
wired once. Loading a document goes through the store, so the same bytes are parsed once."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from .config import AuthMode, Settings
from .documents import (
    Document,
    DocumentKind,
    SectionKind,
    combine_documents,
    member_document,
    unique_names,
)
from .errors import BudgetError, IngestError, SelectionError, SparkdocsError, StoreError
from .ingest import (
    IngestOptions,
    Progress,
    Upload,
    codebase_key,
    document_key,
    ingest_codebase,
    ingest_uploads,
)
from .ingest.code import directory_tokens
from .ingest_slots import Waiting, ingest_slot
from .passwords import pdf_is_encrypted
from .prompts import PreparedDocument, PromptBuilder, block_tokens, prepare_document, rank_sections
from .rank_cache import CachedRanks, cached_ranks
from .selection import select, selection_hint
from .sources import expand_paths, read_file, walk_codebase
from .store import Session, SessionDocument, Store
from .store.recovery import RecoveryReport, private_temp_folder, recovered_folder, store_recovered
from .tokens import Budget, count_document, llama3, preload_llama3

log = logging.getLogger(__name__)


def _with_changes(document: Document) -> Document:
    from .changes import with_changes  # only for a set of documents: not `count` of one

    return with_changes(document)


@dataclass(frozen=True)
class DocumentSet:
    """Several documents as one session holds them (see `documents.combine_documents`), and
    what was said on the way: a file given twice, a document no longer in the store."""

    document: Document
    notes: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # names of the session's documents the store no longer has
    keep: tuple[int, ...] | None = None  # a reopened session's kept sections, in this set


@dataclass(frozen=True)
class LoadRequest:
    paths: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    password: str | None = None
    codebase: bool = False


class Workspace:
    def __init__(self, settings: Settings, *, store: Store | None = None,
                 lists_documents: bool = True) -> None:
        """`lists_documents` False (`sparkdocs count`): what is read is cached, not listed in
        the Library (see `DocumentRows.lists_new_documents`)."""
        self.settings = settings
        self._store = store
        self._lists_documents = lists_documents

    @cached_property
    def store(self) -> Store:
        store = self._store or Store(self.settings.cache_dir,
                                     size_limit_bytes=self.settings.cache_size_limit_mb * 2**20,
                                     busy_timeout_s=self.settings.store_busy_timeout_s,
                                     per_owner_shares=self.settings.auth is not AuthMode.NONE)
        store.lists_new_documents = self._lists_documents
        return store

    def recovery_folders(self) -> list[Path]:
        """Where answers the store did not take are kept: `<cache dir>/recovered`, then (that
        disk may be the full one) a folder of this user's own in the system's temporary one."""
        spare = private_temp_folder()
        return [recovered_folder(self.settings.cache_dir), *([spare] if spare else [])]

    def store_recovered(self) -> RecoveryReport:
        """Store the answers kept in recovery files (see store/recovery.py); a store that is
        still unavailable leaves them for next time."""
        folders = [f for f in self.recovery_folders() if f.is_dir()]
        if not any(any(f.glob("*.json")) for f in folders):
            return RecoveryReport()
        try:
            return store_recovered(self.store, folders)
        except StoreError as exc:  # the store would not even open: the next command tries
            files = [p for f in folders for p in sorted(f.glob("*.json"))]
            return RecoveryReport(left=tuple((p, str(exc)) for p in files))

    @cached_property
    def ranks(self) -> CachedRanks:
        """The tokenizer's ranks, from the cache folder when a process built them before."""
        return cached_ranks(self.settings.cache_dir)

    @cached_property
    def prompts(self) -> PromptBuilder:
        return PromptBuilder(llama3(load_ranks=self.ranks))

    def ingest_options(self, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                       password: str | None = None) -> IngestOptions:
        settings = self.settings
        return IngestOptions(
            password=password, include=tuple(include), exclude=tuple(exclude),
            include_lock_files=settings.include_lock_files,
            max_file_bytes=settings.max_upload_bytes,
            max_source_file_bytes=settings.max_source_file_bytes,
            max_unpacked_bytes=settings.max_unpacked_bytes,
            max_compression_ratio=settings.max_compression_ratio,
            max_match_seconds=settings.max_match_seconds,
            max_pdf_memory_bytes=settings.max_pdf_memory_mb * 2**20,
            max_pdf_cpu_seconds=settings.max_pdf_cpu_seconds)

    def load_uploads(self, uploads: Sequence[Upload], options: IngestOptions, *,
                     progress: Progress | None = None, owner: str | None = None,
                     waiting: Waiting | None = None) -> Document:
        """Uploaded bytes → the owner's counted document (default: the settings' user), from
        the store when they uploaded these bytes before — for an encrypted PDF only with its
        password again. Reading takes one of the process's
        `max_concurrent_ingests` slots; `waiting` hears how long it has waited for one."""
        preload_llama3(load_ranks=self.ranks)
        key = document_key(uploads, options)

        def read() -> Document:
            with ingest_slot(self.settings.max_concurrent_ingests, waiting=waiting):
                return count_document(ingest_uploads(uploads, options=options,
                                                     progress=progress))

        owner = owner or self.settings.user
        document = self.store.get_or_ingest(
            key, read, owner=owner, password=options.password,
            locked=any(pdf_is_encrypted(upload.data) for upload in uploads))
        if self._lists_documents and document.kind is DocumentKind.PDF and len(uploads) == 1:
            self.store.bodies.put_source(key, uploads[0].data, owner=owner)  # to draw its pages
        return document

    def load(self, request: LoadRequest) -> Document:
        preload_llama3(load_ranks=self.ranks)
        options = self.ingest_options(include=request.include, exclude=request.exclude,
                                      password=request.password)
        paths = expand_paths(request.paths)
        if len(paths) == 1 and (paths[0].is_dir() or request.codebase):
            source = walk_codebase(paths[0], options)
            return self.store.get_or_ingest(
                codebase_key(source.files, options),
                lambda: count_document(ingest_codebase(source.root.name, source.files,
                                                       notes=source.notes, options=options)),
                owner=self.settings.user)
        if any(p.is_dir() for p in paths):
            raise IngestError("Give either one folder or a list of files, not both.")
        uploads = [read_file(p, options) for p in paths]
        if len({u.name for u in uploads}) != len(uploads):
            uploads = [Upload(str(p), u.data) for p, u in zip(paths, uploads, strict=True)]
        return self.load_uploads(uploads, options)

    def load_each(self, request: LoadRequest) -> DocumentSet:
        """Each path its own document (a folder or an archive a codebase), in the order given,
        as one set; the same file given twice is one document, and names that clash are told
        apart by their folder."""
        paths = expand_paths(request.paths)
        documents: list[Document] = []
        given: list[str] = []  # named as given this time, not as the bytes were first stored
        folders: list[str] = []
        notes: list[str] = []
        for path in paths:
            document = self.load(replace(request, paths=(str(path),)))
            twin = next((n for d, n in zip(documents, given, strict=True)
                         if d.content_hash == document.content_hash), None)
            if twin is not None:
                notes.append(f"{path} is the same document as {twin}: it is read once.")
                continue
            documents.append(document)
            given.append(given_name(path))
            folders.append(path.resolve().parent.name)
        names = unique_names(given, folders=folders)
        return DocumentSet(_with_changes(combine_documents(documents, names=names)), tuple(notes))

    def reopen(self, session: Session, *, owner: str | None = None,
               passwords: Mapping[str, str] | None = None) -> DocumentSet:
        """The documents of a session of several, from the store, in their order and under
        their names; a document the store no longer has is named in `missing`, and the set
        opens with the others. An encrypted PDF needs its password again (`passwords` by
        document key; PasswordRequiredError names the document)."""
        owner = owner or self.settings.user
        documents: list[Document] = []
        names: list[str] = []
        missing: list[str] = []
        kept = set(session.kept_sections) if session.kept_sections is not None else None
        keep: list[int] = []
        first = 0
        for member in session.documents:
            document = self.store.get_document(member.key, owner=owner,
                                               password=(passwords or {}).get(member.key))
            if document is None:
                missing.append(member.name)
            else:
                start = sum(len(d.sections) for d in documents)
                keep += [start + i for i in range(len(document.sections))
                         if kept is None or first + i in kept]
                documents.append(document)
                names.append(member.name)
            first += member.sections
        if not documents:
            raise StoreError(
                f"None of the documents of session {session.id} is in the store any more "
                f"({', '.join(missing)}); upload them again to start a new session.")
        notes = tuple(f"{name} is no longer in the store (upload it again to add it back); the "
                      "session opens with the others." for name in missing)
        whole = _with_changes(combine_documents(documents, names=names))
        return DocumentSet(whole, notes, tuple(missing),
                           None if kept is None and not missing else tuple(keep))

    def with_added(self, current: Document, added: Document, *, name: str | None = None,
                   folder: str | None = None) -> DocumentSet:
        """`current` (one document or a set) with `added` after it, named `name` (as the user
        gave it; default its stored name); names already given never change, so the prompt up
        to the new document stays as it was."""
        members = current.blocks
        given = name or added.name
        if any(m.content_hash == added.content_hash for m in members):
            twin = next(m.name for m in members if m.content_hash == added.content_hash)
            return DocumentSet(current, (f"{given} is already in this session (as {twin}): it "
                                         "is read once.",))
        parts = [member_document(current, member) for member in members]
        taken = [m.name for m in members]
        (name,) = unique_names([given], folders=[folder or ""], taken=taken)
        return DocumentSet(_with_changes(combine_documents([*parts, added], names=[*taken, name])))

    @staticmethod
    def rearranged(document: Document, order: Sequence[str]) -> DocumentSet:
        """The set with its documents in `order` (names; those left out are removed), under
        the names they had."""
        by_name = {m.name: m for m in document.blocks}
        if not order or any(name not in by_name for name in order):
            raise SparkdocsError("Choose at least one of the session's documents, by name.")
        parts = [member_document(document, by_name[name]) for name in order]
        return DocumentSet(_with_changes(combine_documents(parts, names=list(order))))

    def budget(self, document: Document, *, keep: Sequence[int] | None = None,
               context: int | None = None, answer_tokens: int | None = None) -> Budget:
        return self.prompts.budget(document, context=context or self.settings.context_length,
                                   answer_reserve=answer_tokens or self.settings.answer_tokens,
                                   keep=keep)

    def prepare(self, document: Document, *, keep: Sequence[int] | None = None) -> PreparedDocument:
        return prepare_document(document, keep=keep, tokenizer=self.prompts.tokenizer)

    def fit(self, document: Document, *, context: int | None = None,
            answer_tokens: int | None = None) -> tuple[int, ...] | None:
        """None when everything fits, else the sections to keep (see `prompts.drop_order`);
        the kept sections, omission note and tree together fit the prompt that is sent."""
        keep = self.prompts.fit(document, context=context or self.settings.context_length,
                                answer_reserve=answer_tokens or self.settings.answer_tokens)
        return None if len(keep) == len(document.sections) else keep

    def open_session(self, document: Document, *, keep: Sequence[int] | None = None,
                     owner: str | None = None) -> Session:
        """A session of `owner` (default: the settings' user) to ask in: their newest one of this
        document that has no question yet (with `keep` as its parts), else a new one — so
        uploading or reopening a document does not leave a trail of empty sessions behind."""
        store, owner = self.store, owner or self.settings.user
        for session in store.list_sessions(owner=owner, document_key=document.content_hash):
            if not session.turns and session.document_key == document.content_hash:
                if session.kept_sections == (tuple(keep) if keep is not None else None):
                    return session
                return store.set_kept_sections(session.id, keep, owner=owner)
        return new_session(store, document, owner=owner, keep=keep)

    def select(self, document: Document, *, pages: str | None = None, parts: str | None = None
               ) -> tuple[int, ...] | None:
        """The sections a `--pages`/`--parts` choice keeps (None: the whole document)."""
        if pages and sum(m.kind is DocumentKind.PDF for m in document.members) > 1:
            raise SelectionError(
                f"--pages {pages}: several of these documents have pages with that number; "
                "choose parts instead (--parts, numbered across the documents as `sparkdocs "
                "count --documents` lists them).")
        keep = select(document, pages=pages, parts=parts)
        if keep is not None and len(keep) == len(document.sections):
            return None
        return keep

    def fit_hint(self, document: Document, *, context: int | None = None,
                 answer_tokens: int | None = None) -> str | None:
        """The flag to paste (`--pages 1-120` / `--parts 1-3,7`) for the largest selection that
        fits, as auto-fit would keep it; None when the whole document fits. A document of
        which no part fits says so (BudgetError)."""
        keep = self.fit(document, context=context, answer_tokens=answer_tokens)
        return None if keep is None else selection_hint(document, keep)

    def check_selection(self, document: Document, keep: Sequence[int] | None, *,
                        context: int | None = None, answer_tokens: int | None = None,
                        ratio: float = 1.0) -> Budget:
        """The budget of `keep` (in served tokens: `ratio` per Llama 3 token); a selection (or
        whole document) over it is a BudgetError that names the excess and a selection that
        fits, so a command line user can paste the fix."""
        from .served_tokens import effective_context

        answer = answer_tokens or self.settings.answer_tokens
        context = context or self.settings.context_length
        budget = self.budget(document, keep=keep, context=context,
                             answer_tokens=answer).scaled(ratio)
        if budget.fits:
            return budget
        what = "the whole document" if keep is None else f"the selection ({selection_hint(document, keep)})"
        hint = self.fit_hint(document, context=effective_context(context, answer, ratio),
                             answer_tokens=answer)
        raise BudgetError(
            f"{document.name}: {what} needs {budget.used:,} tokens, {-budget.free:,} over the "
            f"{budget.available:,} available (context {budget.context:,} − answer reserve "
            f"{budget.answer_reserve:,} − prompt overhead {budget.prompt_overhead:,}); "
            f"choose fewer parts, e.g. {hint} (see `sparkdocs count`), or lower --max-tokens.")

    def count(self, document: Document, *, keep: Sequence[int] | None = None,
              context: int | None = None, answer_tokens: int | None = None) -> dict[str, Any]:
        """The `count` report of `keep` (see `count_report`), with the tokens of the prompt
        before its question (`prefix_tokens`: what `prompt` sends, less the question) and, when
        the selection is over budget, a selection that fits."""
        budget = self.budget(document, keep=keep, context=context, answer_tokens=answer_tokens)
        hint, no_fit = None, None
        if not budget.fits:
            try:
                hint = self.fit_hint(document, context=context, answer_tokens=answer_tokens)
            except BudgetError as exc:  # not even one part fits: the report says so
                no_fit = str(exc)
        report = count_report(document, budget, keep=keep, fit_hint=hint)
        report["no_fit"] = no_fit
        report["prefix_tokens"] = self.prompts.prefix_tokens(
            block_tokens(document, keep=keep, tokenizer=self.prompts.tokenizer))
        return report


def given_name(path: Path) -> str:
    """A document's name as the user gave it: the file's or the folder's own name."""
    return path.name or path.resolve().name


def new_session(store: Store, document: Document, *, owner: str,
                keep: Sequence[int] | None) -> Session:
    """A new session over one document, or over each document of a set."""
    if not document.members:
        return store.new_session(document, owner=owner, kept_sections=keep)
    return store.new_set_session([SessionDocument(m.content_hash, m.name, m.count)
                                  for m in document.members],
                                 key=document.content_hash, name=document.name, owner=owner,
                                 kept_sections=keep)


def documents_report(document: Document, keep: Sequence[int] | None = None
                     ) -> list[dict[str, Any]]:
    """Each document of a set (or the one document): its name, kind, tokens and the parts of
    it that are kept (numbered from 1 within the document)."""
    kept = set(range(len(document.sections)) if keep is None else keep)
    report = []
    for member in document.blocks:
        sections = document.sections[member.first:member.first + member.count]
        kept_here = [n for n, i in enumerate(member.indices, 1) if i in kept]
        report.append({"name": member.name, "kind": member.kind.value,
                       "content_hash": member.content_hash,
                       "tokens": sum(s.tokens for s in sections), "sections": len(sections),
                       "kept": kept_here, "first_part": member.first + 1})
    return report


def count_report(document: Document, budget: Budget, *, keep: Sequence[int] | None = None,
                 fit_hint: str | None = None) -> dict[str, Any]:
    """The `count` view of a document: tokens per section and directory, the budget (of the
    selection `keep`, when given), warnings, and — over budget — a selection that fits. Parts
    are numbered from 1 as `--parts` takes them."""
    kept = set(range(len(document.sections)) if keep is None else keep)
    report: dict[str, Any] = {
        "name": document.name,
        "kind": document.kind.value,
        "content_hash": document.content_hash,
        "tokens": document.section_tokens,
        "sections": [{"part": n, "kind": s.kind.value, "title": s.title, "tokens": s.tokens,
                      "kept": n - 1 in kept}
                     for n, s in enumerate(document.sections, 1)],
        "selection": None if keep is None else selection_hint(document, keep),
        "fit": fit_hint,
        "largest_sections": [document.sections[i].locator for i in rank_sections(document)[:10]],
        "warnings": list(document.warnings),
        "skipped": list(document.skipped),
        "budget": budget.as_dict(),
        "documents": documents_report(document, keep),
    }
    if any(s.kind is SectionKind.FILE for s in document.sections):
        report["directories"] = directory_tokens(document.sections)
    return report
