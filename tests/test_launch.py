"""The entry point's guess of the command (to start the tokenizer early) is the command click
runs for the same arguments (the judge), over generated command lines."""

from __future__ import annotations

import warnings

import click
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdocs.cli import app
from sparkdocs.launch import command_name

WORDS = st.sampled_from(["count", "prompt", "diff", "ask", "sessions", "user", "doc.pdf",
                         "--json", "--user", "--pages", "1-3", "-", "--", "--user=bob", "bob",
                         "ünïcode.txt", "-q"])


def _clicks_command(argv: list[str]) -> str | None:
    """The command click runs for `argv`, or None when it runs none (a usage error)."""
    try:
        ctx = app.make_context("sparkdocs", list(argv))
    except (click.UsageError, click.exceptions.Exit):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        words = [*ctx.protected_args, *ctx.args]
    return words[0] if words and app.get_command(ctx, words[0]) is not None else None


@settings(max_examples=400, deadline=None)
@given(user=st.one_of(st.just([]), st.lists(WORDS, min_size=1, max_size=1).map(lambda v: ["--user", *v]),
                      st.just(["--user=bob"])),
       rest=st.lists(WORDS, max_size=5))
def test_the_command_guessed_is_the_one_click_runs(user: list[str], rest: list[str]) -> None:
    argv = [*user, *rest]
    if "--" in argv:
        return  # "--" ends the options for click; no command of sparkdocs takes it first
    runs = _clicks_command(argv)
    if runs is not None:  # a usage error runs no command: any guess costs only an early start
        assert command_name(argv) == runs, argv
