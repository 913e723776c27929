"""The Ona client and a connection under the API's rate limit (the simulator's): a 429,
HTTP or Connect `resource_exhausted`, with or without Retry-After, holds back every call
of that connection and of no other; nothing is started twice; and a 429 is back-pressure,
not an outage, for the connection's circuit breaker until it persists."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from ona_taskrun.clients.ona import OnaClient, RateLimited, Resync, RetryPolicy
from ona_taskrun.clients.ona.errors import Unavailable
from ona_taskrun.clients.throttle import Throttle
from ona_taskrun.controller.breaker import CircuitBreaker
from ona_taskrun.rules.model import FailureKind
from tests.backpressure.test_throttle import Time
from tests.ona.fakes import offline_remote
from tests.support.simulator_fixtures import SimulatorHandle
from tests.support.waits import until

OTHER_TOKEN = "another-connections-token"


def arrivals(simulator: SimulatorHandle, method: str | None = None) -> list[tuple[float, int]]:
    """(arrival time, HTTP status) of each call the simulator recorded, oldest first."""
    return [
        (datetime.fromisoformat(c["time"].replace("Z", "+00:00")).timestamp(), c["httpStatus"])
        for c in simulator.control.calls(method)
    ]


@pytest.fixture
async def ona(simulator: SimulatorHandle) -> AsyncIterator[OnaClient]:
    async with OnaClient(simulator.base_url, simulator.token, timeout=5) as client:
        yield client
    simulator.control.clear_rate_limit()


async def test_a_429_holds_back_every_call_of_the_client(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    simulator.control.set_rate_limit(1, burst=1, retry_after=1)
    await ona.list_tasks()
    # Refused (the bucket is empty), then sent again once Retry-After is over.
    reading = asyncio.create_task(ona.list_tasks())
    await until(lambda: ona.throttle.remaining() > 0, "the 429")
    began = time.monotonic()
    await ona.get_authenticated_identity()  # another call, while the first is held
    assert time.monotonic() - began >= 0.9
    await reading
    calls = arrivals(simulator)
    refused_at = next(at for at, status in calls if status == 429)
    assert all(at - refused_at >= 0.99 for at, _ in calls if at > refused_at)
    assert ona.throttle.throttled >= 1


async def test_without_retry_after_the_back_off_waits_instead_of_an_instant_retry(
    simulator: SimulatorHandle,
) -> None:
    simulator.control.set_rate_limit(1, burst=1, retry_after="none")
    # The retry policy's own draw would retry at once (0 s); the back-off does not.
    retry = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=5.0, random=lambda: 0.0)
    async with OnaClient(simulator.base_url, simulator.token, retry=retry) as client:
        await client.list_tasks()
        await client.list_tasks()  # 429 without Retry-After, then again after the back-off
    calls = arrivals(simulator, "ListTasks")
    statuses = [status for _, status in calls]
    assert statuses[:2] == [200, 429]
    assert statuses[-1] == 200
    refused_at = calls[1][0]
    assert calls[2][0] - refused_at >= 0.24, "exponential(0.5, 0, 30, jitter) waits >= 0.25 s"


async def test_one_connections_limit_does_not_hold_back_another(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    simulator.control.add_token(OTHER_TOKEN)
    simulator.control.set_rate_limit(0.2, burst=1, scope="token", retry_after=5)
    await ona.list_tasks()
    held = asyncio.create_task(ona.list_tasks())  # 429: held back 5 s
    await until(lambda: ona.throttle.remaining() > 0, "the 429")
    async with OnaClient(simulator.base_url, OTHER_TOKEN, timeout=5) as other:
        began = time.monotonic()
        await other.list_tasks()
        assert time.monotonic() - began < 1.0
        assert other.throttle.remaining() == 0
    assert ona.throttle.remaining() > 3
    held.cancel()
    await asyncio.gather(held, return_exceptions=True)


async def test_a_start_refused_with_429_started_nothing_and_is_not_repeated(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    task = simulator.control.seed_task(reference="limited", command="make sim:hang")
    simulator.control.set_rate_limit(0.05, burst=1, retry_after=30, methods=["StartTask"])
    await ona.start_task(task["id"])
    with pytest.raises(RateLimited) as refused:
        await ona.start_task(task["id"])
    assert refused.value.retry_after == 30.0
    # While the hold lasts (longer than the client waits), a start is not even sent.
    with pytest.raises(RateLimited) as held:
        await ona.start_task(task["id"])
    assert 25 < (held.value.retry_after or 0) <= 30
    assert [c["httpStatus"] for c in simulator.control.calls("StartTask")] == [200, 429]
    assert len(simulator.control.executions()) == 1


async def test_a_start_within_a_short_hold_waits_for_it(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    task = simulator.control.seed_task(reference="limited", command="make sim:hang")
    simulator.control.set_rate_limit(1, burst=1, retry_after=1, methods=["StartTask"])
    await ona.start_task(task["id"])
    with pytest.raises(RateLimited):
        await ona.start_task(task["id"])
    await ona.start_task(task["id"])  # waits out the hold, then starts
    _, (refused, _), (second, status) = arrivals(simulator, "StartTask")
    assert status == 200
    assert second - refused >= 0.99
    assert len(simulator.control.executions()) == 2


async def test_a_refused_watch_stream_waits_for_retry_after_from_its_header(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    environment = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"
    simulator.control.set_rate_limit(0.01, burst=1, retry_after=2, methods=["WatchEvents"])
    opened: list[Resync] = []

    async def watch() -> None:
        async for item in ona.watch_events(environment, idle_timeout=30):
            if isinstance(item, Resync):
                opened.append(item)

    def streams() -> list[dict[str, object]]:
        return simulator.control.calls("WatchEvents")

    watching = asyncio.create_task(watch())
    try:
        await until(lambda: len(opened) == 1, "the stream to open")
        simulator.control.disconnect_watchers()
        await until(lambda: any(c["fault"] == "rate_limit" for c in streams()), "a 429")
        simulator.control.clear_rate_limit()
        await until(lambda: streams()[-1]["fault"] is None and len(streams()) >= 3, "a stream")
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    # Connect reports the refusal in an end frame (HTTP 200): its Retry-After header is
    # honoured all the same, and no stream is asked for before it is over.
    calls = arrivals(simulator, "WatchEvents")
    assert [status for _, status in calls[:3]] == [200, 200, 200]
    assert [c["fault"] for c in streams()[:3]] == [None, "rate_limit", None]
    assert calls[2][0] - calls[1][0] >= 1.99


# ------------------------------------------------------------------ the breaker


async def test_429s_do_not_open_the_breaker_but_hold_the_runs_back() -> None:
    remote = offline_remote()
    try:
        for _ in range(10):
            remote.client.throttle.refused(time.monotonic(), 4.0)
            failure = remote.failed(
                RateLimited("slow down", method="StartTask", code="resource_exhausted")
            )
            assert failure.kind is FailureKind.RATE_LIMITED
        assert not remote.breaker.open
        assert remote.breaker.opened == 0
        # The throttle's hold is what a TaskRun waits for, with up to a second more.
        assert 3.5 < remote.breaker.wait_time() < 5.0
        # An outage still opens it.
        for _ in range(3):
            remote.failed(Unavailable("down", method="GetTask"))
        assert remote.breaker.open
    finally:
        await remote.close()


async def test_429s_that_persist_count_as_an_outage() -> None:
    remote = offline_remote()
    fake = Time()
    remote.client.throttle = Throttle(clock=fake.clock, sleep=fake.sleep)
    rate_limited = RateLimited("slow down", method="GetTask", code="resource_exhausted")
    try:
        remote.client.throttle.refused(fake.now, None)
        for _ in range(3):
            remote.failed(rate_limited)
        assert not remote.breaker.open
        fake.now += 120.0  # nothing but 429s for two minutes
        for _ in range(3):
            remote.failed(rate_limited)
        assert remote.breaker.open
    finally:
        await remote.close()


def test_the_breaker_asks_runs_to_wait_while_the_window_is_full() -> None:
    fake = Time()
    throttle = Throttle(clock=fake.clock, sleep=fake.sleep)
    breaker = CircuitBreaker(throttle=throttle, rand=lambda: 0.5, clock=fake.clock)
    assert breaker.wait_time() == 0.0
    throttle._in_flight = 4
    throttle.refused(fake.now, 1.0)  # window 2, 4 in flight
    assert breaker.wait_time() == 1.5
    fake.now += 1.0
    assert breaker.wait_time() == 0.75, "full: a short wait rather than a worker held"
    for _ in range(3):
        throttle.release()
    assert breaker.wait_time() == 0.0
