"""Salted slow hashes (Argon2id, from argon2-cffi) for user passwords and for the verifiers of
encrypted documents, and the check whether a PDF is encrypted. A stored hash lets sparkdocs
check a password again without keeping it: reading the store reveals neither."""

from __future__ import annotations

import io
import logging

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger(__name__)

# argon2-cffi's defaults (RFC 9106 "low memory": t=3, 64 MiB, 4 lanes): about 50 ms here, slow
# enough to make guessing from a stolen store expensive, fast enough for a login.
_HASHER = argon2.PasswordHasher()


def hash_password(password: str) -> str:
    """A fresh salt and an Argon2id hash, as one encoded string ($argon2id$...)."""
    return _HASHER.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """Whether `password` matches `hashed`; False for a mismatch and for a damaged hash."""
    try:
        return _HASHER.verify(hashed, password)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        log.warning("a stored password hash is unreadable; treating it as a mismatch")
        return False


def spend_a_verify() -> None:
    """The time of one verify, for an unknown user: a login then takes as long whether the name
    exists or not, so timing does not tell names apart."""
    verify_password(_DUMMY, "not the password")


_DUMMY = _HASHER.hash("sparkdocs dummy password")


def pdf_is_encrypted(data: bytes) -> bool:
    """Whether these bytes are a PDF with an encryption dictionary. Its text must then be served
    only to whoever proves the password; unreadable bytes are left for the ingester to report."""
    if not data.lstrip()[:5].startswith(b"%PDF"):
        return False
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        return bool(PdfReader(io.BytesIO(data)).is_encrypted)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        log.info("cannot tell whether a PDF is encrypted (%s); the ingester will say", exc)
        return False
