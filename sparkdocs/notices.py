"""What the Ask page says about an upload and a session, computed without Streamlit: an upload
that failed (in the app's words, not the CLI's), and whether the next question is a follow-up."""

from __future__ import annotations

from collections.abc import Sequence

from .documents import Document
from .errors import EncryptedDocumentError, PasswordRequiredError, SparkdocsError
from .store import Session

PASSWORD_FIELD = "“PDF password” (sidebar, under “Options”)"


def upload_problem(exc: SparkdocsError, *, names: Sequence[str], password_given: bool) -> str:
    """The message for an upload that could not be read. An encrypted PDF is the one a person
    fixes in the app itself, so it says where to type the password (the library's message
    names the CLI's --password too, which means nothing in a browser)."""
    if isinstance(exc, EncryptedDocumentError) and not isinstance(exc, PasswordRequiredError):
        text = str(exc)
        pdf = next((n for n in names if text.startswith(f"{n}:")), "This PDF")
        if password_given:
            return (f"{pdf}: the password typed in {PASSWORD_FIELD} does not open it. Check it "
                    "and type it again; the file is read again at once.")
        return (f"{pdf} is encrypted: type its password in {PASSWORD_FIELD} and it is read "
                "again at once.")
    return str(exc)


def follow_up_default(session: Session, chosen: str | None = None) -> bool:
    """Whether the follow-up switch starts on: what the user last chose for this session (kept
    in the page's address, so a reload keeps it), else how their last question was asked."""
    if chosen in ("1", "0"):
        return chosen == "1"
    return bool(session.turns) and session.turns[-1].follow_up


def document_heading(document: Document, *, llama3_served: bool) -> str:
    """The Ask page's heading. Its count is Llama 3's; against another served model (the demo)
    the budget below counts in that model's tokens, so the heading says whose tokens it shows
    rather than disagree with the budget silently."""
    unit = "tokens" if llama3_served else "Llama 3 tokens (the budget counts the served model's)"
    return f"{document.name} · {document.kind.value} · {document.section_tokens:,} {unit}"
