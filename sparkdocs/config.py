"""The one Settings object. Built once at the edge (CLI, app) and passed in; nothing below reads
the environment.

Settings is a frozen dataclass whose values pydantic-core validates (the engine under pydantic,
so the same coercions, bounds and error records), read from `SPARKDOCS_*` variables the way
pydantic-settings' `BaseSettings` reads flat fields: the prefix and name matched in any case, an
empty variable unset, keyword arguments first, other variables ignored. Neither pydantic-settings
nor pydantic's model layer is imported: together they cost every command ~0.25 s (asyncio, ssl,
cloud secret providers, entry-point scans for plugins, the schema generator), more than
gitingest's whole `count` on a small tree. `tests/test_config.py` holds Settings equal to a
pydantic-settings model of the same fields, its judge, over generated environments."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic_core import PydanticCustomError, SchemaValidator, ValidationError

from .errors import ConfigError
from .literal import redact_url

DEFAULT_MODEL = "nvidia/Llama-3.3-70B-Instruct-FP8"
LOCAL_USER = "local"  # the one user of single-user mode, and the CLI's default
# Upper bounds: far past any real use, below what the code's integers and timers can take.
MAX_TOKENS = 100_000_000
A_WEEK_S = 7 * 24 * 3600.0
A_PETABYTE_MB = 2**30


class AuthMode(StrEnum):
    """Who may use the app: one person (`none`), named users with passwords, or the users a
    trusted reverse proxy names in a header."""

    NONE = "none"
    PASSWORD = "password"
    PROXY = "proxy"


class OutputFormat(StrEnum):
    """How `summarize` writes its summaries (BatchOptions.output_format, `--format`). Here, not
    in batch, so the CLI can name the choice without importing the model client at start-up."""

    MD = "md"  # one Markdown file per document
    JSONL = "jsonl"  # one JSON line per document in summaries.jsonl


class CacheIsolation(StrEnum):
    """Whether one user's cached prompt prefix may serve another's (and so be probed by timing):
    `auto` is per user in team mode and shared for one person."""

    AUTO = "auto"
    USER = "user"
    SHARED = "shared"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "sparkdocs"


ENV_PREFIX = "SPARKDOCS_"


def setting(default: Any = None, *, factory: Callable[[], Any] | None = None,
            ge: float | None = None, gt: float | None = None, le: float | None = None,
            about: str = "") -> Any:
    """A Settings field: its default, bounds and what it is for (shown in a ConfigError)."""
    limits = {"ge": ge, "gt": gt, "le": le, "about": about}
    if factory is not None:
        return field(default_factory=factory, metadata=limits)
    return field(default=default, metadata=limits)


@dataclass(frozen=True, init=False)
class Settings:
    """Every knob, from keyword arguments or else `SPARKDOCS_*` variables. Numbers have upper
    bounds and no inf or nan: past them they would pass and then overflow where they are used
    (a timeout, the PDF child's memory limit); one ConfigError names them instead."""

    base_url: str = setting("http://localhost:8000/v1")
    model: str = setting(DEFAULT_MODEL)
    api_key: str = setting("EMPTY")
    context_length: int = setting(65_536, ge=512, le=MAX_TOKENS, about="Used when the server does not say.")
    answer_tokens: int = setting(1024, ge=1, le=MAX_TOKENS, about="Answer reserve: max_tokens per answer.")
    temperature: float = setting(0.2, ge=0.0, le=2.0)
    request_timeout_s: float = setting(600.0, gt=0, le=A_WEEK_S, about="Longest wait for any byte of an answer.")
    answer_deadline_s: float = setting(
        1800.0, gt=0, le=A_WEEK_S, about="Longest a whole answer may take, prefill included (a server "
        "that streams forever is stopped here).")
    connect_timeout_s: float = setting(5.0, gt=0, le=A_WEEK_S)
    max_retries: int = setting(3, ge=0, le=100)
    capability_ttl_s: float = setting(30.0, ge=0, le=A_WEEK_S)
    warm_up: bool = setting(True, about="Prefill the document into the prefix cache on open.")

    cache_dir: Path = setting(factory=_default_cache_dir)
    cache_size_limit_mb: int = setting(2048, ge=16, le=A_PETABYTE_MB)
    store_busy_timeout_s: float = setting(30.0, gt=0, le=A_WEEK_S, about="Longest wait for another "
                                        "process's write lock on the store, per attempt.")
    store_retry_s: float = setting(120.0, ge=0, le=A_WEEK_S, about="How long an answer is retried, with "
                                 "back-off, while the store stays locked; then it is kept in "
                                 "a recovery file (CLI) or the browser tab (app).")

    max_upload_mb: int = setting(200, ge=1, le=A_PETABYTE_MB, about="Largest single file or archive accepted.")
    max_source_file_kb: int = setting(1024, ge=1, le=A_PETABYTE_MB, about="Larger files in a codebase are skipped.")
    max_unpacked_mb: int = setting(512, ge=1, le=A_PETABYTE_MB, about="Archive expansion limit (zip bombs).")
    max_compression_ratio: float = setting(200.0, ge=1.0, le=1e9)
    include_lock_files: bool = setting(False)
    max_match_seconds: float = setting(30.0, gt=0, le=A_WEEK_S, about="Time for all ignore-rule matching of one codebase.")
    max_pdf_memory_mb: int = setting(1024, ge=128, le=A_PETABYTE_MB, about="Address space of the PDF-reading child.")
    max_concurrent_ingests: int = setting(2, ge=1, le=1024, about="Uploads read at once in one "
                                        "process (the app); the others wait their turn.")
    max_pdf_cpu_seconds: float = setting(300.0, gt=0, le=A_WEEK_S, about="CPU time of the PDF-reading child.")
    local_model_log: Path | None = setting(None, about="Log of the demo model that "
                                         "`sparkdocs app --local-model` started (Server page).")

    # team mode; the logic is in auth.py
    auth: AuthMode = setting(AuthMode.NONE)
    open_app: bool = setting(False, about="Serve an app without logins beyond loopback.")
    user: str = setting(LOCAL_USER, about="The user the CLI acts as (`--user`).")
    login_ttl_min: float = setting(480.0, gt=0, le=A_WEEK_S / 60, about="A login expires after this long.")
    proxy_user_header: str = setting("X-Forwarded-User")
    trusted_proxies: str = setting("127.0.0.1,::1", about="Comma-separated IPs or CIDRs.")
    cache_isolation: CacheIsolation = setting(CacheIsolation.AUTO)
    # which fields were given (a keyword or a variable), not defaulted: e.g. a base URL
    fields_set: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __init__(self, **values: Any) -> None:
        given = {name: value for name, value in {**settings_environment(os.environ),
                                                 **values}.items() if name in _FIELDS}
        for name, value in _validator().validate_python(given).items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "fields_set", frozenset(given))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_source_file_bytes(self) -> int:
        return self.max_source_file_kb * 1024

    @property
    def max_unpacked_bytes(self) -> int:
        return self.max_unpacked_mb * 1024 * 1024


_FIELDS = {f.name: f for f in fields(Settings) if f.init}
_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "Path": "a path",
          "Path | None": "a path", "str": "text"}


def _path(value: Any) -> Path:
    """A path as a shell would give it: `~` is the home folder (an env file or compose file
    does not expand it, and the store and the caches must all land in one place)."""
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not str(path).startswith("~"):
            return path
        if str(path).split("/", 1)[0] == "~" and not os.environ.get("HOME", "x"):
            raise PydanticCustomError("path_home", "~ is no folder while HOME is empty")
        try:
            return path.expanduser()
        except RuntimeError:  # ~name of no user
            raise PydanticCustomError("path_home", "~ names no user's home folder") from None
    raise PydanticCustomError("path_type", "Input is not a valid path")


def _schema(kind: str, limits: Mapping[str, Any]) -> dict[str, Any]:
    """pydantic-core's schema of one field's value, as pydantic builds it for that type."""
    bounds = {k: limits[k] for k in ("ge", "gt", "le") if limits.get(k) is not None}
    enums = {"AuthMode": AuthMode, "CacheIsolation": CacheIsolation}
    if kind == "int":
        return {"type": "int", **bounds}
    if kind == "float":
        return {"type": "float", "allow_inf_nan": False, **bounds}
    if kind in ("bool", "str"):
        return {"type": kind}
    if kind == "Path":
        return {"type": "function-plain", "function": {"type": "no-info", "function": _path}}
    if kind == "Path | None":
        return {"type": "nullable", "schema": _schema("Path", limits)}
    if kind in enums:
        return {"type": "enum", "cls": enums[kind], "members": list(enums[kind]), "sub_type": "str"}
    raise TypeError(f"no schema for a setting of type {kind}")


_VALIDATOR: SchemaValidator | None = None


def _validator() -> SchemaValidator:
    """One validator of every field, with its default (built once, on first use)."""
    global _VALIDATOR
    if _VALIDATOR is None:
        def with_default(f: Any) -> dict[str, Any]:
            inner = _schema(str(f.type), f.metadata)
            default = ({"default_factory": f.default_factory}
                       if f.default_factory is not MISSING else {"default": f.default})
            return {"type": "typed-dict-field", "required": False,
                    "schema": {"type": "default", "schema": inner, **default}}

        _VALIDATOR = SchemaValidator({"type": "typed-dict", "extra_behavior": "ignore",
                                      "fields": {n: with_default(f) for n, f in _FIELDS.items()}})
    return _VALIDATOR


def settings_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The `SPARKDOCS_*` variables that name a setting, by field name (any case, as
    pydantic-settings matches them), their text left for pydantic to validate. An empty
    variable is not set (`SPARKDOCS_CACHE_DIR=` must not mean the current folder)."""
    return {field: value for field, (_, value) in settings_variables(environ).items()}


def settings_variables(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Field name -> (the variable's name as written, its text), for the variables that set one."""
    found: dict[str, tuple[str, str]] = {}
    for key, value in environ.items():
        name = _setting_named(key)
        if name is not None and value != "":
            found[name] = (key, value)
    return found


def _setting_named(key: str) -> str | None:
    """The field a variable sets, matched as pydantic-settings matches it: the whole name
    lower-cased, then the lower-cased prefix (so 'ſparkdocs_…' with a long s is no setting)."""
    lowered = key.lower()
    prefix = ENV_PREFIX.lower()
    if lowered.startswith(prefix) and lowered[len(prefix):] in _FIELDS:
        return lowered[len(prefix):]
    return None


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
    except ValidationError as exc:
        variables = {field: key for field, (key, _) in settings_variables(os.environ).items()}
        problems = [_explain(error, given, names, variables) for error in exc.errors()]
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


def _explain(error: Any, given: Mapping[str, Any], option_names: Mapping[str, str],
             variables: Mapping[str, str]) -> str:
    field_name = str(error["loc"][0]) if error.get("loc") else ""
    env_name = variables.get(field_name, f"{ENV_PREFIX}{field_name.upper()}")  # as written
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
    spec = _FIELDS.get(field_name)
    if spec is None:
        return f"remove {source}"
    kind = _KINDS.get(str(spec.type), "a valid value")
    words = {"ge": "at least", "gt": "above", "le": "at most"}
    limits = [f"{words[k]} {spec.metadata[k]}" for k in words if spec.metadata.get(k) is not None]
    text = str(spec.metadata.get("about") or "").rstrip(".")
    if not text[:2].isupper():  # "Answer reserve" reads on in lower case; "CPU time" does not
        text = text[:1].lower() + text[1:]
    about = f" ({text})" if text else ""
    return f"set {source} to {kind}" + (f" of {' and '.join(limits)}" if limits else "") + about


NO_FORWARDED_PEERS = ""  # uvicorn's FORWARDED_ALLOW_IPS that matches no peer


def child_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment for a child process (the Streamlit server) that rebuilds these same
    settings: the current environment plus every setting as a SPARKDOCS_* variable."""
    env = {key: value for key, value in os.environ.items()
           if _setting_named(key) is None}  # the user's spelling of a setting would compete
    for name, value in settings.as_dict().items():
        if value is not None:  # unset stays unset: str(None) would be the path "None"
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    # Streamlit's server (uvicorn) would otherwise take X-Forwarded-For from any loopback peer
    # as the client's address: behind a proxy on 127.0.0.1 (Caddy adds the header) the app would
    # see the browser's address, not the proxy's, and proxy mode would refuse every request.
    # sparkdocs judges the TCP peer itself (SPARKDOCS_TRUSTED_PROXIES), so uvicorn trusts none.
    env["FORWARDED_ALLOW_IPS"] = NO_FORWARDED_PEERS
    env.update(overrides)
    return env
