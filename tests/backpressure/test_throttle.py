"""The throttle's decisions after 429s, on a clock of its own: how long requests are held
back (Retry-After, capped, or the project's one back-off formula), how many may be in
flight, when a 429 streak ends, and when 429s have persisted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from ona_taskrun.clients.throttle import Held, Throttle
from ona_taskrun.rules.backoff import exponential

DRAW = 0.5  # every random draw


@dataclass
class Time:
    """A clock that only sleeping moves."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Seen:
    throttled: list[tuple[str, float]] = field(default_factory=list)
    waited: list[tuple[str, float]] = field(default_factory=list)

    def on_throttled(self, name: str, hold: float) -> None:
        self.throttled.append((name, hold))

    def on_waited(self, name: str, seconds: float) -> None:
        self.waited.append((name, seconds))


def make(time: Time, seen: Seen | None = None, **settings: float) -> Throttle:
    return Throttle(
        "conn",
        seen or Seen(),
        clock=time.clock,
        sleep=time.sleep,
        rand=lambda: DRAW,
        **settings,
    )


async def test_retry_after_holds_back_every_later_request() -> None:
    time, seen = Time(), Seen()
    throttle = make(time, seen)
    sent = await throttle.admit()
    assert throttle.refused(sent, 3.0) == 3.0
    throttle.release()
    assert throttle.remaining() == 3.0
    let_go = await throttle.admit()
    assert let_go == 1003.0, "not a moment sooner than the server asked"
    assert time.slept == [3.0]
    assert seen.throttled == [("conn", 3.0)]
    assert seen.waited == [("conn", 3.0)]
    assert throttle.waited == 3.0


@pytest.mark.parametrize(
    ("retry_after", "hold"),
    [(3600.0, 60.0), (61.0, 60.0), (0.1, 0.5), (2.5, 2.5)],
    ids=["an-hour-is-capped", "just-above-the-cap", "too-short-to-take-literally", "as-asked"],
)
async def test_retry_after_is_bounded(retry_after: float, hold: float) -> None:
    throttle = make(Time())
    assert throttle.refused(await throttle.admit(), retry_after) == hold


async def test_without_retry_after_the_back_off_doubles_per_round_up_to_its_cap() -> None:
    time = Time()
    throttle = make(time)
    holds = []
    for _ in range(9):
        sent = await throttle.admit()
        holds.append(throttle.refused(sent, None))
        throttle.release()
    # The project's one formula, jittered with the same draw.
    assert holds == [exponential(0.5, n, 30.0, jitter=DRAW) for n in range(9)]
    assert holds[-1] == 30.0 * 0.75
    # Each hold was slept through before the next request.
    assert time.slept == holds[:-1]


async def test_an_answer_ends_the_streak() -> None:
    throttle = make(Time())
    for _ in range(3):
        sent = await throttle.admit()
        throttle.refused(sent, None)
        throttle.release()
    sent = await throttle.admit()
    throttle.answered(sent)
    throttle.release()
    assert throttle.refused(await throttle.admit(), None) == exponential(0.5, 0, 30, jitter=DRAW)


async def test_one_round_of_429s_is_one_step_however_many_were_in_flight() -> None:
    throttle = make(Time())
    sent = [await throttle.admit() for _ in range(8)]
    holds = [throttle.refused(at, None) for at in sent]
    assert holds == [exponential(0.5, 0, 30, jitter=DRAW)] * 8
    assert throttle.window == 4, "halved once, from the 8 in flight"
    # A longer Retry-After among them still lengthens the hold.
    throttle.refused(sent[0], 5.0)
    assert throttle.remaining() == 5.0
    assert throttle.window == 4


async def test_the_window_halves_per_round_and_never_closes() -> None:
    throttle = make(Time())
    sent = [await throttle.admit() for _ in range(8)]
    throttle.refused(sent[0], None)
    for _ in sent:
        throttle.release()
    windows = []
    for _ in range(4):
        at = await throttle.admit()
        throttle.refused(at, None)
        throttle.release()
        windows.append(throttle.window)
    assert windows == [1, 1, 1, 1]  # min(4, 1 in flight) / 2, at least one


async def test_requests_past_the_window_wait_for_a_place_in_order() -> None:
    time = Time()
    throttle = make(time)
    sent = [await throttle.admit() for _ in range(4)]
    throttle.refused(sent[0], 1.0)  # window 2
    time.now += 1.0  # the hold is over: only the window holds requests back now
    gone: list[int] = []

    async def request(index: int) -> None:
        await throttle.admit()
        gone.append(index)

    for _ in sent:
        throttle.release()
    waiting = [asyncio.create_task(request(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert gone == [0, 1], "two in flight at once"
    assert throttle.busy
    throttle.release()
    await asyncio.sleep(0.01)
    assert gone == [0, 1, 2]
    for _ in range(2):
        throttle.release()
    await asyncio.sleep(0.01)
    assert gone == [0, 1, 2, 3, 4]
    await asyncio.gather(*waiting)
    assert time.slept == []


async def test_answers_widen_the_window_and_a_quiet_spell_lifts_it() -> None:
    time = Time()
    throttle = make(time)
    sent = [await throttle.admit() for _ in range(8)]
    throttle.refused(sent[0], None)
    for _ in sent:
        throttle.release()
    assert throttle.window == 4
    for _ in range(5):  # answers within a second of the 429 (after its hold)
        at = await throttle.admit()
        throttle.answered(at)
        throttle.release()
    assert throttle.window == 4
    for expected in (5, 6):  # then one more place per second of answers
        time.now += 1.0
        throttle.answered(await throttle.admit())
        throttle.release()
        assert throttle.window == expected
    time.now += 27.0
    assert throttle.window == 6
    time.now += 1.0  # 30 s without a 429
    assert throttle.window is None
    assert not throttle.busy


async def test_a_caller_that_may_not_wait_that_long_is_told_the_time_left() -> None:
    time = Time()
    throttle = make(time)
    throttle.refused(await throttle.admit(), 8.0)
    throttle.release()
    with pytest.raises(Held) as held:
        await throttle.admit(max_wait=5.0)
    assert held.value.remaining == 8.0
    assert time.slept == []
    # Within its bound it waits.
    time.now += 4.0
    assert await throttle.admit(max_wait=5.0) == 1008.0


async def test_a_hold_slept_through_already_is_not_slept_again() -> None:
    time = Time()
    throttle = make(time)
    throttle.refused(await throttle.admit(), 2.0)
    throttle.release()
    hold = throttle.hold_id
    await throttle.admit(waited_out=hold)
    assert time.slept == []
    throttle.release()
    time.now += 1.0
    throttle.refused(time.now, 2.0)  # a new 429: a hold until later
    await throttle.admit(waited_out=hold)
    assert time.slept == [2.0]


async def test_429s_persist_only_when_nothing_else_comes() -> None:
    time = Time()
    throttle = make(time)
    for _ in range(4):
        throttle.refused(await throttle.admit(), 30.0)
        throttle.release()
    assert time.now - 1000.0 == 90.0
    time.now += 29.0
    assert not throttle.persistent
    time.now += 1.0  # two minutes since the first 429, and nothing else since
    assert throttle.persistent
    at = await throttle.admit()
    throttle.answered(at)
    throttle.release()
    assert not throttle.persistent


async def test_a_cancelled_wait_gives_its_place_back() -> None:
    throttle = make(Time())
    sent = [await throttle.admit() for _ in range(2)]
    throttle.refused(sent[0], None)  # window 1
    first = asyncio.create_task(throttle.admit())
    second = asyncio.create_task(throttle.admit())
    await asyncio.sleep(0.01)
    throttle.release()
    throttle.release()  # a place kept for `first`, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1.0)


def test_delays_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Throttle(max_retry_after=0)
