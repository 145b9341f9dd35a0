"""Dependencies point one way: the pure core imports no network, disk-cache or UI library,
and nothing reads the environment except the Settings object."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sparkdocs"
PURE = ["documents.py", "tokens.py", "prompts.py", "selection.py", "citations.py", "safe_text.py",
        "ingest"]
FORBIDDEN = {"openai", "httpx", "httpx2", "diskcache", "streamlit", "requests", "socket", "urllib", "rich",
             "typer", "sparkdocs.client", "sparkdocs.store", "sparkdocs.batch", "sparkdocs.workspace"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = "sparkdocs." + module if module else "sparkdocs"
            names.add(module)
    return names


def _files(entries: list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = PACKAGE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_pure_core_has_no_io_imports():
    for path in _files(PURE):
        bad = {n for n in _imports(path) if n.split(".")[0] in FORBIDDEN or n in FORBIDDEN
               or any(n.startswith(f + ".") for f in FORBIDDEN)}
        assert not bad, f"{path.name} imports {bad}"


def test_only_settings_reads_the_environment():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name == "config.py":
            continue
        assert "os.environ" not in text and "getenv" not in text, path


def test_library_never_prints():
    for path in PACKAGE.rglob("*.py"):
        if path.name in {"cli.py", "__main__.py"}:
            continue
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, path


HTTP_CLIENTS = {"httpx", "httpx2", "requests", "urllib3", "aiohttp", "urllib.request", "http.client"}


def test_the_library_speaks_http_only_through_the_openai_client():
    """One HTTP stack: discovery, counts and readiness checks go through openai's client, so
    there is one connection pool and one exception family (openai's) to turn into messages."""
    for path in PACKAGE.rglob("*.py"):
        bad = {n for n in _imports(path) if n in HTTP_CLIENTS or n.split(".")[0] in HTTP_CLIENTS}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
