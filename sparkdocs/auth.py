"""Team mode: who is asking, and what they may see.

Three ways to know the user (`SPARKDOCS_AUTH`): `none` (one person, the user `local`; the app
then refuses to listen beyond loopback unless `SPARKDOCS_OPEN_APP=true` says an open app is
wanted), `password` (users with Argon2id hashes in the store, managed with `sparkdocs user`;
a login lives in the browser session and expires after `SPARKDOCS_LOGIN_TTL_MIN`), and `proxy`
(the user a trusted reverse proxy names in a header, believed only when the connection comes
from that proxy). Pure logic: the pages and the CLI only display what these functions decide.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import LOCAL_USER, AuthMode, CacheIsolation, Settings
from .errors import LoginError, OpenAppError, TeamError
from .passwords import hash_password, spend_a_verify, verify_password

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

__all__ = [
    "LOCAL_USER",
    "LOGIN_COOKIE",
    "Login",
    "LoginThrottle",
    "Users",
    "cache_salt_for",
    "check_bind",
    "install_secret",
    "isolation",
    "log_in",
    "login_client",
    "login_from_token",
    "login_token",
    "proxy_user",
    "start_login",
]
MIN_PASSWORD_LENGTH = 8
SECRET_FILE = "secret"
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def check_user_name(name: str) -> str:
    """The name as given, if it is one a user can have: it is shown in pages and lists, and
    comes from a header in proxy mode, so it must be plain."""
    if not _USER_NAME.fullmatch(name):
        raise TeamError(
            f"{name!r} is not a valid user name: use 1 to 64 letters, digits and . _ @ + - "
            "(starting with a letter or digit).")
    return name


def check_team_user_name(name: str) -> str:
    """A name a team member (a login or a proxy's header) may have: never the single-user
    owner, whose library holds everything opened without team mode and from the plain CLI."""
    check_user_name(name)
    if name.casefold() == LOCAL_USER.casefold():
        raise TeamError(f"{name!r} is reserved for the single-user library; choose another name.")
    return name


class Users:
    """The users of password mode, kept in the store with salted slow hashes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, name: str, password: str) -> None:
        check_team_user_name(name)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise TeamError(f"The password for {name!r} is too short: use at least "
                            f"{MIN_PASSWORD_LENGTH} characters.")
        if not self.store.add_user(name, hash_password(password)):
            raise TeamError(f"The user {name!r} already exists; remove it first "
                            f"(`sparkdocs user remove {name}`) to set a new password.")
        log.info("added user %s", name)

    def remove(self, name: str) -> None:
        """The user goes; their documents and sessions stay in the store, unseen, until a user
        of that name is added again."""
        if not self.store.remove_user(name):
            raise TeamError(f"No user {name!r}; see `sparkdocs user list`.")
        log.info("removed user %s", name)

    def names(self) -> list[str]:
        return self.store.user_names()

    def end_logins(self, name: str) -> None:
        """Log `name` out everywhere: every login cookie issued so far stops working (a copy
        of one, kept elsewhere, is a bearer token until it expires otherwise)."""
        self.store.end_logins(name)
        log.info("user %s logged out; earlier login cookies end", name)

    def authenticate(self, name: str, password: str) -> str | None:
        """The user's name when the password is theirs, else None — the same for an unknown
        name, in about the same time, so a login form does not reveal which names exist."""
        hashed = self.store.user_hash(name) if _USER_NAME.fullmatch(name) else None
        if hashed is None:
            spend_a_verify()
            return None
        if verify_password(hashed, password):
            return name
        log.info("failed login for %s", name)
        return None


@dataclass
class _Failures:
    count: int
    until: float  # refused before this (the clock's seconds)
    seen: float  # the last failure


class _FailureTable:
    """Failed logins per key, least recently failed first, at most `size` keys: a key is
    forgotten `forget_s` after its last failure (once its pause is over), and the least
    recently failed go first when the table is full, so no flood of names or addresses can
    grow it without bound."""

    def __init__(self, *, size: int, forget_s: float) -> None:
        self._rows: OrderedDict[tuple[str, ...], _Failures] = OrderedDict()
        self._size, self._forget_s = size, forget_s

    def __len__(self) -> int:
        return len(self._rows)

    def until(self, key: tuple[str, ...], now: float) -> float:
        row = self._rows.get(key)
        if row is not None and self._stale(row, now):
            del self._rows[key]
            return 0.0
        return row.until if row is not None else 0.0

    def fail(self, key: tuple[str, ...], now: float, *, free: int, lock_s: float) -> _Failures:
        """Count a failure; every `free`-th in a row pauses the key, twice as long each time."""
        row = self._rows.pop(key, None)
        if row is None or self._stale(row, now):
            row = _Failures(0, 0.0, now)
        row.count, row.seen = row.count + 1, now
        if row.count % free == 0:
            row.until = now + lock_s * 2 ** min(row.count // free - 1, 20)
        self._rows[key] = row
        while self._rows:  # the oldest first: stale ones, then any beyond the size
            oldest = next(iter(self._rows.values()))
            if len(self._rows) <= self._size and not self._stale(oldest, now):
                break
            self._rows.popitem(last=False)
        return row

    def forget(self, key: tuple[str, ...]) -> None:
        self._rows.pop(key, None)

    def _stale(self, row: _Failures, now: float) -> bool:
        return now >= row.until and now - row.seen > self._forget_s


class LoginThrottle:
    """Slows password guessing without handing anyone a way to lock a user out. Failures are
    counted per (client, name) and per client, never per name alone: after `free` failures in
    a row for one name from one client, that client is refused that name for `lock_s`
    seconds (right password or not), and after `client_free` failures from one client across
    any names, that client is refused everything; each pause doubles with each further run.
    Another client's failures never pause the real user's own browser. Both tables are bounded
    (`size` keys each, forgotten `forget_s` after their last failure). Per process, in memory:
    enough for one Spark's app."""

    def __init__(self, *, free: int = 5, client_free: int = 20, lock_s: float = 30.0,
                 size: int = 10_000, forget_s: float = 24 * 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._free, self._client_free, self._lock_s, self._clock = free, client_free, lock_s, clock
        self._by_name = _FailureTable(size=size, forget_s=forget_s)
        self._by_client = _FailureTable(size=size, forget_s=forget_s)
        self._guard = threading.Lock()

    @property
    def entries(self) -> int:
        """Keys held in both tables (each at most `size`)."""
        with self._guard:
            return len(self._by_name) + len(self._by_client)

    def wait_s(self, client: str, name: str) -> float:
        """Seconds before `client` may try `name` again (0 when it may now)."""
        with self._guard:
            now = self._clock()
            until = max(self._by_name.until(_pair(client, name), now),
                        self._by_client.until((client,), now))
            return max(0.0, until - now)

    def failed(self, client: str, name: str) -> None:
        with self._guard:
            now = self._clock()
            pair = self._by_name.fail(_pair(client, name), now, free=self._free,
                                      lock_s=self._lock_s)
            alone = self._by_client.fail((client,), now, free=self._client_free,
                                         lock_s=self._lock_s)
        if pair.until > now or alone.until > now:
            log.warning("logins from %s paused after %d failed tries (%d for %s)", client,
                        alone.count, pair.count, name)

    def succeeded(self, client: str, name: str) -> None:
        """The right password: this client's run of failures for this name ends (its failures
        across names stay counted, or one real account would reset a guesser's count)."""
        with self._guard:
            self._by_name.forget(_pair(client, name))


def _pair(client: str, name: str) -> tuple[str, str]:
    return (client, name.casefold())


def log_in(users: Users, throttle: LoginThrottle, name: str, password: str, *,
           client: str) -> str:
    """The user's name, or LoginError saying why not (one message for a wrong name or
    password; another while this client is paused after too many failures). `client` is
    where the attempt comes from (`login_client`)."""
    wait = throttle.wait_s(client, name)
    if wait > 0:
        raise LoginError(f"Too many failed logins from this address; try again in {wait:.0f} s.")
    user = users.authenticate(name, password)
    if user is None:
        throttle.failed(client, name)
        raise LoginError("Wrong username or password.")
    throttle.succeeded(client, name)
    return user


def login_client(headers: Mapping[str, str], *, peer: str | None, settings: Settings) -> str:
    """Where a login attempt comes from, for the throttle: the TCP peer, or, when the peer is
    a trusted proxy, the address that proxy put last in X-Forwarded-For (the one it saw; the
    ones before it are the client's own claims). Streamlit reports a loopback peer as None."""
    address = peer or "127.0.0.1"
    if _trusted(address, settings):
        forwarded = next((v for k, v in headers.items() if k.lower() == "x-forwarded-for"), "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1][:64]
    return address


@dataclass(frozen=True)
class Login:
    """A successful login, valid until `expires_at` (seconds since the epoch)."""

    user: str
    expires_at: float

    def valid(self, *, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at


def start_login(user: str, *, ttl_min: float, now: float | None = None) -> Login:
    return Login(user, (time.time() if now is None else now) + ttl_min * 60.0)


LOGIN_COOKIE = "sparkdocs_login"


def login_token(login: Login, *, secret: bytes, users: Users) -> str:
    """What the browser keeps so a reload stays logged in: the user, the expiry, and an HMAC
    over both, the user's current password hash and their login generation — so the token
    cannot be forged or extended, and removing the user, changing the password or logging out
    (`Users.end_logins`) ends every login at once.

    Signed with the standard library's `hmac`, not `itsdangerous`: the key must include the
    user's password hash and login generation, which are known only once the token's user is
    read, and itsdangerous verifies with a key fixed before it parses the token; this is the
    same HMAC-SHA256 over the same fields, checked with `hmac.compare_digest`."""
    payload = f"{login.user}:{int(login.expires_at)}"
    mac = _login_mac(payload, secret=secret, hashed=users.store.user_hash(login.user),
                     generation=users.store.login_generation(login.user))
    return f"{payload}:{mac}"


def login_from_token(token: str, *, secret: bytes, users: Users,
                     now: float | None = None) -> Login | None:
    """The login a browser's token proves, or None (forged, expired, or its user is gone or
    has a new password). Never raises: a cookie is whatever the browser sends."""
    if not isinstance(token, str) or not token.isascii():
        return None  # hmac.compare_digest raises on non-ASCII text; isdigit() takes any script
    user, _, rest = token.partition(":")
    expires, _, mac = rest.partition(":")
    if not (_USER_NAME.fullmatch(user) and expires.isdigit() and len(expires) < 16 and mac):
        return None
    hashed = users.store.user_hash(user)
    if hashed is None:
        return None
    expected = _login_mac(f"{user}:{expires}", secret=secret, hashed=hashed,
                          generation=users.store.login_generation(user))
    login = Login(user, float(expires))
    if not hmac.compare_digest(mac, expected) or not login.valid(now=now):
        return None
    return login


def _login_mac(payload: str, *, secret: bytes, hashed: str | None, generation: str) -> str:
    message = (b"sparkdocs login\0" + payload.encode() + b"\0" + (hashed or "").encode()
               + b"\0" + generation.encode())
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _loopback(address: str) -> bool:
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # "" and host names mean every interface or an unknown one: not loopback


def check_bind(address: str, settings: Settings) -> None:
    """Refuse an app without logins on an address others can reach, unless asked for: with
    `none`, whoever reaches the port reads every document in the store."""
    if settings.auth is not AuthMode.NONE or settings.open_app or _loopback(address):
        return
    shown = address or "every interface"
    raise OpenAppError(
        f"The app would listen on {shown} with no logins (SPARKDOCS_AUTH=none), so anyone who "
        "can reach it would read every stored document. Bind it to 127.0.0.1 (the default), "
        "turn on logins (SPARKDOCS_AUTH=password or proxy), or set SPARKDOCS_OPEN_APP=true if "
        "an open app is really wanted.")


def _trusted(peer: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for entry in settings.trusted_proxies.split(","):
        if entry.strip():
            try:
                if ip in ipaddress.ip_network(entry.strip(), strict=False):
                    return True
            except ValueError:
                log.warning("ignoring %r in SPARKDOCS_TRUSTED_PROXIES: not an IP or CIDR", entry)
    return False


def proxy_user(headers: Mapping[str, str], *, peer: str | None, settings: Settings) -> str:
    """The user named by the trusted proxy's header. Only the proxy may name users: a header
    from any other address is refused, or anyone could claim to be anyone. `peer` is the TCP
    peer of the connection (Streamlit reports a loopback peer as None)."""
    address = peer or "127.0.0.1"
    if not _trusted(address, settings):
        raise LoginError(
            f"This request comes from {address}, not the trusted proxy "
            f"(SPARKDOCS_TRUSTED_PROXIES={settings.trusted_proxies}); open the app through the "
            "proxy, or add the proxy's address to SPARKDOCS_TRUSTED_PROXIES.")
    wanted = settings.proxy_user_header.lower()
    value = next((v for k, v in headers.items() if k.lower() == wanted), "").strip()
    if not value:
        raise LoginError(
            f"The proxy sent no {settings.proxy_user_header} header; configure it to pass the "
            "logged-in user (oauth2-proxy: --set-xauthrequest / --pass-user-headers; Caddy: "
            "header_up), or set SPARKDOCS_PROXY_USER_HEADER to the header it sends.")
    try:
        return check_team_user_name(value)
    except TeamError as exc:
        raise LoginError(f"The proxy's {settings.proxy_user_header} header is not usable: "
                         f"{exc}") from exc


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def install_secret(directory: Path) -> bytes:
    """This installation's secret (32 random bytes in `directory/secret`, readable by its owner
    only), created on first use. It keys the cache salts, so they reveal no user name."""
    path = directory / SECRET_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # written whole to a temporary file, then linked into place: another process
            # never reads a half-written secret, and of two racing, the first link wins
            tmp = directory / f".{SECRET_FILE}.{secrets.token_hex(6)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(32))
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS:
                        raise
                    # a mount without hard links (SMB, vfat, some FUSE): renamed into place,
                    # still whole; two first starts racing here may each keep their own once
                    if not path.exists():
                        os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        secret = path.read_bytes()
    except OSError as exc:
        raise TeamError(f"Cannot read or create the install secret {path} ({exc}); check that "
                        "SPARKDOCS_CACHE_DIR is writable.") from exc
    if len(secret) < 32:
        raise TeamError(f"The install secret {path} is damaged (too short); delete it and a new "
                        "one is made (cached prefixes are then simply computed again).")
    return secret


def isolation(settings: Settings) -> CacheIsolation:
    """The cache isolation in force: `auto` is per user in team mode, shared for one person."""
    if settings.cache_isolation is not CacheIsolation.AUTO:
        return settings.cache_isolation
    return CacheIsolation.SHARED if settings.auth is AuthMode.NONE else CacheIsolation.USER


def cache_salt_for(user: str, *, secret: bytes, settings: Settings) -> str | None:
    """vLLM's `cache_salt` for this user's requests, or None when the cache is shared. An HMAC
    of the name, so the salt (which the model server may log) does not reveal who asked."""
    if isolation(settings) is CacheIsolation.SHARED:
        return None
    return hmac.new(secret, b"sparkdocs cache salt\0" + user.encode(), hashlib.sha256).hexdigest()
