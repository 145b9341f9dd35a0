"""Options that change what ingestion produces (and so are part of a document's cache key)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# (done, total, what): called while a long file is read, so a page can show progress.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class IngestOptions:
    password: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_lock_files: bool = False
    max_file_bytes: int = 200 * 1024 * 1024
    max_source_file_bytes: int = 1024 * 1024
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: float = 200.0

    def cache_salt(self) -> str:
        """The options that change the resulting Document (limits do not, passwords never go in)."""
        return repr(("v1", self.include, self.exclude, self.include_lock_files,
                     self.max_source_file_bytes))

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> "IngestOptions":
        values = dict(
            include_lock_files=getattr(settings, "include_lock_files"),
            max_file_bytes=getattr(settings, "max_upload_bytes"),
            max_source_file_bytes=getattr(settings, "max_source_file_bytes"),
            max_unpacked_bytes=getattr(settings, "max_unpacked_bytes"),
            max_compression_ratio=getattr(settings, "max_compression_ratio"),
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
