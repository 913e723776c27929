"""End to end: one TaskRun starts at most one execution, whatever dies or fails, and
nothing is lost. The operator runs as a process; crash points SIGKILL it mid-start."""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.operator_fixtures import (
    ENVIRONMENT_ID,
    OperatorFactory,
    OperatorProcess,
    TaskRuns,
    inline_task,
    unique_reference,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e


def _executions_of_task(sim: SimulatorHandle, task_id: str) -> list[dict[str, Any]]:
    found = []
    for item in sim.control.executions():
        execution = item.get("execution", item)
        if execution["metadata"]["taskId"] == task_id:
            found.append(execution)
    return found


def _task_id_by_reference(sim: SimulatorHandle, reference: str) -> str | None:
    for task in sim.control.tasks():
        if task["metadata"].get("reference") == reference:
            return str(task["id"])
    return None


def _claim(taskruns: TaskRuns, name: str) -> str:
    """The start claim the operator recorded before StartTask."""
    annotations = taskruns.get(name)["metadata"].get("annotations") or {}
    return str(annotations.get("automation.ona.com/start-requested-at", ""))


def _uid(taskruns: TaskRuns, name: str) -> str:
    return str(taskruns.get(name)["metadata"]["uid"])


def _task_id_of(sim: SimulatorHandle, taskruns: TaskRuns, name: str, spec: dict[str, Any]) -> str:
    """The Ona task of a TaskRun whose status was not written yet."""
    if "taskRef" in spec:
        return str(spec["taskRef"]["id"])
    found = _task_id_by_reference(sim, f"k8s-taskrun-{_uid(taskruns, name)}")
    assert found is not None
    return found


def _start_directly(sim: SimulatorHandle, task_id: str) -> str:
    """Start an execution as the operator's own principal, outside the operator."""
    response = httpx.post(
        f"{sim.base_url}/gitpod.v1.EnvironmentAutomationService/StartTask",
        headers={"Authorization": f"Bearer {sim.token}", "Content-Type": "application/json"},
        content=json.dumps({"id": task_id}),
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["taskExecution"]["id"])


@pytest.mark.parametrize("form", ["inline", "taskRef"])
def test_killed_between_start_and_record_adopts_the_execution(
    form: str,
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    crashing = operator_factory(namespace, extra_env={"ONA_TASKRUN_CRASH_POINT": "after-start"})
    command = "test # sim:duration=2s"
    if form == "inline":
        spec: dict[str, Any] = {"task": inline_task(command)}
    else:
        task = e2e_simulator.control.seed_task(
            environment_id=ENVIRONMENT_ID, reference=unique_reference(), command=command
        )
        spec = {"taskRef": {"id": task["id"]}}
    taskruns.apply("crashy", spec)
    assert crashing.wait_exit(timeout=30) == -signal.SIGKILL

    status = taskruns.status("crashy")
    # The claim went out with the finalizer in one conditional write, before StartTask.
    assert _claim(taskruns, "crashy")
    assert not status.get("taskExecutionId")  # the crash came before recording it
    task_id = status.get("taskId") or _task_id_of(e2e_simulator, taskruns, "crashy", spec)
    assert len(_executions_of_task(e2e_simulator, task_id)) == 1

    operator_factory(namespace)  # restart without the crash point
    final = taskruns.wait_phase("crashy", "SUCCEEDED", timeout=60)
    executions = _executions_of_task(e2e_simulator, task_id)
    assert [e["id"] for e in executions] == [final["taskExecutionId"]]
    taskruns.wait_events("crashy", "Adopted", "Succeeded")


def test_killed_after_claim_before_start_starts_exactly_once(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    crashing = operator_factory(namespace, extra_env={"ONA_TASKRUN_CRASH_POINT": "after-claim"})
    taskruns.apply("claimed", {"task": inline_task("x # sim:duration=0.5s")})
    assert crashing.wait_exit(timeout=30) == -signal.SIGKILL
    assert _claim(taskruns, "claimed")
    task_id = _task_id_by_reference(e2e_simulator, f"k8s-taskrun-{_uid(taskruns, 'claimed')}")
    assert task_id is not None
    assert _executions_of_task(e2e_simulator, task_id) == []

    operator_factory(namespace)
    final = taskruns.wait_phase("claimed", "SUCCEEDED", timeout=60)
    executions = _executions_of_task(e2e_simulator, final["taskId"])
    assert [e["id"] for e in executions] == [final["taskExecutionId"]]


def test_killed_between_stop_claim_and_stop_stops_after_restart(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    crashing = operator_factory(
        namespace, extra_env={"ONA_TASKRUN_CRASH_POINT": "after-stop-claim"}
    )
    taskruns.apply("stopper", {"task": inline_task("hang # sim:hang"), "timeout": "2s"})
    assert crashing.wait_exit(timeout=30) == -signal.SIGKILL
    status = taskruns.status("stopper")
    # The stop was written, and the operator died before asking Ona for it.
    assert status["stopRequestedAt"]
    assert status["stopReason"] == "TimedOut"
    execution_id = status["taskExecutionId"]
    (execution,) = [
        e for e in _executions_of_task(e2e_simulator, status["taskId"]) if e["id"] == execution_id
    ]
    assert execution["status"]["phase"] == "TASK_EXECUTION_PHASE_RUNNING"

    # Restarted, the operator asks for the stop again once it has gone untaken too long.
    operator_factory(namespace, extra_env={"ONA_STOP_RESEND_SECONDS": "2"})
    final = taskruns.wait_phase("stopper", "STOPPED", timeout=60)
    assert final["stopReason"] == "TimedOut"
    assert final["taskExecutionId"] == execution_id
    taskruns.wait_events("stopper", "TimedOut")


@pytest.mark.parametrize("mode", ["503", "drop", "hang"])
def test_lost_start_response_is_adopted_not_retried(
    mode: str, operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    e2e_simulator.control.set_faults(
        "StartTask", lost_response=1.0, lost_response_mode=mode, hang_ms=4000, count=1
    )
    taskruns.apply("lost", {"task": inline_task("x # sim:duration=1s")})
    cond = taskruns.wait_condition("lost", "Succeeded", "Unknown", "StartOutcomeUnknown")
    assert "unknown" in cond["message"]
    final = taskruns.wait_phase("lost", "SUCCEEDED", timeout=60)
    executions = _executions_of_task(e2e_simulator, final["taskId"])
    assert [e["id"] for e in executions] == [final["taskExecutionId"]]
    assert operator.running


def test_ambiguous_start_stalls_until_a_person_names_the_execution(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: Any,
) -> None:
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:hang"
    )
    crashing = operator_factory(namespace, extra_env={"ONA_TASKRUN_CRASH_POINT": "after-claim"})
    taskruns.apply("ambiguous", {"taskRef": {"id": task["id"]}})
    assert crashing.wait_exit(timeout=30) == -signal.SIGKILL
    # Two executions by the operator's own principal after its recorded start: which is ours?
    first = _start_directly(e2e_simulator, task["id"])
    second = _start_directly(e2e_simulator, task["id"])

    operator_factory(namespace)
    cond = taskruns.wait_condition("ambiguous", "Stalled", "True", "StartOutcomeUnknown", 60)
    assert first in cond["message"]
    assert second in cond["message"]
    assert "automation.ona.com/adopt-execution" in cond["message"]
    assert len(_executions_of_task(e2e_simulator, task["id"])) == 2  # nothing more started

    control_plane.kubectl_run(
        "-n",
        namespace,
        "annotate",
        "taskrun",
        "ambiguous",
        f"automation.ona.com/adopt-execution={second}",
    )
    running = taskruns.wait_phase("ambiguous", "RUNNING")
    assert running["taskExecutionId"] == second
    e2e_simulator.control.set_phase(second, "SUCCEEDED")
    e2e_simulator.control.set_phase(first, "STOPPED")
    taskruns.wait_condition("ambiguous", "Succeeded", "True")
    assert len(_executions_of_task(e2e_simulator, task["id"])) == 2


def test_unknown_starts_of_one_task_looked_at_together_adopt_its_execution_once(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    """Five TaskRuns of one task whose starts all ended unknown, and one execution of the
    task: looked at together (an operator starting with a backlog), exactly one of them
    may adopt it; the others find nothing left and start anew."""
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:duration=1s"
    )
    names = [f"together-{index}" for index in range(5)]
    # The first operator records each claim, meets a 503 (before the call took effect,
    # though it cannot know), and would wait ten minutes before looking.
    e2e_simulator.control.set_faults("StartTask", error_503=1.0, count=len(names))
    first = operator_factory(namespace, extra_env={"ONA_START_SETTLE": "600"})
    for name in names:
        taskruns.apply(name, {"taskRef": {"id": task["id"]}})
    for name in names:
        taskruns.wait_condition(name, "Succeeded", "Unknown", "StartOutcomeUnknown")
    assert _executions_of_task(e2e_simulator, task["id"]) == []
    # One execution appears, by the operator's own principal, after every claim.
    theirs = _start_directly(e2e_simulator, task["id"])
    first.kill()

    operator_factory(namespace)
    finals = [taskruns.wait_phase(name, "SUCCEEDED", timeout=60) for name in names]
    recorded = [f["taskExecutionId"] for f in finals]
    assert len(set(recorded)) == len(names), f"one execution recorded twice: {recorded}"
    assert recorded.count(theirs) == 1
    executions = {e["id"] for e in _executions_of_task(e2e_simulator, task["id"])}
    assert executions == set(recorded)  # the four others started one each, nothing more


def test_an_unknown_start_does_not_adopt_an_execution_another_taskrun_is_starting(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    """B's start of a task ended unknown; A's start of the same task has just created its
    execution, whose answer is still on its way, when B looks: the execution is A's, and
    B must not take it."""
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:duration=1s"
    )
    e2e_simulator.control.set_faults("StartTask", error_503=1.0, count=1)
    first = operator_factory(namespace, extra_env={"ONA_START_SETTLE": "600"})
    taskruns.apply("b-unknown", {"taskRef": {"id": task["id"]}})
    taskruns.wait_condition("b-unknown", "Succeeded", "Unknown", "StartOutcomeUnknown")
    first.kill()
    claimed = datetime.fromisoformat(taskruns.status("b-unknown")["startRequestedAt"])

    # A's StartTask takes effect at once and is answered 1.5 s later (within the 2 s
    # request timeout); B's look (ListTaskExecutions, 0.7 s late) sees A's execution.
    taskruns.apply("a-starting", {"taskRef": {"id": task["id"]}})
    e2e_simulator.control.set_faults(
        "StartTask", lost_response=1.0, lost_response_mode="hang", hang_ms=1500, count=1
    )
    e2e_simulator.control.set_faults("ListTaskExecutions", latency_ms=700)
    # B looks at once when the next operator starts: its claim is past the 3 s settle.
    wait_for(
        lambda: datetime.now(UTC) - claimed > timedelta(seconds=5),
        timeout=15,
        what="b-unknown's claim to be past the settle",
    )
    operator_factory(namespace)
    a = taskruns.wait_phase("a-starting", "SUCCEEDED", timeout=60)
    b = taskruns.wait_phase("b-unknown", "SUCCEEDED", timeout=60)
    assert a["taskExecutionId"] != b["taskExecutionId"]
    executions = {e["id"] for e in _executions_of_task(e2e_simulator, task["id"])}
    assert executions == {a["taskExecutionId"], b["taskExecutionId"]}


def test_outage_keeps_the_last_status_and_converges_after(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    taskruns.apply("outage", {"task": inline_task("x # sim:hang")})
    running = taskruns.wait_phase("outage", "RUNNING")
    e2e_simulator.control.clear_calls()
    e2e_simulator.control.set_faults("*", error_503=1.0)
    e2e_simulator.control.disconnect_watchers()  # an outage drops the open streams too
    cond = taskruns.wait_condition("outage", "RemoteReachable", "False", "Unavailable")
    assert "cannot be reached" in cond["message"]
    assert taskruns.status("outage")["phase"] == "RUNNING"
    # The execution ends while the API is down; nothing may be lost.
    e2e_simulator.control.set_phase(running["taskExecutionId"], "SUCCEEDED")
    outage_started = time.monotonic()
    wait_for(
        lambda: len(e2e_simulator.control.calls()) >= 5,
        what="the operator to keep trying during the outage",
    )
    assert taskruns.status("outage")["phase"] == "RUNNING"
    e2e_simulator.control.clear_faults()
    final = taskruns.wait_phase("outage", "SUCCEEDED", timeout=90)
    assert final["taskExecutionId"] == running["taskExecutionId"]
    taskruns.wait_condition("outage", "RemoteReachable", "True")
    assert operator.running
    assert time.monotonic() - outage_started < 90


def test_two_replicas_start_once_and_the_standby_takes_over(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: Any,
) -> None:
    lease = f"lease-{uuid.uuid4().hex[:8]}"

    def replica(name: str) -> OperatorProcess:
        env = {
            "LEADER_ELECTION": "true",
            "LEASE_NAME": lease,
            "LEASE_DURATION": "4",
            "POD_NAME": name,
        }
        return operator_factory(namespace, extra_env=env)

    replicas = {"replica-a": replica("replica-a"), "replica-b": replica("replica-b")}
    for i in range(4):
        taskruns.apply(f"pair-{i}", {"task": inline_task("x # sim:duration=1s")})
    for i in range(4):
        status = taskruns.wait_phase(f"pair-{i}", "SUCCEEDED", timeout=60)
        assert len(_executions_of_task(e2e_simulator, status["taskId"])) == 1

    def holder() -> str:
        result = control_plane.kubectl_run(
            "-n", "ona-system", "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}"
        )
        return str(result.stdout.strip())

    leader = wait_for(holder, what="a lease holder")
    killed_at = time.monotonic()
    replicas[leader].kill()
    standby = next(name for name in replicas if name != leader)
    wait_for(lambda: holder() == standby, timeout=30, what="the standby to take the lease")
    taskruns.apply("after-failover", {"task": inline_task("x # sim:duration=0.5s")})
    status = taskruns.wait_phase("after-failover", "SUCCEEDED", timeout=60)
    takeover = time.monotonic() - killed_at
    print(f"failover: standby led and finished a new TaskRun {takeover:.1f}s after the kill")
    assert len(_executions_of_task(e2e_simulator, status["taskId"])) == 1
    assert replicas[standby].running


def test_conflicting_writes_are_retried_without_losing_the_run(
    operator: OperatorProcess,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    """Another writer keeps changing the TaskRun, so the operator's status writes, which
    carry the resourceVersion they read, keep meeting 409 Conflict."""
    # Long enough for several progress writes (at most one per merge window) to meet edits.
    taskruns.apply("contended", {"task": inline_task("x # sim:duration=12s sim:steps=12")})
    with taskruns.edited("contended") as edits:
        wait_for(
            lambda: "(409)" in operator.log(),  # the writes really did conflict
            timeout=60,
            what="a write of the operator that met 409 Conflict",
        )
    final = taskruns.wait_phase("contended", "SUCCEEDED", timeout=60)
    assert edits() > 5
    assert [e["id"] for e in _executions_of_task(e2e_simulator, final["taskId"])] == [
        final["taskExecutionId"]
    ]
    assert [s["phase"] for s in final["steps"]] == ["SUCCEEDED"] * 12
    assert operator.running
