"""The disk edge of ingestion: turns command-line paths into uploads or a codebase, refusing
oversized files from their size before reading them and never following links out of a root."""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .errors import IngestError, UnsafeArchiveError
from .ingest import IngestOptions, SourceFile, Upload
from .ingest.code import PathFilter, check_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodebaseSource:
    root: Path
    files: tuple[SourceFile, ...]
    notes: tuple[str, ...]


def expand_paths(patterns: Sequence[str]) -> list[Path]:
    """Globs expanded (sorted), plain paths kept; a missing path is an error that names it.
    A path that exists is itself, even when its name has glob characters (`notes [draft].md`)."""
    paths: list[Path] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?[") and not Path(pattern).exists():
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise IngestError(f"{pattern}: no file matches this pattern.")
            paths += [Path(m) for m in matches]
        else:
            path = Path(pattern)
            if not path.exists():
                raise IngestError(f"{pattern}: no such file or folder; check the path.")
            paths.append(path)
    return paths


def read_file(path: Path, options: IngestOptions) -> Upload:
    size = path.stat().st_size
    check_size(str(path), size, options.max_file_bytes)
    try:
        return Upload(path.name, path.read_bytes())
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror}); check its permissions.") from exc


@dataclass(frozen=True)
class TreeEntry:
    relative: str
    path: Path
    size: int


def iter_tree(root: Path, options: IngestOptions, notes: list[str]) -> Iterator[TreeEntry]:
    """Files git would track under `root`, in path order, without reading them; what is
    skipped (links out of the root, secrets, oversized files) is added to `notes`."""
    root = root.resolve()
    path_filter = PathFilter(options)
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(directory).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if ".gitignore" in filenames:
            try:
                path_filter.add_gitignore(rel_dir, (Path(directory) / ".gitignore").read_text(
                    encoding="utf-8", errors="replace"))
            except OSError:
                notes.append(f"{rel_dir}/.gitignore: unreadable, ignored")
        kept_dirs = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if (Path(directory) / d).is_symlink():
                notes.append(f"{rel}: symbolic link, not followed")
            elif not path_filter.skips_dir(rel):
                kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for filename in sorted(filenames):
            rel = f"{rel_dir}/{filename}" if rel_dir else filename
            full = Path(directory) / filename
            if not path_filter.keeps_file(rel):
                if path_filter.is_secret(rel):
                    notes.append(f"{rel}: looks like a secret, skipped")
                continue
            if full.is_symlink() and not full.resolve().is_relative_to(root):
                notes.append(f"{rel}: symbolic link pointing outside the folder, not followed")
                continue
            try:
                size = full.stat().st_size
            except OSError:
                notes.append(f"{rel}: unreadable, skipped")
                continue
            yield TreeEntry(rel, full, size)


def walk_codebase(root: Path, options: IngestOptions) -> CodebaseSource:
    """Every file git would track under `root`, read with per-file and total limits."""
    notes: list[str] = []
    files: list[SourceFile] = []
    total = 0
    for entry in iter_tree(root, options, notes):
        if entry.size > options.max_source_file_bytes:
            notes.append(f"{entry.relative}: {entry.size / 1024:,.0f} KiB is over the "
                         f"{options.max_source_file_bytes / 1024:,.0f} KiB per-file limit, skipped")
            continue
        total += entry.size
        if total > options.max_unpacked_bytes:
            raise UnsafeArchiveError(
                f"{root}: more than {options.max_unpacked_bytes / 2**20:,.0f} MiB of source "
                "files; narrow it with --include/--exclude.")
        try:
            files.append(SourceFile(entry.relative, entry.path.read_bytes()))
        except OSError:
            notes.append(f"{entry.relative}: unreadable, skipped")
    return CodebaseSource(root.resolve(), tuple(files), tuple(notes))

__all__ = ["CodebaseSource", "TreeEntry", "expand_paths", "iter_tree", "read_file", "walk_codebase"]
