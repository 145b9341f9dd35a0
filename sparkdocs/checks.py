"""One finding of `sparkdocs doctor` (or of a probe it runs): what was checked, how it went
and, when it did not, the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}
