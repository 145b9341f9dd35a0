"""The command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import Settings
from .errors import SparkdocsError
from .workspace import LoadRequest, Workspace, count_report

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ask questions of whole documents with a local LLM (no retrieval).")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

PathsArg = Annotated[list[str], typer.Argument(help="Files, globs, a folder or an archive: one document.")]
IncludeOpt = Annotated[list[str], typer.Option("--include", help="gitignore-style pattern of files to keep (codebases).")]
ExcludeOpt = Annotated[list[str], typer.Option("--exclude", help="gitignore-style pattern of files to leave out.")]
PasswordOpt = Annotated[Optional[str], typer.Option("--password", help="Password of an encrypted PDF.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def settings_from(**overrides: Any) -> Settings:
    """The one Settings object: environment first, then explicit command-line values."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@app.command()
def count(paths: PathsArg, include: IncludeOpt = [], exclude: ExcludeOpt = [],
          password: PasswordOpt = None, as_json: JsonOpt = False,
          context_length: Annotated[Optional[int], typer.Option(help="Context length to budget against.")] = None,
          max_tokens: Annotated[Optional[int], typer.Option(help="Answer reserve.")] = None) -> None:
    """Exact Llama 3 token counts per section and the budget against the context."""
    workspace = Workspace(settings_from(context_length=context_length, answer_tokens=max_tokens))
    document = workspace.load(LoadRequest(tuple(paths), tuple(include), tuple(exclude), password))
    report = count_report(document, workspace.budget(document))
    if as_json:
        emit_json(report)
        return
    budget = report["budget"]
    table = Table(title=f"{document.name} — {document.kind.value}, {report['tokens']:,} tokens")
    table.add_column("section")
    table.add_column("tokens", justify="right")
    for section in report["sections"]:
        table.add_row(f"{section['kind']} {section['title']}", f"{section['tokens']:,}")
    out.print(table)
    if "directories" in report:
        dirs = Table(title="tokens per directory")
        dirs.add_column("directory")
        dirs.add_column("tokens", justify="right")
        for name, tokens in report["directories"].items():
            dirs.add_row(name, f"{tokens:,}")
        out.print(dirs)
    out.print(
        f"context {budget['context']:,} − answer reserve {budget['answer_reserve']:,} − prompt "
        f"overhead {budget['prompt_overhead']:,} = available {budget['available']:,}; "
        f"document {budget['used']:,}; free {budget['free']:,}"
        + ("" if budget["fits"] else "  [bold red]OVER BUDGET[/]: choose parts with --include/--exclude")
    )
    for warning in report["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}")


@app.command()
def prompt(paths: PathsArg,
           question: Annotated[str, typer.Option("--question", "-q", help="The question to ask.")],
           include: IncludeOpt = [], exclude: ExcludeOpt = [], password: PasswordOpt = None,
           as_json: JsonOpt = False) -> None:
    """The exact chat messages that would be sent, and their Llama 3.3 token count."""
    workspace = Workspace(settings_from())
    document = workspace.load(LoadRequest(tuple(paths), tuple(include), tuple(exclude), password))
    built = workspace.prompts.question(workspace.prepare(document), question)
    if as_json:
        emit_json({"messages": built.as_dicts(), "prompt_tokens": built.prompt_tokens})
        return
    for message in built.messages:
        out.rule(message.role)
        out.print(message.content, markup=False)
    out.rule()
    out.print(f"prompt tokens (Llama 3.3 template): {built.prompt_tokens:,}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except SparkdocsError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click's usage errors
        import click
        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 130
        raise
    return 0
