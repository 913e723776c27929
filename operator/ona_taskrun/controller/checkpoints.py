"""The named moments of the exactly-once protocols, and whoever is told of them.

Each is a moment where a crash must lose and duplicate nothing: after a claim is written
and before its call, after a call answered and before its record. The operator tells
nobody (`NO_CHECKPOINTS`): these are not settings. Crash tests and chaos run the operator
through `tools/crashing_operator.py`, which passes a `Checkpoints` that dies at one of
them as a SIGKILL would.
"""

from __future__ import annotations

from typing import Final, Protocol

AFTER_CLAIM: Final = "after-claim"
AFTER_START: Final = "after-start"
AFTER_STOP_CLAIM: Final = "after-stop-claim"
AFTER_SCHEDULE_CREATE: Final = "after-schedule-create"
AFTER_ENVIRONMENT_CLAIM: Final = "after-environment-claim"
AFTER_ENVIRONMENT_CREATE: Final = "after-environment-create"
POINTS: Final = (
    AFTER_CLAIM,
    AFTER_START,
    AFTER_STOP_CLAIM,
    AFTER_SCHEDULE_CREATE,
    AFTER_ENVIRONMENT_CLAIM,
    AFTER_ENVIRONMENT_CREATE,
)


class Checkpoints(Protocol):
    def reached(self, point: str) -> None:
        """Called as the operator passes `point` (one of POINTS)."""


class _Nobody:
    def reached(self, point: str) -> None:
        return None


NO_CHECKPOINTS: Final[Checkpoints] = _Nobody()
