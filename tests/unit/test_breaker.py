"""The shared circuit breaker: calls pause after repeated API trouble, one probe decides."""

from __future__ import annotations

import pytest

from ona_taskrun.controller.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    # rand() == 1.0: the full pause, no jitter below it, so the table is exact.
    return CircuitBreaker(
        threshold=3, base=1.0, cap=30.0, probe_timeout=15.0, clock=clock, rand=lambda: 1.0
    )


def test_closed_until_the_threshold_of_failures_in_a_row() -> None:
    clock = Clock()
    b = breaker(clock)
    b.record(ok=False)
    b.record(ok=False)
    assert b.wait_time() == 0.0
    b.record(ok=True)  # an answer resets the count
    b.record(ok=False)
    b.record(ok=False)
    assert not b.open
    assert b.wait_time() == 0.0


@pytest.mark.parametrize(
    ("failures", "pause"),
    [(3, 1.0), (4, 2.0), (5, 4.0), (7, 16.0), (8, 30.0), (20, 30.0)],
)
def test_the_pause_grows_and_is_capped(failures: int, pause: float) -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(failures):
        b.record(ok=False)
    assert b.open
    assert b.wait_time() == pytest.approx(pause + 1.0)  # plus up to 1 s of spread
    assert b.opened == 1


def test_after_the_pause_one_probe_goes_and_the_rest_wait_for_its_answer() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(ok=False)
    clock.now += 1.5
    assert b.wait_time() == 0.0  # the probe
    assert b.wait_time() > 0.0  # everyone else
    b.record(ok=True)
    assert not b.open
    assert b.wait_time() == 0.0


def test_a_failed_probe_opens_it_again_for_longer() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(ok=False)
    clock.now += 1.5
    assert b.wait_time() == 0.0
    b.record(ok=False)
    assert b.wait_time() == pytest.approx(2.0 + 1.0)


def test_a_probe_that_never_answers_is_replaced_after_its_timeout() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(ok=False)
    clock.now += 1.5
    assert b.wait_time() == 0.0
    clock.now += 16.0
    assert b.wait_time() == 0.0  # a new probe
