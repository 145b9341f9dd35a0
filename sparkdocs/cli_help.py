"""`--help` as click prints it: plain text, `--include PATTERN`, `Usage: … count [OPTIONS]
PATH...`. typer's own help (its Rich panels, or its plain mode in typer >= 0.20) shows Python
types instead (`<list[str]>`, `<bool>`) and a required argument as `{paths}`, which reads like
a template that was never filled in. Every command and group of the CLI is made by `PlainTyper`,
which gives each parameter a metavar the way click does (an explicit one, else its name in
capitals) and writes the usage line and the arguments the way click does."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def _plain_metavars(params: list[Any]) -> None:
    """A metavar for every argument and every option that takes a value: shown as written,
    where typer would show a Python type."""
    for param in params:
        flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
        takes_value = param.param_type_name == "argument" or (
            param.param_type_name == "option" and not flag)
        if param.metavar is None and takes_value:
            param.metavar = param.name.upper()


def _argument_usage(param: Any) -> str:
    """`PATHS...`, `[PATH]`: click's usage form of an argument."""
    shown = param.metavar or param.name.upper()
    if not param.required:
        shown = f"[{shown}]"
    return f"{shown}..." if param.nargs != 1 else shown


class PlainHelpCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_usage(p) for p in self.get_params(ctx)
                         if p.param_type_name == "argument"]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                help_text = getattr(param, "help", None) or ""
                if param.required:
                    help_text = f"{help_text}  [required]" if help_text else "[required]"
                arguments.append((_argument_usage(param), help_text))
            elif (record := param.get_help_record(ctx)) is not None:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class PlainHelpGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)


class PlainTyper(typer.Typer):
    """A `typer.Typer` whose help is plain click help (no Rich, no Markdown), for the group and
    every command registered on it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PlainHelpGroup)
        kwargs["rich_markup_mode"] = None
        super().__init__(**kwargs)

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or PlainHelpCommand, **kwargs)
