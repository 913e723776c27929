"""A connection's request rate (`clients.ratelimit.TokenBucket`), on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from ona_taskrun.clients.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_burst_of_one_second_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(5.0, clock=clock, sleep=clock.sleep)

    async def go() -> list[float]:
        return [await bucket.acquire() for _ in range(15)]

    waits = asyncio.run(go())
    assert waits[:5] == [0.0] * 5  # one second's worth at once
    assert all(w == pytest.approx(0.2) for w in waits[5:])  # then 5 a second
    assert clock.now == pytest.approx(102.0)  # 15 requests: 5 at once, 10 over 2 s


def test_concurrent_waiters_leave_at_the_rate() -> None:
    clock = Clock()

    async def no_time_passes(seconds: float) -> None:
        clock.slept.append(seconds)  # all six ask at the same instant

    bucket = TokenBucket(2.0, clock=clock, sleep=no_time_passes)

    async def go() -> list[float]:
        return list(await asyncio.gather(*(bucket.acquire() for _ in range(6))))

    waits = sorted(asyncio.run(go()))
    # 2 at once, then each next one half a second later than the one before it.
    assert waits == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])


def test_a_quiet_connection_refills_up_to_its_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, clock=clock, sleep=clock.sleep)

    async def go() -> list[float]:
        await bucket.acquire()
        clock.now += 3600  # an hour of nothing
        return [await bucket.acquire() for _ in range(3)]

    assert asyncio.run(go()) == pytest.approx([0.0, 1.0, 1.0])


def test_a_new_rate_applies_to_later_requests() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, clock=clock, sleep=clock.sleep)
    bucket.set_rate(10.0)

    async def go() -> list[float]:
        return [await bucket.acquire() for _ in range(12)]

    waits = asyncio.run(go())
    assert sum(1 for w in waits if w == 0.0) == 1  # the token it held, not a new burst
    assert waits[-1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="above 0"):
        bucket.set_rate(0)
