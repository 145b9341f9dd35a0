"""What the Ask page says about an upload and a session, computed without Streamlit: an upload
that failed (in the app's words, not the CLI's), a long list of skipped files as a count and a
list, and whether the next question is a follow-up."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class WarningView:
    headline: str
    items: tuple[str, ...] = ()  # shown in an expander when there are several


_LISTED = re.compile(r"^(\d+) files skipped: (.*?)( …)?$", re.S)


def warning_view(warning: str) -> WarningView:
    """A "N files skipped: a; b; …" warning as a headline with a list (81 skipped files in one
    paragraph cannot be read); any other warning as it is."""
    found = _LISTED.match(warning)
    if not found:
        return WarningView(warning)
    total = int(found.group(1))
    items = tuple(i.strip() for i in found.group(2).split("; ") if i.strip())
    more = total - len(items)
    headline = f"{total} files skipped (binaries, secrets, files over the limits, not text)."
    if more > 0:
        items += (f"… and {more} more, not listed",)
    return WarningView(headline, items)


def follow_up_default(session: Session, chosen: str | None = None) -> bool:
    """Whether the follow-up switch starts on: what the user last chose for this session (kept
    in the page's address, so a reload keeps it), else how their last question was asked."""
    if chosen in ("1", "0"):
        return chosen == "1"
    return bool(session.turns) and session.turns[-1].follow_up
