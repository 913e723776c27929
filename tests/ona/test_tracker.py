"""The execution tracker against the simulator over real HTTP: watch news is read in
batched lists (not one GetTaskExecution per event), and WatchEvents streams are bounded,
with environments past the bound followed by polling and given a stream as one frees."""

from __future__ import annotations

import asyncio
import uuid

from ona_taskrun.clients.ona import OnaClient
from ona_taskrun.controller.tracker import ExecutionTracker
from tests.support.simulator_fixtures import SimulatorHandle
from tests.support.waits import until


async def _start(
    simulator: SimulatorHandle, ona: OnaClient, environment: str, command: str
) -> tuple[str, str]:
    task = simulator.control.seed_task(
        environment_id=environment, reference=f"r-{uuid.uuid4().hex[:8]}", command=command
    )
    execution = await ona.start_task(task["id"])
    return str(task["id"]), execution.id


async def test_watch_news_is_read_in_batched_lists(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    environment = str(uuid.uuid4())
    woken: list[str] = []
    # A long poll interval: what is seen in time came from watch news, not the poll.
    tracker = ExecutionTracker(ona, woken.append, poll_interval=60.0)
    runner = asyncio.create_task(tracker.run())
    try:
        started = [
            await _start(simulator, ona, environment, "x # sim:pending=200ms sim:duration=300ms")
            for _ in range(6)
        ]
        simulator.control.clear_calls()
        for index, (task_id, execution_id) in enumerate(started):
            tracker.track(execution_id, f"ns/run-{index}", task_id, environment)
        await until(
            lambda: all(
                (latest := tracker.latest(e)) is not None and latest.phase and latest.phase.final
                for _, e in started
            ),
            "every execution to be seen final through watch news",
        )
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert set(woken) == {f"ns/run-{i}" for i in range(6)}
    assert simulator.control.calls("GetTaskExecution") == []
    lists = simulator.control.calls("ListTaskExecutions")
    # Each execution changes at least twice (RUNNING, SUCCEEDED): 12+ events, fewer reads.
    assert 0 < len(lists) < 12


async def test_streams_are_bounded_and_handed_on(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    tracker = ExecutionTracker(ona, lambda key: None, poll_interval=60.0, max_watches=2)
    environments = [str(uuid.uuid4()) for _ in range(3)]
    runs = [await _start(simulator, ona, env, "x # sim:hang") for env in environments]
    for index, (task_id, execution_id) in enumerate(runs):
        tracker.track(execution_id, f"ns/run-{index}", task_id, environments[index])
    try:
        assert tracker.watched == 2
        # The third environment is followed by the batched poll alone.
        await tracker.poll_once()
        assert tracker.latest(runs[2][1]) is not None
        tracker.untrack(runs[0][1])
        assert tracker.watched == 2  # the freed stream went to the third environment
        tracker.untrack(runs[1][1])
        tracker.untrack(runs[2][1])
        assert tracker.watched == 0
    finally:
        for _, execution_id in runs:
            tracker.untrack(execution_id)
        for _, execution_id in runs:
            await ona.stop_task_execution(execution_id)


async def test_an_execution_of_unknown_environment_gets_its_stream_without_waiting_for_a_poll(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    # After a restart a TaskRun naming its task by id holds no environment and the tracker
    # no status: the execution is read at once (batched), so its environment's stream
    # opens then, not at the next poll.
    environment = str(uuid.uuid4())
    tracker = ExecutionTracker(ona, lambda key: None, poll_interval=60.0)
    runner = asyncio.create_task(tracker.run())
    started = [await _start(simulator, ona, environment, "x # sim:hang") for _ in range(3)]
    try:
        await until(lambda: tracker.tracked == 0 or None, "the first (empty) poll")
        simulator.control.clear_calls()
        for index, (task_id, execution_id) in enumerate(started):
            tracker.track(execution_id, f"ns/run-{index}", task_id, "")
        assert tracker.watched == 0  # nothing known of the environment yet
        await until(lambda: tracker.streams == 1 or None, "the environment's stream open")
        assert simulator.control.calls("GetTaskExecution") == []
        # Batched: fewer lists than executions (one now; one as the stream opens).
        assert 0 < len(simulator.control.calls("ListTaskExecutions")) < len(started)
    finally:
        for _, execution_id in started:
            tracker.untrack(execution_id)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
