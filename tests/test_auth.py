"""Team mode, item 1: users with salted slow hashes, logins that expire, a proxy's user header
trusted only from the proxy, and no open app without logins unless asked for explicitly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkdocs.auth import (
    LOCAL_USER,
    Users,
    cache_salt_for,
    check_bind,
    install_secret,
    proxy_user,
    start_login,
)
from sparkdocs.config import AuthMode, CacheIsolation, Settings
from sparkdocs.errors import LoginError, OpenAppError, SparkdocsError
from sparkdocs.passwords import DUMMY_HASH, hash_password, verify_password
from sparkdocs.store import Store


def test_password_hashes_are_salted_slow_argon2id_and_verify():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # a fresh salt each time
    assert first.startswith("$argon2id$") and "correct horse" not in first
    assert verify_password(first, "correct horse") and verify_password(second, "correct horse")
    assert not verify_password(first, "correct hors")
    assert not verify_password("not a hash", "correct horse")


def test_the_unknown_user_dummy_hash_costs_what_a_real_hash_costs():
    # an unknown name's login verifies against DUMMY_HASH: the same Argon2 parameters as a fresh
    # hash, so it takes as long as a known name's (argon2's own parser is the judge)
    import argon2

    assert argon2.extract_parameters(DUMMY_HASH) == argon2.extract_parameters(hash_password("x"))
    assert not verify_password(DUMMY_HASH, "not the password")


def test_users_are_added_checked_listed_and_removed(store: Store):
    users = Users(store)
    users.add("alice", "alice-pass-1")
    users.add("bob", "bob-pass-22")
    assert users.names() == ["alice", "bob"]
    assert users.authenticate("alice", "alice-pass-1") == "alice"
    assert users.authenticate("alice", "bob-pass-22") is None
    assert users.authenticate("carol", "alice-pass-1") is None  # unknown: same answer
    with pytest.raises(SparkdocsError, match="already exists"):
        users.add("alice", "another-pass")
    users.remove("alice")
    assert users.names() == ["bob"] and users.authenticate("alice", "alice-pass-1") is None
    with pytest.raises(SparkdocsError, match="No user 'alice'"):
        users.remove("alice")


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "../etc", "al\nice"])
def test_user_names_are_checked(store: Store, name: str):
    with pytest.raises(SparkdocsError, match="user name"):
        Users(store).add(name, "long-enough-pass")


def test_short_passwords_are_refused(store: Store):
    with pytest.raises(SparkdocsError, match="at least 8"):
        Users(store).add("alice", "short")


def test_a_login_expires_after_its_time_to_live():
    login = start_login("alice", ttl_min=1.0, now=1000.0)
    assert login.user == "alice"
    assert login.valid(now=1059.0)
    assert not login.valid(now=1061.0)


def test_the_proxy_user_header_is_trusted_only_from_the_proxy():
    settings = Settings(auth=AuthMode.PROXY, trusted_proxies="127.0.0.1,10.1.0.0/24")
    headers = {"X-Forwarded-User": "bob"}
    # Streamlit reports a loopback peer as None
    assert proxy_user(headers, peer=None, settings=settings) == "bob"
    assert proxy_user({"x-forwarded-user": "bob"}, peer="10.1.0.7", settings=settings) == "bob"
    with pytest.raises(LoginError, match="10.2.0.7.*not the trusted proxy"):
        proxy_user(headers, peer="10.2.0.7", settings=settings)
    with pytest.raises(LoginError, match="X-Forwarded-User"):
        proxy_user({}, peer=None, settings=settings)
    with pytest.raises(LoginError, match="user name"):
        proxy_user({"X-Forwarded-User": "a b"}, peer=None, settings=settings)


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_binds_are_always_allowed(address: str):
    check_bind(address, Settings())


@pytest.mark.parametrize("address", ["0.0.0.0", "", "192.168.1.20", "::"])
def test_an_open_app_without_logins_is_refused_unless_asked_for(address: str):
    with pytest.raises(OpenAppError, match="SPARKDOCS_OPEN_APP"):
        check_bind(address, Settings())
    check_bind(address, Settings(open_app=True))
    check_bind(address, Settings(auth=AuthMode.PASSWORD))
    check_bind(address, Settings(auth=AuthMode.PROXY))


def test_sparkdocs_app_binds_loopback_and_refuses_an_open_address(tmp_path: Path, monkeypatch):
    from sparkdocs import cli

    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARKDOCS_BASE_URL", "http://127.0.0.1:9/v1")
    started: list[list[str]] = []
    monkeypatch.setattr("subprocess.run", lambda args, **kw: started.append(list(args)))
    assert cli.main(["app", "--address", "0.0.0.0"]) == 2
    assert started == []
    assert cli.main(["app"]) == 0
    command = started[0]
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    monkeypatch.setenv("SPARKDOCS_OPEN_APP", "true")
    assert cli.main(["app", "--address", "0.0.0.0"]) == 0


def test_user_commands_take_the_password_from_stdin_never_the_command_line(tmp_path: Path):
    from sparkdocs.cli import app

    env = {"SPARKDOCS_CACHE_DIR": str(tmp_path / "cache")}
    runner = CliRunner()
    added = runner.invoke(app, ["user", "add", "alice", "--password-stdin"],
                          input="alice-pass-1\n", env=env)
    assert added.exit_code == 0, added.output
    prompted = runner.invoke(app, ["user", "add", "bob"], input="bob-pass-22\nbob-pass-22\n",
                             env=env)
    assert prompted.exit_code == 0, prompted.output
    mismatch = runner.invoke(app, ["user", "add", "carol"], input="carol-pass-1\nother-pass\n"
                             * 3, env=env)
    assert mismatch.exit_code != 0
    listed = runner.invoke(app, ["user", "list"], env=env)
    assert listed.output.split() == ["alice", "bob"]
    assert runner.invoke(app, ["user", "remove", "bob"], env=env).exit_code == 0
    assert runner.invoke(app, ["user", "list"], env=env).output.split() == ["alice"]
    store = Store(tmp_path / "cache", size_limit_bytes=2**24)
    assert Users(store).authenticate("alice", "alice-pass-1") == "alice"
    assert not any(opt == "--password" for opt in _user_add_options())


def _user_add_options() -> list[str]:
    from sparkdocs.cli import app

    add = app.commands["user"].commands["add"]  # type: ignore[attr-defined]
    return [opt for param in add.params for opt in param.opts]


def test_the_cache_salt_hides_the_user_and_follows_the_isolation_setting(tmp_path: Path):
    secret = install_secret(tmp_path)
    assert install_secret(tmp_path) == secret and len(secret) >= 32
    assert (tmp_path / "secret").stat().st_mode & 0o077 == 0
    team = Settings(auth=AuthMode.PASSWORD)
    alice = cache_salt_for("alice", secret=secret, settings=team)
    assert alice is not None and "alice" not in alice
    assert alice == cache_salt_for("alice", secret=secret, settings=team)
    assert alice != cache_salt_for("bob", secret=secret, settings=team)
    assert alice != cache_salt_for("alice", secret=b"x" * 32, settings=team)
    shared = Settings(auth=AuthMode.PASSWORD, cache_isolation=CacheIsolation.SHARED)
    assert cache_salt_for("alice", secret=secret, settings=shared) is None
    assert cache_salt_for(LOCAL_USER, secret=secret, settings=Settings()) is None
    single_isolated = Settings(cache_isolation=CacheIsolation.USER)
    assert cache_salt_for(LOCAL_USER, secret=secret, settings=single_isolated) is not None


def test_settings_survive_the_trip_to_the_app_process():
    from sparkdocs.config import child_environment

    settings = Settings(auth=AuthMode.PASSWORD, cache_isolation=CacheIsolation.SHARED,
                        login_ttl_min=0.05)
    env = child_environment(settings)
    assert env["SPARKDOCS_AUTH"] == "password" and env["SPARKDOCS_CACHE_ISOLATION"] == "shared"
    rebuilt = Settings(**{k[len("SPARKDOCS_"):].lower(): v for k, v in env.items()
                          if k.startswith("SPARKDOCS_") and k != "SPARKDOCS_LOCAL_MODEL_LOG"})
    assert rebuilt.auth is AuthMode.PASSWORD and rebuilt.login_ttl_min == 0.05
    assert sys.version_info >= (3, 11)


def test_the_app_process_sees_the_tcp_peer_not_x_forwarded_for():
    """Streamlit's uvicorn rewrites a loopback peer from X-Forwarded-For unless told to trust
    no peer; behind Caddy on 127.0.0.1 proxy mode would then see the browser's address."""
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    from sparkdocs.config import child_environment

    trusted = child_environment(Settings(auth=AuthMode.PROXY))["FORWARDED_ALLOW_IPS"]
    assert "127.0.0.1" not in _TrustedHosts(trusted) and "::1" not in _TrustedHosts(trusted)
    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    assert 'ENV FORWARDED_ALLOW_IPS=""' in dockerfile


def test_repeated_failed_logins_pause_the_name(store: Store):
    from sparkdocs.auth import LoginThrottle, log_in

    users = Users(store)
    users.add("alice", "alice-pass-1")
    now = [1000.0]
    throttle = LoginThrottle(free=3, lock_s=30.0, clock=lambda: now[0])
    assert log_in(users, throttle, "alice", "alice-pass-1", client="10.0.0.7") == "alice"
    for _ in range(3):
        with pytest.raises(LoginError, match="Wrong username or password"):
            log_in(users, throttle, "alice", "guess", client="10.0.0.7")
    with pytest.raises(LoginError, match="Too many failed logins from this address.*30 s"):
        log_in(users, throttle, "alice", "alice-pass-1", client="10.0.0.7")  # even the right one, while paused
    now[0] += 31
    assert log_in(users, throttle, "alice", "alice-pass-1", client="10.0.0.7") == "alice"
    with pytest.raises(LoginError, match="Wrong"):
        log_in(users, throttle, "carol", "guess", client="10.0.0.7")  # an unknown name: the same message


def test_the_single_user_name_is_reserved_for_team_members(tmp_path):
    from sparkdocs.auth import check_team_user_name
    from sparkdocs.errors import TeamError

    for name in ("local", "LOCAL"):
        with pytest.raises(TeamError, match="reserved"):
            check_team_user_name(name)
    assert check_team_user_name("alice") == "alice"


def test_a_login_token_proves_its_user_until_expiry_password_change_or_removal(store: Store,
                                                                                tmp_path: Path):
    from sparkdocs.auth import login_from_token, login_token, start_login

    users = Users(store)
    users.add("alice", "alice-pass-1")
    users.add("bob", "bob-pass-22")
    secret = install_secret(tmp_path)
    login = start_login("alice", ttl_min=60, now=1_000_000)
    token = login_token(login, secret=secret, users=users)
    assert login_from_token(token, secret=secret, users=users, now=1_000_100).user == "alice"
    assert login_from_token(token, secret=secret, users=users, now=1_000_000 + 3601) is None
    user, expires, mac = token.split(":")
    forged = [f"bob:{expires}:{mac}", f"{user}:{int(expires) + 86_400}:{mac}", f"{user}:{expires}:",
              f"{user}:{expires}:{mac[:-1]}{'1' if mac[-1] == '0' else '0'}", "", ":::", "alice", f"{user}:-5:{mac}",
              f"{user}:{'9' * 40}:{mac}"]
    for bad in forged:
        assert login_from_token(bad, secret=secret, users=users, now=1_000_100) is None, bad
    assert login_from_token(token, secret=b"x" * 32, users=users, now=1_000_100) is None
    users.remove("alice")
    users.add("alice", "a-new-password")  # same name, new password: old logins end
    assert login_from_token(token, secret=secret, users=users, now=1_000_100) is None
    users.remove("alice")
    assert login_from_token(token, secret=secret, users=users, now=1_000_100) is None


def test_a_process_reading_the_secret_while_another_creates_it_gets_the_whole_secret(
        tmp_path, monkeypatch):
    """Another process calls install_secret exactly while this one writes the secret (the
    random bytes are being made): it must not see a half-written file, and both must end with
    the same secret."""
    import sparkdocs.auth as auth

    real = auth.secrets.token_bytes
    seen_inside: list[bytes] = []

    def token_bytes_while_another_reads(n: int) -> bytes:
        if n == 32 and not seen_inside:
            seen_inside.append(b"")  # once: the inner call is "the other process"
            seen_inside[0] = auth.install_secret(tmp_path)
        return real(n)

    monkeypatch.setattr(auth.secrets, "token_bytes", token_bytes_while_another_reads)
    outer = auth.install_secret(tmp_path)
    assert len(outer) == 32 and seen_inside == [outer]
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


@pytest.mark.parametrize("tail", ["é", "\u0663" * 64, "\x00", "ab\u200bcd"])
def test_a_login_cookie_with_non_ascii_characters_is_refused_not_raised(store: Store,
                                                                       tmp_path: Path, tail: str):
    """A cookie is whatever the browser (or a sibling subdomain) sends: a non-ASCII signature or
    expiry must read as no login, not crash every page of that browser."""
    from sparkdocs.auth import login_from_token, login_token, start_login

    users = Users(store)
    users.add("alice", "alice-pass-1")
    secret = install_secret(tmp_path)
    token = login_token(start_login("alice", ttl_min=60, now=1_000_000), secret=secret,
                        users=users)
    user, expires, mac = token.split(":")
    arabic_digits = "\u0661" * 10  # isdigit() and float() accept them
    for bad in (f"{user}:{expires}:{tail}", f"{user}:{expires}:{mac[:-1]}{tail}",
                f"{user}:{arabic_digits}:{mac}"):
        assert login_from_token(bad, secret=secret, users=users, now=1_000_100) is None, bad


def test_logging_out_ends_the_login_cookie_on_the_server_not_only_in_the_browser(store: Store,
                                                                                tmp_path: Path):
    """The cookie is a bearer token: a copy kept from before the logout (another browser, a
    stolen or backed-up cookie) must no longer log in once the user logged out. Other users'
    logins go on, and a new login works."""
    from sparkdocs.auth import login_from_token, login_token, start_login

    users = Users(store)
    users.add("alice", "alice-pass-1")
    users.add("bob", "bob-pass-22")
    secret = install_secret(tmp_path)
    alice = login_token(start_login("alice", ttl_min=60, now=1_000_000), secret=secret,
                        users=users)
    bob = login_token(start_login("bob", ttl_min=60, now=1_000_000), secret=secret, users=users)
    users.end_logins("alice")  # what the Log out button does
    assert login_from_token(alice, secret=secret, users=users, now=1_000_100) is None
    assert login_from_token(bob, secret=secret, users=users, now=1_000_100).user == "bob"
    again = login_token(start_login("alice", ttl_min=60, now=1_000_200), secret=secret,
                        users=users)
    assert login_from_token(again, secret=secret, users=users, now=1_000_300).user == "alice"
    # a second Store on the same file (another app process) sees the logout too
    other = Users(Store(store.path.parent, size_limit_bytes=10**8))
    assert login_from_token(alice, secret=secret, users=other, now=1_000_100) is None


def test_user_add_with_no_input_left_says_how_to_give_the_password(tmp_path: Path):
    """`sparkdocs user add bob < /dev/null` (a script, a CI job) ended with exit 130 and no
    word: it must say that no password came and name --password-stdin, and add no one."""
    import os
    import subprocess

    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-m", "sparkdocs", "user", "add", "bob"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "--password-stdin" in result.stderr and "Traceback" not in result.stderr
    assert Users(Store(tmp_path / "cache", size_limit_bytes=2**24)).names() == []


def test_the_install_secret_is_made_on_a_filesystem_without_hard_links(tmp_path, monkeypatch):
    """Some mounts (SMB, vfat, several FUSE file systems) refuse hard links with EPERM or
    EOPNOTSUPP: the secret must still be made there, whole, and read back the same."""
    import errno

    import sparkdocs.auth as auth

    def no_hard_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(auth.os, "link", no_hard_links)
    first = auth.install_secret(tmp_path)
    assert len(first) == 32 and (tmp_path / "secret").read_bytes() == first
    assert auth.install_secret(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]
