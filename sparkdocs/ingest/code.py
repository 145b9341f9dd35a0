"""Codebases: choose files the way git would (`.gitignore` at every level, plus defaults), keep
text files in path order under a file tree, and note everything skipped. Archives are read in
memory with zip-slip and zip-bomb limits; folders are walked by `sparkdocs.sources`."""

from __future__ import annotations

import io
import posixpath
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Iterable

import pathspec

from ..documents import Section, SectionKind, clean_text, render_tree
from ..errors import FileTooLargeError, UnsafeArchiveError, UnsupportedFormatError
from .options import IngestOptions
from .text import decode_text, looks_binary

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
    ".png .jpg .jpeg .gif .bmp .ico .webp .tif .tiff .pdf .zip .gz .tgz .bz2 .xz .7z .tar .jar "
    ".whl .exe .bin .dat .db .sqlite .woff .woff2 .ttf .otf .eot .mp3 .mp4 .mov .avi .wav .ogg "
    ".pt .pth .onnx .safetensors .gguf .npy .npz .pkl .parquet .xlsx .docx .pptx".split()
)


@dataclass(frozen=True)
class SourceFile:
    path: str  # posix, relative to the codebase root
    data: bytes


class PathFilter:
    """Decides, per relative path, whether a file goes in. `.gitignore` files apply to their
    own directory and below; deeper files win, as in git."""

    def __init__(self, options: IngestOptions) -> None:
        defaults = list(DEFAULT_IGNORES) + list(SECRET_FILES)
        if not options.include_lock_files:
            defaults += list(LOCK_FILES)
        self._defaults = pathspec.GitIgnoreSpec.from_lines(defaults)
        self._secrets = pathspec.GitIgnoreSpec.from_lines(SECRET_FILES)
        self._exclude = pathspec.GitIgnoreSpec.from_lines(options.exclude) if options.exclude else None
        self._include = pathspec.GitIgnoreSpec.from_lines(options.include) if options.include else None
        self._gitignores: dict[str, pathspec.GitIgnoreSpec] = {}

    def add_gitignore(self, directory: str, text: str) -> None:
        self._gitignores[directory.strip("/")] = pathspec.GitIgnoreSpec.from_lines(text.splitlines())

    def is_secret(self, path: str) -> bool:
        return self._secrets.match_file(path)

    def skips_dir(self, path: str) -> bool:
        return self._ignored(path.rstrip("/") + "/")

    def _ignored(self, path: str) -> bool:
        if self._defaults.match_file(path):
            return True
        verdict: bool | None = None
        for directory, spec in sorted(self._gitignores.items(), key=lambda kv: kv[0].count("/")):
            if directory and not path.startswith(directory + "/"):
                continue
            relative = path[len(directory) + 1:] if directory else path
            result = spec.check_file(relative)
            if result.include is not None:
                verdict = result.include
        return bool(verdict)

    def keeps_file(self, path: str) -> bool:
        if self._ignored(path):
            return False
        if self._exclude is not None and self._exclude.match_file(path):
            return False
        if self._include is not None and not self._include.match_file(path):
            return False
        return True


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


def read_zip(data: bytes, *, name: str, options: IngestOptions) -> tuple[list[SourceFile], list[str]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsupportedFormatError(f"{name}: not a readable zip archive ({exc}).") from exc
    notes: list[str] = []
    infos = [i for i in archive.infolist() if not i.is_dir()]
    _check_bomb(name, sum(i.file_size for i in infos), len(data), options)
    members: list[tuple[str, int, object]] = []
    for info in infos:
        path = _safe_member_path(info.filename, name)
        if stat.S_ISLNK(info.external_attr >> 16):
            notes.append(f"{path}: symbolic link, not followed")
            continue
        members.append((path, info.file_size, info))
    return _read_members(members, lambda ref, limit: _read_zip_member(archive, ref, limit, name),
                         name=name, options=options, notes=notes)


def _read_zip_member(archive: zipfile.ZipFile, info: object, limit: int, name: str) -> bytes:
    with archive.open(info) as handle:  # type: ignore[arg-type]
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeArchiveError(f"{name}: a member is larger than it declares; refusing the archive.")
    return data


def read_tar(data: bytes, *, name: str, options: IngestOptions) -> tuple[list[SourceFile], list[str]]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        entries = archive.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsupportedFormatError(f"{name}: not a readable tar archive ({exc}).") from exc
    notes: list[str] = []
    _check_bomb(name, sum(m.size for m in entries if m.isfile()), len(data), options)
    members: list[tuple[str, int, object]] = []
    for member in entries:
        if member.isdir():
            continue
        path = _safe_member_path(member.name, name)
        if not member.isfile():
            notes.append(f"{path}: link or special file, not followed")
            continue
        members.append((path, member.size, member))

    def read(ref: object, limit: int) -> bytes:
        handle = archive.extractfile(ref)  # type: ignore[arg-type]
        return handle.read(limit + 1) if handle else b""

    return _read_members(members, read, name=name, options=options, notes=notes)


def _read_members(members: list[tuple[str, int, object]], read, *, name: str,
                  options: IngestOptions, notes: list[str]) -> tuple[list[SourceFile], list[str]]:
    members = _strip_common_root(members)
    path_filter = PathFilter(options)
    for path, size, ref in members:
        if posixpath.basename(path) == ".gitignore" and size < 1_000_000:
            text, _ = decode_text(read(ref, size), name=path)
            path_filter.add_gitignore(posixpath.dirname(path), text)
    files: list[SourceFile] = []
    for path, size, ref in members:
        if not path_filter.keeps_file(path):
            if path_filter.is_secret(path):
                notes.append(f"{path}: looks like a secret, skipped")
            continue
        if size > options.max_source_file_bytes:
            notes.append(f"{path}: {size / 1024:,.0f} KiB is over the "
                         f"{options.max_source_file_bytes / 1024:,.0f} KiB per-file limit, skipped")
            continue
        files.append(SourceFile(path, read(ref, options.max_source_file_bytes)))
    return files, notes


def codebase_sections(files: Iterable[SourceFile], *, notes: Iterable[str] = ()
                      ) -> tuple[list[Section], list[str]]:
    """Text files in path order under a file tree; binaries and undecodable files noted."""
    kept: list[tuple[str, str]] = []
    skipped = list(notes)
    warnings: list[str] = []
    for source in sorted(files, key=lambda f: f.path):
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
    if skipped:
        warnings.append(f"{len(skipped)} files skipped: " + "; ".join(skipped[:20])
                        + (" …" if len(skipped) > 20 else ""))
    return sections, warnings


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

