"""End to end: spec.retries and spec.ttlSecondsAfterFinished with the operator as a process,
a real API server and the simulator, whose `sim:fail_first=N` fails a task's first N
executions. Executions are counted from the simulator's own records."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.support.operator_fixtures import (
    OperatorFactory,
    TaskRuns,
    inline_task,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

# Short back-offs (0.5 s, 1 s, 2 s ...) keep the tests quick; the rule is the same.
FAST_RETRIES = {"RETRY_BACKOFF_BASE_SECONDS": "0.5"}


def _executions(sim: SimulatorHandle, taskruns: TaskRuns, name: str) -> list[dict[str, Any]]:
    """The executions of an inline TaskRun's own task, oldest first."""
    uid = taskruns.get(name)["metadata"]["uid"]
    found = [
        item["execution"]
        for item in sim.control.executions()
        if item.get("taskReference") == f"k8s-taskrun-{uid}"
    ]
    return sorted(found, key=lambda e: str(e["metadata"]["createdAt"]))


def test_fails_twice_then_succeeds_at_attempt_three(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(namespace, extra_env=FAST_RETRIES)
    command = "make flaky # sim:pending=0.1s sim:duration=0.3s sim:fail_first=2"
    taskruns.apply("flaky", {"task": inline_task(command), "retries": 3})

    status = taskruns.wait_phase("flaky", "SUCCEEDED", timeout=60)
    assert status["attempt"] == 3
    attempts = status["attempts"]
    assert [a["phase"] for a in attempts] == ["FAILED", "FAILED"]
    assert [a["failureMessage"] for a in attempts] == [
        "execution 1 of 2 failed (sim:fail_first)",
        "execution 2 of 2 failed (sim:fail_first)",
    ]
    assert all(a["startedAt"] and a["completedAt"] for a in attempts)
    assert taskruns.condition("flaky", "Succeeded")["status"] == "True"  # type: ignore[index]

    # One execution per attempt, each the one the TaskRun recorded for it.
    executions = _executions(e2e_simulator, taskruns, "flaky")
    recorded = [a["executionId"] for a in attempts] + [status["taskExecutionId"]]
    assert [e["id"] for e in executions] == recorded
    assert len(set(recorded)) == 3
    taskruns.wait_events("flaky", "Retrying", "Succeeded")
    # The claim annotation names the attempt it was made for.
    annotations = taskruns.get("flaky")["metadata"]["annotations"]
    assert annotations["automation.ona.com/start-attempt"] == "3"


def test_retries_exhausted_ends_failed(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(namespace, extra_env=FAST_RETRIES)
    command = 'make broken # sim:pending=0.1s sim:duration=0.2s sim:fail="exit 1"'
    taskruns.apply("broken", {"task": inline_task(command), "retries": 1})

    cond = taskruns.wait_condition("broken", "Succeeded", "False", "Failed", timeout=60)
    assert "no retries left" in cond["message"]
    status = taskruns.status("broken")
    assert (status["phase"], status["attempt"]) == ("FAILED", 2)
    assert len(status["attempts"]) == 1
    assert taskruns.condition("broken", "Stalled")["status"] == "True"  # type: ignore[index]
    executions = _executions(e2e_simulator, taskruns, "broken")
    assert [e["id"] for e in executions] == [
        status["attempts"][0]["executionId"],
        status["taskExecutionId"],
    ]


def test_stop_during_back_off_ends_stopped_with_no_new_attempt(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    # A back-off long enough to stop the run inside it.
    operator_factory(namespace, extra_env={"RETRY_BACKOFF_BASE_SECONDS": "60"})
    command = "make flaky # sim:pending=0.1s sim:duration=0.2s sim:fail_first=1"
    taskruns.apply("waiting", {"task": inline_task(command), "retries": 2})

    retrying = taskruns.wait_condition("waiting", "Succeeded", "Unknown", "Retrying", timeout=30)
    assert "attempt 2 of 3 starts at" in retrying["message"]
    status = taskruns.status("waiting")
    assert (status["attempt"], len(status["attempts"])) == (2, 1)
    assert status["nextAttemptAt"]
    assert not status.get("taskExecutionId")
    assert taskruns.condition("waiting", "Reconciling")["status"] == "True"  # type: ignore[index]

    patched = taskruns.patch_spec("waiting", {"desiredPhase": "STOPPED"})
    assert patched.returncode == 0, patched.stderr
    cond = taskruns.wait_condition("waiting", "Succeeded", "False", "Stopped", timeout=30)
    assert "while waiting to retry" in cond["message"]
    final = taskruns.status("waiting")
    assert (final["phase"], final["attempt"], len(final["attempts"])) == ("STOPPED", 2, 1)
    assert taskruns.condition("waiting", "Stalled")["status"] == "False"  # type: ignore[index]
    assert len(_executions(e2e_simulator, taskruns, "waiting")) == 1


@pytest.mark.parametrize(
    ("crash_point", "event"), [("after-claim", "Restarting"), ("after-start", "Adopted")]
)
def test_killed_around_the_second_attempts_start_makes_one_execution_for_it(
    crash_point: str,
    event: str,
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    """Attempt 1 fails; the operator dies right after claiming attempt 2 (nothing started)
    or right after StartTask answered (nothing recorded). The next operator resolves the
    start of attempt 2 alone: attempt 1's execution is never adopted for it, and attempt 2
    has exactly one execution."""
    first = operator_factory(namespace, extra_env={"RETRY_BACKOFF_BASE_SECONDS": "2"})
    command = "make flaky # sim:pending=0.1s sim:duration=0.2s sim:fail_first=1"
    taskruns.apply("crashy", {"task": inline_task(command), "retries": 1})
    taskruns.wait_condition("crashy", "Succeeded", "Unknown", "Retrying", timeout=30)
    first.stop()

    crashing = operator_factory(namespace, extra_env={"ONA_TASKRUN_CRASH_POINT": crash_point})
    assert crashing.wait_exit(timeout=30) == -signal.SIGKILL
    annotations = taskruns.get("crashy")["metadata"]["annotations"]
    assert annotations["automation.ona.com/start-attempt"] == "2"
    assert annotations["automation.ona.com/start-requested-at"]
    assert len(_executions(e2e_simulator, taskruns, "crashy")) == (
        2 if crash_point == "after-start" else 1
    )

    operator_factory(namespace)
    status = taskruns.wait_phase("crashy", "SUCCEEDED", timeout=60)
    assert (status["attempt"], len(status["attempts"])) == (2, 1)
    executions = _executions(e2e_simulator, taskruns, "crashy")
    assert [e["id"] for e in executions] == [
        status["attempts"][0]["executionId"],
        status["taskExecutionId"],
    ]
    taskruns.wait_events("crashy", event)


def test_ttl_deletes_a_finished_taskrun_and_its_task(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(namespace)
    command = "make once # sim:pending=0.1s sim:duration=0.2s"
    taskruns.apply("short-lived", {"task": inline_task(command), "ttlSecondsAfterFinished": 2})
    status = taskruns.wait_phase("short-lived", "SUCCEEDED", timeout=30)
    uid = taskruns.get("short-lived")["metadata"]["uid"]

    wait_for(lambda: not taskruns.exists("short-lived"), timeout=30, what="the TTL delete")
    # The Expired Event is queued beside the delete, not before it: wait for it.
    events = taskruns.wait_events("short-lived", "Expired")
    [expired] = [e for e in events if e["reason"] == "Expired"]
    assert "spec.ttlSecondsAfterFinished is 2" in expired["message"]
    # deletionPolicy Stop (the default) applied: the task it created in Ona is gone too.
    assert not [
        t
        for t in e2e_simulator.control.tasks()
        if t["metadata"].get("reference") == f"k8s-taskrun-{uid}"
    ]
    assert status["taskExecutionId"]
