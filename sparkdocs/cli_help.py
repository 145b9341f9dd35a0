"""`--help` as click prints it, with a metavar for every value and the arguments listed:
`--include PATTERN`, `--out OUT_DIR`, `Usage: … count [OPTIONS] PATH...`, then an Arguments
section with each argument's help. Every command and group of the CLI is a `PlainCommand` or a
`PlainGroup`, and every argument is made with `argument` (a `HelpArgument`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def _plain_metavars(params: list[click.Parameter]) -> None:
    """An option that takes a value and names no metavar shows its name in capitals
    (`--max-tokens MAX_TOKENS`), not its type (`INTEGER`)."""
    for param in params:
        if isinstance(param, click.Option) and param.metavar is None and not (
                param.is_flag or param.count):
            param.metavar = (param.name or "").upper()


class HelpArgument(click.Argument):
    """An argument shown by its metavar (or name) as written: `PATH...`, `[PATH]`,
    `PATH... QUESTION...`, with `[required]` after its help."""

    def _shown(self) -> str:
        return self.metavar or (self.name or "").upper()

    def make_metavar(self, ctx: click.Context) -> str:
        shown = self._shown() if self.required else f"[{self._shown()}]"
        return f"{shown}..." if self.nargs != 1 else shown

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return f"'{self._shown()}'"  # "Missing argument 'PATH'."

    def get_help_record(self, ctx: click.Context) -> tuple[str, str]:
        help_text = self.help or ""
        if self.required:
            help_text = f"{help_text}  [required]" if help_text else "[required]"
        return self.make_metavar(ctx), help_text


def argument(*param_decls: str, **attrs: Any) -> Callable[[Any], Any]:
    """`click.argument` with its help shown under Arguments."""
    return click.argument(*param_decls, cls=HelpArgument, **attrs)


class PlainCommand(click.Command):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [param.get_help_record(ctx) for param in self.get_params(ctx)
                if isinstance(param, click.Argument)]
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl([row for row in rows if row is not None])


class PlainGroup(click.Group):
    """A group whose commands and sub-groups are plain too, listed in the order they were
    added (the order of the workflow: count, prompt, ask, …), not alphabetically."""

    command_class = PlainCommand
    group_class = type  # a sub-group is made with this same class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)
