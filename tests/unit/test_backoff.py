"""The one back-off formula: a base doubled once per failure up to a cap, spread by a
random draw; and the wait before an outage's call is tried again."""

from __future__ import annotations

import pytest

from ona_taskrun.rules import backoff


@pytest.mark.parametrize(
    ("base", "doublings", "cap", "expected"),
    [
        (10.0, 0, 300.0, 10.0),
        (10.0, 1, 300.0, 20.0),
        (10.0, 4, 300.0, 160.0),
        (10.0, 5, 300.0, 300.0),
        (0.5, -1, 30.0, 0.5),
        (2.0, 10_000, 60.0, 60.0),
    ],
)
def test_backoff_doubles_up_to_its_cap(
    base: float, doublings: int, cap: float, expected: float
) -> None:
    assert backoff.exponential(base, doublings, cap) == expected


def test_backoff_jitter_spreads_over_the_upper_half() -> None:
    assert backoff.exponential(4.0, 2, 60.0, jitter=0.0) == 8.0
    assert backoff.exponential(4.0, 2, 60.0, jitter=0.5) == 12.0
    assert backoff.exponential(4.0, 2, 60.0, jitter=0.999) == pytest.approx(15.992)


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(None, 5.0), (0.0, 5.0), (0.1, 0.5), (42.0, 42.0)]
)
def test_a_retry_after_replaces_the_default_wait(
    retry_after: float | None, expected: float
) -> None:
    assert backoff.after(retry_after, 5.0) == expected
