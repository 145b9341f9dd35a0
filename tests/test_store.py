"""The real disk store: re-ingest without parsing, sessions kept apart, many processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_contract_pdf

from sparkdocs.config import Settings
from sparkdocs.errors import SessionNotFoundError
from sparkdocs.ingest import IngestOptions, Upload
from sparkdocs.store import Store, Turn
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.integration


def test_reingesting_the_same_bytes_does_no_parsing(workspace: Workspace, monkeypatch):
    upload = Upload("contract.pdf", make_contract_pdf(4))
    options = workspace.ingest_options()
    first = workspace.load_uploads([upload], options)
    import sparkdocs.workspace as module

    def boom(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(module, "ingest_uploads", boom)
    again = workspace.load_uploads([Upload("renamed.pdf", upload.data)], options)
    assert again == first and again.section_tokens > 0


def test_sessions_survive_reopening_and_are_not_evicted(tmp_path: Path):
    store = Store(tmp_path, size_limit_bytes=16 * 2**20)
    workspace = Workspace(Settings(cache_dir=tmp_path), store=store)
    document = workspace.load_uploads([Upload("a.txt", b"hello world")], IngestOptions())
    session = store.new_session(document)
    store.append_turn(session.id, Turn("q?", "a."))
    store.close()
    reopened = Store(tmp_path, size_limit_bytes=16 * 2**20)
    assert reopened.get_session(session.id).turns[0].answer == "a."
    assert [d.key for d in reopened.list_documents()] == [document.content_hash]
    reopened.delete_document(document.content_hash)
    with pytest.raises(SessionNotFoundError):
        reopened.get_session(session.id)


WRITER = """
import sys
from pathlib import Path
from sparkdocs.store import Store
from sparkdocs.ingest import Upload, IngestOptions, ingest_uploads
from sparkdocs.tokens import count_document
store = Store(Path(sys.argv[1]), size_limit_bytes=64 * 2**20)
for i in range(20):
    doc = count_document(ingest_uploads([Upload(f"{sys.argv[2]}-{i}.txt", f"{sys.argv[2]} {i}".encode())]))
    store.put_document(doc)
    assert store.get_document(doc.content_hash) == doc
"""


def test_many_processes_write_one_store_safely(tmp_path: Path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"p{n}"]) for n in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(Store(tmp_path, size_limit_bytes=64 * 2**20).list_documents()) == 80


def test_reloading_the_same_folder_decodes_nothing(workspace: Workspace, tmp_path: Path, monkeypatch):
    from sparkdocs.workspace import LoadRequest

    (tmp_path / "repo" / "pkg").mkdir(parents=True)
    (tmp_path / "repo" / "pkg" / "m.py").write_text("m = 1\n")
    first = workspace.load(LoadRequest((str(tmp_path / "repo"),)))
    import sparkdocs.workspace as module

    monkeypatch.setattr(module, "ingest_codebase", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert workspace.load(LoadRequest((str(tmp_path / "repo"),))) == first


def test_a_full_disk_is_a_store_error_not_a_failed_rollback(tmp_path: Path):
    """SQLite rolls a transaction back by itself when the disk is full (here: a file size
    limit); the store must then say so, not fail on its own ROLLBACK."""
    script = f"""
import random, resource, sys
from sparkdocs.errors import StoreError
from sparkdocs.ingest import ingest_bytes
from sparkdocs.store import Store
from sparkdocs.tokens import count_document
from pathlib import Path
store = Store(Path({str(tmp_path)!r}), size_limit_bytes=2**30)
random.seed(1)
text = " ".join(f"w{{random.random()}}" for _ in range(40_000)).encode()
document = count_document(ingest_bytes("big.txt", text))
size = (store.path.stat().st_size // 4096 + 4) * 4096
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
try:
    store.put_document(document)
except StoreError as exc:
    print("StoreError", exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.startswith("StoreError Cannot write the store"), result.stderr[-2000:]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_store_says_so_and_how_to_move_it_aside(tmp_path, damage):
    cache = tmp_path / "cache"
    store = Store(cache, size_limit_bytes=10**8)
    store.close()
    path = cache / "sparkdocs.sqlite3"
    if damage == "garbage":
        path.write_bytes(bytes(range(256)) * 40)
    else:
        path.write_bytes(path.read_bytes()[:200])
    (tmp_path / "a.txt").write_text("Alpha.")
    result = subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(tmp_path / "a.txt")],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SPARKDOCS_CACHE_DIR": str(cache)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "is damaged" in result.stderr and f"mv {path} {path}.broken" in result.stderr


def test_the_damaged_store_command_works_pasted_into_a_shell_in_a_folder_with_a_space(tmp_path):
    """The fix the message gives is run as given (bash is the judge), in a folder with a space
    (macOS's "Application Support"): the old message's unquoted mv failed there."""
    import re
    import shlex

    cache = tmp_path / "Application Support" / "sparkdocs"
    Store(cache, size_limit_bytes=10**8).close()
    path = cache / "sparkdocs.sqlite3"
    path.write_bytes(bytes(range(256)) * 40)
    (tmp_path / "a.txt").write_text("Alpha.")
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "sparkdocs", "count", str(tmp_path / "a.txt")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 2 and "is damaged" in first.stderr, first.stderr
    fix = re.search(r"Move it aside \(`(.+?)`\)", " ".join(first.stderr.split()))
    assert fix is not None, first.stderr
    assert shlex.split(fix.group(1))[0] == "mv"
    subprocess.run(["bash", "-c", fix.group(1)], check=True, cwd=tmp_path)
    assert (cache / "sparkdocs.sqlite3.broken").read_bytes() == bytes(range(256)) * 40
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr


def test_a_codebase_cached_before_skipped_files_were_kept_is_read_again(tmp_path, monkeypatch):
    """The previous release stored documents without `skipped` (under its own cache salt):
    after the upgrade, `count` on the same folder must list the files left out, not serve the
    old record with an empty list. The old record is made as that release wrote it."""
    import dataclasses

    from sparkdocs.workspace import LoadRequest, Workspace

    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "main.py").write_text("print('hi')\n")
    (folder / "blob.dat").write_bytes(bytes(range(256)))
    settings = Settings(cache_dir=tmp_path / "cache")

    def previous_salt(self: IngestOptions) -> str:  # the salt of the release before
        from sparkdocs.documents import RENDER_VERSION
        return repr(("v2", RENDER_VERSION, self.include, self.exclude, self.include_lock_files,
                     self.max_source_file_bytes))

    with monkeypatch.context() as patch:
        patch.setattr(IngestOptions, "cache_salt", previous_salt)
        workspace = Workspace(settings)
        old = workspace.load(LoadRequest((str(folder),)))
        store = workspace.store
        store.delete_document(old.content_hash)
        store.put_document(dataclasses.replace(old, skipped=()))  # as that release stored it
        assert workspace.load(LoadRequest((str(folder),))).skipped == ()
        store.close()
    document = Workspace(settings).load(LoadRequest((str(folder),)))
    assert [entry.split(":")[0] for entry in document.skipped] == ["blob.dat"]
