"""Dependencies point one way: the pure core imports no network, disk-cache or UI library,
and nothing reads the environment except the Settings object."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sparkdocs"
PURE = ["documents.py", "tokens.py", "prompts.py", "selection.py", "citations", "citation_views.py", "changes.py",
        "safe_text.py", "ingest"]
FORBIDDEN = {"openai", "httpx", "httpx2", "diskcache", "streamlit", "requests", "socket", "urllib", "rich",
             "typer", "click", "sparkdocs.client", "sparkdocs.store", "sparkdocs.batch", "sparkdocs.workspace"}


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
    there is one connection pool and one exception family (openai's) to turn into messages.
    client.py alone touches openai's own HTTP library, to give it the transport under it."""
    for path in PACKAGE.rglob("*.py"):
        allowed = {"httpx2"} if path.name == "client.py" else set()
        bad = {n for n in _imports(path) if (n in HTTP_CLIENTS or n.split(".")[0] in HTTP_CLIENTS)
               and n not in allowed}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_no_private_attributes_of_other_libraries():
    """Stop and the deadline close the connection through sparkdocs' own transport, not through
    an attribute the openai stream keeps for itself."""
    tree = ast.parse((PACKAGE / "client.py").read_text())
    readers = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
               and any(isinstance(n, ast.Constant) and n.value == "network_stream"
                       for n in ast.walk(f))}
    assert readers == {"_shut_down"}, readers
    fetched = {n.args[1].value for n in ast.walk(tree) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Name) and n.func.id == "getattr"
               and len(n.args) > 1 and isinstance(n.args[1], ast.Constant)}
    assert "response" not in fetched, "client.py reaches into the openai stream's response"


FACES = [PACKAGE / "cli.py", *sorted((PACKAGE / "ui").glob("*.py")),
         *sorted((PACKAGE.parent / "pages").glob("*.py")), PACKAGE.parent / "app.py"]
LIFECYCLE = {"stream", "ask", "record", "record_failure", "events"}


def test_the_faces_ask_through_the_turn_runner():
    """One lifecycle: the CLI and the app call `run_turn`, never the stream or the recording
    steps themselves (which would be the lifecycle written a second time)."""
    for path in FACES:
        tree = ast.parse(path.read_text())
        calls = {n.func.attr for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & LIFECYCLE, f"{path.name} calls {calls & LIFECYCLE}"
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "AnswerStream" not in names, path.name
    runner_calls = [p.name for p in FACES if "run_turn(" in p.read_text()]
    assert sorted(runner_calls) == ["ask.py", "cli.py"], runner_calls


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """sparkdocs' modules and what each imports of sparkdocs, lazy imports included."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_no_import_cycles():
    """Dependencies point one way, lazy imports too: a cycle means two modules are one job
    split in the wrong place."""
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # a package's __init__ re-exporting its own modules is not a cycle between two jobs
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".")
                                         for a, b in itertools.pairwise(c))]
    assert not real, real
