"""The log-tail edge (`LogTails`) with a real connection stack against the simulator."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ona_taskrun import core
from ona_taskrun.connection_core import ConnectionKey
from ona_taskrun.connections import Remote, RemoteSettings
from ona_taskrun.logtail import LogTails
from ona_taskrun.ona import OnaClient
from tests.support.simulator_fixtures import SimulatorHandle

FAILING = 'x sim:pending=20ms sim:duration=100ms sim:log_lines=3 sim:fail="disk full"'


@pytest.fixture(autouse=True)
def restore_logs(simulator: SimulatorHandle) -> Iterator[None]:
    """The session's simulator is shared with later tests: leave its logs as found."""
    yield
    simulator.control.clear_log_faults()
    simulator.control.set_logs_token_ttl(3600)


class Seen:
    def __init__(self) -> None:
        self.queued: list[str] = []
        self.posted: list[core.Event] = []

    def enqueue(self, key: str) -> None:
        self.queued.append(key)

    async def post(self, body: Mapping[str, Any], events: tuple[core.Event, ...]) -> None:
        self.posted.extend(events)


@pytest.fixture
async def remote(simulator: SimulatorHandle) -> AsyncIterator[Remote]:
    connection = Remote(
        ConnectionKey(),
        simulator.base_url,
        simulator.token,
        RemoteSettings(request_timeout=5.0),
        notify=lambda _: None,
        on_unauthenticated=lambda: None,
    )
    yield connection
    await connection.close()


async def ended_run(
    simulator: SimulatorHandle, environment: str, command: str = FAILING
) -> dict[str, Any]:
    """A TaskRun body whose execution has ended, as the reconciler would have written it."""
    task = simulator.control.seed_task(
        reference=f"r-{uuid.uuid4().hex[:8]}", environment_id=environment, command=command
    )
    async with OnaClient(simulator.base_url, simulator.token) as ona:
        execution = await ona.start_task(task["id"])
        deadline = time.monotonic() + 10
        while not (execution := await ona.get_task_execution(execution.id)).is_final:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    phase = execution.phase.value.removeprefix("TASK_EXECUTION_PHASE_")
    ok = phase == "SUCCEEDED"
    stamp = core.rfc3339(datetime.now(UTC))
    return {
        "metadata": {"name": "run", "namespace": "ns"},
        "spec": {"taskRef": {"id": task["id"]}},
        "status": {
            "phase": phase,
            "taskId": task["id"],
            "taskExecutionId": execution.id,
            "logUrl": execution.status.log_url,
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "True" if ok else "False",
                    "reason": "Succeeded" if ok else "Failed",
                    "message": "" if ok else "disk full",
                    "lastTransitionTime": stamp,
                }
            ],
        },
    }


def reads(result: str) -> float:
    return REGISTRY.get_sample_value("ona_taskrun_log_tail_reads_total", {"result": result}) or 0.0


def read_seconds() -> tuple[float, float]:
    name = "ona_taskrun_log_tail_read_duration_seconds"
    count = REGISTRY.get_sample_value(f"{name}_count", {}) or 0.0
    return count, REGISTRY.get_sample_value(f"{name}_sum", {}) or 0.0


async def settle(tails: LogTails, seen: Seen, count: int) -> None:
    deadline = time.monotonic() + 15
    while len(seen.queued) < count:
        assert time.monotonic() < deadline, "the log tail was not read"
        await asyncio.sleep(0.02)
    assert tails.reading == 0


async def test_reads_the_tail_beside_the_reconcile_and_caches_the_token(
    simulator: SimulatorHandle, remote: Remote
) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post, retry_delay=0.01)
    environment = str(uuid.uuid4())
    ok_before, (timed_before, took_before) = reads("ok"), read_seconds()
    body = await ended_run(simulator, environment)
    # The environment comes from the execution when the spec does not name it.
    failed = core.Event("Warning", "Failed", "execution failed: disk full")
    other = core.Event("Normal", "Other", "x")
    now_events = tails.after_write("ns/run", body, (failed, other), remote)
    assert now_events == (other,)  # the Failed Event waits for the tail
    await settle(tails, seen, 1)
    assert seen.queued == ["ns/run"]
    log = simulator.control.execution_log(body["status"]["taskExecutionId"])
    status = tails.fold("ns/run", core.Status.from_dict(body["status"]))
    assert status.log_tail == "\n".join(log)
    assert [e.reason for e in seen.posted] == ["Failed"]
    assert seen.posted[0].message.endswith("last log lines:\n" + "\n".join(log[-3:]))
    assert reads("ok") == ok_before + 1
    timed, took = read_seconds()
    assert timed == timed_before + 1
    assert took > took_before

    # Once written, it is dropped; a second run of the environment reuses the token.
    written = {**body, "status": status.to_dict()}
    assert tails.after_write("ns/run", written, (), remote) == ()
    assert tails.fold("ns/run", core.Status.from_dict(body["status"])).log_tail == ""
    second = await ended_run(simulator, environment)
    tails.after_write("ns/second", second, (), remote)
    await settle(tails, seen, 2)
    assert tails.fold("ns/second", core.Status.from_dict(second["status"])).log_tail
    assert simulator.control.logs_settings()["tokensIssued"] == 1
    token_calls = simulator.control.calls("CreateEnvironmentLogsToken")
    assert [c["requestId"] for c in token_calls] == [environment]


async def test_runs_of_one_environment_ending_together_share_one_token_request(
    simulator: SimulatorHandle, remote: Remote
) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post, retry_delay=0.01)
    environment = str(uuid.uuid4())
    bodies = [await ended_run(simulator, environment) for _ in range(3)]
    issued = simulator.control.logs_settings()["tokensIssued"]
    for index, body in enumerate(bodies):
        tails.after_write(f"ns/run-{index}", body, (), remote)
    assert tails.reading == 3  # all three read at once
    await settle(tails, seen, 3)
    for index, body in enumerate(bodies):
        status = tails.fold(f"ns/run-{index}", core.Status.from_dict(body["status"]))
        assert status.log_tail.endswith("] error: disk full")
    assert simulator.control.logs_settings()["tokensIssued"] == issued + 1


async def test_nothing_is_read_for_runs_that_do_not_want_a_tail(
    simulator: SimulatorHandle, remote: Remote
) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post)
    body = await ended_run(simulator, str(uuid.uuid4()), "x sim:pending=20ms sim:duration=50ms")
    assert tails.after_write("ns/ok", body, (), remote) == ()
    off = await ended_run(simulator, str(uuid.uuid4()))
    off["spec"]["logs"] = {"tailLines": 0}
    failed = core.Event("Warning", "Failed", "x")
    assert tails.after_write("ns/off", off, (failed,), remote) == (failed,)
    assert tails.after_write("ns/no-remote", off, (failed,), None) == (failed,)
    assert tails.reading == 0
    assert simulator.control.calls("ReadLog") == []


async def test_an_unreadable_log_becomes_a_note(simulator: SimulatorHandle, remote: Remote) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post, retry_delay=0.01)
    body = await ended_run(simulator, str(uuid.uuid4()))
    simulator.control.set_log_faults(error_502=1)
    failed_before, ok_before = reads("unavailable"), reads("ok")
    tails.after_write("ns/run", body, (core.Event("Warning", "Failed", "boom"),), remote)
    await settle(tails, seen, 1)
    status = tails.fold("ns/run", core.Status.from_dict(body["status"]))
    succeeded = status.condition("Succeeded")
    assert succeeded is not None
    assert succeeded.message == "disk full (log tail: the log could not be read (HTTP 502))"
    assert [c["httpStatus"] for c in simulator.control.calls("ReadLog")] == [502] * 4
    assert seen.posted[0].message == "boom"  # posted anyway, without lines
    # One read, counted once by the result of its last try, not once per retry.
    assert (reads("unavailable"), reads("ok")) == (failed_before + 1, ok_before)


async def test_a_deleted_run_is_forgotten(simulator: SimulatorHandle, remote: Remote) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post, retry_delay=30.0)
    body = await ended_run(simulator, str(uuid.uuid4()))
    simulator.control.set_log_faults(error_502=1)
    tails.after_write("ns/run", body, (), remote)
    assert tails.reading == 1
    counted = read_seconds()[0]
    tails.forget("ns/run")
    assert tails.reading == 0
    # The read was waiting 30 s to retry; stopping does not wait for it.
    await asyncio.wait_for(tails.stop(), 5)
    assert seen.queued == []
    assert read_seconds()[0] == counted  # a read given up is not a read with a result
