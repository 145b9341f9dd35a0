"""Parsed documents: one body per content hash, an owner's row per user who stored it (each
naming their copy), least-recently-used eviction under the size limit, and encrypted PDFs
served only to whoever proves the password."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..config import LOCAL_USER
from ..documents import Document
from ..errors import PasswordRequiredError, StoreError
from ..passwords import hash_password, verify_password
from .database import Database
from .records import _BAD_ROW, DocumentInfo, document_from_json, document_to_json

log = logging.getLogger(__name__)


class DocumentRows(Database):
    """Each document's row (name, counts, whether it is locked) and its owners' rows live in
    SQLite; its parsed body in `self.bodies` (diskcache, evicted by its own limit). A row whose
    body was evicted is dropped when next read.

    `lists_new_documents` False (`sparkdocs count`) stores what is read as a parse cache only:
    not listed until the owner opens it to ask."""

    lists_new_documents: bool = True

    def get_document(self, key: str, *, owner: str = LOCAL_USER, password: str | None = None
                     ) -> Document | None:
        """The owner's document, or None when they have none with this key (evicted, or never
        theirs). A locked document (an encrypted PDF) needs its password again, every time:
        raises PasswordRequiredError when it is missing or does not match."""
        rows = self._read("SELECT o.name, d.locked, o.verifier FROM document_owners o "
                          "JOIN documents d ON d.key = o.key WHERE o.key = ? AND o.owner = ?",
                          (key, owner))
        if not rows:
            return None
        name, locked, verifier = rows[0]
        if locked and (verifier is None or not verify_password(verifier, password or "")):
            raise PasswordRequiredError(
                f"{name} is an encrypted PDF: give its password "
                + ("again" if password is None else "(the one given does not match)")
                + " to open it (--password, or the field on the page). Its text is only shown "
                "to whoever proves the password.")
        body = self.bodies.get(key, owner=owner)
        try:
            if body is None:
                raise KeyError("evicted")
            return replace(document_from_json(body), name=name)
        except _BAD_ROW as exc:
            log.info("stored document %s gone (%s): parsed again on its next upload",
                     key[:12], exc)
            self._forget(key, owner=owner)
            return None

    def _forget(self, key: str, *, owner: str) -> None:
        """Drop the owner's row of a document whose body is gone; the document's own row goes
        once no one owns it. Sessions about it stay."""
        self.bodies.delete(key, owner=owner)
        with self._write() as db:
            db.execute("DELETE FROM document_owners WHERE key = ? AND owner = ?", (key, owner))
            if not db.execute("SELECT 1 FROM document_owners WHERE key = ?", (key,)).fetchone():
                db.execute("DELETE FROM documents WHERE key = ?", (key,))

    def document_is_locked(self, key: str) -> bool:
        """Whether the stored document is an encrypted PDF (served only with its password)."""
        rows = self._read("SELECT locked FROM documents WHERE key = ?", (key,))
        return bool(rows and rows[0][0])

    def put_document(self, document: Document, *, owner: str = LOCAL_USER,
                     password: str | None = None, locked: bool = False) -> None:
        """Store the body in the owner's share and make the document the owner's. A locked
        document keeps a verifier of `password` for this owner, never the password."""
        body = document_to_json(document)
        now = time.time()
        key = document.content_hash
        verifier = hash_password(password or "") if locked else None
        self.bodies.put(key, body, owner=owner)  # evicts the share's least recently used
        with self._write() as db:
            db.execute(
                "INSERT INTO documents (key, name, kind, tokens, sections, size_bytes, stored_at, "
                "accessed_at, body, locked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?) "
                "ON CONFLICT (key) DO UPDATE "
                "SET name = excluded.name, kind = excluded.kind, tokens = excluded.tokens, "
                "sections = excluded.sections, size_bytes = excluded.size_bytes, "
                "accessed_at = excluded.accessed_at, "
                "locked = MAX(documents.locked, excluded.locked)",
                (key, document.name, document.kind.value, document.section_tokens,
                 len(document.sections), len(body.encode("utf-8")), now, now, int(locked)))
            db.execute(
                "INSERT INTO document_owners (key, owner, name, verifier, stored_at, listed) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key, owner) DO UPDATE "
                "SET verifier = COALESCE(excluded.verifier, document_owners.verifier), "
                "listed = MAX(document_owners.listed, excluded.listed)",
                (key, owner, document.name, verifier, now, int(self.lists_new_documents)))

    def _list(self, key: str, *, owner: str) -> None:
        """An owner's document read again to ask: listed from now on."""
        if self._read("SELECT 1 FROM document_owners WHERE key = ? AND owner = ? AND listed = 0",
                      (key, owner)):
            with self._write() as db:
                db.execute("UPDATE document_owners SET listed = 1, stored_at = ? "
                           "WHERE key = ? AND owner = ?", (time.time(), key, owner))

    def unlist_documents(self, keys: Iterable[str], *, owner: str = LOCAL_USER) -> int:
        """Take the owner's documents off their lists (the Library's "never asked about"):
        their parsed bodies stay cached and their sessions stay. Returns how many."""
        with self._write() as db:
            return sum(db.execute("UPDATE document_owners SET listed = 0 "
                                  "WHERE key = ? AND owner = ? AND listed = 1",
                                  (key, owner)).rowcount for key in keys)

    def get_or_ingest(self, key: str, ingest: Callable[[], Document], *,
                      owner: str = LOCAL_USER, password: str | None = None,
                      locked: bool = False) -> Document:
        """The owner's stored document for `key`, or the one `ingest` makes (counted: the
        store stores what it is given), stored.

        A locked document (an encrypted PDF) comes from the store only when
        `password` matches the verifier this owner stored; otherwise the PDF itself is opened
        with it, so a wrong or missing password fails as it would the first time."""
        if locked:
            try:
                cached = self.get_document(key, owner=owner, password=password)
            except PasswordRequiredError:
                cached = None
            if cached is not None:
                if self.lists_new_documents:
                    self._list(key, owner=owner)
                return cached
            document = ingest()  # raises EncryptedDocumentError when wrong
            self.put_document(document, owner=owner, password=password, locked=True)
            return document
        cached = self.get_document(key, owner=owner)
        if cached is not None:
            if self.lists_new_documents:
                self._list(key, owner=owner)
            return cached
        # Another owner's copy is not reused: its name (and so a hint of what they read) is
        # theirs, and parsing again costs this owner only their first upload.
        document = ingest()
        self.put_document(document, owner=owner)
        return document

    def list_documents(self, *, owner: str = LOCAL_USER) -> list[DocumentInfo]:
        """The owner's listed documents whose bodies are still cached."""
        rows = self._read("SELECT d.key, o.name, d.kind, d.tokens, d.sections, o.stored_at "
                          "FROM document_owners o JOIN documents d ON d.key = o.key "
                          "WHERE o.owner = ? AND o.listed = 1 ORDER BY o.stored_at DESC",
                          (owner,))
        return [DocumentInfo(*row) for row in rows if self.bodies.has(row[0], owner=owner)]

    def rename_document(self, key: str, name: str, *, owner: str = LOCAL_USER) -> None:
        with self._write() as db:
            if not db.execute("SELECT 1 FROM document_owners WHERE key = ? AND owner = ?",
                              (key, owner)).fetchone():
                raise StoreError(f"No stored document {key[:12]}; it may have been evicted "
                                 "(upload it again).")
            if name.strip():
                db.execute("UPDATE document_owners SET name = ? WHERE key = ? AND owner = ?",
                           (name.strip(), key, owner))

    def delete_document(self, key: str, *, owner: str = LOCAL_USER) -> None:
        """The owner's document and every session of theirs about it, alone or with others
        (their turns go with them). The body goes too once no one owns it (in a shared cache) or at once (in the
        owner's own share)."""
        with self._write() as db:
            db.execute("DELETE FROM document_owners WHERE key = ? AND owner = ?", (key, owner))
            db.execute("DELETE FROM sessions WHERE owner = ? AND (document_key = ? OR id IN "
                       "(SELECT session_id FROM session_documents WHERE document_key = ?))",
                       (owner, key, key))
            orphan = not db.execute("SELECT 1 FROM document_owners WHERE key = ?",
                                    (key,)).fetchone()
            if orphan:
                db.execute("DELETE FROM documents WHERE key = ?", (key,))
        if orphan or self.bodies.per_owner:
            self.bodies.delete(key, owner=owner)
