"""End to end: the operator as a process under its own RBAC identity, a real API server,
the simulator over HTTP; TaskRuns driven with kubectl and the Kubernetes client."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    ENVIRONMENT_ID,
    OperatorProcess,
    TaskRuns,
    inline_task,
    unique_reference,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e


def _execution(sim: SimulatorHandle, execution_id: str) -> dict[str, object]:
    return sim.control.execution(execution_id)


def _remote_phase(sim: SimulatorHandle, execution_id: str) -> str:
    execution = _execution(sim, execution_id)["execution"]
    assert isinstance(execution, dict)
    return str((execution.get("status") or {}).get("phase", ""))


def test_inline_task_runs_to_succeeded_with_steps_mirrored(
    operator: OperatorProcess,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
) -> None:
    command = "make test # sim:duration=1.5s sim:steps=3 sim:output.result=ok"
    taskruns.apply("inline", {"task": inline_task(command)})

    status = taskruns.wait_phase("inline", "SUCCEEDED")
    assert [s["phase"] for s in status["steps"]] == ["SUCCEEDED"] * 3
    assert status["steps"][-1]["output"] == {"result": "ok"}
    assert status["taskId"]
    assert status["taskExecutionId"]
    assert int(status["statusVersion"]) > 0
    assert status["logUrl"]
    assert status["startedAt"]
    assert status["completedAt"]
    succeeded = taskruns.condition("inline", "Succeeded")
    assert succeeded is not None
    assert succeeded["status"] == "True"
    assert taskruns.condition("inline", "Reconciling")["status"] == "False"  # type: ignore[index]
    assert taskruns.condition("inline", "Stalled")["status"] == "False"  # type: ignore[index]

    # The operator created the task with a reference derived from the TaskRun's uid.
    uid = taskruns.get("inline")["metadata"]["uid"]
    task = next(t for t in e2e_simulator.control.tasks() if t["id"] == status["taskId"])
    assert task["metadata"]["reference"] == f"k8s-taskrun-{uid}"

    # What a user sees with kubectl.
    ns = taskruns.namespace
    waited = control_plane.kubectl_run(
        "-n", ns, "wait", "--for=condition=Succeeded", "taskrun/inline", "--timeout=20s"
    )
    assert "condition met" in waited.stdout
    table = control_plane.kubectl_run("-n", ns, "get", "otr").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "SUCCEEDED", "REASON", "EXECUTION", "AGE"]
    row = table[1].split()
    assert row[:5] == ["inline", "SUCCEEDED", "True", "Succeeded", status["taskExecutionId"]]
    by_category = control_plane.kubectl_run("-n", ns, "get", "ona").stdout
    assert "inline" in by_category

    reasons = {e["reason"] for e in taskruns.wait_events("inline", "Succeeded")}
    assert "Succeeded" in reasons
    # Starts and created tasks show in status; an Event each would cost a write per run.
    assert not {"TaskCreated", "Started"} & reasons


def test_task_ref_by_id_and_by_reference_succeed(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    reference = unique_reference()
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID,
        reference=reference,
        name="shared",
        command="echo hi # sim:duration=0.5s",
    )
    taskruns.apply("by-id", {"taskRef": {"id": task["id"]}})
    taskruns.apply("by-ref", {"taskRef": {"environmentId": ENVIRONMENT_ID, "reference": reference}})
    first = taskruns.wait_phase("by-id", "SUCCEEDED")
    second = taskruns.wait_phase("by-ref", "SUCCEEDED")
    assert first["taskId"] == second["taskId"] == task["id"]
    assert first["taskExecutionId"] != second["taskExecutionId"]


def test_failing_task_ends_failed_with_the_failure_message(
    operator: OperatorProcess, taskruns: TaskRuns
) -> None:
    command = 'false # sim:duration=0.5s sim:steps=2 sim:fail="unit tests failed"'
    taskruns.apply("failing", {"task": inline_task(command)})
    status = taskruns.wait_phase("failing", "FAILED")
    assert "unit tests failed" in status["failureMessage"]
    assert any("unit tests failed" in s.get("failureMessage", "") for s in status["steps"])
    cond = taskruns.wait_condition("failing", "Succeeded", "False", "Failed")
    assert "unit tests failed" in cond["message"]
    assert taskruns.condition("failing", "Stalled")["status"] == "True"  # type: ignore[index]


def test_stopped_edit_mid_run_stops_the_execution(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    taskruns.apply("long", {"task": inline_task("sleep infinity # sim:hang")})
    running = taskruns.wait_phase("long", "RUNNING")
    result = taskruns.patch_spec("long", {"desiredPhase": "STOPPED"})
    assert result.returncode == 0, result.stderr
    taskruns.wait_phase("long", "STOPPED")
    cond = taskruns.wait_condition("long", "Succeeded", "False", "Stopped")
    assert "desiredPhase" in cond["message"]
    # Stopped as the spec asked: not stalled, so kstatus and Argo read it as done.
    assert taskruns.condition("long", "Stalled")["status"] == "False"  # type: ignore[index]
    assert _remote_phase(e2e_simulator, running["taskExecutionId"]).endswith("STOPPED")
    taskruns.wait_events("long", "Stopping", "Stopped")


def test_created_stopped_never_starts(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    taskruns.apply(
        "never", {"task": inline_task("echo # sim:duration=0.2s"), "desiredPhase": "STOPPED"}
    )
    cond = taskruns.wait_condition("never", "Succeeded", "False", "Stopped")
    assert "never started" in cond["message"]
    status = taskruns.status("never")
    assert not status.get("taskExecutionId")
    assert not status.get("taskId")
    uid = taskruns.get("never")["metadata"]["uid"]
    refs = {t["metadata"].get("reference") for t in e2e_simulator.control.tasks()}
    assert f"k8s-taskrun-{uid}" not in refs


def test_timeout_stops_the_execution_and_ends_timed_out(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    taskruns.apply("slow", {"task": inline_task("sleep 1h # sim:hang"), "timeout": "2s"})
    cond = taskruns.wait_condition("slow", "Succeeded", "False", "TimedOut", timeout=30)
    assert "timeout" in cond["message"]
    status = taskruns.status("slow")
    assert status["phase"] == "STOPPED"
    assert _remote_phase(e2e_simulator, status["taskExecutionId"]).endswith("STOPPED")
    assert taskruns.condition("slow", "Stalled")["status"] == "True"  # type: ignore[index]


@pytest.mark.parametrize("policy", ["Stop", "Orphan"])
def test_delete_mid_run_follows_the_deletion_policy(
    policy: str, operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    taskruns.apply("doomed", {"task": inline_task("sleep # sim:hang"), "deletionPolicy": policy})
    status = taskruns.wait_phase("doomed", "RUNNING")
    assert "automation.ona.com/taskrun" in taskruns.get("doomed")["metadata"]["finalizers"]
    execution_id, task_id = status["taskExecutionId"], status["taskId"]

    taskruns.control_plane.kubectl_run(
        "-n", taskruns.namespace, "delete", "taskrun", "doomed", "--wait=false"
    )
    wait_for(lambda: not taskruns.exists("doomed"), timeout=30, what="TaskRun deleted")

    remote_tasks = {t["id"] for t in e2e_simulator.control.tasks()}
    if policy == "Stop":
        wait_for(
            lambda: _remote_phase(e2e_simulator, execution_id).endswith("STOPPED"),
            what="execution stopped",
        )
        assert task_id not in remote_tasks
    else:
        assert _remote_phase(e2e_simulator, execution_id).endswith("RUNNING")
        assert task_id in remote_tasks
        e2e_simulator.control.set_phase(execution_id, "STOPPED")  # tidy up


def test_delete_never_hangs_when_the_remote_is_already_gone(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    reference = unique_reference()
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=reference, command="x # sim:hang"
    )
    taskruns.apply("gone", {"taskRef": {"id": task["id"]}})
    status = taskruns.wait_phase("gone", "RUNNING")
    e2e_simulator.control.set_phase(status["taskExecutionId"], "STOPPED")
    taskruns.control_plane.kubectl_run(
        "-n", taskruns.namespace, "delete", "taskrun", "gone", "--wait=false"
    )
    wait_for(lambda: not taskruns.exists("gone"), timeout=30, what="TaskRun deleted")


def test_unknown_task_id_ends_task_not_found(operator: OperatorProcess, taskruns: TaskRuns) -> None:
    missing = str(uuid.uuid4())
    taskruns.apply("missing", {"taskRef": {"id": missing}})
    cond = taskruns.wait_condition("missing", "Succeeded", "False", "TaskNotFound")
    assert missing in cond["message"]
    assert taskruns.condition("missing", "Stalled")["status"] == "True"  # type: ignore[index]
    assert not taskruns.status("missing").get("taskExecutionId")


def test_unknown_task_reference_ends_task_not_found(
    operator: OperatorProcess, taskruns: TaskRuns
) -> None:
    taskruns.apply(
        "noref", {"taskRef": {"environmentId": ENVIRONMENT_ID, "reference": "no-such-ref"}}
    )
    cond = taskruns.wait_condition("noref", "Succeeded", "False", "TaskNotFound")
    assert "no-such-ref" in cond["message"]


@pytest.mark.parametrize(
    ("token_kind", "reason"), [("wrong", "Unauthorized"), ("readonly", "Forbidden")]
)
def test_refused_token_ends_in_a_condition_without_leaking_it(
    token_kind: str,
    reason: str,
    operator_factory: object,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    token = "wrong-" + uuid.uuid4().hex if token_kind == "wrong" else e2e_simulator.readonly_token
    proc = operator_factory(namespace, token=token)  # type: ignore[operator]
    taskruns.apply("refused", {"task": inline_task("echo # sim:duration=0.2s")})
    cond = taskruns.wait_condition("refused", "Succeeded", "False", reason)
    assert cond["message"]
    events = taskruns.wait_events("refused", reason)
    everything = str(taskruns.get("refused")) + str(events) + proc.log()
    assert token not in everything
    assert proc.running


def test_older_or_equal_status_version_never_overwrites_a_newer_one(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    taskruns.apply("versions", {"task": inline_task("run # sim:hang")})
    status = taskruns.wait_phase("versions", "RUNNING")
    execution_id = status["taskExecutionId"]
    held = int(status["statusVersion"])
    # Replay the execution's first status: PENDING with an older version.
    versions = [int(v) for v in _execution(e2e_simulator, execution_id)["statusVersions"]]  # type: ignore[union-attr]
    assert min(versions) < held
    e2e_simulator.control.replay(execution_id, min(versions))
    e2e_simulator.control.clear_calls()

    def reads_since_replay() -> int:
        gets = [
            c
            for c in e2e_simulator.control.calls("GetTaskExecution")
            if c.get("requestId") == execution_id and c.get("httpStatus") == 200
        ]
        return len(gets) + len(e2e_simulator.control.calls("ListTaskExecutions"))

    # The replay is announced on the watch stream, so the operator re-reads at once.
    wait_for(reads_since_replay, what="the operator to read the replayed status")
    after = taskruns.status("versions")
    assert after["phase"] == "RUNNING"
    assert int(after["statusVersion"]) >= held
    e2e_simulator.control.clear_replay(execution_id)
    e2e_simulator.control.set_phase(execution_id, "SUCCEEDED")
    final = taskruns.wait_phase("versions", "SUCCEEDED")
    assert int(final["statusVersion"]) > held


def test_the_shipped_samples_run_against_the_simulator(
    operator: OperatorProcess,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
) -> None:
    samples = Path(__file__).resolve().parents[2] / "config" / "samples"
    ref_sample = yaml.safe_load((samples / "taskrun-taskref.yaml").read_text())
    task_id = ref_sample["spec"]["taskRef"]["id"]
    if task_id not in {t["id"] for t in e2e_simulator.control.tasks()}:
        e2e_simulator.control.seed_task(
            task_id=task_id,
            environment_id=ENVIRONMENT_ID,
            reference="nightly-report",
            command="./report.sh # sim:duration=0.5s",
        )
    control_plane.kubectl_run("-n", taskruns.namespace, "apply", "-k", str(samples))
    for name in ("build-and-test", "nightly-report"):
        status = taskruns.wait_phase(name, "SUCCEEDED", timeout=60)
        assert status["steps"]
    # The retrying sample fails once, then succeeds after the default 10 s back-off.
    retried = taskruns.wait_phase("flaky-integration-tests", "SUCCEEDED", timeout=60)
    assert (retried["attempt"], len(retried["attempts"])) == (2, 1)


def test_a_task_named_by_id_is_watched_in_the_environment_its_execution_reports(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:hang"
    )
    e2e_simulator.control.clear_calls()
    taskruns.apply("by-id-watched", {"taskRef": {"id": task["id"]}})
    status = taskruns.wait_phase("by-id-watched", "RUNNING")
    wait_for(
        lambda: e2e_simulator.control.calls("WatchEvents"),
        what="a WatchEvents stream for the execution's environment",
    )
    # With the stream open, the end of the execution arrives as an event.
    e2e_simulator.control.set_phase(status["taskExecutionId"], "SUCCEEDED")
    taskruns.wait_phase("by-id-watched", "SUCCEEDED")
