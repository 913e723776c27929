"""What the Ona client and the execution tracker tell their observers (the operator's
metrics count it): each unary attempt with its result and latency, and each WatchEvents
stream the tracker opens again. The metrics' side is in tests/unit/test_metrics.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from ona_taskrun.clients.ona import (
    NotFound,
    OnaClient,
    OutcomeUnknown,
    Resync,
    Unavailable,
    WatchItem,
)
from ona_taskrun.controller.tracker import ExecutionTracker
from tests.ona.fakes import BASE_URL, TOKEN, FakeSleep, Recorder, client, connect_error, policy
from tests.support.waits import until


@dataclass
class Seen:
    """An observer that keeps what it is told."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def on_request(self, method: str, code: str, seconds: float) -> None:
        self.requests.append((method, code))
        self.seconds.append(seconds)


def execution(execution_id: str) -> dict[str, object]:
    return {"taskExecution": {"id": execution_id, "status": {"statusVersion": "1"}}}


async def test_each_attempt_is_told_with_its_result_and_latency() -> None:
    seen = Seen()
    server = Recorder(
        [
            connect_error(503, "unavailable"),
            httpx.Response(200, json=execution("e1")),
            connect_error(404, "not_found"),
            connect_error(503, "unavailable"),
        ]
    )
    async with client(server, observer=seen) as ona:
        await ona.get_task_execution("e1")  # one retry: two attempts
        with pytest.raises(NotFound):
            await ona.get_task_execution("e2")
        with pytest.raises(OutcomeUnknown):
            await ona.start_task("t1")  # may have arrived: never repeated
    assert seen.requests == [
        ("GetTaskExecution", "unavailable"),
        ("GetTaskExecution", "ok"),
        ("GetTaskExecution", "not_found"),
        ("StartTask", "unavailable"),
    ]
    assert all(s >= 0 for s in seen.seconds)


async def test_an_answer_never_sent_is_told_by_its_code() -> None:
    seen = Seen()
    server = Recorder([httpx.ConnectError("refused")])
    sleep = FakeSleep()
    async with client(server, retry=policy(sleep, max_attempts=2), observer=seen) as ona:
        with pytest.raises(Unavailable):
            await ona.get_task_execution("e1")
    assert seen.requests == [("GetTaskExecution", "unavailable")] * 2


async def test_a_call_its_caller_gave_up_on_is_told_as_canceled() -> None:
    seen = Seen()
    arrived = asyncio.Event()

    async def never(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    ona = OnaClient(
        BASE_URL,
        TOKEN,
        transport=httpx.MockTransport(never),
        observer=seen,
        retry=policy(FakeSleep()),
    )
    async with ona:
        call = asyncio.create_task(ona.get_task_execution("e1"))
        await arrived.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert seen.requests == [("GetTaskExecution", "canceled")]


class Streams:
    """A client whose one WatchEvents stream opens, is opened again twice, then stays."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def watch_events(self, environment_id: str) -> AsyncIterator[WatchItem]:
        yield Resync(reconnect=False)
        yield Resync(reconnect=True, reason="server ended the stream")
        yield Resync(reconnect=True, reason="connection lost")
        self.opened.set()
        await asyncio.Event().wait()


async def test_the_tracker_tells_each_stream_opened_again_but_not_the_first() -> None:
    streams = Streams()
    reconnects: list[None] = []
    tracker = ExecutionTracker(
        streams,  # type: ignore[arg-type]
        lambda key: None,
        poll_interval=60.0,
        on_watch_reconnect=lambda: reconnects.append(None),
    )
    tracker.track("e1", "ns/run", "t1", "env-1")
    try:
        await until(streams.opened.is_set, "the stream to be opened a third time")
        assert len(reconnects) == 2
    finally:
        tracker.untrack("e1")
