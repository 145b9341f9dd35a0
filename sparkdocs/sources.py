"""The disk edge of ingestion: turns command-line paths into uploads or a codebase, refusing
oversized files from their size before reading them and never following links out of a root.
Only regular files are ever opened (after links are resolved): a FIFO would block forever and
/dev/zero never ends, so special files, link loops and unreadable folders are skipped with a
note in the document's warnings (or refused with a clear error when named directly)."""

from __future__ import annotations

import errno
import glob
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import FileTooLargeError, IngestError, UnsafeArchiveError
from .ingest import IngestOptions, SourceFile, Upload
from .ingest.code import MAX_PATH_DEPTH, PathFilter, check_size, files_text, folder_note

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodebaseSource:
    root: Path
    files: tuple[SourceFile, ...]
    notes: tuple[str, ...]


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a folder"))
MAX_GITIGNORE_BYTES = 1_000_000


def _kind(mode: int) -> str:
    return next((label for test, label in _KINDS if test(mode)), "not a regular file")


def _stat(path: Path, shown: str) -> os.stat_result:
    """`os.stat` (links followed) with errors that say what is wrong with the path."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IngestError(f"{shown}: a symbolic link loop (it points back at itself); "
                              "point the link at a real file.") from exc
        if exc.errno == errno.ENOENT and os.path.lexists(path):
            raise IngestError(f"{shown}: a symbolic link to a missing file; fix or remove the "
                              "link.") from exc
        if exc.errno == errno.ENOENT:
            raise IngestError(f"{shown}: no such file or folder; check the path.") from exc
        raise IngestError(f"{shown}: cannot be read ({exc.strerror}); check its "
                          "permissions.") from exc


def expand_paths(patterns: Sequence[str]) -> list[Path]:
    """Globs expanded (sorted), plain paths kept; a missing path is an error that names it.
    A path that exists is itself, even when its name has glob characters (`notes [draft].md`).
    A file named again (`intro.md '*.md'`: first, then in the glob) is kept once, in its first
    place: the order given says what comes first, and a document must not hold a file twice."""
    paths: list[Path] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?[") and not Path(pattern).exists():
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise IngestError(f"{pattern}: no file matches this pattern.")
            paths += [Path(m) for m in matches]
        else:
            path = Path(pattern)
            _stat(path, pattern)
            paths.append(path)
    seen: set[Path] = set()
    once: list[Path] = []
    for path in paths:
        same = path.resolve()
        if same in seen:
            log.info("%s is named twice; it is read once, where it was first named", path)
            continue
        seen.add(same)
        once.append(path)
    return once


def read_regular(path: Path, *, limit: int, shown: str | None = None) -> bytes:
    """The bytes of a regular file, at most `limit` of them. Special files (a FIFO would block
    the open or the read forever, /dev/zero never ends) are refused before reading: the check
    is made again on the opened descriptor (opened non-blocking), so a file swapped for a pipe
    in between is refused too, and the read stops at `limit` whatever the size said."""
    shown = shown or str(path)
    mode = _stat(path, shown).st_mode
    if not stat.S_ISREG(mode):
        raise IngestError(f"{shown}: is {_kind(mode)}, not a regular file; sparkdocs reads only "
                          "regular files (save the content to a file first).")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise IngestError(f"{shown}: cannot be read ({exc.strerror}); check its "
                          "permissions.") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IngestError(f"{shown}: is {_kind(info.st_mode)}, not a regular file; sparkdocs "
                              "reads only regular files.")
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise IngestError(f"{shown}: cannot be read ({exc.strerror}); check its "
                              "permissions.") from exc
    if len(data) > limit:
        raise FileTooLargeError(f"{shown}: grew past the {limit / 2**20:,.1f} MiB limit while "
                                "being read; wait until it is complete, or raise the limit.")
    return data


def read_file(path: Path, options: IngestOptions) -> Upload:
    size = _stat(path, str(path)).st_size
    check_size(str(path), size, options.max_file_bytes)
    return Upload(path.name, read_regular(path, limit=options.max_file_bytes))


@dataclass(frozen=True)
class TreeEntry:
    relative: str
    path: Path
    size: int


def _file_entry(root: Path, rel: str, full: Path, notes: list[str]) -> TreeEntry | None:
    """A tree entry for a regular file (links resolved inside the root), or None and a note."""
    try:
        link = stat.S_ISLNK(os.lstat(full).st_mode)
        if link:
            try:
                target = full.resolve(strict=True)
            except RuntimeError:  # Python 3.11 reports a loop this way
                notes.append(f"{rel}: symbolic link loop, skipped")
                return None
            if not target.is_relative_to(root):
                notes.append(f"{rel}: symbolic link pointing outside the folder, not followed")
                return None
        info = os.stat(full)
    except OSError as exc:
        reason = {errno.ELOOP: "symbolic link loop", errno.ENOENT: "broken symbolic link"}.get(
            exc.errno or 0, f"unreadable ({exc.strerror})")
        notes.append(f"{rel}: {reason}, skipped")
        return None
    if not stat.S_ISREG(info.st_mode):
        notes.append(f"{rel}: {_kind(info.st_mode)}, not a regular file, skipped")
        return None
    return TreeEntry(rel, full, info.st_size)


MAX_FILES_COUNTED = 100_000  # in one folder left out whole: past it, "over 100,000 files"


def _count_files(folder: Path) -> str | None:
    """How many files a folder left out whole holds (its sub-folders' too, links not
    followed), as `skipped` says it, without reading any; None when it holds none. Counting
    stops at MAX_FILES_COUNTED: a huge node_modules costs a bounded walk, not a minute."""
    count = 0
    for _, _, filenames in os.walk(folder, followlinks=False, onerror=lambda exc: None):
        count += len(filenames)
        if count > MAX_FILES_COUNTED:
            return files_text(MAX_FILES_COUNTED, at_least=True)
    return files_text(count) if count else None


def iter_tree(root: Path, options: IngestOptions, notes: list[str]) -> Iterator[TreeEntry]:  # noqa: C901 (over the limit; split when next changed)
    """Files git would track under `root`, in path order, without reading them; what is
    skipped (links out of the root or in a loop, special files, unreadable folders, secrets,
    oversized files) is added to `notes`, and so is every file an ignore rule leaves out (the
    defaults, .gitignore, --include/--exclude) with the rule: a folder left out whole is one
    note with its number of files. Only regular files are yielded."""
    root = root.resolve()
    path_filter = PathFilter(options, source=str(root))

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename or root)
        if where == root:
            raise IngestError(f"{root}: the folder cannot be read ({exc.strerror}); check its "
                              "permissions.") from exc
        rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        notes.append(f"{rel}/: unreadable folder ({exc.strerror}), skipped")

    for directory, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        rel_dir = Path(directory).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if ".gitignore" in filenames:
            where = f"{rel_dir}/.gitignore" if rel_dir else ".gitignore"
            try:
                data = read_regular(Path(directory) / ".gitignore", limit=MAX_GITIGNORE_BYTES,
                                    shown=where)
            except IngestError as exc:
                notes.append(f"{where}: not used ({exc})")
            else:
                notes += path_filter.add_gitignore(rel_dir, data.decode("utf-8", errors="replace"))
        kept_dirs = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if (Path(directory) / d).is_symlink():
                notes.append(f"{rel}: symbolic link, not followed")
            elif rel.count("/") + 1 >= MAX_PATH_DEPTH:
                notes.append(f"{rel}/: nested over {MAX_PATH_DEPTH} folders deep "
                             f"({_count_files(Path(directory) / d)}), skipped")
            elif (why := path_filter.folder_left_out_because(rel)) is not None:
                files = _count_files(Path(directory) / d)
                if files is not None:  # an empty folder leaves nothing out
                    notes.append(folder_note(rel, files, why))
            else:
                kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for filename in sorted(filenames):
            rel = f"{rel_dir}/{filename}" if rel_dir else filename
            if (why := path_filter.left_out_because(rel)) is not None:
                notes.append(f"{rel}: {why}")
                continue
            entry = _file_entry(root, rel, Path(directory) / filename, notes)
            if entry is not None:
                yield entry


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
            data = read_regular(entry.path, limit=options.max_source_file_bytes,
                                shown=entry.relative)
        except IngestError as exc:
            notes.append(f"{entry.relative}: skipped ({exc})")
            continue
        files.append(SourceFile(entry.relative, data))
    return CodebaseSource(root.resolve(), tuple(files), tuple(notes))

__all__ = ["CodebaseSource", "TreeEntry", "expand_paths", "iter_tree", "read_file", "read_regular",
           "walk_codebase"]
