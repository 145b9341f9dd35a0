"""The one Settings object. Built once at the edge (CLI, app) and passed in; nothing below reads
the environment.

A frozen dataclass that parses its own SPARKDOCS_* variables: pydantic and pydantic-settings
cost every command ~0.1-0.2 s of imports for a dozen numbers, paths and switches."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from urllib.parse import urlsplit

from .errors import ConfigError
from .literal import redact_url

DEFAULT_MODEL = "nvidia/Llama-3.3-70B-Instruct-FP8"
LOCAL_USER = "local"  # the one user of single-user mode, and the CLI's default


class AuthMode(StrEnum):
    """Who may use the app: one person (`none`), named users with passwords, or the users a
    trusted reverse proxy names in a header."""

    NONE = "none"
    PASSWORD = "password"
    PROXY = "proxy"


class CacheIsolation(StrEnum):
    """Whether one user's cached prompt prefix may serve another's (and so be probed by timing):
    `auto` is per user in team mode and shared for one person."""

    AUTO = "auto"
    USER = "user"
    SHARED = "shared"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "sparkdocs"


ENV_PREFIX = "SPARKDOCS_"


def Field(default: Any = dataclasses.MISSING, *,  # noqa: N802  (reads like pydantic's)
          default_factory: Callable[[], Any] | None = None, ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None,
          description: str | None = None) -> Any:
    """A setting with limits and a description (the fix half of a ConfigError says both)."""
    limits = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {"limits": limits, "description": description}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class SettingsError(ValueError):
    """Values that are not settings: one {"loc", "msg", "input"} per problem, like pydantic."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{p['loc'][0]}: {p['msg']}" for p in problems))
        self.problems = problems

    def errors(self) -> list[dict[str, Any]]:
        return self.problems


_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("Input should be a valid integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("Input should be a valid integer, unable to parse string as an integer")


def _to_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError("Input should be a valid number, unable to parse string as a number")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("Input should be a valid boolean, unable to interpret input")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("Input should be a valid string")


def _to_path(value: Any) -> Path:
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise ValueError("Input should be a valid path")


def _to_enum(kind: type[StrEnum]) -> Callable[[Any], StrEnum]:
    def parse(value: Any) -> StrEnum:
        try:
            return kind(value)
        except ValueError:
            names = " or ".join(f"'{member.value}'" for member in kind)
            raise ValueError(f"Input should be {names}") from None
    return parse


def _limit_problem(value: Any, limits: Mapping[str, float]) -> str | None:
    checks = {"ge": (lambda v, x: v >= x, "greater than or equal to"),
              "gt": (lambda v, x: v > x, "greater than"),
              "le": (lambda v, x: v <= x, "less than or equal to"),
              "lt": (lambda v, x: v < x, "less than")}
    for name, bound in limits.items():
        holds, words = checks[name]
        if not holds(value, bound):
            return f"Input should be {words} {bound}"
    return None


@dataclasses.dataclass(frozen=True, init=False)
class Settings:
    """Every knob, from `SPARKDOCS_*` variables (any case) or keyword arguments, which win;
    unknown names are ignored."""

    base_url: str = "http://localhost:8000/v1"
    model: str = DEFAULT_MODEL
    api_key: str = "EMPTY"
    context_length: int = Field(65_536, ge=512, description="Used when the server does not say.")
    answer_tokens: int = Field(1024, ge=1, description="Answer reserve: max_tokens per answer.")
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    request_timeout_s: float = Field(600.0, gt=0, description="Longest wait for any byte of an answer.")
    answer_deadline_s: float = Field(
        1800.0, gt=0, description="Longest a whole answer may take, prefill included (a server "
        "that streams forever is stopped here).")
    connect_timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(3, ge=0)
    capability_ttl_s: float = Field(30.0, ge=0)
    warm_up: bool = Field(True, description="Prefill the document into the prefix cache on open.")

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    cache_size_limit_mb: int = Field(2048, ge=16)

    max_upload_mb: int = Field(200, ge=1, description="Largest single file or archive accepted.")
    max_source_file_kb: int = Field(1024, ge=1, description="Larger files in a codebase are skipped.")
    max_unpacked_mb: int = Field(512, ge=1, description="Archive expansion limit (zip bombs).")
    max_compression_ratio: float = Field(200.0, ge=1.0)
    include_lock_files: bool = False
    max_match_seconds: float = Field(30.0, gt=0, description="Time for all ignore-rule matching of one codebase.")
    max_pdf_memory_mb: int = Field(1024, ge=128, description="Address space of the PDF-reading child.")
    max_pdf_cpu_seconds: float = Field(300.0, gt=0, description="CPU time of the PDF-reading child.")
    local_model_log: Path | None = Field(None, description="Log of the demo model that "
                                         "`sparkdocs app --local-model` started (Server page).")

    # team mode (issue #12); the logic is in auth.py
    auth: AuthMode = AuthMode.NONE
    open_app: bool = Field(False, description="Serve an app without logins beyond loopback.")
    user: str = Field(LOCAL_USER, description="The user the CLI acts as (`--user`).")
    login_ttl_min: float = Field(480.0, gt=0, description="A login expires after this long.")
    proxy_user_header: str = "X-Forwarded-User"
    trusted_proxies: str = Field("127.0.0.1,::1", description="Comma-separated IPs or CIDRs.")
    cache_isolation: CacheIsolation = CacheIsolation.AUTO

    def __init__(self, **values: Any) -> None:
        given = {**_environment(), **{k: v for k, v in values.items() if k in _PARSERS}}
        problems: list[dict[str, Any]] = []
        for field in dataclasses.fields(self):
            if field.name not in given:
                value = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                         else field.default)
            else:
                raw = given[field.name]
                try:
                    value = _PARSERS[field.name](raw)
                    problem = _limit_problem(value, field.metadata.get("limits", {}))
                except ValueError as exc:
                    problem = str(exc)
                if problem:
                    problems.append({"loc": (field.name,), "msg": problem, "input": raw})
                    continue
            object.__setattr__(self, field.name, value)
        if problems:
            raise SettingsError(problems)

    def model_dump(self) -> dict[str, Any]:
        """Every setting by name (the values themselves)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Settings:
        """These settings with `update` applied (checked like any others)."""
        return Settings(**{**self.model_dump(), **(update or {})})

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_source_file_bytes(self) -> int:
        return self.max_source_file_kb * 1024

    @property
    def max_unpacked_bytes(self) -> int:
        return self.max_unpacked_mb * 1024 * 1024


_TYPES: dict[str, Callable[[Any], Any]] = {
    "str": _to_str, "int": _to_int, "float": _to_float, "bool": _to_bool, "Path": _to_path,
    "Path | None": lambda v: None if v is None else _to_path(v),
    "AuthMode": _to_enum(AuthMode), "CacheIsolation": _to_enum(CacheIsolation),
}
# One parser per field, chosen by its annotation: a field of a new type fails here, at import.
_PARSERS: dict[str, Callable[[Any], Any]] = {
    field.name: _TYPES[str(field.type)] for field in dataclasses.fields(Settings)}
_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "Path": "a path",
          "Path | None": "a path", "str": "text"}


def _environment() -> dict[str, str]:
    """The SPARKDOCS_* variables by setting name (the variable's name in any case)."""
    cut = len(ENV_PREFIX)
    return {name[cut:].lower(): value for name, value in os.environ.items()
            if name[:cut].upper() == ENV_PREFIX and name[cut:].lower() in _PARSERS}


def build_settings(*, overrides: Mapping[str, Any] | None = None,
                   option_names: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment plus explicit values (None: not given). A value sparkdocs
    cannot use is one ConfigError line that names where it came from — the command-line option
    in `option_names` or the SPARKDOCS_* variable — and what to set instead, never a pydantic
    traceback."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    names = option_names or {}
    try:
        settings = Settings(**given)
    except SettingsError as exc:
        problems = [_explain(error, given, names) for error in exc.errors()]
        raise ConfigError("; ".join(problems) + ".") from None
    check_base_url(settings.base_url, source=names.get("base_url") if "base_url" in given else None)
    return settings


def check_base_url(url: str, *, source: str | None = None) -> None:
    """The base URL must be an http(s) address with a host (and a numeric port, if any):
    anything else is a ConfigError now, not an httpx error at the first request."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsing the port is the check: 'abc' raises ValueError)
        problem = ("it does not start with http:// or https://" if parts.scheme not in ("http", "https")
                   else "it has no host" if not parts.hostname else None)
    except ValueError as exc:
        # not the exception's text: it quotes the "port", which may be part of a password
        problem = ("its port is not a number" if "port" in str(exc).lower()
                   else "urllib cannot read it")
    if problem:
        named = f"{source} {redact_url(url)!r}" if source else f"SPARKDOCS_BASE_URL={redact_url(url)!r}"
        raise ConfigError(f"{named} is not an address sparkdocs can use: {problem}; set "
                          "SPARKDOCS_BASE_URL (or --base-url) to the model service's OpenAI "
                          "endpoint, like http://localhost:8000/v1.")


def _explain(error: Any, given: Mapping[str, Any], option_names: Mapping[str, str]) -> str:
    field_name = str(error["loc"][0]) if error.get("loc") else ""
    env_name = f"SPARKDOCS_{field_name.upper()}"
    if field_name in given:
        source = option_names.get(field_name, f"--{field_name.replace('_', '-')}")
        shown = f"{source} {given[field_name]}"
    else:
        source, shown = env_name, f"{env_name}={error.get('input')!r}"
    if field_name in ("api_key", "base_url"):  # never echo a secret
        shown = source
    reason = str(error.get("msg", "invalid")).replace("\n", " ")
    reason = reason[:1].lower() + reason[1:]
    return f"{shown} is not valid ({reason}); {field_fix(field_name, source)}"


def field_fix(field_name: str, source: str) -> str:
    """What a setting must be, from its type and limits: the fix half of a ConfigError."""
    info = {field.name: field for field in dataclasses.fields(Settings)}.get(field_name)
    if info is None:
        return f"remove {source}"
    kind = _KINDS.get(str(info.type), "a valid value")
    words = {"ge": "at least", "gt": "above", "le": "at most", "lt": "below"}
    limits = [f"{words[name]} {bound}" for name, bound in info.metadata.get("limits", {}).items()]
    text = (info.metadata.get("description") or "").rstrip(".")
    about = f" ({text[:1].lower()}{text[1:]})" if text else ""
    return f"set {source} to {kind}" + (f" of {' and '.join(limits)}" if limits else "") + about


NO_FORWARDED_PEERS = ""  # uvicorn's FORWARDED_ALLOW_IPS that matches no peer


def child_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment for a child process (the Streamlit server) that rebuilds these same
    settings: the current environment plus every setting as a SPARKDOCS_* variable."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"SPARKDOCS_{name.upper()}"] = str(value)
    # Streamlit's server (uvicorn) would otherwise take X-Forwarded-For from any loopback peer
    # as the client's address: behind a proxy on 127.0.0.1 (Caddy adds the header) the app would
    # see the browser's address, not the proxy's, and proxy mode would refuse every request.
    # sparkdocs judges the TCP peer itself (SPARKDOCS_TRUSTED_PROXIES), so uvicorn trusts none.
    env["FORWARDED_ALLOW_IPS"] = NO_FORWARDED_PEERS
    env.update(overrides)
    return env
