"""`--help` as a user reads it: plain option help as click prints it, for every command, from
the real `python -m sparkdocs … --help` output of a subprocess (issue #22, the first hour)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command of the app, as a user would type it."""
    from sparkdocs.cli import app

    root = app
    paths: list[tuple[str, ...]] = [()]

    def walk(group, prefix: tuple[str, ...]) -> None:
        for name in group.list_commands(None):
            command = group.get_command(None, name)
            paths.append((*prefix, name))
            if hasattr(command, "list_commands"):
                walk(command, (*prefix, name))

    walk(root, ())
    return paths


def _command(path: tuple[str, ...]):
    from sparkdocs.cli import app

    command = app
    for name in path:
        command = command.get_command(None, name)
    return command


def _help(path: tuple[str, ...]) -> str:
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    result = subprocess.run([sys.executable, "-m", "sparkdocs", *path, "--help"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _flat(text: str) -> str:
    """Words as read: help wraps lines, and may wrap after a hyphen (`local-` / `model.log`)."""
    return re.sub(r"-\s+", "-", " ".join(text.split()))


PATHS = _command_paths()


def test_every_command_is_covered():
    names = {" ".join(path) for path in PATHS}
    assert {"count", "prompt", "ask", "doctor", "summarize", "app", "bench", "local-model",
            "sessions", "user", "user add", "user remove", "user list"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "sparkdocs")
def test_help_is_plain_option_help_with_every_options_text(path: tuple[str, ...]):
    text = _help(path)
    # no type tags (`<list[str]>`, `<bool>`, `<str>`, `<md|jsonl>`) and no `{paths}` in usage
    assert not re.search(r"<[\w\[\]|, .]+>", text), text
    assert not re.search(r"\{\w+\}", text), text
    assert not set(text) & set("╭╮╰╯│─"), text  # no panels: plain, as click prints help
    usage = text.split("\n\n")[0] if text.startswith("Usage:") else text.lstrip().splitlines()[0]
    assert usage.startswith("Usage: "), text
    command = _command(path)
    flat = _flat(text)
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            shown = param.metavar or param.name.upper()
            assert re.search(rf"(?<![\w{{]){re.escape(shown)}(\.\.\.)?(?![\w}}])", usage), (
                f"{shown} not in {usage!r}")
        else:
            assert any(opt in text for opt in param.opts), (param.opts, text)
        if param.help:
            assert _flat(param.help) in flat, (param.name, param.help, text)
    if hasattr(command, "list_commands"):  # a group lists its commands, each with its summary
        for name in command.list_commands(None):
            assert re.search(rf"^\s+{re.escape(name)}\s", text, re.MULTILINE), (name, text)
