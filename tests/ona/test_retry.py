"""Which calls are repeated, how often and how far apart."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from ona_taskrun.clients.ona import (
    NotFound,
    OutcomeUnknown,
    RateLimited,
    RetryPolicy,
    Unavailable,
    parse_retry_after,
)

from .fakes import FakeSleep, Recorder, client, connect_error, execution_json, policy

OK_EXECUTION = httpx.Response(200, json={"taskExecution": execution_json("x1")})


async def test_reads_retry_with_doubling_delays_then_succeed() -> None:
    sleep = FakeSleep()
    server = Recorder([connect_error(503, "unavailable"), httpx.ReadTimeout("slow"), OK_EXECUTION])
    async with client(server, sleep) as ona:
        execution = await ona.get_task_execution("x1")
    assert execution.id == "x1"
    assert server.methods == ["GetTaskExecution"] * 3
    assert sleep.delays == [0.5, 1.0]


async def test_delays_are_capped_and_attempts_bounded() -> None:
    sleep = FakeSleep()
    server = Recorder([connect_error(500, "internal")])
    retry = policy(sleep, max_attempts=6, base_delay=1.0, max_delay=3.0)
    async with client(server, retry=retry) as ona:
        with pytest.raises(Unavailable):
            await ona.list_task_executions()
    assert len(server.requests) == 6
    assert sleep.delays == [1.0, 2.0, 3.0, 3.0, 3.0]


async def test_delays_are_fully_jittered() -> None:
    sleep = FakeSleep()
    draws = iter([0.0, 0.25, 0.9])
    server = Recorder([connect_error(503, "unavailable")])
    retry = policy(sleep, max_attempts=4, base_delay=1.0, random=lambda: next(draws))
    async with client(server, retry=retry) as ona:
        with pytest.raises(Unavailable):
            await ona.get_task("t1")
    assert sleep.delays == pytest.approx([0.0, 0.5, 3.6])


async def test_retry_after_is_a_floor_for_the_delay() -> None:
    sleep = FakeSleep()
    server = Recorder(
        [connect_error(429, "resource_exhausted", **{"Retry-After": "7"}), OK_EXECUTION]
    )
    async with client(server, sleep) as ona:
        await ona.get_task_execution("x1")
    assert sleep.delays == [7.0]


async def test_retry_after_beyond_the_cap_is_left_to_the_caller() -> None:
    sleep = FakeSleep()
    server = Recorder([connect_error(429, "resource_exhausted", **{"Retry-After": "120"})])
    async with client(server, sleep) as ona:
        with pytest.raises(RateLimited) as caught:
            await ona.get_task_execution("x1")
    assert caught.value.retry_after == 120.0
    assert sleep.delays == []
    assert len(server.requests) == 1


async def test_definite_refusals_are_not_retried() -> None:
    sleep = FakeSleep()
    server = Recorder([connect_error(404, "not_found")])
    async with client(server, sleep) as ona:
        with pytest.raises(NotFound):
            await ona.get_task_execution("x1")
    assert len(server.requests) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("server disconnected without sending a response"),
        connect_error(500, "internal"),
        connect_error(502, "unavailable"),
        connect_error(503, "unavailable"),
        connect_error(504, "deadline_exceeded"),
        httpx.Response(503, text="upstream connect error or disconnect/reset before headers"),
    ],
)
async def test_start_task_is_never_repeated_once_it_may_have_been_sent(
    failure: httpx.Response | Exception,
) -> None:
    sleep = FakeSleep()
    server = Recorder([failure, httpx.Response(200, json={"taskExecution": execution_json("x")})])
    async with client(server, sleep) as ona:
        with pytest.raises(OutcomeUnknown) as caught:
            await ona.start_task("t1")
    assert server.methods == ["StartTask"]
    assert sleep.delays == []
    assert caught.value.method == "StartTask"
    assert "may have reached the server" in str(caught.value)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("connection refused"), httpx.ConnectTimeout("connect timed out")],
)
async def test_start_task_is_retried_when_it_was_never_sent(failure: Exception) -> None:
    sleep = FakeSleep()
    server = Recorder([failure, httpx.Response(200, json={"taskExecution": execution_json("x")})])
    async with client(server, sleep) as ona:
        execution = await ona.start_task("t1")
    assert execution.id == "x"
    assert server.methods == ["StartTask", "StartTask"]
    assert server.bodies() == [{"id": "t1"}, {"id": "t1"}]
    assert sleep.delays == [0.5]


async def test_start_task_refused_with_429_is_raised_without_retry() -> None:
    sleep = FakeSleep()
    server = Recorder([connect_error(429, "resource_exhausted", **{"Retry-After": "2"})])
    async with client(server, sleep) as ona:
        with pytest.raises(RateLimited) as caught:
            await ona.start_task("t1")
    assert caught.value.retry_after == 2.0
    assert len(server.requests) == 1
    assert sleep.delays == []


async def test_create_task_is_not_repeated_after_a_timeout() -> None:
    server = Recorder([httpx.ReadTimeout("read timed out")])
    async with client(server) as ona:
        with pytest.raises(OutcomeUnknown):
            await ona.create_task("env", "build", "make", reference="ns/run")
    assert server.methods == ["CreateTask"]


async def test_create_task_is_retried_when_it_was_never_sent() -> None:
    server = Recorder(
        [httpx.ConnectError("refused"), httpx.Response(200, json={"task": {"id": "t9"}})]
    )
    async with client(server) as ona:
        task = await ona.create_task("env", "build", "make", reference="ns/run")
    assert task.id == "t9"
    assert server.methods == ["CreateTask", "CreateTask"]


async def test_stop_and_delete_are_retried_because_repeating_them_is_harmless() -> None:
    sleep = FakeSleep()
    server = Recorder(
        [
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json={}),
            connect_error(503, "unavailable"),
            httpx.Response(200, json={}),
        ]
    )
    async with client(server, sleep) as ona:
        await ona.stop_task_execution("x1")
        await ona.delete_task("t1")
    assert server.methods == [
        "StopTaskExecution",
        "StopTaskExecution",
        "DeleteTask",
        "DeleteTask",
    ]
    assert len(sleep.delays) == 2


async def test_delete_of_a_missing_task() -> None:
    server = Recorder([connect_error(404, "not_found")])
    async with client(server) as ona:
        await ona.delete_task("t1", missing_ok=True)
        with pytest.raises(NotFound):
            await ona.delete_task("t1")


def test_policy_validates_its_numbers() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay=-1)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        (" 1.5 ", 1.5),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("-3", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_parsing(header: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


def garbled_gzip(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"not gzip at all", headers={"content-encoding": "gzip"})


async def test_undecodable_body_is_retried_for_reads_and_unknown_for_start() -> None:
    sleep = FakeSleep()
    server = Recorder([garbled_gzip, garbled_gzip, OK_EXECUTION])
    async with client(server, sleep) as ona:
        assert (await ona.get_task_execution("x1")).id == "x1"
    assert len(sleep.delays) == 2
    start = Recorder([garbled_gzip])
    async with client(start) as ona:
        with pytest.raises(OutcomeUnknown) as caught:
            await ona.start_task("t1")
    assert isinstance(caught.value.__cause__, httpx.DecodingError)
    assert len(start.requests) == 1


def test_a_long_outage_keeps_the_delay_at_its_cap() -> None:
    # A stream that keeps failing counts its failures without end; the delay stays capped
    # rather than overflowing after a thousand of them.
    retry = RetryPolicy(max_delay=10.0, random=lambda: 0.5)
    assert retry.backoff(5_000) == 5.0
