"""One finding of `sparkdocs doctor` (or of a probe it runs): what was checked, how it went
and, when it did not, the fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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
    # an engine behind a router: its figures as data for `doctor --json` (cluster.Engine.as_dict)
    engine: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": self.name, "status": str(self.status),
                                 "detail": self.detail, "fix": self.fix}
        if self.engine is not None:
            shown["engine"] = self.engine
        return shown
