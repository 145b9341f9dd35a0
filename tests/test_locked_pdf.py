"""Team mode, item 4: a password stays a password. An encrypted PDF opened once with its
password is stored, but its text is served again only to a request that proves the password
(and only to the user who opened it) — in the library, the CLI and the app alike."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_pdf

from sparkdocs.config import Settings
from sparkdocs.errors import EncryptedDocumentError, PasswordRequiredError
from sparkdocs.workspace import LoadRequest, Workspace

pytestmark = pytest.mark.integration

SECRET = "Clause 7. The purchase price is forty-two million euros."


@pytest.fixture
def locked_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "locked.pdf"
    path.write_bytes(make_pdf([SECRET], password="s3cret-pw"))
    return path


def test_a_stored_encrypted_pdf_opens_only_with_its_password(workspace: Workspace,
                                                           locked_pdf: Path, monkeypatch):
    document = workspace.load(LoadRequest((str(locked_pdf),), password="s3cret-pw"))
    assert "forty-two million" in document.sections[0].text
    import sparkdocs.workspace as module

    parsed: list[int] = []
    real = module.ingest_uploads
    monkeypatch.setattr(module, "ingest_uploads",
                        lambda *a, **kw: parsed.append(1) or real(*a, **kw))
    for wrong in (None, "", "s3cret-pW", "guess"):
        with pytest.raises(EncryptedDocumentError):
            workspace.load(LoadRequest((str(locked_pdf),), password=wrong))
    again = workspace.load(LoadRequest((str(locked_pdf),), password="s3cret-pw"))
    assert again == document
    assert parsed == [1, 1, 1, 1]  # each wrong try went to the PDF itself; the right one did not


def test_another_user_must_prove_the_password_too(settings: Settings, locked_pdf: Path):
    alice = Workspace(dataclasses.replace(settings, user="alice"))
    document = alice.load(LoadRequest((str(locked_pdf),), password="s3cret-pw"))
    bob = Workspace(dataclasses.replace(settings, user="bob"))
    with pytest.raises(EncryptedDocumentError):
        bob.load(LoadRequest((str(locked_pdf),)))
    assert bob.store.get_document(document.content_hash, owner="bob") is None
    assert bob.load(LoadRequest((str(locked_pdf),), password="s3cret-pw")) == document


def test_reopening_a_stored_encrypted_document_asks_for_the_password(workspace: Workspace,
                                                                    locked_pdf: Path):
    document = workspace.load(LoadRequest((str(locked_pdf),), password="s3cret-pw"))
    store = workspace.store
    store.new_session(document)
    with pytest.raises(PasswordRequiredError, match="password"):
        store.get_document(document.content_hash)
    with pytest.raises(PasswordRequiredError):
        store.get_document(document.content_hash, password="wrong")
    assert store.get_document(document.content_hash, password="s3cret-pw") == document
    assert store.document_is_locked(document.content_hash)


def test_the_stored_verifier_is_a_salted_slow_hash_not_the_password(workspace: Workspace,
                                                                   locked_pdf: Path):
    workspace.load(LoadRequest((str(locked_pdf),), password="s3cret-pw"))
    raw = workspace.store.path.read_bytes()
    wal = workspace.store.path.with_name(workspace.store.path.name + "-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"s3cret-pw" not in raw and b"$argon2id$" in raw


def test_the_cli_refuses_the_stored_copy_without_the_password(tmp_path: Path, locked_pdf: Path):
    env = {"SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def count(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(locked_pdf),
                               "--json", *extra], check=False, capture_output=True, text=True,
                              env=env,
                              timeout=300)

    assert count("--password", "s3cret-pw").returncode == 0
    refused = count()
    assert refused.returncode == 2 and "password" in refused.stderr
    assert "forty-two" not in refused.stdout
    assert count("--password", "wrong").returncode == 2
