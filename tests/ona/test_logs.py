"""Reading execution logs: retries, token renewal, and the client against the simulator."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from ona_taskrun.clients.ona import OnaClient, Unauthenticated, Unavailable
from ona_taskrun.clients.ona.logs import read_log
from tests.support.simulator_fixtures import SimulatorHandle

LOG = ["one", "two", "three", "four"]


class FakeLog:
    """A log endpoint that fails as scripted: each open takes the next script entry,
    ("ok", n) to serve n lines then fail transiently (None: all, then end), or an error."""

    def __init__(self, script: list[tuple[str, int | None]]) -> None:
        self.script = script
        self.opened_with: list[str] = []

    async def open(self, token: str) -> AsyncIterator[str]:
        self.opened_with.append(token)
        kind, count = self.script.pop(0) if self.script else ("ok", None)
        if kind == "502":
            raise Unavailable("HTTP 502", method="ReadLog", http_status=502)
        if kind == "401":
            raise Unauthenticated("HTTP 401", method="ReadLog", http_status=401)
        for line in LOG[:count]:
            yield line
        if count is not None:
            raise Unavailable("connection dropped", method="ReadLog")


class Tokens:
    def __init__(self) -> None:
        self.asked: list[bool] = []

    async def __call__(self, renew: bool) -> str:
        self.asked.append(renew)
        return f"token-{len(self.asked)}"


async def collect(fake: FakeLog, tokens: Tokens, sleeps: list[float]) -> list[str]:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return [line async for line in read_log(fake.open, tokens, sleep=sleep)]


async def test_a_502_is_retried_three_times_one_second_apart() -> None:
    sleeps: list[float] = []
    fake = FakeLog([("502", 0), ("502", 0), ("502", 0)])
    assert await collect(fake, Tokens(), sleeps) == LOG
    assert sleeps == [1.0, 1.0, 1.0]

    sleeps.clear()
    failing = FakeLog([("502", 0)] * 4)
    with pytest.raises(Unavailable):
        await collect(failing, Tokens(), sleeps)
    assert sleeps == [1.0, 1.0, 1.0]


async def test_a_dropped_connection_reopens_without_repeating_lines() -> None:
    sleeps: list[float] = []
    fake = FakeLog([("ok", 2), ("ok", 3)])
    assert await collect(fake, Tokens(), sleeps) == LOG
    assert len(sleeps) == 2


async def test_a_refused_token_is_renewed_once() -> None:
    tokens = Tokens()
    fake = FakeLog([("401", 0)])
    assert await collect(fake, tokens, []) == LOG
    assert tokens.asked == [False, True]
    assert fake.opened_with == ["token-1", "token-2"]

    tokens = Tokens()
    with pytest.raises(Unauthenticated):
        await collect(FakeLog([("401", 0), ("401", 0)]), tokens, [])
    assert tokens.asked == [False, True]


async def test_client_reads_a_log_from_the_simulator(simulator: SimulatorHandle) -> None:
    environment = str(uuid.uuid4())
    task = simulator.control.seed_task(
        reference="logs",
        environment_id=environment,
        command='x sim:pending=20ms sim:duration=100ms sim:log_lines=2 sim:fail="boom"',
    )
    async with OnaClient(simulator.base_url, simulator.token) as ona:
        execution = await ona.start_task(task["id"])

        deadline = time.monotonic() + 10
        while not (current := await ona.get_task_execution(execution.id)).is_final:
            assert time.monotonic() < deadline, "the execution did not end"
            await asyncio.sleep(0.05)
        url = current.status.log_url
        token = await ona.create_environment_logs_token(environment)
        lines = [line async for line in ona.open_log(url, token)]
        assert lines[-1].endswith("] error: boom")
        assert len(lines) == 4

        other = await ona.create_environment_logs_token(str(uuid.uuid4()))
        with pytest.raises(Unauthenticated) as refused:
            [line async for line in ona.open_log(url, other)]
        assert other not in str(refused.value)
        assert simulator.token not in str(refused.value)
        assert refused.value.http_status == 401
