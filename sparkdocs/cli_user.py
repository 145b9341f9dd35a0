"""`sparkdocs user add|remove|list`: the users of password mode. A password is read from the
terminal (twice) or from stdin with --password-stdin, never from the command line, where it
would sit in the shell history and in every process listing."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .auth import Users
from .cli_help import PlainTyper
from .config import AuthMode, Settings
from .errors import TeamError
from .store import Store

user_app = PlainTyper(no_args_is_help=True, add_completion=False,  # plain click help: cli_help
                      help="Users of the app's password mode (SPARKDOCS_AUTH=password).")


def _settings() -> Settings:
    return Settings()  # type: ignore[call-arg]  # every field has a default


def _users() -> Users:
    settings = _settings()
    return Users(Store(settings.cache_dir,
                       size_limit_bytes=settings.cache_size_limit_mb * 2**20,
                       per_owner_shares=settings.auth is not AuthMode.NONE))


@user_app.command("add")
def add(name: Annotated[str, typer.Argument(help="The user name (letters, digits, . _ @ + -).")],
        password_stdin: Annotated[bool, typer.Option(
            "--password-stdin", help="Read the password from the first line of stdin.")] = False
        ) -> None:
    """Add a user; asks for the password twice."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        except typer.Abort as exc:  # the input ended (a script, < /dev/null) or Ctrl-C
            raise TeamError(f"No password was given for {name!r}: type it twice at the prompt, "
                            "or pipe it in with `sparkdocs user add NAME --password-stdin`."
                            ) from exc
    _users().add(name, password)
    typer.echo(f"added user {name}", err=True)
    if _settings().auth is not AuthMode.PASSWORD:
        typer.echo("note: the app asks for logins only with SPARKDOCS_AUTH=password", err=True)


@user_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The user to remove.")]) -> None:
    """Remove a user. Their documents and sessions stay in the store, unseen by others."""
    _users().remove(name)
    typer.echo(f"removed user {name}", err=True)


@user_app.command("list")
def list_users() -> None:
    """The user names, one a line."""
    for name in _users().names():
        typer.echo(name)
