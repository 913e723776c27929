"""The official gitpod-sdk 0.11 drives the simulator and agrees with OnaClient.

An independent client that speaks the same wire format proves the two ends were not
merely written to match each other's mistakes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from gitpod import AsyncGitpod

from ona_taskrun.clients.ona import OnaClient, ResourceEvent, Resync, TaskExecution
from tests.support.simulator_fixtures import SimulatorHandle

DEADLINE_S = 15.0
T = TypeVar("T")


async def eventually(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = await read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {DEADLINE_S}s; last: {value!r}")
        await asyncio.sleep(0.05)


def ours(execution: TaskExecution) -> dict[str, Any]:
    return {
        "id": execution.id,
        "task_id": execution.metadata.task_id,
        "environment_id": execution.metadata.environment_id,
        "phase": execution.phase.value,
        "desired_phase": execution.spec.desired_phase.value,
        "status_version": execution.status.status_version,
        "plan_steps": [s.id for g in execution.spec.plan for s in g.steps],
        "status_steps": [(s.id, s.phase.value) for s in execution.status.steps],
    }


def theirs(execution: Any) -> dict[str, Any]:
    """The same view of the SDK's TaskExecution (fields it leaves as None mean default)."""
    status, spec, metadata = execution.status, execution.spec, execution.metadata
    return {
        "id": execution.id,
        "task_id": metadata.task_id or "",
        "environment_id": metadata.environment_id or "",
        "phase": status.phase or "TASK_EXECUTION_PHASE_UNSPECIFIED",
        "desired_phase": spec.desired_phase or "TASK_EXECUTION_PHASE_UNSPECIFIED",
        "status_version": status.status_version or "0",
        "plan_steps": [s.id for g in spec.plan or [] for s in g.steps or []],
        "status_steps": [(s.id, s.phase) for s in status.steps or []],
    }


@pytest.fixture
async def sdk(simulator: SimulatorHandle) -> Any:
    # No retries: a simulator answer the SDK cannot take must fail the test, not be hidden.
    client = AsyncGitpod(bearer_token=simulator.token, base_url=simulator.base_url, max_retries=0)
    yield client
    await client.close()


async def test_sdk_and_ona_client_see_the_same_executions(
    simulator: SimulatorHandle, sdk: Any
) -> None:
    env = str(uuid.uuid4())
    task_ids = [
        str(
            simulator.control.seed_task(
                environment_id=env,
                reference=f"ref-{i}",
                name=f"t{i}",
                command="run # sim:hang sim:steps=2 sim:parallel=2",
            )["id"]
        )
        for i in range(3)
    ]
    tasks = sdk.environments.automations.tasks
    async with OnaClient(simulator.base_url, simulator.token) as ona:
        started_by_sdk = [
            (await tasks.start(id=task_id)).task_execution for task_id in task_ids for _ in (1, 2)
        ]
        started_by_us = [await ona.start_task(task_ids[0])]
        ids = [e.id for e in started_by_sdk] + [e.id for e in started_by_us]
        assert len(set(ids)) == 7
        assert [e.metadata.task_id for e in started_by_sdk] == [t for t in task_ids for _ in (1, 2)]

        # Wait until every execution runs, so both clients read the same settled status.
        for execution_id in ids:
            await eventually(
                lambda i=execution_id: ona.get_task_execution(i),
                lambda e: e.phase.value == "TASK_EXECUTION_PHASE_RUNNING",
            )

        for execution_id in ids:
            mine = ours(await ona.get_task_execution(execution_id))
            retrieved = await tasks.executions.retrieve(id=execution_id)
            assert theirs(retrieved.task_execution) == mine
            assert len(mine["plan_steps"]) == 4

        simulator.control.clear_calls()
        listed_by_sdk = [
            theirs(e)
            async for e in tasks.executions.list(filter={"environment_ids": [env]}, page_size=3)
        ]
        sdk_list_calls = len(simulator.control.calls("ListTaskExecutions"))
        listed_by_us = [ours(e) for e in await ona.list_task_executions(environment_ids=[env])]
        assert sdk_list_calls == 3  # 7 executions, 3 per page
        assert sorted(listed_by_sdk, key=lambda e: e["id"]) == sorted(
            listed_by_us, key=lambda e: e["id"]
        )
        by_task = [
            e.id
            async for e in tasks.executions.list(filter={"task_ids": [task_ids[1]]}, page_size=1)
        ]
        assert sorted(by_task) == sorted(e.id for e in started_by_sdk[2:4])

        await tasks.executions.stop(id=ids[0])
        await ona.stop_task_execution(ids[1])
        for execution_id in ids[:2]:
            stopped = await eventually(
                lambda i=execution_id: ona.get_task_execution(i), lambda e: e.is_final
            )
            retrieved = await tasks.executions.retrieve(id=execution_id)
            assert theirs(retrieved.task_execution) == ours(stopped)
            assert stopped.phase.value == "TASK_EXECUTION_PHASE_STOPPED"


async def test_sdk_watch_sees_what_ona_client_sees(simulator: SimulatorHandle, sdk: Any) -> None:
    env = str(uuid.uuid4())
    task_id = str(
        simulator.control.seed_task(environment_id=env, reference="r", command="x # sim:hang")["id"]
    )
    sdk_stream = await sdk.events.watch(environment_id=env)
    async with OnaClient(simulator.base_url, simulator.token) as ona:
        watch = ona.watch_events(env)
        try:
            async with asyncio.timeout(DEADLINE_S):
                assert isinstance(await anext(watch), Resync)
                # Both streams are open once the simulator counts two watchers.
                await eventually(
                    lambda: asyncio.to_thread(simulator.control.health),
                    lambda h: h["watchers"] == 2,
                )
                execution = await ona.start_task(task_id)
                await ona.stop_task_execution(execution.id)
                mine: list[tuple[str, str, str]] = []
                theirs_: list[tuple[str, str, str]] = []
                while len(mine) < 3:
                    item = await anext(watch)
                    assert isinstance(item, ResourceEvent)
                    mine.append((item.operation.value, item.resource_type, item.resource_id))
                # The SDK reads JSON lines through aiter_bytes(chunk_size=64), so it holds
                # back the tail of the last line until more bytes arrive: one more event
                # pushes the three we compare through.
                await ona.start_task(task_id)
                async for event in sdk_stream:
                    theirs_.append((event.operation, event.resource_type, event.resource_id))
                    if len(theirs_) == 3:
                        break
        finally:
            await watch.aclose()
            await sdk_stream.close()
    assert theirs_ == mine
    assert mine[0] == (
        "RESOURCE_OPERATION_CREATE",
        "RESOURCE_TYPE_TASK_EXECUTION",
        execution.id,
    )
    assert all(resource_id == execution.id for _, _, resource_id in mine)
