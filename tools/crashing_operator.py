"""`taskrun-operator` that dies at one checkpoint, as a SIGKILL would: for crash tests and chaos.

    ONA_TASKRUN_CRASH_POINT=after-claim python -m tools.crashing_operator [operator flags]

The crash point is this harness's setting, not the operator's: the operator only names its
checkpoints (`ona_taskrun.controller.checkpoints`) and tells nobody of them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from ona_taskrun.__main__ import main as operator_main
from ona_taskrun.controller.checkpoints import POINTS

SETTING = "ONA_TASKRUN_CRASH_POINT"
log = logging.getLogger("ona_taskrun.crash")


class CrashAt:
    """Kills this process when the operator reaches `point`."""

    def __init__(self, point: str) -> None:
        self.point = point

    def reached(self, point: str) -> None:
        if point == self.point:
            log.warning("crash point %s reached: killing the operator", point)
            os.kill(os.getpid(), signal.SIGKILL)


def crash_point(env: Mapping[str, str]) -> str:
    """The checkpoint named by ONA_TASKRUN_CRASH_POINT; ValueError names a wrong one."""
    point = env.get(SETTING, "").strip()
    if point not in POINTS:
        known = ", ".join(POINTS)
        raise ValueError(f"{SETTING}={point!r} is not a checkpoint (one of: {known})")
    return point


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    try:
        point = crash_point(os.environ if env is None else env)
    except ValueError as exc:
        print(f"crashing_operator: {exc}", file=sys.stderr)
        return 2
    return operator_main(argv, checkpoints=CrashAt(point))


if __name__ == "__main__":
    sys.exit(main())
