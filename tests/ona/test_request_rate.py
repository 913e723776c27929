"""A connection's own request rate (spec.limits.requestsPerSecond): its client sends no
more than its burst and then its rate, as the simulator records the calls, and never
draws a 429 from an API that allows more; another connection's client is not slowed."""

from __future__ import annotations

import asyncio
from datetime import datetime

from ona_taskrun.clients.ona import OnaClient
from ona_taskrun.clients.ratelimit import TokenBucket
from tests.support.simulator_fixtures import SimulatorHandle


def arrival_times(simulator: SimulatorHandle) -> list[float]:
    return sorted(
        datetime.fromisoformat(c["time"].replace("Z", "+00:00")).timestamp()
        for c in simulator.control.calls()
    )


async def test_a_connections_calls_leave_at_its_rate(simulator: SimulatorHandle) -> None:
    simulator.control.clear_calls()
    async with OnaClient(
        simulator.base_url, simulator.token, timeout=5, rate=TokenBucket(5.0)
    ) as limited:
        await asyncio.gather(*(limited.get_authenticated_identity() for _ in range(15)))
    times = arrival_times(simulator)
    assert len(times) == 15
    # 5 at once (one second's worth), then 10 more at 5 a second: about 2 s in all.
    assert times[-1] - times[0] >= 1.5  # unlimited, 15 calls take a tenth of that
    for start in times:
        in_a_second = sum(1 for t in times if start <= t < start + 1.0)
        assert in_a_second <= 5 + 5 + 1  # the burst, a second's rate, and a clock tick
    assert limited.throttle.waited > 0  # the waits are told like a throttle's
    assert all(c["httpStatus"] == 200 for c in simulator.control.calls())


async def test_another_connection_is_not_held_back(simulator: SimulatorHandle) -> None:
    loop = asyncio.get_running_loop()
    async with (
        OnaClient(simulator.base_url, simulator.token, timeout=5, rate=TokenBucket(1.0)) as slow,
        OnaClient(simulator.base_url, simulator.token, timeout=5, rate=TokenBucket(50.0)) as fast,
    ):
        slow_calls = asyncio.gather(*(slow.get_authenticated_identity() for _ in range(4)))
        began = loop.time()
        await asyncio.gather(*(fast.get_authenticated_identity() for _ in range(20)))
        assert loop.time() - began < 1.0  # not behind the slow connection's 3 s of waits
        await slow_calls
