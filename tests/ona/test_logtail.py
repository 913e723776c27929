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

from ona_taskrun.clients.ona import OnaClient
from ona_taskrun.controller.connections import Remote, RemoteSettings
from ona_taskrun.controller.logtails import LogTails
from ona_taskrun.observability import logs
from ona_taskrun.rules.connection import ConnectionKey
from ona_taskrun.rules.logtail import TAIL_LINE_BYTES
from ona_taskrun.rules.model import Event, Status, rfc3339
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
        self.posted: list[Event] = []

    def enqueue(self, key: str) -> None:
        self.queued.append(key)

    async def post(self, body: Mapping[str, Any], events: tuple[Event, ...]) -> None:
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
    stamp = rfc3339(datetime.now(UTC))
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
    failed = Event("Warning", "Failed", "execution failed: disk full")
    other = Event("Normal", "Other", "x")
    now_events = tails.after_write("ns/run", body, (failed, other), remote)
    assert now_events == (other,)  # the Failed Event waits for the tail
    await settle(tails, seen, 1)
    assert seen.queued == ["ns/run"]
    log = simulator.control.execution_log(body["status"]["taskExecutionId"])
    status = tails.fold("ns/run", Status.from_dict(body["status"]))
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
    assert tails.fold("ns/run", Status.from_dict(body["status"])).log_tail == ""
    second = await ended_run(simulator, environment)
    tails.after_write("ns/second", second, (), remote)
    await settle(tails, seen, 2)
    assert tails.fold("ns/second", Status.from_dict(second["status"])).log_tail
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
        status = tails.fold(f"ns/run-{index}", Status.from_dict(body["status"]))
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
    failed = Event("Warning", "Failed", "x")
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
    tails.after_write("ns/run", body, (Event("Warning", "Failed", "boom"),), remote)
    await settle(tails, seen, 1)
    status = tails.fold("ns/run", Status.from_dict(body["status"]))
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


async def test_a_log_url_at_a_metadata_address_is_refused_before_a_token_is_asked(
    simulator: SimulatorHandle, remote: Remote
) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post, retry_delay=0.01)
    body = await ended_run(simulator, str(uuid.uuid4()))
    body["status"]["logUrl"] = "http://169.254.169.254/latest/meta-data/iam"
    tokens_before, refused_before = (
        simulator.control.logs_settings()["tokensIssued"],
        reads("refused"),
    )
    tails.after_write("ns/run", body, (Event("Warning", "Failed", "disk full"),), remote)
    await settle(tails, seen, 1)
    succeeded = tails.fold("ns/run", Status.from_dict(body["status"])).condition("Succeeded")
    assert succeeded is not None
    assert succeeded.message == (
        "disk full (log tail: log URL refused: "
        "host 169.254.169.254 is a link-local and metadata address)"
    )
    assert simulator.control.logs_settings()["tokensIssued"] == tokens_before
    assert reads("refused") == refused_before + 1
    assert seen.posted[0].message == "disk full"


async def test_a_line_of_many_mib_leaves_a_bounded_tail_with_the_cut_marker(
    simulator: SimulatorHandle, remote: Remote
) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post, retry_delay=0.01)
    command = (
        'x sim:pending=20ms sim:duration=50ms sim:log_lines=0 sim:long_line=32M sim:fail="boom"'
    )
    body = await ended_run(simulator, str(uuid.uuid4()), command)
    tails.after_write("ns/run", body, (Event("Warning", "Failed", "boom"),), remote)
    await settle(tails, seen, 1)
    tail = tails.fold("ns/run", Status.from_dict(body["status"])).log_tail
    label = simulator.control.execution_log(body["status"]["taskExecutionId"])[0].split("]")[0]
    kept = TAIL_LINE_BYTES - len(label) - 2  # the line's `[label] ` start counts
    assert tail.split("\n") == [
        f"{label}] started",
        f"{label}] " + "x" * kept + f"… [line cut: {32 * 2**20 - kept} bytes]",
        f"{label}] error: boom",
    ]
    assert len(tail.encode()) <= 4096
    # The Event carries the last lines that fit its bound.
    assert seen.posted[0].message.endswith("] error: boom")
    assert len(seen.posted[0].message) <= 1024


async def test_tails_and_events_are_scrubbed_of_the_tokens_the_operator_holds(
    simulator: SimulatorHandle, remote: Remote
) -> None:
    seen = Seen()
    tails = LogTails(enqueue=seen.enqueue, post=seen.post, retry_delay=0.01)
    environment = str(uuid.uuid4())
    # A connection's token, as its Secret's reading registers it.
    logs.protect(simulator.token)
    before = set(logs.protected())
    leaky = f'x sim:pending=20ms sim:duration=50ms sim:fail="auth {simulator.token} failed"'
    first = await ended_run(simulator, environment, leaky)
    failed = Event("Warning", "Failed", f"failed: auth {simulator.token} failed")
    tails.after_write("ns/first", first, (failed,), remote)
    await settle(tails, seen, 1)
    tail = tails.fold("ns/first", Status.from_dict(first["status"])).log_tail
    assert tail.endswith("] error: auth *** failed")
    assert seen.posted[0].message.startswith("failed: auth *** failed; last log lines:")
    assert simulator.token not in seen.posted[0].message

    # The logs token the read was given is held too: a log that prints it hides it.
    (logs_token,) = {s for s in logs.protected() if s.startswith("sim-logs-")} - before
    printing = f'x sim:pending=20ms sim:duration=50ms sim:fail="got {logs_token}"'
    second = await ended_run(simulator, environment, printing)
    tails.after_write("ns/second", second, (), remote)
    await settle(tails, seen, 2)
    tail = tails.fold("ns/second", Status.from_dict(second["status"])).log_tail
    assert tail.endswith("] error: got ***")
    assert logs_token not in tail
