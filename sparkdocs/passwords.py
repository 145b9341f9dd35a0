"""Salted slow hashes (Argon2id, from argon2-cffi) for user passwords and for the verifiers of
encrypted documents, and the check whether a PDF is encrypted. A stored hash lets sparkdocs
check a password again without keeping it: reading the store reveals neither."""

from __future__ import annotations

import functools
import io
import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argon2

log = logging.getLogger(__name__)


@functools.cache
def _hasher() -> argon2.PasswordHasher:
    """argon2-cffi's defaults (RFC 9106 "low memory": t=3, 64 MiB, 4 lanes): about 50 ms here,
    slow enough to make guessing from a stolen store expensive, fast enough for a login. Made on
    first use: a command that checks no password (`count`) does not import argon2."""
    import argon2

    return argon2.PasswordHasher()


def hash_password(password: str) -> str:
    """A fresh salt and an Argon2id hash, as one encoded string ($argon2id$...)."""
    return _hasher().hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """Whether `password` matches `hashed`; False for a mismatch and for a damaged hash."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return _hasher().verify(hashed, password)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        log.warning("a stored password hash is unreadable; treating it as a mismatch")
        return False


def spend_a_verify() -> None:
    """The time of one verify, for an unknown user: a login then takes as long whether the name
    exists or not, so timing does not tell names apart."""
    verify_password(DUMMY_HASH, "not the password")


# A hash made once with the hasher's parameters (a test checks they still match): hashing it at
# import cost every command ~150 ms, and hashing it at the first login would make that login
# slower than the rest.
DUMMY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$quv/JtDXeBg6WAB/jA+CYw$"
              "if5VfKSC2xs4j03nX734yuopuC+YqROB+Ga9yKelxck")


# A PDF name written with a #xx escape (as /Encr#79pt may spell /Encrypt): pypdf then decides.
_ESCAPED_NAME = re.compile(rb"/[A-Za-z0-9#]*#[0-9A-Fa-f]{2}")


def pdf_is_encrypted(data: bytes) -> bool:
    """Whether these bytes are a PDF with an encryption dictionary. Its text must then be served
    only to whoever proves the password; unreadable bytes are left for the ingester to report."""
    if not data.lstrip()[:5].startswith(b"%PDF"):
        return False
    if b"/Encrypt" not in data and not _ESCAPED_NAME.search(data):
        # The /Encrypt entry sits in the trailer or the xref stream's dictionary, which are
        # never compressed, so an encrypted file shows it in its bytes, spelt out or with #xx
        # escapes. Neither here: not encrypted, without importing pypdf (~0.1 s) to parse it.
        return False
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        return bool(PdfReader(io.BytesIO(data)).is_encrypted)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        log.info("cannot tell whether a PDF is encrypted (%s); the ingester will say", exc)
        return False
