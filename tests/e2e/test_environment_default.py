"""End to end: a run without `spec.environment` survives an environment that idled out.

A nightly `taskRef` run (as a TaskRunSchedule makes one) names a task whose environment
stopped since the day before. The operator does not look at the environment before the
start: StartTask's `failed_precondition` tells it, and then it starts the environment
once, waits for it and starts the task once. A run in a running environment makes no
environment call at all, a quick run sends no activity signal, and a run that outlives
part of the idle timeout keeps its environment alive. `whenStopped: Fail` still refuses,
with reason `EnvironmentNotRunning`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.operator_fixtures import (
    OperatorFactory,
    TaskRuns,
    unique_reference,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

ENVIRONMENT_METHODS = ("GetEnvironment", "StartEnvironment", "MarkEnvironmentActive")
# A signal is due after 1.5 s of running: a 300 ms run is over long before that.
KEEPALIVE = {"ENVIRONMENT_KEEPALIVE_SECONDS": "1.5", "ENVIRONMENT_POLL_SECONDS": "0.3"}


def _task_in(sim: SimulatorHandle, env_id: str, command: str) -> str:
    task = sim.control.seed_task(
        environment_id=env_id, reference=unique_reference(), command=command
    )
    return str(task["id"])


def _calls_for(sim: SimulatorHandle, method: str, request_id: str) -> list[dict[str, Any]]:
    return [c for c in sim.control.calls(method) if c["requestId"] == request_id]


def _executions_in(sim: SimulatorHandle, env_id: str) -> list[dict[str, Any]]:
    return [
        item["execution"]
        for item in sim.control.executions()
        if item["execution"]["metadata"]["environmentId"] == env_id
    ]


def test_a_plain_run_starts_its_stopped_environment_once_and_succeeds(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    # A keep-alive period far longer than these 300 ms runs, so that a loaded machine
    # cannot make one of them outlive it: the last assertion is about the quick path.
    operator_factory(namespace, extra_env={**KEEPALIVE, "ENVIRONMENT_KEEPALIVE_SECONDS": "20"})
    sim = e2e_simulator
    # Idled out overnight; slow enough to start that the wait is seen.
    stopped = sim.control.seed_environment(phase="STOPPED", startDelay="1s", stopDelay="200ms")
    running = sim.control.seed_environment()
    nightly = _task_in(sim, stopped["id"], "report # sim:duration=300ms")
    daily = _task_in(sim, running["id"], "report # sim:duration=300ms")
    taskruns.apply("nightly", {"taskRef": {"id": nightly}})
    taskruns.apply("daily", {"taskRef": {"id": daily}})

    final = taskruns.wait_phase("nightly", "SUCCEEDED", timeout=30)
    # The environment was started once, and the task ran once in it.
    assert len(_calls_for(sim, "StartEnvironment", stopped["id"])) == 1
    assert [e["id"] for e in _executions_in(sim, stopped["id"])] == [final["taskExecutionId"]]
    # The first StartTask was refused (it started nothing); the second one started it.
    starts = _calls_for(sim, "StartTask", nightly)
    assert [(c["httpStatus"], c["code"]) for c in starts] == [
        (400, "failed_precondition"),
        (200, ""),
    ]
    assert final["environmentId"] == stopped["id"]
    ready = taskruns.condition("nightly", "EnvironmentReady")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Running")
    taskruns.wait_events("nightly", "EnvironmentStarting", "Succeeded")

    # The happy path costs nothing more: no environment call for a running environment,
    # and no activity signal for a run shorter than the keep-alive period.
    taskruns.wait_phase("daily", "SUCCEEDED", timeout=30)
    for method in ENVIRONMENT_METHODS:
        assert not _calls_for(sim, method, running["id"]), method
    assert taskruns.condition("daily", "EnvironmentReady") is None
    assert not _calls_for(sim, "MarkEnvironmentActive", stopped["id"])


def test_a_plain_run_longer_than_the_keep_alive_period_keeps_its_environment_up(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(namespace, extra_env=KEEPALIVE)
    sim = e2e_simulator
    env = sim.control.seed_environment(idleTimeout="4s", stopDelay="200ms")
    task = _task_in(sim, env["id"], "build # sim:pending=100ms sim:duration=7s")
    taskruns.apply("long", {"taskRef": {"id": task}})
    # The simulator stops an environment's executions when it stops: SUCCEEDED is the
    # proof that the environment outlived its 4 s idle timeout.
    taskruns.wait_phase("long", "SUCCEEDED", timeout=30)
    signals = sim.control.environment(env["id"])["activitySignals"]
    assert signals >= 3, signals
    assert sim.control.environment(env["id"])["stoppedForIdleness"] == 0


def test_when_stopped_fail_refuses_a_stopped_environment_as_not_running(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(namespace, extra_env=KEEPALIVE)
    sim = e2e_simulator
    env = sim.control.seed_environment(phase="STOPPED")
    task = _task_in(sim, env["id"], "report # sim:duration=300ms")
    taskruns.apply("strict", {"taskRef": {"id": task}, "environment": {"whenStopped": "Fail"}})
    cond = taskruns.wait_condition("strict", "Succeeded", "False", "EnvironmentNotRunning")
    assert env["id"] in cond["message"]
    assert not _calls_for(sim, "StartEnvironment", env["id"])
    assert not _executions_in(sim, env["id"])
    taskruns.wait_events("strict", "EnvironmentNotRunning")
