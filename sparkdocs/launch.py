"""The command's entry point. A command that counts (`count`, `prompt`, `diff`) starts building
the tokenizer in a child process first, before this process imports the command line, its
settings and the store: the ~0.15 s build (Meta's ranks, then tiktoken's Rust, which holds the
GIL) then runs beside all of that on another core (see sparkdocs.token_child)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

COUNTING_COMMANDS = frozenset({"count", "prompt", "diff"})
_GLOBAL_OPTIONS_WITH_VALUES = frozenset({"--user"})


def command_name(argv: Sequence[str]) -> str | None:
    """The command `argv` runs: its first word that is neither an option nor a global option's
    value (click decides for real; a wrong guess only costs the early start)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_OPTIONS_WITH_VALUES:
            skip = True
        elif arg == "-" or not arg.startswith("-"):
            return arg
    return None


def cached_ranks_of_the_environment() -> dict[bytes, int]:
    """The ranks from the cache folder the environment names (no option of the command line
    moves it): loaded in the child, ~4x faster than parsing Meta's file, and written there by
    the first command that builds them. Settings the command would refuse leave the child to
    Meta's file; the command itself then says what is wrong."""
    from .config import build_settings
    from .errors import ConfigError
    from .rank_cache import cached_ranks
    from .tokens import llama3_source_ranks

    try:
        cache_dir = build_settings().cache_dir
    except ConfigError:
        return llama3_source_ranks()
    return cached_ranks(cache_dir)()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if command_name(args) in COUNTING_COMMANDS and not {"--help", "-h"} & set(args):
            from .token_child import tokenizer_beside
            from .tokens import use_llama3

            use_llama3(tokenizer_beside(cached_ranks_of_the_environment))
        from .cli import main as run_command
    except KeyboardInterrupt:  # Ctrl-C while the command line loads: no traceback either
        sys.stderr.write("interrupted: stopped by the user\n")
        return 130
    return run_command(args)


def run() -> NoReturn:
    """The console script (and `python -m sparkdocs`): `main`, then the process ends. A
    counting command that runs no other thread by then ends without tearing its modules and
    objects down (~30 ms of a ~0.3 s command): its tokenizer child is reaped and logging and
    output are flushed first, and what the store committed stands, as after any exit (SQLite
    keeps committed transactions; an open connection's log is checkpointed by the next one)."""
    args = sys.argv[1:]
    code = main(args)
    if command_name(args) in COUNTING_COMMANDS and threading.active_count() == 1:
        from .token_child import close_children

        close_children()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:  # None: the command was started with it closed
                    stream.flush()
            except (OSError, ValueError):  # a reader that went away: as Python's own exit says
                code = code or 120
        os._exit(code)
    sys.exit(code)
