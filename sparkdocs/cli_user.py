"""`sparkdocs user add|remove|list`: the users of password mode. A password is read from the
terminal (twice) or from stdin with --password-stdin, never from the command line, where it
would sit in the shell history and in every process listing."""

from __future__ import annotations

import sys

import click

from .auth import Users
from .cli_help import PlainGroup, argument
from .config import AuthMode, Settings
from .errors import TeamError
from .store import Store


@click.group("user", cls=PlainGroup,  # plain click help: cli_help
             help="Users of the app's password mode (SPARKDOCS_AUTH=password).")
def user_app() -> None:
    pass


def _settings() -> Settings:
    return Settings()  # type: ignore[call-arg]  # every field has a default


def _users() -> Users:
    settings = _settings()
    return Users(Store(settings.cache_dir,
                       size_limit_bytes=settings.cache_size_limit_mb * 2**20,
                       per_owner_shares=settings.auth is not AuthMode.NONE))


@user_app.command("add")
@argument("name", help="The user name (letters, digits, . _ @ + -).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin.")
def add(name: str, password_stdin: bool) -> None:
    """Add a user; asks for the password twice."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        except click.Abort as exc:  # the input ended (a script, < /dev/null) or Ctrl-C
            raise TeamError(f"No password was given for {name!r}: type it twice at the prompt, "
                            "or pipe it in with `sparkdocs user add NAME --password-stdin`."
                            ) from exc
    _users().add(name, password)
    click.echo(f"added user {name}", err=True)
    if _settings().auth is not AuthMode.PASSWORD:
        click.echo("note: the app asks for logins only with SPARKDOCS_AUTH=password", err=True)


@user_app.command("remove")
@argument("name", help="The user to remove.")
def remove(name: str) -> None:
    """Remove a user. Their documents and sessions stay in the store, unseen by others."""
    _users().remove(name)
    click.echo(f"removed user {name}", err=True)


@user_app.command("list")
def list_users() -> None:
    """The user names, one a line."""
    for name in _users().names():
        click.echo(name)
