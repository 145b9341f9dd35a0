"""The command line: parse, call the library, print. No logic lives here.

Text from outside (file names, headings, questions, answers, server messages) is printed as
itself: both channels are built in `_channel` with Rich markup and emoji codes off and a render
hook that strips terminal control sequences, so no field can be read as `[markup]` or move the
cursor, whoever adds it. Styling is explicit (`rich.text.Text` spans via `_say`)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from .cli_help import PlainGroup, argument
from .config import OutputFormat, Settings, build_settings
from .errors import BudgetError, ConfigError, SparkdocsError
from .literal import redact_url, redact_urls, strip_controls
from .workspace import LoadRequest, Workspace, documents_report, given_name

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderResult

    from .documents import Document
    from .qa import AddedDocument, QuestionAnswering
    from .store import Session


# Only what a command uses is imported, inside it (Rich, the model client, the batch runner,
# the demo model...): a whole `sparkdocs count --json` is start-up bound.

class _Literal:
    """A renderable with every control character taken out of its text (styles are kept:
    they are segment attributes, not characters)."""

    def __init__(self, renderable: ConsoleRenderable) -> None:
        self._renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        for segment in console.render(self._renderable, options):
            if segment.control:
                yield segment
            else:
                yield Segment(strip_controls(segment.text), segment.style)


class _LiteralHook:
    """Rich render hook: everything printed on a channel goes through `_Literal`."""

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_Literal(r) for r in renderables]


PIPE_WIDTH = 10_000
PIPE_RULE_WIDTH = 80  # a separator rule in a pipe or a log: rich's usual width, not PIPE_WIDTH
SKIPPED_SHOWN = 10  # files left out, listed under count's warnings


def _channel(*, stderr: bool, soft_wrap: bool) -> Console:
    """The one place an output channel is made: no markup, no emoji codes, no highlighting,
    no control sequences — text is shown as it is."""
    from rich.console import Console

    console = Console(stderr=stderr, soft_wrap=soft_wrap, markup=False, emoji=False,
                      highlight=False)
    if not console.is_terminal:
        # A pipe or a log file has no width: wrapping at rich's default 80 columns would cut
        # paths and table cells that a script or a person searching the log needs whole.
        console.width = PIPE_WIDTH
    console.push_render_hook(_LiteralHook())  # type: ignore[arg-type]
    return console


def _rule(channel: Console, title: str = "") -> None:
    """A separator line: the terminal's width, or PIPE_RULE_WIDTH where there is none (a rule
    drawn at PIPE_WIDTH was 10,000 characters in every saved prompt)."""
    from rich.rule import Rule

    channel.print(Rule(title), width=None if channel.is_terminal else PIPE_RULE_WIDTH)


class _LazyChannel:
    """A channel made on first use: importing Rich costs ~40 ms, which `count --json` and
    every command that prints nothing do not need to pay."""

    def __init__(self, *, stderr: bool, soft_wrap: bool) -> None:
        self._stderr, self._soft_wrap = stderr, soft_wrap
        self._console: Console | None = None

    def made(self) -> Console:
        if self._console is None:
            self._console = _channel(stderr=self._stderr, soft_wrap=self._soft_wrap)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)


def _made(channel: Console) -> Console:
    """The Console itself, for a Rich object that takes one (it uses protocols a proxy lacks)."""
    return channel.made() if isinstance(channel, _LazyChannel) else channel


out = cast("Console", _LazyChannel(stderr=False, soft_wrap=True))
err = cast("Console", _LazyChannel(stderr=True, soft_wrap=False))


def _say(console: Console, label: str, style: str, message: object, **print_options: Any) -> None:
    """`label` styled, then `message` exactly as given."""
    from rich.text import Text

    console.print(Text.assemble((label, style), " ", str(message)), **print_options)


# Where a setting came from on the command line, for ConfigError messages.
OPTION_NAMES = {"answer_tokens": "--max-tokens", "context_length": "--context-length",
                "base_url": "--base-url", "model": "--model", "api_key": "--api-key"}

# Options several commands share, each a decorator (click makes a new parameter per use).
paths_arg = argument("paths", nargs=-1, required=True, metavar="PATH",
                     help="Files, globs, a folder or an archive: one document.")
include_opt = click.option("--include", multiple=True, metavar="PATTERN", help="gitignore-style pattern of files to keep (codebases); may be repeated.")
exclude_opt = click.option("--exclude", multiple=True, metavar="PATTERN", help="gitignore-style pattern of files to leave out; may be repeated.")
password_opt = click.option("--password", metavar="PASSWORD", help="Password of an encrypted PDF.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
documents_opt = click.option("--documents", is_flag=True, help="Each path its own document, in the order given (without it, the paths make one document of sections).")
base_url_opt = click.option("--base-url", metavar="URL", help="OpenAI-compatible endpoint (SPARKDOCS_BASE_URL).")
model_opt = click.option("--model", metavar="MODEL", help="Served model id (SPARKDOCS_MODEL).")
api_key_opt = click.option("--api-key", metavar="KEY", help="API key (SPARKDOCS_API_KEY).")
pages_opt = click.option("--pages", metavar="PAGES", help="PDF pages to keep, e.g. 1-40,90-120.")
parts_opt = click.option("--parts", metavar="PARTS", help="Parts to keep, numbered as count lists them, e.g. 1-3,7.")
context_opt = click.option("--context-length", type=int, metavar="TOKENS", help="Context length to budget against.")
max_tokens_opt = click.option("--max-tokens", type=int, metavar="TOKENS", help="Answer length limit (the answer reserve).")

F = TypeVar("F", bound=Callable[..., Any])


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Options that go together, in the order they are listed in --help."""
    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


selection_opts = _options(include_opt, exclude_opt, pages_opt, parts_opt, password_opt)
service_opts = _options(base_url_opt, model_opt, api_key_opt)
A_PATH = click.Path(path_type=Path, readable=False)  # a Path, checked where it is used


def settings_from(**overrides: Any) -> Settings:
    """The one Settings object: environment first, then explicit command-line values. A bad
    value is a ConfigError naming the variable or option and the fix (exit code 2)."""
    overrides.setdefault("user", _GLOBAL_OPTIONS.get("user"))
    return build_settings(overrides=overrides, option_names=OPTION_NAMES)


_GLOBAL_OPTIONS: dict[str, str] = {}  # options given before the command (team mode: --user)


# Plain click help for every command (`--include PATTERN`, `count [OPTIONS] PATH...`, the
# arguments with their help): see cli_help.
@click.group(cls=PlainGroup, help="Ask questions of whole documents with a local LLM (no retrieval).",
             context_settings={"max_content_width": 100,  # command summaries whole
                               "show_default": True})
@click.option("--user", metavar="NAME", help="Act as this user: see and continue only their documents and sessions "
              "(SPARKDOCS_USER; default 'local', the single-user library).")
def app(user: str | None) -> None:
    from .auth import check_user_name

    _GLOBAL_OPTIONS.pop("user", None)  # one process may run several commands (tests)
    if user is not None:
        _GLOBAL_OPTIONS["user"] = check_user_name(user)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))  # nothing, when stdout is closed


@app.command()
@paths_arg
@selection_opts
@json_opt
@context_opt
@click.option("--max-tokens", type=int, help="Answer reserve.")
@documents_opt
@base_url_opt
def count(paths: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...],
          pages: str | None, parts: str | None, password: str | None, as_json: bool,
          context_length: int | None, max_tokens: int | None, documents: bool,
          base_url: str | None) -> None:
    """Exact Llama 3 token counts per part, and the budget against the context.

    Parts are numbered for --parts; over budget, a --pages/--parts selection that fits is
    printed, ready to paste. With a model service configured, the budget is the app's: the
    served context, in the served model's tokens."""
    from .served_count import count_as_served

    workspace = Workspace(settings_from(context_length=context_length, answer_tokens=max_tokens,
                                        base_url=base_url), lists_documents=False)
    document = _load(workspace, LoadRequest(paths, include, exclude, password),
                     separate=documents)
    keep = workspace.select(document, pages=pages, parts=parts)
    report = count_as_served(workspace, document, keep=keep, context=context_length)
    if as_json:
        emit_json(report)
        return
    from rich.table import Table
    from rich.text import Text

    budget = report["budget"]
    table = Table(title=f"{document.name} — {document.kind.value}, {report['tokens']:,} tokens")
    table.add_column("part", justify="right")
    table.add_column("section")
    table.add_column("tokens", justify="right")
    for section in report["sections"]:
        table.add_row(str(section["part"]) if section["kept"] else f"({section['part']})",
                      f"{section['kind']} {section['title']}", f"{section['tokens']:,}")
    if keep is not None:
        table.caption = "parts in (parentheses) are left out by the selection"
    out.print(table)
    if "directories" in report:
        dirs = Table(title="tokens per directory")
        dirs.add_column("directory")
        dirs.add_column("tokens", justify="right")
        for name, tokens in report["directories"].items():
            dirs.add_row(name, f"{tokens:,}")
        out.print(dirs)
    what = f"selection {report['selection']}" if report["selection"] else "document"
    line = Text(f"context {budget['context']:,} − answer reserve {budget['answer_reserve']:,} − "
                f"prompt overhead {budget['prompt_overhead']:,} = available "
                f"{budget['available']:,}; {what} {budget['used']:,}; free {budget['free']:,}")
    if not budget["fits"]:
        line.append("  ").append(f"OVER BUDGET by {-budget['free']:,}", "bold red")
    out.print(line)
    _say(err, "note:", "dim", report["counted_with"])
    if report["fit"]:
        out.print(Text.assemble(("a selection that fits: ", "bold"), report["fit"],
                                "  (paste it into count, prompt or ask)"))
    elif report["no_fit"]:
        _say(err, "over budget:", "bold red", report["no_fit"])
    for warning in report["warnings"]:
        _say(err, "warning:", "yellow", warning)
    skipped = report["skipped"]
    for entry in skipped[:SKIPPED_SHOWN]:
        _say(err, "  skipped:", "dim", entry)
    if len(skipped) > SKIPPED_SHOWN:
        err.print(f"  … and {len(skipped) - SKIPPED_SHOWN:,} more (`--json` lists every one)")


@app.command()
@paths_arg
@click.option("--question", "-q", required=True, help="The question to ask.")
@selection_opts
@json_opt
@context_opt
@max_tokens_opt
@documents_opt
def prompt(paths: tuple[str, ...], question: str, include: tuple[str, ...],
           exclude: tuple[str, ...], pages: str | None, parts: str | None, password: str | None,
           as_json: bool, context_length: int | None, max_tokens: int | None,
           documents: bool) -> None:
    """The exact chat messages that would be sent, and their token count.

    A prompt that would not fit the context (with the answer reserve) is printed, then an error
    (exit 2)."""
    workspace = Workspace(settings_from(context_length=context_length, answer_tokens=max_tokens))
    document = _load(workspace, LoadRequest(paths, include, exclude, password),
                     separate=documents)
    keep = workspace.select(document, pages=pages, parts=parts)
    built = workspace.prompts.question(workspace.prepare(document, keep=keep), question)
    settings = workspace.settings
    fits = built.prompt_tokens + settings.answer_tokens <= settings.context_length
    if as_json:
        emit_json({"messages": built.as_dicts(), "prompt_tokens": built.prompt_tokens,
                   "context": settings.context_length, "answer_reserve": settings.answer_tokens,
                   "fits": fits})
    else:
        for message in built.messages:
            _rule(out, message.role)
            out.print(message.content, markup=False)
        _rule(out)
        out.print(f"prompt tokens (Llama 3.3 template): {built.prompt_tokens:,}")
    if not fits:
        workspace.check_selection(document, keep)  # names the excess and a selection that fits
        over = built.prompt_tokens + settings.answer_tokens - settings.context_length
        raise BudgetError(f"this prompt needs {built.prompt_tokens:,} tokens plus "
                          f"{settings.answer_tokens:,} for the answer, {over:,} over the context "
                          f"of {settings.context_length:,}; shorten the question or lower --max-tokens.")


def _load(workspace: Workspace, request: LoadRequest, *, separate: bool) -> Document:
    """The paths as one document, or (`--documents`) each its own, said on stderr."""
    if not separate:
        return workspace.load(request)
    loaded = workspace.load_each(request)
    for note in loaded.notes:
        _say(err, "note:", "yellow", note)
    return loaded.document


def _service_settings(base_url: str | None, model: str | None, api_key: str | None,
                      **more: Any) -> Settings:
    return settings_from(base_url=base_url, model=model, api_key=api_key, **more)


@app.command(context_settings={"allow_interspersed_args": True})
@argument("args", nargs=-1, required=True, metavar="PATH... QUESTION", help="Files, globs, a folder or an archive, then the question (last).")
@click.option("--follow-up-of", metavar="SESSION", help="Session id to continue (keeps history).")
@max_tokens_opt
@selection_opts
@json_opt
@service_opts
@click.option("--whole", is_flag=True, help="Answer from every page of a document larger than the context: it is read in parts, asked at once as the server has room, and their answers merged (each part sees the question, not earlier answers).")
@documents_opt
@click.option("--add", multiple=True, metavar="PATH", help="Add a document to the session, after those it has (repeatable); the earlier documents stay cached.")
def ask(args: tuple[str, ...], follow_up_of: str | None, max_tokens: int | None,
        include: tuple[str, ...], exclude: tuple[str, ...], pages: str | None,
        parts: str | None, password: str | None, as_json: bool, base_url: str | None,
        model: str | None, api_key: str | None, whole: bool, documents: bool,
        add: tuple[str, ...]) -> None:
    """Stream an answer about a document; the session id printed lets you follow up.

    With --follow-up-of, the paths may be left out: the session's documents are reopened from
    the store."""
    from .client import ModelClient
    from .qa import QuestionAnswering

    paths, question = _paths_then_question(list(args), optional=bool(follow_up_of))
    _check_ask_options(follow_up_of=follow_up_of, pages=pages, parts=parts, whole=whole)
    settings = _service_settings(base_url, model, api_key, answer_tokens=max_tokens)
    workspace = Workspace(settings)
    _store_recovered(workspace)
    qa = QuestionAnswering(workspace, ModelClient(settings))
    request = LoadRequest(tuple(paths), include, exclude, password)
    target = _ask_target(qa, request if paths else None, follow_up_of=follow_up_of,
                         separate=documents, pages=pages, parts=parts, whole=whole,
                         request_password=password)
    if any(not path.strip() for path in add):
        raise click.BadParameter("--add needs a path (a file, folder or archive)")
    for path in add:
        added = workspace.load(LoadRequest((path,), include, exclude, password))
        target = qa.add_document(target.session, target.document, added,
                                 name=given_name(Path(path)),
                                 folder=Path(path).resolve().parent.name, whole=whole)
        for note in target.notes:
            _say(err, "note:", "yellow", note)
    session, document = target.session, target.document
    kept = session.kept_sections  # of these documents (a reopened set may have lost one)
    if whole:
        _ask_whole(qa, document, session, question, as_json=as_json)
        return

    def show(text: str) -> None:
        if not as_json:
            sys.stdout.write(text)
            sys.stdout.flush()

    with _kept_when_failed(session.id), _kept_when_unstored(qa.workspace, as_json=as_json):
        outcome = qa.run_turn(document, session, question, follow_up=bool(follow_up_of),
                              max_tokens=max_tokens, on_text=show, stop_reasons=ASK_STOPS)
    session, turn, result = outcome.session, outcome.turn, outcome.result
    citations = turn.citations or ()
    if as_json:
        emit_json({**(result.as_dict() if result is not None else {"answer": turn.answer}),
                   "status": turn.status.value, "error": turn.error, "session": session.id,
                   "documents": documents_report(document, kept),
                   "changes": document.appendix or None,
                   "citations": [c.as_dict() for c in citations]})
    else:
        from .citation_views import sources_text
        from .views import stats_line

        sys.stdout.write("\n")
        if citations:
            out.print(f"\n{sources_text(citations)}", markup=False)
        err.print(f"session {session.id} · {stats_line(turn)}", style="dim", markup=False)
    if turn.interrupted:
        _say(err, f"{turn.status.value}:", "yellow", turn.error)
        raise click.exceptions.Exit(3)


def _ask_target(qa: QuestionAnswering, request: LoadRequest | None, *, follow_up_of: str | None,
                separate: bool, pages: str | None, parts: str | None, whole: bool,
                request_password: str | None = None) -> AddedDocument:
    """The session to ask in and the document (or documents) it asks about."""
    from .qa import AddedDocument
    from .workspace import DocumentSet

    workspace = qa.workspace
    if follow_up_of:  # the paths are read as the session was made, whatever --documents says
        if request is not None:
            session = workspace.store.get_session(follow_up_of, owner=workspace.settings.user)
            separate = bool(session.documents)  # a session of several: each path is one of them
        given = (None if request is None else workspace.load_each(request) if separate
                 else DocumentSet(workspace.load(request)))
        target = qa.follow_up(follow_up_of, given=given, password=request_password)
    else:
        assert request is not None
        given = (workspace.load_each(request) if separate
                 else DocumentSet(workspace.load(request)))
        keep = workspace.select(given.document, pages=pages, parts=parts)
        session = qa.session_for(given.document, keep=keep, whole=whole)
        target = AddedDocument(session, given.document, given.notes)
    for note in target.notes:
        _say(err, "note:", "yellow", note)
    if target.document.appendix and not whole:  # parts read pages, not the comparison
        _say(err, "note:", "yellow", "these two documents are versions of one: what changed "
             "between them (as `sparkdocs diff` prints it) is sent after them")
    return target


def _paths_then_question(args: list[str], *, optional: bool = False) -> tuple[list[str], str]:
    if optional and len(args) == 1:  # a follow-up: the session's documents from the store
        return [], args[0]
    if len(args) < 2:
        raise click.BadParameter("give at least one PATH and then the QUESTION")
    *paths, question = args
    if _names_a_path(question) and not any(_names_a_path(p) for p in paths):  # a file or a folder
        import shlex  # the words before the file were one unquoted question: keep them all

        raise click.BadParameter(f"{question!r} is a path, and the question goes last: "
                                 f"sparkdocs ask {shlex.quote(question)} "
                                 f"{shlex.quote(' '.join(paths))}")
    return paths, question


def _check_ask_options(*, follow_up_of: str | None, pages: str | None, parts: str | None,
                       whole: bool) -> None:
    if follow_up_of is not None and not follow_up_of.strip():
        raise click.BadParameter("--follow-up-of needs a session id (`sparkdocs sessions` "
                                 "lists them)")
    if follow_up_of and (pages or parts):
        raise click.BadParameter("--pages/--parts choose the parts of a new session; a follow-up "
                                 "keeps the parts its session chose")
    if whole and (pages or parts):
        raise click.BadParameter("--whole reads every page; leave out --pages/--parts")


def _names_a_path(text: str) -> bool:
    """Whether `text` names an existing file or folder; a question longer than a file name may
    be (ENAMETOOLONG), or with a NUL in it, is simply not one."""
    try:
        return Path(text).exists()
    except (OSError, ValueError):
        return False


def _ask_whole(qa: QuestionAnswering, document: Document, session: Session, question: str, *,
               as_json: bool) -> None:
    from .citation_views import sources_text
    from .parts import PartAnswer, PartProgress, ProgressWatch, WholePlan, estimate_text
    from .views import stats_line

    total: list[int] = []

    def plan_ready(plan: WholePlan) -> None:
        total.append(len(plan.parts))
        _say(err, "reading every page:", "bold",
             estimate_text(plan, qa.prefill_speed(session.owner)))
        if session.turns:  # a follow-up session: the parts see this question only
            err.print("  each part is asked this question alone (earlier answers are not "
                      "re-read by every part)", markup=False)

    def part_done(answer: PartAnswer) -> None:
        state = "read" if answer.error is None else f"NOT READ: {answer.error}"
        err.print(f"  part {answer.number}/{total[0]} ({answer.label}): {state}", markup=False)

    progress = PartProgress()

    def states(text: str) -> None:  # on stderr: stdout is the answer (or --json) alone
        err.print(f"  parts: {text}", markup=False)

    with _kept_when_failed(session.id), _kept_when_unstored(qa.workspace, as_json=as_json), \
            ProgressWatch(progress, states, metrics=qa.client.metrics):
        outcome = qa.run_whole(document, session, question, on_plan=plan_ready,
                               on_part=part_done, stop_reasons=ASK_STOPS, progress=progress)
    turn = outcome.turn
    citations = turn.citations or ()
    if as_json:
        complete = bool(turn.parts) and all(p.status == "read" for p in turn.parts)
        emit_json({"answer": turn.answer, "status": turn.status.value, "error": turn.error,
                   "coverage": "all" if complete and not turn.interrupted else "partial",
                   "read": turn.read,
                   "parts": [{"part": p.number, "covers": p.label, "status": p.status,
                              "answer": p.answer, "error": p.error,
                              "prompt_tokens": p.prompt_tokens,
                              "cached_tokens": p.cached_tokens} for p in turn.parts],
                   "prompt_tokens": turn.prompt_tokens, "cached_tokens": turn.cached_tokens,
                   "session": outcome.session.id,
                   "documents": documents_report(document, session.kept_sections),
                   "changes": document.appendix or None,
                   "citations": [c.as_dict() for c in citations]})
    elif turn.answer:
        out.print(turn.answer, markup=False)
        if citations:
            out.print(f"\n{sources_text(citations)}", markup=False)
    else:  # not combined: what each part answered is all there is, and it is kept
        for part in turn.parts:
            _rule(out, f"part {part.number}: {part.label}")
            out.print(part.answer or f"(not read: {part.error})", markup=False)
    err.print(f"session {outcome.session.id} · {stats_line(turn)}", style="dim", markup=False)
    if turn.interrupted:
        _say(err, f"{turn.status.value}:", "yellow", turn.error)
        raise click.exceptions.Exit(2 if turn.status.value == "failed" else 3)


ASK_INTERRUPTED = "stopped by the user (Ctrl-C)"
ASK_TERMINATED = "stopped: sparkdocs was terminated (SIGTERM)"
ASK_STOPS: dict[type[BaseException], str] = {KeyboardInterrupt: ASK_INTERRUPTED,
                                             SystemExit: ASK_TERMINATED}


@contextlib.contextmanager
def _kept_when_failed(session_id: str) -> Iterator[None]:
    """A question that failed is in its session: say so beside the error."""
    try:
        yield
    except SparkdocsError:
        err.print(f"session {session_id} · the question is kept, marked failed", style="dim",
                  markup=False)
        raise


ANSWER_KEPT_ELSEWHERE = 75  # EX_TEMPFAIL: the answer is safe in a recovery file, not yet stored


@contextlib.contextmanager
def _kept_when_unstored(workspace: Workspace, *, as_json: bool = False) -> Iterator[None]:
    """An answer the store did not take (locked past the retries, disk full) goes into a
    recovery file first; only then does the command fail, saying where the answer is (with
    --json, the answer is printed too, with `"stored": false` and the file)."""
    from .store.recovery import TurnNotStoredError, write_recovery_file

    try:
        yield
    except TurnNotStoredError as exc:
        try:
            path = write_recovery_file(exc.unstored, workspace.recovery_folders())
        except OSError as problem:
            _say(err, "error:", "bold red", f"{exc} The answer could not be kept in a recovery "
                 f"file either ({problem}); it is only in the output above.", soft_wrap=True)
            raise click.exceptions.Exit(2) from None
        if as_json:
            turn = exc.unstored.turn
            emit_json({"answer": turn.answer, "status": turn.status.value, "error": turn.error,
                       "session": exc.unstored.session_id, "stored": False,
                       "recovery_file": str(path)})
        _say(err, "not stored yet:", "bold yellow",
             f"{exc} The answer is kept in {path} and is added to session "
             f"{exc.unstored.session_id} the next time sparkdocs can write the store (the next "
             "`sparkdocs ask` or `sparkdocs sessions`).", soft_wrap=True)
        raise click.exceptions.Exit(ANSWER_KEPT_ELSEWHERE) from None


def _store_recovered(workspace: Workspace) -> None:
    """Answers kept in recovery files by an earlier run go into their sessions now."""
    report = workspace.store_recovered()
    for path, session_id in report.stored:
        _say(err, "recovered:", "green", f"the answer kept in {path} is now stored in session "
             f"{session_id}")
    for path, reason in report.left:
        _say(err, "still kept:", "yellow", f"{path} is not stored yet ({reason})")


@app.command()
@json_opt
@service_opts
def doctor(as_json: bool, base_url: str | None, model: str | None, api_key: str | None) -> None:
    """Check the model service and say how to fix what is wrong."""
    from .client import ModelClient
    from .doctor import CheckStatus, run_checks

    checks = run_checks(ModelClient(_service_settings(base_url, model, api_key)))
    if as_json:
        emit_json([c.as_dict() for c in checks])
    else:
        marks = {CheckStatus.OK: ("✓", "green"), CheckStatus.WARN: ("!", "yellow"),
                 CheckStatus.FAIL: ("✗", "red"), CheckStatus.UNKNOWN: ("?", "dim")}
        for check in checks:
            _say(out, *marks[check.status], f"{check.name}: {check.detail}")
            if check.fix and check.status is not CheckStatus.OK:
                out.print(f"    fix: {check.fix}")
    if any(c.status is CheckStatus.FAIL for c in checks):
        raise click.exceptions.Exit(1)


@app.command()
@paths_arg
@click.option("--out", required=True, type=A_PATH, metavar="DIR", help="Folder for the summaries.")
@click.option("--concurrency", type=int, default=8, metavar="N", help="Requests kept in flight per engine (behind vLLM's router: times the engines that serve).")
@click.option("--instructions", type=A_PATH, metavar="FILE", help="File with the summary instructions.")
@click.option("--style", metavar="STYLE", help="Built-in instructions: brief, contract, paper, code.")
@click.option("--format", "output_format", type=click.Choice([f.value for f in OutputFormat], case_sensitive=False),
              default=OutputFormat.MD.value, metavar="[md|jsonl]", help="md (one file each) or jsonl.")
@max_tokens_opt
@click.option("--force/--no-force", default=False, help="Redo summaries that are already finished.")
@click.option("--codebase/--no-codebase", default=False, help="Treat each folder as one codebase.")
@include_opt
@exclude_opt
@service_opts
def summarize(paths: tuple[str, ...], out: Path, concurrency: int, instructions: Path | None,
              style: str | None, output_format: str, max_tokens: int | None, force: bool,
              codebase: bool, include: tuple[str, ...], exclude: tuple[str, ...],
              base_url: str | None, model: str | None, api_key: str | None) -> None:
    """Summarise many documents, one output each; resumes where it stopped."""
    from .batch import BatchOptions, BatchSummarizer, OutcomeStatus, collect_items
    from .client import ModelClient
    from .prompts import SUMMARY_STYLES

    if instructions and style:
        raise click.BadParameter("give --instructions or --style, not both")
    if style and style not in SUMMARY_STYLES:
        raise click.BadParameter(f"--style is one of {', '.join(SUMMARY_STYLES)}")
    if concurrency < 1:
        raise click.BadParameter("--concurrency must be at least 1")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the summaries (it is made "
                          "if missing).")
    try:
        text = (instructions.read_text(encoding="utf-8") if instructions
                else SUMMARY_STYLES[style or "brief"])
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--instructions {instructions}: cannot be read "
                          f"({getattr(exc, 'strerror', None) or exc}); give a UTF-8 text file "
                          "with the summary instructions, or use --style.") from None
    if not text.strip():
        raise ConfigError(f"--instructions {instructions} is empty; write the summary "
                          "instructions in it, or use --style.")
    settings = _service_settings(base_url, model, api_key, answer_tokens=max_tokens)
    workspace = Workspace(settings)
    items = collect_items(workspace, paths, codebase=codebase, include=include,
                          exclude=exclude)
    options = BatchOptions(out_dir=out, instructions=text.strip(), output_format=OutputFormat(output_format),
                           concurrency=concurrency, max_tokens=settings.answer_tokens, force=force)
    client = ModelClient(settings)
    client.resolve_model()  # a service that cannot answer is one error line, before any bar
    summarizer = BatchSummarizer(workspace, client, options)
    outcomes = _run_batch(summarizer, items)
    _print_outcomes(outcomes, answer_tokens=settings.answer_tokens)
    if summarizer.index_path is not None:
        err.print(f"index of this run: {summarizer.index_path}")
    if any(o.status not in (OutcomeStatus.DONE, OutcomeStatus.SKIPPED) for o in outcomes):
        raise click.exceptions.Exit(1)


def _print_outcomes(outcomes: list[Any], *, answer_tokens: int) -> None:
    """summarize's table: one row per document, a summary cut at max_tokens marked CUT."""
    from rich.table import Table
    from rich.text import Text

    from .batch import OutcomeStatus
    from .citation_views import counts_text, total_counts  # quotes checked per summary

    table = Table(title=f"{len(outcomes)} documents")
    for column in ("document", "status", "output / error", "document tokens", "parts",
                   "tokens in/out", "quotes"):
        table.add_column(column)
    colours = {OutcomeStatus.DONE: "green", OutcomeStatus.SKIPPED: "cyan",
               OutcomeStatus.FAILED: "red", OutcomeStatus.CANCELLED: "yellow"}
    for o in outcomes:
        status = Text(o.status.value, style=colours[o.status])
        if o.cut:  # stopped at max_tokens: it looks finished, and is not
            status.append(", CUT", style="bold yellow")
        table.add_row(o.source, status, o.output or o.error or "",
                      f"{o.document_tokens:,}" if o.document_tokens is not None else "",
                      str(o.part_count or ""),
                      f"{o.prompt_tokens:,}/{o.completion_tokens:,}" if o.prompt_tokens
                      else "not reported" if o.status is OutcomeStatus.DONE else "",
                      counts_text(o.citations))
    quotes = counts_text(total_counts(o.citations for o in outcomes))
    table.caption = f"quotes checked: {quotes or 'none'}"
    err.print(table)
    cut = [o for o in outcomes if o.cut]
    if cut:
        _say(err, f"{len(cut)} cut at the answer limit:", "bold yellow",
             f"marked CUT above, in the index and in each summary; raise --max-tokens (now "
             f"{answer_tokens:,}) and run again with --force to redo them.")


def _run_batch(summarizer: Any, items: list[Any]) -> list[Any]:
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("summarising", markup=False), BarColumn(),
               TextColumn("{task.completed}/{task.total}", markup=False),
               TextColumn("{task.fields[detail]}", markup=False), TimeElapsedColumn()]
    with Progress(*columns, console=_made(err), transient=False) as bar:
        task = bar.add_task("batch", total=len(items), detail="")

        def update(progress: Any, outcome: Any) -> None:
            rate = progress.tokens_out / max(time.monotonic() - progress.started, 1e-6)
            bar.update(task, completed=progress.done + progress.skipped + progress.failed,
                       detail=(f"done {progress.done} · skipped {progress.skipped} · failed "
                               f"{progress.failed} · left {progress.remaining} · in "
                               f"{progress.tokens_in:,} out {progress.tokens_out:,} tok · "
                               f"{rate:.1f} tok/s"))

        summarizer.on_progress = update
        try:
            return summarizer.run(items)
        except KeyboardInterrupt:
            _say(err, "interrupted:", "yellow", "stopped by the user; in-flight requests "
                 "cancelled; finished summaries are kept"
                 + (f" (index: {summarizer.index_path})" if summarizer.index_path else ""))
            raise


@app.command("app")
@click.option("--port", type=int, default=8501, help="Port of the web app.")
@click.option("--address", default="127.0.0.1", help="Address to listen on; beyond loopback "
              "needs logins or SPARKDOCS_OPEN_APP=true.")
@click.option("--local-model", is_flag=True, help="If no model service answers, start the tiny demo model.")
@service_opts
def run_app(port: int, address: str, local_model: bool, base_url: str | None, model: str | None,
            api_key: str | None) -> None:
    """Open the browser app (streamlit run app.py), optionally with the tiny local model."""
    import subprocess

    from rich.text import Text

    from .client import ModelClient
    from .config import child_environment
    from .local_model import LOCAL_MODEL_ALIAS, LocalModelSupervisor, local_model_log

    settings = _service_settings(base_url, model, api_key)
    from .auth import check_bind

    check_bind(address, settings)  # no app without logins open to the network by accident
    env = child_environment(settings)
    app_path = Path(__file__).resolve().parent.parent / "app.py"
    if not app_path.exists():
        raise SparkdocsError(f"{app_path} not found: run `sparkdocs app` from a source checkout, "
                             "or use the Docker image.")
    supervisor = None
    try:  # from before the start: Ctrl-C/SIGTERM at any point stops the demo model
        if local_model and not ModelClient(settings).capabilities().reachable:
            err.print(Text.assemble(
                (f"No model service at {redact_url(settings.base_url)}: starting "
                 f"{LOCAL_MODEL_ALIAS}", "bold yellow"),
                " — answers will be poor; on a DGX Spark use `docker compose up -d`."))
            supervisor = LocalModelSupervisor(log_path=local_model_log(settings.cache_dir), n_ctx=8192,
                                              on_status=_echo_local_model_status)
            supervisor.start()
            _echo_local_model(supervisor.base_url, supervisor.log_path, 8192)
            env.update({"SPARKDOCS_BASE_URL": supervisor.base_url, "SPARKDOCS_CONTEXT_LENGTH": "8192",
                        # a page can show the tail of this log when the demo model stops answering
                        "SPARKDOCS_LOCAL_MODEL_LOG": str(supervisor.log_path)})
        click.echo(f"sparkdocs app: open {_app_address(address, port)} in a browser "
                   "(Ctrl-C stops it).")
        subprocess.run([sys.executable, "-m", "streamlit", "run", str(app_path),
                        "--server.port", str(port), "--server.address", address], env=env, cwd=app_path.parent, check=False)
    finally:
        if supervisor is not None:
            supervisor.stop()


def _app_address(address: str, port: int) -> str:
    """The address a browser on this machine opens: one listening everywhere is reached at
    localhost (and at this machine's name from others)."""
    host = "localhost" if address in ("", "0.0.0.0", "::") else address
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _echo_local_model(base_url: str, log_path: Path, n_ctx: int) -> None:
    # click.echo, not rich: a path must not be wrapped or read as markup
    click.echo(f"Demo model (SmolLM2-135M, tiny) at {base_url} — log: {log_path}; point the CLI "
               f"at it with SPARKDOCS_BASE_URL={base_url} SPARKDOCS_CONTEXT_LENGTH={n_ctx}", err=True)


def _echo_local_model_status(status: Any) -> None:
    """The supervisor's watcher reports crashes, restarts and failures here, as they happen
    (the first start is shown by the caller, and its failure raises)."""
    if status.restarts:
        click.echo(f"[demo model {status.state.value}] {status.message}", err=True)


@app.command()
@argument("path", required=False, type=A_PATH, help="A document to use (default: synthetic).")
@click.option("--tokens", type=int, default=4000, help="Document size in Llama 3 tokens.")
@click.option("--concurrency", default="1,2,4,8", help="Concurrency levels, comma-separated.")
@click.option("--max-tokens", type=int, default=64, help="Answer length per request.")
@json_opt
@click.option("--out", "out_dir", type=A_PATH, help="Write report.md, report.json and PNG charts here.")
@service_opts
def bench(path: Path | None, tokens: int, concurrency: str, max_tokens: int, as_json: bool,
          out_dir: Path | None, base_url: str | None, model: str | None,
          api_key: str | None) -> None:
    """Measure TTFT cold / follow-up / warmed, prefill and decode speed, and concurrency."""
    from rich.text import Text

    from .bench import Bench, BenchOptions, write_report
    from .client import ModelClient

    try:
        levels = tuple(int(x) for x in concurrency.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter("--concurrency is a comma-separated list of integers, e.g. 1,2,4") from None
    if not levels or min(levels) < 1 or max(levels) > 64:
        raise click.BadParameter("--concurrency levels must be between 1 and 64")
    settings = _service_settings(base_url, model, api_key)
    workspace = Workspace(settings)
    if max_tokens < 1 or tokens < 1:
        raise ConfigError(f"--max-tokens {max_tokens} --tokens {tokens}: both must be whole "
                          "numbers of at least 1.")
    with err.status(Text("starting…")) as status:
        runner = Bench(workspace, ModelClient(settings),
                       BenchOptions(tokens=tokens, concurrency=levels, max_tokens=max_tokens, path=path),
                       on_step=lambda step: status.update(Text(f"bench: {step}…")))
        try:
            report = runner.run()
        except KeyboardInterrupt:
            runner.cancel()  # closes every stream still in flight
            _say(err, "bench interrupted:", "yellow", "stopped by the user; in-flight requests "
                 "cancelled")
            raise
    write_report(report, settings.cache_dir / "bench")  # the Server page shows the latest
    if out_dir is not None:
        for written in write_report(report, out_dir):
            err.print(f"wrote {written}")
    if as_json:
        emit_json(report.as_dict())
    else:
        out.print(report.to_markdown(), markup=False)


@app.command("local-model")
@click.option("--port", type=int, default=8088,  # = local_model.LOCAL_MODEL_PORT
              metavar="PORT", help="Port to listen on (not 8000: that is vLLM's).")
@click.option("--host", default="127.0.0.1", metavar="ADDRESS", help="Address to bind.")
@click.option("--n-ctx", type=int, default=8192, metavar="TOKENS", help="Context length.")
@click.option("--log-file", type=A_PATH, metavar="FILE", help="The demo model's log: the server's output and each "
              "start, crash and stop (default: SPARKDOCS_CACHE_DIR/local-model.log).")
def local_model(port: int, host: str, n_ctx: int, log_file: Path | None) -> None:
    """Start a TINY DEMO MODEL (SmolLM2-135M via llama.cpp) for machines without a GPU service."""
    import time

    from .local_model import LOCAL_MODEL_ALIAS, LocalModelSupervisor, ServerState, local_model_log

    log_path = log_file or local_model_log(settings_from().cache_dir)
    # click.echo, not rich: the log's path whole, before anything can go wrong
    click.echo(f"Starting {LOCAL_MODEL_ALIAS} on {host}:{port} — log: {log_path} — a "
               "135M-parameter demo model: answers will be poor. On a DGX Spark use `docker "
               "compose up -d` instead.", err=True)
    supervisor = LocalModelSupervisor(host=host, port=port, n_ctx=n_ctx, log_path=log_path,
                                      on_status=_echo_local_model_status)
    try:  # from before the start: Ctrl-C/SIGTERM at any point stops the server
        supervisor.start()
        _echo_local_model(supervisor.base_url, supervisor.log_path, n_ctx)
        click.echo("Ctrl-C stops it.", err=True)
        while supervisor.status().state not in (ServerState.FAILED, ServerState.STOPPED):
            time.sleep(1)
    finally:
        supervisor.stop()
    if supervisor.status().state is ServerState.FAILED:
        raise click.exceptions.Exit(1)


@app.command()
@argument("old", metavar="OLD", help="The earlier version: a file, folder or archive.")
@argument("new", metavar="NEW", help="The later version.")
@password_opt
@json_opt
def diff(old: str, new: str, password: str | None, as_json: bool) -> None:
    """What changed from OLD to NEW: changed, removed, added and moved clauses with their
    pages (or sections, files and lines) on both sides. No model is asked. --password opens
    whichever of the two PDFs is encrypted."""
    from .changes import ComparisonError, compare, render_changes

    if Path(old).resolve() == Path(new).resolve():
        raise ComparisonError(f"{old} and {new} are the same file: give two versions to compare, "
                              "e.g. `sparkdocs diff contract-2024.pdf contract-2025.pdf`.")
    workspace = Workspace(settings_from())
    before, after = (workspace.load(LoadRequest((path,), password=password)) for path in (old, new))
    comparison = compare(before, after)
    if as_json:
        emit_json(comparison.as_dict())
        return
    from .documents import unique_names

    paths = (Path(old), Path(new))  # named as given, told apart by folder when alike
    old_name, new_name = unique_names([given_name(p) for p in paths],
                                      folders=[p.resolve().parent.name for p in paths])
    out.print(render_changes(comparison, old_name=old_name, new_name=new_name), end="",
              markup=False)


@app.command()
@json_opt
def sessions(as_json: bool) -> None:
    """Stored question sessions, newest first: the ids `ask --follow-up-of` takes."""
    import datetime

    from rich.table import Table

    from .views import session_title

    settings = settings_from()
    workspace = Workspace(settings)
    _store_recovered(workspace)
    store = workspace.store
    listed: list[dict[str, Any]] = [
        {"id": s.id, "document": s.document_name, "title": session_title(s), "turns": len(s.turns),
         "updated": datetime.datetime.fromtimestamp(s.updated_at, datetime.UTC)
         .strftime("%Y-%m-%d %H:%M UTC")} for s in store.list_sessions(owner=settings.user)]
    if as_json:
        emit_json(listed)
        return
    if not listed:
        err.print("no sessions yet: `sparkdocs ask PATH... QUESTION` starts one")
        return
    table = Table(title=f"{len(listed)} sessions")
    for column in ("id", "document", "title", "turns", "updated"):
        table.add_column(column)
    for row in listed:
        table.add_row(row["id"], row["document"], row["title"], str(row["turns"]), row["updated"])
    out.print(table)


def main(argv: list[str] | None = None) -> int:
    import signal

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (docker stop, timeout, kill) unwinds like Ctrl-C: child servers are stopped and
    # finished work is kept.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        code = app.main(args=argv, standalone_mode=False)
        if isinstance(code, int):
            return code
    except SparkdocsError as exc:
        _say(err, "error:", "bold red", redact_urls(str(exc)), soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted: stopped by the user")
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # usage errors
        exc.show()  # "Usage: …", "Try '… --help' for help.", "Error: …"
        return exc.exit_code
    except click.Abort:
        return 130
    except OSError as exc:
        if exc.errno not in _OUTPUT_FULL:
            raise
        _say(err, "error:", "bold red", f"cannot write the output ({exc.strerror}); free "
             "some space or send the output elsewhere.", soft_wrap=True)
        return 2
    return 0


_OUTPUT_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # what a full disk says


from .cli_user import user_app  # noqa: E402  # the `sparkdocs user` commands (team mode)

app.add_command(user_app)
