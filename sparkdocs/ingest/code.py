"""Codebases: choose files the way git would (`.gitignore` at every level, plus defaults), keep
text files in path order under a file tree, and note everything skipped. Archives are read in
memory with zip-slip and zip-bomb limits; folders are walked by `sparkdocs.sources`."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import stat
import tarfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..documents import Section, SectionKind, clean_text, render_tree
from ..errors import FileTooLargeError, IngestError, UnsafeArchiveError, UnsupportedFormatError
from .options import IngestOptions
from .text import decode_text, looks_binary

if TYPE_CHECKING:  # imported where a codebase is filtered: a PDF or a note never needs it
    import pathspec

DEFAULT_IGNORES = (
    ".git/", ".hg/", ".svn/", "node_modules/", ".venv/", "venv/", "env/", "__pycache__/",
    ".tox/", ".nox/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", "build/", "dist/",
    "target/", ".next/", ".cache/", "*.egg-info/", ".idea/", ".DS_Store", "*.pyc", "*.pyo",
    "*.so", "*.dylib", "*.dll", "*.class", "*.o", "*.a", "*.min.js", "*.map",
)
LOCK_FILES = (
    "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "Cargo.lock", "uv.lock",
    "Gemfile.lock", "composer.lock", "go.sum", "Pipfile.lock",
)
SECRET_FILES = (".env", ".env.*", "*.pem", "*.key", "id_rsa", "id_ed25519", "*.p12", ".netrc")
BINARY_SUFFIXES = frozenset(
    [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".tar", ".jar", ".whl", ".exe", ".bin", ".dat", ".db", ".sqlite", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4", ".mov", ".avi", ".wav", ".ogg", ".pt", ".pth", ".onnx", ".safetensors", ".gguf", ".npy", ".npz", ".pkl", ".parquet", ".xlsx", ".docx", ".pptx"]
)


@dataclass(frozen=True)
class SourceFile:
    path: str  # posix, relative to the codebase root
    data: bytes


# Guards on what goes into pathspec. Its patterns become backtracking regexes: every `*` in a
# name and every `**` (including the one implied before a pattern without a slash) multiplies the
# worst-case matching time by the length of a name or path. Measured on pathspec 1.1: three
# wildcards (at most two `**`) stay under ~60 ms for the worst 4,096-character path, while four
# (`a*a*a*ab`) take 0.4 s and `a/**/a/**/a/**/b` 27 s for ONE path. So patterns with more are
# dropped (a .gitignore line, with a note) or refused (--include/--exclude), paths are capped at
# what file systems hold, and all matching shares a time budget as the last line of defence.
MAX_PATTERN_WILDCARDS = 3
MAX_PATTERN_DOUBLE_STARS = 2
MAX_PATTERN_CHARS = 1024
MAX_GITIGNORE_PATTERNS = 5_000  # per .gitignore file; lines past it are ignored with a note
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX on every common file system
MAX_PATH_DEPTH = 128  # folders; the file tree is rendered recursively (and no repo needs more)
MAX_ARCHIVE_MEMBERS = 200_000  # each costs a Python object; a real repository has far fewer


def _collapse_stars(segment: str) -> tuple[str, int]:
    """`a***b` → `a*b` (the same set of names, far less backtracking); returns the segment and
    its number of `*` runs. Escaped stars (`\\*`) are literals and do not count."""
    out: list[str] = []
    runs = 0
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "\\" and index + 1 < len(segment):
            out.append(segment[index:index + 2])
            index += 2
            continue
        if char == "*":
            runs += 1
            out.append("*")
            while index < len(segment) and segment[index] == "*":
                index += 1
            continue
        out.append(char)
        index += 1
    return "".join(out), runs


def git_line(line: str) -> str | None:
    """One .gitignore line as git reads it (dir.c): the CR of a CRLF line dropped, trailing
    spaces trimmed unless escaped (`name\\ ` keeps one), leading spaces kept; None for a blank
    line, a comment, or one ending in a lone backslash (git's wildmatch never matches it)."""
    text = line[:-1] if line.endswith("\r") else line
    if not text or text.startswith("#"):
        return None
    end = 0  # just past the last character that is not an unescaped space
    index = 0
    while index < len(text):
        if text[index] == "\\":
            if index + 1 == len(text):
                return None
            index += 2
            end = index
            continue
        index += 1
        if text[index - 1] != " ":
            end = index
    pattern = text[:end]
    if len(pattern) > 4 and pattern.endswith("/**/"):
        # git: only directories *inside* X (the trailing `**` needs one component); pathspec
        # lets `**/` match none and so takes X itself
        pattern = pattern[:-1] + "/*/"
    return pattern or None


def _keep_trailing_space(pattern: str) -> str:
    """pathspec strips trailing whitespace itself and fails on `name\\ ` once stripped; a last
    character in brackets (`name[ ]`) matches the same names and is left alone."""
    if not pattern or not pattern[-1].isspace():
        return pattern
    backslashes = len(pattern) - 1 - len(pattern[:-1].rstrip("\\"))
    escaped = backslashes % 2 == 1
    return pattern[:-2 if escaped else -1] + "[" + pattern[-1] + "]"


def guard_pattern(line: str) -> tuple[str, str | None]:
    """One gitignore-style line → (the line to give pathspec, a problem or None); a line that
    matches nothing becomes "" (a comment stays as it is). Runs of `*` are collapsed; a pattern that would still be slow
    to match is reported, not compiled."""
    text = line.rstrip("\r\n")
    stripped = git_line(text)
    if stripped is None:
        return (text if text.startswith("#") else ""), None
    if len(stripped) > MAX_PATTERN_CHARS:
        return "", (f"{len(stripped):,} characters is over the {MAX_PATTERN_CHARS:,}-character "
                    "pattern limit")
    negate = stripped.startswith("!")
    body = stripped[1:] if negate else stripped
    segments = body.split("/")
    double, single = 0, 0
    kept: list[str] = []
    for segment in segments:
        if segment and set(segment) == {"*"} and len(segment) >= 2:
            if not (kept and kept[-1] == "**"):  # `**/**` is one `**`
                double += 1
                kept.append("**")
            continue
        collapsed, runs = _collapse_stars(segment)
        single += runs
        kept.append(collapsed)
    inner = [s for s in body.strip("/").split("/") if s]
    if len(inner) <= 1 and not body.startswith("/") and kept[:1] != ["**"]:
        double += 1  # no slash: pathspec prepends `**/` to match at any depth
    wildcards = single + double
    if double > MAX_PATTERN_DOUBLE_STARS or wildcards > MAX_PATTERN_WILDCARDS:
        return "", (f"{wildcards} wildcards ({double} of them `**`, counting the one implied "
                    f"before a pattern without a slash) is over the limit of "
                    f"{MAX_PATTERN_WILDCARDS} (at most {MAX_PATTERN_DOUBLE_STARS} `**`), "
                    "because each one multiplies matching time")
    return _keep_trailing_space(("!" if negate else "") + "/".join(kept)), None


def path_problem(path: str) -> str | None:
    """Why an archive member's path is not one a file system could hold, or None."""
    if len(path) > MAX_PATH_CHARS:
        return f"path of {len(path):,} characters is over the {MAX_PATH_CHARS:,} limit"
    if path.count("/") >= MAX_PATH_DEPTH:
        return f"nested {path.count('/'):,} folders deep, over the {MAX_PATH_DEPTH} limit"
    for name in path.split("/"):
        if len(name.encode("utf-8", errors="replace")) > MAX_NAME_BYTES:
            return f"a name of over {MAX_NAME_BYTES} bytes"
    return None


def _user_spec(patterns: tuple[str, ...], flag: str) -> pathspec.GitIgnoreSpec | None:
    if not patterns:
        return None
    lines = []
    for pattern in patterns:
        line, problem = guard_pattern(pattern.lstrip())  # an escaped trailing space is kept, as in git
        if problem:
            raise IngestError(
                f"{flag} '{_shorten(pattern)}': {problem}; use a simpler pattern (split it into "
                "several, or name the folder or suffix you mean).")
        lines.append(line)
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


_T = TypeVar("_T")
IGNORED = "ignored"  # how every reason an ignore rule gives begins (see `PathFilter._why`)


def _pattern_text(spec: pathspec.GitIgnoreSpec, index: int | None) -> str:
    """The text of the pattern that decided a match (`CheckResult.index`), or "" if unknown."""
    if index is None:
        return ""
    try:
        return str(getattr(spec.patterns[index], "pattern", "") or "")
    except (IndexError, TypeError):
        return ""


def files_text(count: int, *, at_least: bool = False) -> str:
    """`1 file`, `1,234 files`, `over 100,000 files`: the size of a folder left out whole."""
    if at_least:
        return f"over {count:,} files"
    return f"{count:,} file" + ("" if count == 1 else "s")


def folder_note(folder: str, files: str, reason: str) -> str:
    """The one `skipped` entry of a folder left out whole: `node_modules/: 1,234 files,
    ignored by default ('node_modules/')` — the folder, how much is in it, and why."""
    return f"{folder.rstrip('/')}/: {files}, {reason}"


class PathFilter:
    """Decides, per relative path, whether a file goes in. `.gitignore` files apply to their
    own directory and below; deeper files win, as in git. Only the ancestors of a path are
    looked up (a dict per directory), so thousands of nested .gitignore files cost a few dict
    look-ups per path; all matching shares `options.max_match_seconds`."""

    def __init__(self, options: IngestOptions, *, source: str = "") -> None:
        import pathspec

        defaults = list(DEFAULT_IGNORES) + list(SECRET_FILES)
        if not options.include_lock_files:
            defaults += list(LOCK_FILES)
        self._defaults = pathspec.GitIgnoreSpec.from_lines(defaults)
        self._secrets = pathspec.GitIgnoreSpec.from_lines(SECRET_FILES)
        self._exclude = _user_spec(options.exclude, "--exclude")
        self._include = _user_spec(options.include, "--include")
        # a folder --exclude matches is left out whole (and listed once) unless a `!` pattern
        # could take a file inside it back: then each file is decided on its own
        self._exclude_folders = self._exclude is not None and not any(
            pattern.lstrip().startswith("!") for pattern in options.exclude)
        self._gitignores: dict[str, pathspec.GitIgnoreSpec] = {}
        self._gitignore_lines: dict[str, dict[str, int]] = {}  # pattern → its (last) line number
        self._source = source or "the codebase"
        self._budget = options.max_match_seconds
        self._spent = 0.0
        self._checked = 0

    def add_gitignore(self, directory: str, text: str) -> list[str]:
        """Adds one .gitignore; returns notes on the lines it dropped (too slow to match)."""
        directory = directory.strip("/")
        where = f"{directory}/.gitignore" if directory else ".gitignore"
        notes: list[str] = []
        lines: list[str] = []
        numbers: dict[str, int] = {}
        count = 0
        for number, line in enumerate(text.split("\n"), 1):  # git splits at \n only
            guarded, problem = guard_pattern(line)
            if problem:
                notes.append(f"{where} line {number}: {problem}; that line is ignored")
                continue
            if guarded:
                count += 1
                if count > MAX_GITIGNORE_PATTERNS:
                    notes.append(f"{where}: over {MAX_GITIGNORE_PATTERNS:,} patterns; lines from "
                                 f"{number} on are ignored")
                    break
                numbers[guarded] = number  # the same line twice: the last one decides
            lines.append(guarded)
        import pathspec

        self._gitignores[directory] = pathspec.GitIgnoreSpec.from_lines(lines)
        self._gitignore_lines[directory] = numbers
        return notes

    def is_secret(self, path: str) -> bool:
        return self._secrets.match_file(path)

    def skips_dir(self, path: str) -> bool:
        return self.folder_left_out_because(path) is not None

    def folder_left_out_because(self, path: str) -> str | None:
        """Why the folder `path` is left out whole (its files are never looked at, as git never
        looks into an ignored folder), or None when it is walked."""
        folder = path.rstrip("/") + "/"
        if self._timed(self._ignored, folder):
            return self._timed(self._why, folder)
        if self._exclude_folders and self._exclude is not None and self._timed(
                self._exclude.match_file, folder):
            return self._timed(self._why, folder)
        return None

    def left_out_because(self, path: str) -> str | None:
        """Why the file `path` is left out by a rule (defaults, a .gitignore line, --exclude,
        --include), in words for `skipped`, or None when it is kept. Every reason a rule gives
        starts with IGNORED, except a secret's ("looks like a secret"), which is a warning."""
        if self.keeps_file(path):
            return None
        return self._timed(self._why, path)

    def _why(self, path: str) -> str:
        hit = self._defaults.check_file(path)
        if hit.include:
            pattern = _pattern_text(self._defaults, hit.index)
            if pattern in SECRET_FILES:
                return f"looks like a secret ('{pattern}')"
            if pattern in LOCK_FILES:
                return (f"{IGNORED} by default: a lock file (SPARKDOCS_INCLUDE_LOCK_FILES=true "
                        "reads lock files)")
            return f"{IGNORED} by default ('{pattern}')" if pattern else f"{IGNORED} by default"
        if (gitignore := self._gitignore_rule(path)) is not None:
            return gitignore
        if self._exclude is not None:
            hit = self._exclude.check_file(path)
            if hit.include:
                pattern = _pattern_text(self._exclude, hit.index)
                return f"{IGNORED} by --exclude '{pattern}'" if pattern else f"{IGNORED} by --exclude"
        return f"{IGNORED}: not matched by any --include pattern"

    def _gitignore_rule(self, path: str) -> str | None:
        """`ignored by src/.gitignore line 3 ('*.log')` when a .gitignore leaves `path` out (the
        deepest one that decides, as in `_ignored`), else None."""
        verdict, decided = self._gitignore_verdict(path)
        if not verdict or decided is None:
            return None
        directory, pattern = decided
        where = f"{directory}/.gitignore" if directory else ".gitignore"
        number = self._gitignore_lines.get(directory, {}).get(pattern)
        return (f"{IGNORED} by {where}" + (f" line {number}" if number else "")
                + (f" ('{pattern}')" if pattern else ""))

    def _timed(self, check: Callable[[str], _T], path: str) -> _T:
        if self._spent > self._budget:
            raise UnsafeArchiveError(
                f"{self._source}: matching ignore rules took over {self._budget:,.0f} s "
                f"(SPARKDOCS_MAX_MATCH_SECONDS) after {self._checked:,} paths; the .gitignore "
                "files or --include/--exclude patterns are too complex for this many files. "
                "Simplify them or pick a smaller folder.")
        start = time.perf_counter()
        try:
            return check(path)
        finally:
            self._spent += time.perf_counter() - start
            self._checked += 1

    def _ignored(self, path: str) -> bool:
        if self._defaults.match_file(path):
            return True
        return bool(self._gitignore_verdict(path)[0])

    def _gitignore_verdict(self, path: str) -> tuple[bool | None, tuple[str, str] | None]:
        """What the .gitignore files say of `path` (None: nothing), and which folder's file
        and pattern decided it. Ancestors are read shallowest first: deeper files win."""
        decided: tuple[str, str] | None = None
        verdict: bool | None = None
        parts = path.rstrip("/").split("/")[:-1]
        directory = ""
        for depth in range(len(parts) + 1):
            if depth:
                directory = "/".join(parts[:depth])
            spec = self._gitignores.get(directory)
            if spec is None:
                continue
            relative = path[len(directory) + 1:] if directory else path
            result = spec.check_file(relative)
            if result.include is not None:
                verdict = result.include
                decided = (directory, _pattern_text(spec, result.index))
        return verdict, decided

    def keeps_file(self, path: str) -> bool:
        return self._timed(self._keeps, path)

    def _keeps(self, path: str) -> bool:
        if self._ignored(path):
            return False
        if self._exclude is not None and self._exclude.match_file(path):
            return False
        return self._include is None or bool(self._include.match_file(path))


def _safe_member_path(name: str, archive: str) -> str:
    path = posixpath.normpath(name.replace("\\", "/"))
    if path.startswith(("/", "../")) or path == ".." or (len(path) > 1 and path[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive}: member '{name}' points outside the archive's root (zip slip); refusing "
            "the archive. Re-create it with relative paths."
        )
    return path


def _check_bomb(archive: str, declared: int, compressed: int, options: IngestOptions) -> None:
    if declared > options.max_unpacked_bytes:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to {declared / 2**20:,.0f} MiB, over the "
            f"{options.max_unpacked_bytes / 2**20:,.0f} MiB limit (SPARKDOCS_MAX_UNPACKED_MB); "
            "pack only the source you want to ask about."
        )
    if compressed and declared > 1_000_000 and declared / compressed > options.max_compression_ratio:
        raise UnsafeArchiveError(
            f"{archive}: compression ratio {declared / compressed:,.0f}:1 is over "
            f"{options.max_compression_ratio:,.0f}:1, which is how zip bombs look; refusing it."
        )


def _strip_common_root(files: list[tuple[str, int, object]]) -> list[tuple[str, int, object]]:
    """`repo-main/src/x.py` → `src/x.py` when every member shares one top folder."""
    tops = {path.split("/", 1)[0] for path, _, _ in files}
    if len(tops) == 1 and all("/" in path for path, _, _ in files):
        return [(path.split("/", 1)[1], size, ref) for path, size, ref in files]
    return files


def check_zip_entries(data: bytes, *, name: str, limit: int = MAX_ARCHIVE_MEMBERS) -> None:
    """zipfile builds an object for every central-directory entry when it opens an archive
    (200 MB of entries is millions of them, gigabytes of memory): count the entry signatures
    first, at C speed, and refuse before opening."""
    entries = data.count(b"PK\x01\x02")
    if entries > limit:
        raise UnsafeArchiveError(
            f"{name}: about {entries:,} entries is over the {limit:,}-entry limit; refusing "
            "the archive. Pack only the files you want to ask about.")


def read_zip(data: bytes, *, name: str, options: IngestOptions) -> tuple[list[SourceFile], list[str]]:
    check_zip_entries(data, name=name)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as exc:
        raise UnsupportedFormatError(f"{name}: not a readable zip archive ({exc}).") from exc
    notes: list[str] = []
    infos = [i for i in archive.infolist() if not i.is_dir()]
    _check_bomb(name, sum(i.file_size for i in infos), len(data), options)
    members: list[tuple[str, int, object]] = []
    for info in infos:
        path = _safe_member_path(info.filename, name)
        if problem := path_problem(path):
            notes.append(f"{_shorten(path)}: {problem}, skipped")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            notes.append(f"{path}: symbolic link, not followed")
            notes += _shadowed(members, path)
            continue
        members.append((path, info.file_size, info))
    return _read_members(members, lambda ref, limit: _read_zip_member(archive, ref, limit, name),
                         name=name, options=options, notes=notes)


def _read_zip_member(archive: zipfile.ZipFile, info: object, limit: int, name: str) -> bytes:
    """At most `limit` bytes (zipfile also stops at the declared size). A damaged, encrypted or
    oddly compressed member is an `IngestError` that `_read_members` turns into a note."""
    try:
        with archive.open(info) as handle:  # type: ignore[arg-type]
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            ValueError) as exc:  # damaged, encrypted, unknown method, offsets out of range
        raise IngestError(f"cannot be unpacked ({exc})") from exc
    if len(data) > limit:
        raise UnsafeArchiveError(f"{name}: a member is larger than it declares; refusing the archive.")
    return data


def _check_stream(archive: str, unpacked: int, compressed: int, options: IngestOptions, *,
                  at: str = "a member ends at") -> None:
    """Like `_check_bomb`, for bytes that a stream will really have produced (a tar's
    position after a member: headers and data), not what a directory declares."""
    if unpacked > options.max_unpacked_bytes:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to over {options.max_unpacked_bytes / 2**20:,.0f} MiB ({at} "
            f"{unpacked / 2**20:,.0f} MiB), over the limit (SPARKDOCS_MAX_UNPACKED_MB); "
            "pack only the source you want to ask about.")
    if compressed and unpacked > 1_000_000 and unpacked / compressed > options.max_compression_ratio:
        raise UnsafeArchiveError(
            f"{archive}: compression ratio over {unpacked / compressed:,.0f}:1 is over "
            f"{options.max_compression_ratio:,.0f}:1, which is how archive bombs look; refusing it.")


class _Budgeted:
    """The decompressed tar stream, charged for every byte tarfile asks for *before* it is
    produced: reads and forward seeks cost their length, a backward seek (a rewind, which
    decompresses again from the start) costs the target. So a pax or GNU long-name header
    declaring a gigabyte, which tarfile would read whole into memory, is refused at the request,
    and total work stays under `max_unpacked_bytes` and the compression ratio whatever the
    headers say."""

    def __init__(self, inner: Any, *, name: str, compressed: int, options: IngestOptions) -> None:
        self._inner, self._name, self._compressed, self._options = inner, name, compressed, options
        self._pos = 0
        self._work = 0

    def _charge(self, amount: int) -> None:
        self._work += max(amount, 0)
        _check_stream(self._name, self._work, self._compressed, self._options,
                      at="reading it needs")

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._options.max_unpacked_bytes + 1
        self._charge(size)
        data = self._inner.read(size)
        self._work -= size - len(data)  # refund what the stream did not have
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = {0: offset, 1: self._pos + offset}.get(whence)
        if target is None:
            raise OSError("tar streams are not seeked from their end")
        self._charge(target - self._pos if target >= self._pos else target)
        self._pos = self._inner.seek(target)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _decompressed(data: bytes) -> Any:
    raw = io.BytesIO(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if data.startswith(b"BZh"):
        return bz2.BZ2File(raw)  # multi-stream (pbzip2, lbzip2) reads as one
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def read_tar(data: bytes, *, name: str, options: IngestOptions) -> tuple[list[SourceFile], list[str]]:
    """A tar (plain, gzip, bzip2 or xz) read once, in order, through a byte budget: see
    `_Budgeted`. Before each member is read or skipped, the stream position it would reach is
    checked too, so a header declaring 100 GiB stops at once with a message that says so."""
    notes: list[str] = []
    members: list[tuple[str, int, object]] = []
    stream = _Budgeted(_decompressed(data), name=name, compressed=len(data), options=options)
    try:
        # closed in the `finally` below, with the stream it reads
        archive = tarfile.open(fileobj=stream, mode="r:")  # type: ignore[call-overload]  # noqa: SIM115
        for count, member in enumerate(archive, 1):  # lazily: never getmembers()
            _check_stream(name, member.offset_data + member.size, len(data), options)
            if count > MAX_ARCHIVE_MEMBERS:
                raise UnsafeArchiveError(
                    f"{name}: over {MAX_ARCHIVE_MEMBERS:,} members; refusing the archive. Pack "
                    "only the source you want to ask about.")
            if member.isdir():
                continue
            path = _safe_member_path(member.name, name)
            if problem := path_problem(path):
                notes.append(f"{_shorten(path)}: {problem}, skipped")
                continue
            if not member.isfile():
                notes.append(f"{path}: link or special file, not followed")
                notes += _shadowed(members, path)
                continue
            content = b""
            if member.size <= options.max_source_file_bytes:
                handle = archive.extractfile(member)
                content = handle.read(member.size) if handle else b""
            members.append((path, member.size, content))
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise UnsupportedFormatError(f"{name}: not a readable tar archive ({exc}).") from exc

    def read(ref: object, limit: int) -> bytes:
        return ref[:limit + 1]  # type: ignore[index]

    return _read_members(members, read, name=name, options=options, notes=notes)


def _earlier_copies(path: str, count: int) -> str:
    return (f"{path}: {count} earlier {'copy' if count == 1 else 'copies'} in the archive, "
            "skipped (the last one is read, as unpacking would leave it)")


def _shadowed(members: list[tuple[str, int, object]], path: str) -> list[str]:
    """A link or special member replaces the earlier copies of its path, as unpacking would:
    they are dropped (and noted), never read in its place."""
    kept = [member for member in members if member[0] != path]
    dropped = len(members) - len(kept)
    members[:] = kept
    return [_earlier_copies(path, dropped)] if dropped else []


def _read_members(members: list[tuple[str, int, object]], read, *, name: str,
                  options: IngestOptions, notes: list[str]) -> tuple[list[SourceFile], list[str]]:
    members = _strip_common_root(members)
    # one path held twice: the last copy only, before any filter, so that a last copy left out
    # (too large, ignored) is not replaced by an earlier one the unpacked tree does not hold
    last = {path: index for index, (path, _, _) in enumerate(members)}
    copies = Counter(path for path, _, _ in members)
    notes += [_earlier_copies(path, count - 1) for path, count in copies.items() if count > 1]
    members = [member for index, member in enumerate(members) if last[member[0]] == index]
    path_filter = PathFilter(options, source=name)
    for path, size, ref in members:
        if posixpath.basename(path) == ".gitignore" and size < 1_000_000:
            try:
                text = read(ref, size).decode("utf-8", errors="replace")
            except UnsafeArchiveError:
                raise
            except IngestError as exc:
                notes.append(f"{path}: {exc}, not used")
                continue
            notes += path_filter.add_gitignore(posixpath.dirname(path), text)
    files: list[SourceFile] = []
    left_out = [path for path, _, _ in members if not path_filter.keeps_file(path)]
    notes += left_out_notes(left_out, [path for path, _, _ in members], path_filter)
    dropped = set(left_out)
    for path, size, ref in members:
        if path in dropped:
            continue
        if size > options.max_source_file_bytes:
            notes.append(f"{path}: {size / 1024:,.0f} KiB is over the "
                         f"{options.max_source_file_bytes / 1024:,.0f} KiB per-file limit, skipped")
            continue
        try:
            files.append(SourceFile(path, read(ref, options.max_source_file_bytes)))
        except UnsafeArchiveError:
            raise
        except IngestError as exc:
            notes.append(f"{path}: {exc}, skipped")
    return files, notes


def left_out_notes(left_out: Sequence[str], every: Sequence[str], path_filter: PathFilter
                   ) -> list[str]:
    """`skipped` entries for an archive's members that its rules leave out: a folder left out
    whole (nothing under it is read, and a rule leaves the folder out) is one entry with its
    number of files, as for a folder on disk; any other member is listed with its reason."""
    dropped = set(left_out)
    kept_dirs = {"/".join(parts[:depth]) for path in every if path not in dropped
                 for parts in [path.split("/")[:-1]] for depth in range(1, len(parts) + 1)}
    reasons: dict[str, str | None] = {}
    groups: dict[str, list[str]] = {}
    singles: list[str] = []
    for path in left_out:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder in kept_dirs:
                continue
            if folder not in reasons:
                reasons[folder] = path_filter.folder_left_out_because(folder)
            if reasons[folder] is not None:
                groups.setdefault(folder, []).append(path)
                break
        else:
            singles.append(f"{path}: {path_filter.left_out_because(path) or IGNORED}")
    return [folder_note(folder, files_text(len(paths)), reasons[folder] or IGNORED)
            for folder, paths in groups.items()] + singles


def codebase_sections(files: Iterable[SourceFile], *, notes: Iterable[str] = ()
                      ) -> tuple[list[Section], list[str], list[str]]:
    """Text files in path order under a file tree, the warnings, and every file left out with
    its reason (`path: reason`): kept whole and apart, so a list of 81 is not one long warning."""
    kept: list[tuple[str, str]] = []
    skipped = list(notes)
    warnings: list[str] = []
    last: dict[str, SourceFile] = {}
    copies: dict[str, int] = {}
    for source in files:  # an archive may hold one path twice: unpacking keeps the last copy
        last[source.path] = source
        copies[source.path] = copies.get(source.path, 0) + 1
    skipped += [_earlier_copies(path, count - 1) for path, count in copies.items() if count > 1]
    for source in sorted(last.values(), key=lambda f: f.path):
        suffix = posixpath.splitext(source.path)[1].lower()
        if suffix in BINARY_SUFFIXES or looks_binary(source.data):
            skipped.append(f"{source.path}: binary, skipped")
            continue
        try:
            text, warning = decode_text(source.data, name=source.path)
        except UnsupportedFormatError:
            skipped.append(f"{source.path}: not text, skipped")
            continue
        if warning:
            warnings.append(warning)
        kept.append((source.path, clean_text(text)))
    if not kept:
        raise UnsupportedFormatError(
            "No text files were left to read after ignore rules and limits"
            + (f" ({len(skipped)} skipped)" if skipped else "")
            + "; check --include/--exclude and the .gitignore files."
        )
    sections = [Section(SectionKind.TREE, "files", render_tree(p for p, _ in kept))]
    sections += [Section(SectionKind.FILE, path, text) for path, text in kept]
    # files an ignore rule leaves out (.git, node_modules, .gitignore, --exclude) are listed
    # under "skipped" but are no cause for a warning: that is what the rules are for
    problems = [note for note in skipped if not is_ignored_note(note)]
    if problems:
        beside = (", beside what the ignore rules leave out" if len(problems) < len(skipped)
                  else "")
        warnings.append(f"{files_text(len(problems))} skipped ({_reasons(problems)}); each is "
                        f"listed with its reason under “skipped”{beside}.")
    return sections, warnings, [note.removesuffix(", skipped") for note in skipped]


def is_ignored_note(note: str) -> bool:
    """Whether a `skipped` entry is a file or folder an ignore rule left out."""
    reason = note.split(": ", 1)[-1]
    if note.split(": ", 1)[0].endswith("/"):  # `dir/: 12 files, ignored by …`
        reason = reason.split(", ", 1)[-1]
    return reason.startswith(IGNORED + " ") or reason.startswith(IGNORED + ":")


def _reasons(skipped: Sequence[str]) -> str:
    """`12 binary, 3 too large`: how many files were left out for which kind of reason."""
    counts: dict[str, int] = {}
    for note in skipped:
        reason = note.rsplit(": ", 1)[-1].removesuffix(", skipped")
        kind = ("binary" if reason.startswith("binary") else "secret" if "secret" in reason
                else "duplicate" if "earlier cop" in reason
                else "too large" if "limit" in reason else "not text" if "not text" in reason
                else "link" if "link" in reason else "other")
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def directory_tokens(sections: Iterable[Section]) -> dict[str, int]:
    """Tokens per directory (every ancestor counts its files), for choosing what goes in."""
    totals: dict[str, int] = {}
    for section in sections:
        if section.kind is not SectionKind.FILE:
            continue
        parts = section.title.split("/")[:-1]
        for depth in range(len(parts) + 1):
            key = "/".join(parts[:depth]) or "."
            totals[key] = totals.get(key, 0) + section.tokens
    return dict(sorted(totals.items()))


def check_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise FileTooLargeError(
            f"{name}: {size / 2**20:,.1f} MiB is over the {limit / 2**20:,.0f} MiB limit "
            "(SPARKDOCS_MAX_UPLOAD_MB); split it or raise the limit."
        )

