"""Text from outside — a model's answer, a server's message, a file name — shown as itself.

Two things must never pass: terminal control sequences (an answer that clears the screen,
retitles the window or hides text with colours, in the terminal and in summary files) and
credentials written into a base URL (`http://user:pass@host`). Each has one function here, used
at the one place where such text enters (the answer stream, the error messages, the printers),
so a new field cannot skip it. Everything else is kept byte for byte: no markup is read.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

# ESC-introduced sequences: CSI (ESC [ … final), OSC (ESC ] … BEL or ESC \), DCS/SOS/PM/APC
# (ESC P/X/^/_ … ESC \), and two-character escapes (ESC + one byte). Their 8-bit C1 forms too.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"  # OSC, DCS…
    r"|\x1b[ -/]*[0-~]"  # two-character escapes (ESC 7, ESC c, ESC ( B …)
)
# An escape cut at the end of a chunk: held back until the next chunk completes it.
_OPEN_SEQUENCE = re.compile(
    r"(?:(?:\x1b\[|\x9b)[0-?]*[ -/]*|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*\x1b?"
    r"|\x1b[ -/]*)\Z")
# C0 controls but tab and newline, DEL and the C1 range; a lone carriage return (it rewrites a
# line on a terminal), while CR LF becomes LF.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MAX_HELD = 4096  # an "escape" longer than this is not one: let it through, stripped


def strip_controls(text: str) -> str:
    """`text` without terminal control sequences and control characters (tab and newline kept)."""
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


_SURROGATE = re.compile("[\ud800-\udfff]")


def whole_characters(text: str) -> str:
    """`text` with each surrogate pair joined into its character and each lone half (a JSON
    `\\ud83d` on its own, a file name's undecodable byte) made U+FFFD: such text cannot be
    encoded as UTF-8, so it could not be stored or sent."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class ControlStripper:
    """`strip_controls` for text that arrives in pieces: a sequence split between two chunks
    (ESC in one, `[31m` in the next) is removed whole, not half."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        self._held = pending = ""
        if text and "\ud800" <= text[-1] <= "\udbff":  # the first half of a pair: wait for the rest
            text, pending = text[:-1], text[-1]
        text = whole_characters(text)
        match = _OPEN_SEQUENCE.search(text)
        if match is None and text.endswith("\r"):
            text, self._held = text[:-1], "\r"  # maybe the CR of a CR LF
        elif match is not None and len(text) - match.start() <= _MAX_HELD:
            text, self._held = text[:match.start()], text[match.start():]
        self._held += pending
        return strip_controls(text)

    def flush(self) -> str:
        """What is left at the end of the stream: an unfinished sequence is dropped."""
        held, self._held = whole_characters(self._held), ""
        return "" if _OPEN_SEQUENCE.search(held) else strip_controls(held)


_SECRET_PARAMS = re.compile(r"key|token|secret|pass|auth|sig", re.IGNORECASE)
_USERINFO_IN_TEXT = re.compile(r"(?<=://)[^/\s@]+@")


def redact_url(url: str) -> str:
    """`url` as it may be shown: credentials before the host and secret-looking query values
    become `***` (`http://user:pass@host/v1` → `http://***@host/v1`). Everything before the
    last `@` (ahead of any query) is hidden, so a mistyped URL whose credentials urllib does not
    read as such (no scheme, one slash, a `/` in the password) shows none of them either."""
    base = re.split(r"[?#]", url, maxsplit=1)[0]
    at = base.rfind("@")
    if at >= 0:
        scheme_end = base.find("://", 0, at)
        start = scheme_end + 3 if scheme_end >= 0 else 0
        url = f"{url[:start]}***{url[at:]}"
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"***@{host}" if "@" in parts.netloc else parts.netloc
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs],
                              safe="*")
        return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not a URL urllib can split: hide whatever sits before an @
        return _USERINFO_IN_TEXT.sub("***@", url)


def redact_urls(text: str) -> str:
    """Any `scheme://user:pass@` inside free text (a library's exception message) hidden."""
    return _USERINFO_IN_TEXT.sub("***@", text)
