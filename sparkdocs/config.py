"""The one Settings object. Built once at the edge (CLI, app) and passed in; nothing below reads
the environment."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class Settings(BaseSettings):
    """Every knob, from `SPARKDOCS_*` variables or keyword arguments."""

    model_config = SettingsConfigDict(env_prefix="SPARKDOCS_", frozen=True, extra="ignore")

    base_url: str = "http://localhost:8000/v1"
    model: str = DEFAULT_MODEL
    api_key: str = "EMPTY"
    context_length: int = Field(65_536, ge=512, description="Used when the server does not say.")
    answer_tokens: int = Field(1024, ge=1, description="Answer reserve: max_tokens per answer.")
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    request_timeout_s: float = Field(600.0, gt=0)
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

    # team mode (issue #12); the logic is in auth.py
    auth: AuthMode = AuthMode.NONE
    open_app: bool = Field(False, description="Serve an app without logins beyond loopback.")
    user: str = Field(LOCAL_USER, description="The user the CLI acts as (`--user`).")
    login_ttl_min: float = Field(480.0, gt=0, description="A login expires after this long.")
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


def child_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment for a child process (the Streamlit server) that rebuilds these same
    settings: the current environment plus every setting as a SPARKDOCS_* variable."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"SPARKDOCS_{name.upper()}"] = str(value)
    env.update(overrides)
    return env
