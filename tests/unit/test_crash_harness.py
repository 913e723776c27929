"""Crash points belong to the test harness, not to the operator's configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tools.crashing_operator import CrashAt, crash_point

from ona_taskrun import config
from ona_taskrun.controller.checkpoints import NO_CHECKPOINTS, POINTS

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = {"ONA_API_TOKEN": "t", "WATCH_NAMESPACES": "team-a"}


def test_the_operator_reads_no_crash_point() -> None:
    cfg = config.load([], {**BASE, "ONA_TASKRUN_CRASH_POINT": "after-start"})
    assert "crash" not in " ".join(vars(cfg))


@pytest.mark.parametrize("point", POINTS)
def test_every_checkpoint_is_a_crash_point(point: str) -> None:
    assert crash_point({"ONA_TASKRUN_CRASH_POINT": point}) == point


@pytest.mark.parametrize("value", ["", "somewhere", "after"])
def test_a_wrong_crash_point_is_named(value: str) -> None:
    with pytest.raises(ValueError, match=rf"ONA_TASKRUN_CRASH_POINT={value!r} is not a checkpoint"):
        crash_point({"ONA_TASKRUN_CRASH_POINT": value})


def test_the_harness_refuses_a_wrong_point_before_starting() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ONA_TASKRUN_CRASH_POINT": "nowhere"}
    done = subprocess.run(
        [sys.executable, "-m", "tools.crashing_operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "ONA_TASKRUN_CRASH_POINT='nowhere' is not a checkpoint" in done.stderr


def test_only_the_named_checkpoint_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append((pid, sig)))
    crash = CrashAt("after-claim")
    for point in POINTS:
        if point != "after-claim":
            crash.reached(point)
    assert killed == []
    crash.reached("after-claim")
    assert len(killed) == 1
    NO_CHECKPOINTS.reached("after-claim")  # the operator's own: nothing happens
    assert len(killed) == 1
