"""Wire compatibility: the official 0.x Python SDK drives the simulator without errors."""

from __future__ import annotations

import asyncio
import uuid

from gitpod import AsyncGitpod

from tests.support.simulator_fixtures import SimulatorHandle


async def test_official_sdk_creates_starts_lists_and_stops(simulator: SimulatorHandle) -> None:
    environment = str(uuid.uuid4())
    async with AsyncGitpod(
        bearer_token=simulator.token, base_url=simulator.base_url, max_retries=0
    ) as client:
        tasks = client.environments.automations.tasks
        created = await tasks.create(
            environment_id=environment,
            metadata={"reference": "sdk", "name": "SDK task"},
            spec={"command": "echo hi sim:pending=10ms sim:hang"},
        )
        assert created.task is not None
        task_id = created.task.id
        assert created.task.metadata is not None
        assert created.task.metadata.reference == "sdk"

        started = [await tasks.start(id=task_id) for _ in range(3)]
        ids = [s.task_execution.id for s in started if s.task_execution is not None]
        assert len(set(ids)) == 3

        retrieved = await tasks.executions.retrieve(id=ids[0])
        execution = retrieved.task_execution
        assert execution is not None
        assert execution.metadata is not None
        assert execution.metadata.task_id == task_id
        assert execution.status is not None
        assert execution.status.status_version is not None
        assert int(execution.status.status_version) >= 0

        # Two per page: the SDK sends the next page's token in the query string.
        listed = [
            item.id
            async for item in tasks.executions.list(
                filter={"task_ids": [task_id]}, pagination={"page_size": 2}
            )
        ]
        assert listed == ids
        list_calls = simulator.control.calls("ListTaskExecutions")
        assert len(list_calls) == 2

        events = await client.events.watch(environment_id=environment)
        await tasks.executions.stop(id=ids[0])

        async def first_event_about_stop() -> str | None:
            async for event in events:
                if event.resource_id == ids[0]:
                    return event.operation
            return None

        operation = await asyncio.wait_for(first_event_about_stop(), timeout=5)
        await events.close()
        assert operation in ("RESOURCE_OPERATION_UPDATE", "RESOURCE_OPERATION_UPDATE_STATUS")

        async def stopped() -> None:
            while True:
                current = await tasks.executions.retrieve(id=ids[0])
                assert current.task_execution is not None
                assert current.task_execution.status is not None
                if current.task_execution.status.phase == "TASK_EXECUTION_PHASE_STOPPED":
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(stopped(), timeout=5)


async def test_sdk_retry_after_a_lost_start_response_starts_twice(
    simulator: SimulatorHandle,
) -> None:
    """The hazard the operator must avoid: the SDK retries StartTask after a lost answer."""
    task = simulator.control.seed_task(command="x sim:hang")
    simulator.control.set_faults("StartTask", lost_response=1.0, count=1)
    async with AsyncGitpod(
        bearer_token=simulator.token, base_url=simulator.base_url, max_retries=1
    ) as client:
        started = await client.environments.automations.tasks.start(id=task["id"])
    assert started.task_execution is not None
    executions = simulator.control.executions()
    assert len(executions) == 2
    assert [c["httpStatus"] for c in simulator.control.calls("StartTask")] == [503, 200]
