"""An answer the user saw is kept until it is stored. Appending a turn is retried with back-off
while another process holds the store's write lock; when the store stays locked past the retry
window, or its disk is full, the turn is handed back as `TurnNotStoredError` for the face to
keep: the CLI in a recovery file (`<cache dir>/recovered/*.json`, written atomically), the app
in the browser tab's memory. `store_recovered` appends the kept turns on the next access that
succeeds, once each."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import SessionNotFoundError, StoreError, StoreLockedError
from ..files import atomic_write
from .records import _BAD_ROW, Session, Turn, turn_from_json, turn_to_json
from .sessions import SessionRows

log = logging.getLogger(__name__)

RECOVERED_FOLDER = "recovered"
RECOVERY_FORMAT = "sparkdocs-recovered-turn/1"
FIRST_PAUSE_S = 0.25
LONGEST_PAUSE_S = 8.0


@dataclass(frozen=True)
class UnstoredTurn:
    """A turn the store did not take, with the session it belongs to and why."""

    session_id: str
    owner: str
    document_name: str
    turn: Turn
    reason: str


class TurnNotStoredError(StoreError):
    """The turn could not be stored; `unstored` is what to keep, `session` the session as the
    user saw it (this turn last, in memory only)."""

    def __init__(self, message: str, *, unstored: UnstoredTurn, session: Session) -> None:
        super().__init__(message)
        self.unstored = unstored
        self.session = session


def append_kept(store: SessionRows, session: Session, turn: Turn, *, retry_s: float,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> Session:
    """Append `turn`; while the store is locked, try again after pauses that double (from
    FIRST_PAUSE_S to LONGEST_PAUSE_S) for up to `retry_s` in all. A full disk is not retried.
    Raises TurnNotStoredError, carrying the turn, when the store did not take it."""
    deadline = clock() + retry_s
    pause = FIRST_PAUSE_S
    while True:
        try:
            return store.append_turn(session.id, turn)
        except SessionNotFoundError:
            raise
        except StoreLockedError as exc:
            left = deadline - clock()
            if left <= 0:
                raise _not_stored(session, turn, exc, retried_s=retry_s) from exc
            log.info("store locked; trying again in %.2f s", min(pause, left))
            sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_PAUSE_S)
        except StoreError as exc:
            raise _not_stored(session, turn, exc, retried_s=None) from exc


def _not_stored(session: Session, turn: Turn, exc: StoreError, *,
                retried_s: float | None) -> TurnNotStoredError:
    tried = f" (tried for {retried_s:.0f} s)" if retried_s is not None else ""
    unstored = UnstoredTurn(session.id, session.owner, session.document_name, turn, str(exc))
    return TurnNotStoredError(
        f"The answer was not stored{tried}: {exc}", unstored=unstored,
        session=replace(session, turns=(*session.turns, turn)))


def recovered_folder(cache_dir: Path) -> Path:
    return cache_dir / RECOVERED_FOLDER


def private_temp_folder() -> Path | None:
    """`<temp>/sparkdocs-recovered-<uid>`: None when it exists but is not this user's own
    (a folder planted there by another user is neither written nor read: its files would go
    into this user's sessions, and what is written there would be theirs to read)."""
    folder = Path(tempfile.gettempdir()) / f"sparkdocs-recovered-{os.getuid()}"
    return folder if _private(folder, missing_ok=True) else None


def _private(folder: Path, *, missing_ok: bool = False) -> bool:
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return missing_ok
    except OSError:
        return False
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
        return True
    log.warning("%s is not this user's own folder: not used for recovered answers", folder)
    return False


def recovery_record(unstored: UnstoredTurn) -> dict[str, object]:
    return {"format": RECOVERY_FORMAT, "session": unstored.session_id, "owner": unstored.owner,
            "document": unstored.document_name, "reason": unstored.reason,
            "kept_at": time.time(), "turn": json.loads(turn_to_json(unstored.turn))}


def write_recovery_file(unstored: UnstoredTurn, folders: Sequence[Path]) -> Path:
    """Write the turn as JSON into the first of `folders` that takes it (atomically: a
    temporary file in the same folder, flushed, then renamed; readable by its owner only).
    Raises OSError with every folder's reason when none does."""
    text = json.dumps(recovery_record(unstored), ensure_ascii=False, indent=1)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{unstored.session_id}-{uuid.uuid4().hex[:8]}.json"
    problems = []
    for folder in folders:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _private(folder):
                problems.append(f"{folder}: not this user's own folder")
                continue
            return atomic_write(folder / name, text, private=True)
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror or exc}")
    raise OSError("; ".join(problems))




@dataclass(frozen=True)
class RecoveryReport:
    """What `store_recovered` did: turns stored (with their sessions), files left and why."""

    stored: tuple[tuple[Path, str], ...] = ()
    left: tuple[tuple[Path, str], ...] = field(default=())


def store_recovered(store: SessionRows, folders: Sequence[Path]) -> RecoveryReport:
    """Append every turn kept in a recovery file in `folders`, oldest first, and remove each
    file once its turn is stored (a turn already in its session is not appended again). A file
    that cannot be read, or whose session is gone, stays, with the reason; a store that is
    still unavailable stops the import, the rest left for next time."""
    stored: list[tuple[Path, str]] = []
    left: list[tuple[Path, str]] = []
    files = sorted(p for folder in folders if folder.is_dir() and _private(folder)
                   for p in folder.glob("*.json"))
    for number, path in enumerate(files):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            session_id, turn = str(record["session"]), turn_from_json(json.dumps(record["turn"]))
        except (OSError, *_BAD_ROW) as exc:
            left.append((path, f"unreadable: {exc}"))
            continue
        try:
            store.append_turn_once(session_id, turn)
        except SessionNotFoundError:
            left.append((path, f"session {session_id} is no longer in the store"))
            continue
        except StoreError as exc:
            left.extend((p, str(exc)) for p in files[number:])
            break
        stored.append((path, session_id))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return RecoveryReport(tuple(stored), tuple(left))


def store_pending(store: SessionRows, pending: Sequence[UnstoredTurn]
                  ) -> tuple[list[UnstoredTurn], list[UnstoredTurn]]:
    """Append turns kept in memory (the app's tab), once each, oldest first: (stored, still
    pending). A session deleted since is dropped from the pending with a log line."""
    stored: list[UnstoredTurn] = []
    for number, unstored in enumerate(pending):
        try:
            store.append_turn_once(unstored.session_id, unstored.turn)
        except SessionNotFoundError:
            log.warning("kept answer of deleted session %s dropped", unstored.session_id)
            continue
        except StoreError:
            return stored, list(pending[number:])
        stored.append(unstored)
    return stored, []
