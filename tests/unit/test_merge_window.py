"""How long progress may wait for the next status write, by the operator's load."""

from __future__ import annotations

import pytest

from ona_taskrun.controller.reconciler import BUSY_MERGE_FACTOR, merge_window


@pytest.mark.parametrize(
    ("first", "busy", "expected"),
    [
        (True, False, 1.0),  # the execution id: the first news goes with it
        (True, True, 1.0),  # never longer, however busy: the start latency depends on it
        (False, False, 1.0),  # progress, nothing waiting: one write per window
        (False, True, 1.0 * BUSY_MERGE_FACTOR),  # progress behind a backlog waits longer
    ],
)
def test_progress_waits_longer_only_behind_a_backlog(
    first: bool, busy: bool, expected: float
) -> None:
    assert merge_window(1.0, first=first, busy=busy) == expected


def test_no_window_stays_no_window() -> None:
    assert merge_window(0.0, first=False, busy=True) == 0.0
    assert BUSY_MERGE_FACTOR > 1
