"""The one Settings object. Built once at the edge (CLI, app) and passed in; nothing below reads
the environment.

Settings is a frozen pydantic model that reads its `SPARKDOCS_*` variables the way
pydantic-settings' `BaseSettings` does for flat fields (prefix, names matched in any case, the
variable's text validated by pydantic, keyword arguments first, other variables ignored), without
pydantic-settings itself: importing it costs every command ~0.15 s (it imports asyncio, ssl and
its cloud secret providers), more than half of gitingest's whole `count`. `tests/test_config.py`
holds the two equal, with pydantic-settings as the judge over generated environments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class Settings(BaseModel):
    """Every knob, from keyword arguments or else `SPARKDOCS_*` variables."""

    # inf, nan and numbers past the upper bounds would pass and then overflow where they are
    # used (a timeout, a memory limit for the PDF child): one ConfigError names them instead
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**settings_environment(os.environ), **values})

    base_url: str = "http://localhost:8000/v1"
    model: str = DEFAULT_MODEL
    api_key: str = "EMPTY"
    context_length: int = Field(65_536, ge=512, le=MAX_TOKENS, description="Used when the server does not say.")
    answer_tokens: int = Field(1024, ge=1, le=MAX_TOKENS, description="Answer reserve: max_tokens per answer.")
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    request_timeout_s: float = Field(600.0, gt=0, le=A_WEEK_S, description="Longest wait for any byte of an answer.")
    answer_deadline_s: float = Field(
        1800.0, gt=0, le=A_WEEK_S, description="Longest a whole answer may take, prefill included (a server "
        "that streams forever is stopped here).")
    connect_timeout_s: float = Field(5.0, gt=0, le=A_WEEK_S)
    max_retries: int = Field(3, ge=0, le=100)
    capability_ttl_s: float = Field(30.0, ge=0, le=A_WEEK_S)
    warm_up: bool = Field(True, description="Prefill the document into the prefix cache on open.")

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    cache_size_limit_mb: int = Field(2048, ge=16, le=A_PETABYTE_MB)
    store_busy_timeout_s: float = Field(30.0, gt=0, le=A_WEEK_S, description="Longest wait for another "
                                        "process's write lock on the store, per attempt.")
    store_retry_s: float = Field(120.0, ge=0, le=A_WEEK_S, description="How long an answer is retried, with "
                                 "back-off, while the store stays locked; then it is kept in "
                                 "a recovery file (CLI) or the browser tab (app).")

    max_upload_mb: int = Field(200, ge=1, le=A_PETABYTE_MB, description="Largest single file or archive accepted.")
    max_source_file_kb: int = Field(1024, ge=1, le=A_PETABYTE_MB, description="Larger files in a codebase are skipped.")
    max_unpacked_mb: int = Field(512, ge=1, le=A_PETABYTE_MB, description="Archive expansion limit (zip bombs).")
    max_compression_ratio: float = Field(200.0, ge=1.0, le=1e9)
    include_lock_files: bool = False
    max_match_seconds: float = Field(30.0, gt=0, le=A_WEEK_S, description="Time for all ignore-rule matching of one codebase.")
    max_pdf_memory_mb: int = Field(1024, ge=128, le=A_PETABYTE_MB, description="Address space of the PDF-reading child.")
    max_concurrent_ingests: int = Field(2, ge=1, le=1024, description="Uploads read at once in one "
                                        "process (the app); the others wait their turn.")
    max_pdf_cpu_seconds: float = Field(300.0, gt=0, le=A_WEEK_S, description="CPU time of the PDF-reading child.")
    local_model_log: Path | None = Field(None, description="Log of the demo model that "
                                         "`sparkdocs app --local-model` started (Server page).")

    # team mode; the logic is in auth.py
    auth: AuthMode = AuthMode.NONE
    open_app: bool = Field(False, description="Serve an app without logins beyond loopback.")
    user: str = Field(LOCAL_USER, description="The user the CLI acts as (`--user`).")
    login_ttl_min: float = Field(480.0, gt=0, le=A_WEEK_S / 60, description="A login expires after this long.")
    proxy_user_header: str = "X-Forwarded-User"
    trusted_proxies: str = Field("127.0.0.1,::1", description="Comma-separated IPs or CIDRs.")
    cache_isolation: CacheIsolation = CacheIsolation.AUTO

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_source_file_bytes(self) -> int:
        return self.max_source_file_kb * 1024

    @property
    def max_unpacked_bytes(self) -> int:
        return self.max_unpacked_mb * 1024 * 1024


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
    if lowered.startswith(prefix) and lowered[len(prefix):] in Settings.model_fields:
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
    info = Settings.model_fields.get(field_name)
    if info is None:
        return f"remove {source}"
    kinds = {int: "a whole number", float: "a number", bool: "true or false", Path: "a path",
             str: "text"}
    kind = kinds.get(info.annotation, "a valid value")  # type: ignore[arg-type]
    limits = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            limits.append(f"at least {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            limits.append(f"above {item.gt}")
        elif isinstance(item, annotated_types.Le):
            limits.append(f"at most {item.le}")
        elif isinstance(item, annotated_types.Lt):
            limits.append(f"below {item.lt}")
    text = (info.description or "").rstrip(".")
    about = f" ({text[:1].lower()}{text[1:]})" if text else ""
    return f"set {source} to {kind}" + (f" of {' and '.join(limits)}" if limits else "") + about


NO_FORWARDED_PEERS = ""  # uvicorn's FORWARDED_ALLOW_IPS that matches no peer


def child_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment for a child process (the Streamlit server) that rebuilds these same
    settings: the current environment plus every setting as a SPARKDOCS_* variable."""
    env = {key: value for key, value in os.environ.items()
           if _setting_named(key) is None}  # the user's spelling of a setting would compete
    for name, value in settings.model_dump().items():
        if value is not None:  # unset stays unset: str(None) would be the path "None"
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    # Streamlit's server (uvicorn) would otherwise take X-Forwarded-For from any loopback peer
    # as the client's address: behind a proxy on 127.0.0.1 (Caddy adds the header) the app would
    # see the browser's address, not the proxy's, and proxy mode would refuse every request.
    # sparkdocs judges the TCP peer itself (SPARKDOCS_TRUSTED_PROXIES), so uvicorn trusts none.
    env["FORWARDED_ALLOW_IPS"] = NO_FORWARDED_PEERS
    env.update(overrides)
    return env
