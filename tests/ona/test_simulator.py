"""OnaClient against the project's simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import pytest

from ona_taskrun.clients.ona import (
    Conflict,
    InvalidArgument,
    NotFound,
    OnaClient,
    OnaError,
    OutcomeUnknown,
    PermissionDenied,
    ResourceEvent,
    ResourceOperation,
    Resync,
    Unauthenticated,
    WatchItem,
)
from ona_taskrun.clients.ona.watch import Framing
from tests.support.simulator_fixtures import SimulatorHandle

from .fakes import FakeSleep, policy

DEADLINE_S = 15.0
T = TypeVar("T")


def new_env() -> str:
    return str(uuid.uuid4())


def seed(simulator: SimulatorHandle, env: str, command: str = "run # sim:hang") -> str:
    task = simulator.control.seed_task(
        environment_id=env, reference=f"ref-{uuid.uuid4()}", name="t", command=command
    )
    return str(task["id"])


def ona(simulator: SimulatorHandle, sleep: FakeSleep | None = None, **kwargs: Any) -> OnaClient:
    kwargs.setdefault("retry", policy(sleep or FakeSleep()))
    return OnaClient(simulator.base_url, kwargs.pop("token", simulator.token), **kwargs)


async def eventually(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """Re-read until `ok` holds, failing at the deadline with the last value seen."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = await read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {DEADLINE_S}s; last: {value!r}")
        await asyncio.sleep(0.05)


async def test_start_get_stop(simulator: SimulatorHandle) -> None:
    env = new_env()
    task_id = seed(simulator, env)
    async with ona(simulator) as client:
        started = await client.start_task(task_id)
        assert started.metadata.task_id == task_id
        assert started.metadata.environment_id == env
        assert not started.is_final
        fetched = await client.get_task_execution(started.id)
        assert fetched.id == started.id
        assert fetched.status_version_int >= started.status_version_int
        running = await eventually(
            lambda: client.get_task_execution(started.id),
            lambda e: e.phase.value == "TASK_EXECUTION_PHASE_RUNNING",
        )
        assert running.status_version_int > started.status_version_int
        step_ids = [s.id for g in running.spec.plan for s in g.steps]
        assert step_ids
        assert [s.id for s in running.status.steps] == step_ids[: len(running.status.steps)]
        await client.stop_task_execution(started.id)
        stopped = await eventually(
            lambda: client.get_task_execution(started.id), lambda e: e.is_final
        )
        # Stopping again, once it has ended, is harmless.
        await client.stop_task_execution(started.id)
    assert stopped.phase.value == "TASK_EXECUTION_PHASE_STOPPED"
    assert stopped.spec.desired_phase.value == "TASK_EXECUTION_PHASE_STOPPED"
    assert stopped.status_version_int > running.status_version_int


async def test_list_follows_more_than_one_page(simulator: SimulatorHandle) -> None:
    env = new_env()
    task_ids = [seed(simulator, env) for _ in range(3)]
    async with ona(simulator) as client:
        started = {(await client.start_task(t)).id for t in task_ids for _ in range(3)}
        simulator.control.clear_calls()
        listed = await client.list_task_executions(environment_ids=[env], page_size=4)
        by_task = await client.list_task_executions_by_task_ids(task_ids[:2], page_size=2)
        other_env = await client.list_task_executions(environment_ids=[new_env()])
    assert {e.id for e in listed} == started
    assert len(listed) == 9
    assert len(simulator.control.calls("ListTaskExecutions")) >= 3 + 3
    assert {e.metadata.task_id for e in by_task} == set(task_ids[:2])
    assert len(by_task) == 6
    assert other_env == []


async def test_tasks_create_get_list_delete(simulator: SimulatorHandle) -> None:
    env = new_env()
    reference = f"default/run-{uuid.uuid4()}"
    async with ona(simulator) as client:
        created = await client.create_task(
            env,
            "build",
            "make # sim:duration=1s",
            reference=reference,
            description="made by a test",
            env={"MODE": "fast"},
        )
        assert created.metadata.reference == reference
        assert created.environment_id == env
        fetched = await client.get_task(created.id)
        assert fetched.spec.command == "make # sim:duration=1s"
        assert [(v.name, v.value) for v in fetched.spec.env] == [("MODE", "fast")]
        assert [t.id for t in await client.list_tasks(references=[reference])] == [created.id]
        assert [t.id for t in await client.list_tasks_by_references([reference])] == [created.id]
        with pytest.raises(Conflict):
            await client.create_task(env, "again", "make", reference=reference)
        await client.delete_task(created.id)
        with pytest.raises(NotFound):
            await client.get_task(created.id)
        with pytest.raises(NotFound):
            await client.delete_task(created.id)
        await client.delete_task(created.id, missing_ok=True)
        assert await client.list_tasks(references=[reference]) == []


async def test_refusals_surface_as_their_errors(simulator: SimulatorHandle) -> None:
    task_id = seed(simulator, new_env())
    async with ona(simulator, token="wrong-token") as stranger:
        with pytest.raises(Unauthenticated) as unauthenticated:
            await stranger.get_task(task_id)
    assert unauthenticated.value.http_status == 401
    async with ona(simulator, token=simulator.readonly_token) as reader:
        assert (await reader.get_task(task_id)).id == task_id
        with pytest.raises(PermissionDenied) as denied:
            await reader.start_task(task_id)
    assert denied.value.http_status == 403
    assert simulator.control.executions() == []
    async with ona(simulator) as client:
        with pytest.raises(NotFound) as missing:
            await client.get_task_execution(str(uuid.uuid4()))
        with pytest.raises(InvalidArgument):
            await client.get_task_execution("not-a-uuid")
    assert missing.value.http_status == 404
    assert missing.value.method == "GetTaskExecution"


@pytest.mark.parametrize(
    ("method", "knobs"),
    [
        ("GetTaskExecution", {"error_503": 1.0, "count": 2}),
        ("GetTaskExecution", {"error_500": 1.0, "count": 1}),
        ("GetTaskExecution", {"drop": 1.0, "count": 2}),
        ("ListTaskExecutions", {"error_429": 1.0, "retry_after_s": 2, "count": 1}),
        ("ListTasks", {"error_503": 1.0, "count": 3}),
    ],
)
async def test_reads_are_retried_through_injected_faults(
    simulator: SimulatorHandle, method: str, knobs: dict[str, Any]
) -> None:
    env = new_env()
    task_id = seed(simulator, env)
    sleep = FakeSleep()
    async with ona(simulator, sleep) as client:
        execution = await client.start_task(task_id)
        simulator.control.set_faults(method, **knobs)
        if method == "GetTaskExecution":
            assert (await client.get_task_execution(execution.id)).id == execution.id
        elif method == "ListTaskExecutions":
            assert [e.id for e in await client.list_task_executions(task_ids=[task_id])] == [
                execution.id
            ]
        else:
            assert [t.id for t in await client.list_tasks(environment_ids=[env])] == [task_id]
    calls = simulator.control.calls(method)
    faults = [c for c in calls if c["fault"]]
    assert len(faults) == knobs["count"]
    assert len(calls) == knobs["count"] + 1
    assert len(sleep.delays) == knobs["count"]
    if "retry_after_s" in knobs:
        assert sleep.delays == [float(knobs["retry_after_s"])]


@pytest.mark.parametrize("mode", ["503", "500", "drop", "hang"])
async def test_start_task_with_a_lost_response_is_outcome_unknown(
    simulator: SimulatorHandle, mode: str
) -> None:
    task_id = seed(simulator, new_env())
    simulator.control.set_faults(
        "StartTask", lost_response=1.0, lost_response_mode=mode, hang_ms=3000, count=1
    )
    sleep = FakeSleep()
    async with ona(simulator, sleep, timeout=0.5) as client:
        with pytest.raises(OutcomeUnknown) as caught:
            await client.start_task(task_id)
        # The execution does exist: that is what the caller has to look for.
        found = await client.list_task_executions(task_ids=[task_id])
    assert caught.value.method == "StartTask"
    assert len(simulator.control.calls("StartTask")) == 1
    assert sleep.delays == []
    assert len(found) == 1
    assert [e["execution"]["id"] for e in simulator.control.executions()] == [found[0].id]


async def test_create_task_with_a_lost_response_is_outcome_unknown(
    simulator: SimulatorHandle,
) -> None:
    env = new_env()
    simulator.control.set_faults("CreateTask", lost_response=1.0, count=1)
    async with ona(simulator) as client:
        with pytest.raises(OutcomeUnknown):
            await client.create_task(env, "build", "make", reference="default/lost")
        found = await client.list_tasks(references=["default/lost"], environment_ids=[env])
    assert len(found) == 1
    assert len(simulator.control.calls("CreateTask")) == 1


async def next_item(items: AsyncIterator[WatchItem]) -> WatchItem:
    async with asyncio.timeout(DEADLINE_S):
        return await anext(items)


async def next_event_for(items: AsyncIterator[WatchItem], resource_id: str) -> ResourceEvent:
    async with asyncio.timeout(DEADLINE_S):
        async for item in items:
            if isinstance(item, ResourceEvent) and item.resource_id == resource_id:
                return item
    raise AssertionError("watch ended")


@pytest.mark.parametrize("framing", ["connect", "jsonl"])
async def test_watch_sees_changes_and_resyncs_after_a_drop(
    simulator: SimulatorHandle, framing: Framing
) -> None:
    env = new_env()
    task_id = seed(simulator, env)
    sleep = FakeSleep()
    async with ona(simulator, sleep) as client:
        async with aclosing(client.watch_events(env, framing=framing)) as items:
            assert await next_item(items) == Resync(reconnect=False)
            execution = await client.start_task(task_id)
            created = await next_event_for(items, execution.id)
            assert created.operation is ResourceOperation.CREATE
            assert created.is_task_execution

            assert simulator.control.disconnect_watchers() == 1
            resync = await next_item(items)
            assert isinstance(resync, Resync)
            assert resync.reconnect

            simulator.control.set_phase(execution.id, "TASK_EXECUTION_PHASE_FAILED", "boom")
            changed = await next_event_for(items, execution.id)
            assert changed.operation in (
                ResourceOperation.UPDATE,
                ResourceOperation.UPDATE_STATUS,
            )
        failed = await client.get_task_execution(execution.id)
    assert failed.status.failure_message == "boom"
    assert len(simulator.control.calls("WatchEvents")) == 2


async def drain(items: AsyncIterator[WatchItem]) -> list[WatchItem]:
    seen: list[WatchItem] = []
    async with aclosing(items) as iterator, asyncio.timeout(DEADLINE_S):
        async for item in iterator:
            seen.append(item)
    return seen


async def test_watch_with_a_bad_token_raises(simulator: SimulatorHandle) -> None:
    async with ona(simulator, token="wrong-token") as client:
        with pytest.raises(Unauthenticated):
            await drain(client.watch_events(new_env()))


async def test_token_stays_out_of_errors_and_logs_over_http(
    simulator: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    task_id = seed(simulator, new_env())
    errors: list[OnaError] = []
    simulator.control.set_faults("StartTask", lost_response=1.0, count=1)
    simulator.control.set_faults("GetTask", error_503=1.0)
    async with ona(simulator, timeout=2.0) as client:
        for call in (
            lambda: client.start_task(task_id),
            lambda: client.get_task(task_id),
            lambda: client.get_task_execution(str(uuid.uuid4())),
        ):
            with pytest.raises(OnaError) as caught:
                await call()
            errors.append(caught.value)
        assert simulator.token not in repr(client)
    assert [type(e).__name__ for e in errors] == ["OutcomeUnknown", "Unavailable", "NotFound"]
    assert "HTTP Request" in caplog.text  # httpx did log the requests
    for error in errors:
        assert simulator.token not in "".join(traceback.format_exception(error))
        assert simulator.token not in repr(error)
    assert simulator.token not in caplog.text


async def test_a_hundred_open_streams_leave_room_for_calls(simulator: SimulatorHandle) -> None:
    """Streams hold their connections; calls must not wait behind them for a free one."""
    task_id = seed(simulator, new_env())
    async with ona(simulator, timeout=5.0) as client, contextlib.AsyncExitStack() as streams:
        for _ in range(100):
            items = await streams.enter_async_context(aclosing(client.watch_events(new_env())))
            assert await next_item(items) == Resync(reconnect=False)
        assert simulator.control.health()["watchers"] == 100
        started = await client.start_task(task_id)
        assert (await client.get_task_execution(started.id)).id == started.id
