"""The store's values and their rows: plain data and JSON, never pickles."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from ..config import LOCAL_USER
from ..documents import Document, DocumentKind, Section, SectionKind
from ..literal import whole_characters

if TYPE_CHECKING:
    from ..citations import Citation

log = logging.getLogger(__name__)


class TurnStatus(StrEnum):
    """How an answer ended. Each is shown as what it was, so a failure is never mistaken for an
    empty answer and a stop never for a broken connection."""

    FINISHED = "finished"    # the model ended the answer itself
    CUT = "cut"              # cut at the answer limit (max_tokens)
    STOPPED = "stopped"      # the user stopped it (Stop, Ctrl-C, SIGTERM); partial text kept
    BROKE_OFF = "broke off"  # the stream broke off mid-answer; partial text kept
    FAILED = "failed"        # the request failed before an answer (401, 404, 400, 503, timeout)

    @property
    def complete(self) -> bool:
        """The model gave this answer in full (or up to the limit): fit for follow-up history."""
        return self in (TurnStatus.FINISHED, TurnStatus.CUT)


@dataclass(frozen=True)
class Turn:
    """One question and how its answer ended, with the stats shown under it."""

    question: str
    answer: str
    _: KW_ONLY
    status: TurnStatus = TurnStatus.FINISHED
    error: str | None = None  # what stopped or failed it, in words a user can act on
    follow_up: bool = False
    finish_reason: str | None = None
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    asked_at: float = 0.0
    # The answer's quotes with their verdicts, checked once when the turn was recorded; None
    # for a turn stored before verdicts were kept (checked when it is shown).
    citations: tuple[Citation, ...] | None = None
    # An answer from every part of a document beyond the context: what was read, in words
    # ("all 300 pages, in 4 parts", or the parts that were not); None for one request.
    read: str | None = None
    parts: tuple[PartRecord, ...] = ()

    @property
    def interrupted(self) -> bool:
        """The answer did not end by itself (stopped, broke off or failed)."""
        return self.status in (TurnStatus.STOPPED, TurnStatus.BROKE_OFF, TurnStatus.FAILED)


@dataclass(frozen=True)
class PartRecord:
    """One part of an answer read from every page: what it covered and what it answered (kept
    with the turn, so nothing a part answered is lost if the merge fails)."""

    number: int
    label: str
    status: str  # "read" or "not read"
    answer: str = ""
    error: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True)
class SessionDocument:
    """One document of a session that holds several: its store key and the name the prompt
    gives it."""

    key: str
    name: str
    sections: int


@dataclass(frozen=True)
class Session:
    id: str
    document_key: str
    document_name: str
    title: str
    kept_sections: tuple[int, ...] | None = None
    turns: tuple[Turn, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    owner: str = LOCAL_USER
    documents: tuple[SessionDocument, ...] = ()  # in the order added; () for one document
    pages_chosen: bool | None = None  # the user chose `kept_sections` (None: not recorded)

    def with_turn(self, turn: Turn) -> Session:
        """A copy with one more turn, for display only: the store appends with `append_turn`."""
        return replace(self, turns=self.turns + (turn,), updated_at=time.time())


@dataclass(frozen=True)
class DocumentInfo:
    key: str
    name: str
    kind: str
    tokens: int
    sections: int
    stored_at: float = field(default=0.0)


def document_to_json(document: Document) -> str:
    return json.dumps({
        "name": document.name, "kind": document.kind.value, "content_hash": document.content_hash,
        "sections": [{"kind": s.kind.value, "title": s.title, "text": s.text, "tokens": s.tokens}
                     for s in document.sections],
        "warnings": list(document.warnings), "source_bytes": document.source_bytes,
        "counted": document.counted, "skipped": list(document.skipped),
    }, ensure_ascii=False, separators=(",", ":"))


def document_from_json(text: str) -> Document:
    data = json.loads(text)
    return Document(
        name=str(data["name"]), kind=DocumentKind(data["kind"]),
        content_hash=str(data["content_hash"]),
        sections=tuple(Section(SectionKind(s["kind"]), str(s["title"]), str(s["text"]),
                               int(s["tokens"])) for s in data["sections"]),
        warnings=tuple(str(w) for w in data["warnings"]), source_bytes=int(data["source_bytes"]),
        counted=bool(data["counted"]), skipped=tuple(str(w) for w in data.get("skipped", ())))



_TURN_FIELDS = {f.name for f in fields(Turn)} - {"_"}


def turn_to_json(turn: Turn) -> str:
    record = {**asdict(replace(turn, citations=None)), "status": turn.status.value,
              "citations": (None if turn.citations is None
                            else [c.as_dict(full=True) for c in turn.citations])}
    # text from a user, a file name or a server may hold half of a character: stored whole
    return whole_characters(json.dumps(record, ensure_ascii=False, separators=(",", ":")))


def turn_from_json(text: str) -> Turn:
    """A stored turn. Its verdicts and parts are extras: when they cannot be read (a newer or
    damaged row) the turn is still read, its verdicts checked again when shown."""
    data = json.loads(text)
    known = {k: v for k, v in data.items() if k in _TURN_FIELDS}  # a newer version may add some
    known["status"] = TurnStatus(known.get("status", TurnStatus.FINISHED.value))
    from ..citations import citations_from_records  # only where turns are read: not `count`

    known["citations"] = _extra(lambda: citations_from_records(known["citations"])
                                if known.get("citations") is not None else None, None)
    no_parts: tuple[PartRecord, ...] = ()
    known["parts"] = _extra(lambda: tuple(PartRecord(**part) for part in known.get("parts") or ()),
                            no_parts)
    return Turn(**known)


def _extra(read: Callable[[], _T], fallback: _T) -> _T:
    try:
        return read()
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        log.warning("a stored turn's extra fields could not be read (%s); left out", exc)
        return fallback


_T = TypeVar("_T")
_BAD_ROW = (ValueError, KeyError, TypeError)  # json.JSONDecodeError is a ValueError
