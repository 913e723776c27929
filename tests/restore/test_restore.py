"""Backup and restore as docs/operations.md ("Backup and restore") describes it, each
documented path shown: a TaskRun backed up with `kubectl get -o json` and restored as a
new object (new uid) in another namespace, which stands for the new cluster; the old
cluster's operator is gone by then.

- Restored without status, it runs again: a second execution of the same task.
- Restored with `spec.desiredPhase: STOPPED`, it starts nothing and ends STOPPED.
- Restored with its status (written through the status subresource while no operator
  runs), it carries on: a running one is followed to its end by its execution id, a
  finished one stays finished; neither starts a second execution.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    ENVIRONMENT_ID,
    OperatorFactory,
    OperatorProcess,
    TaskRuns,
    unique_reference,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

# What docs/operations.md's jq removes before `kubectl create`: what the API server sets.
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def backup(taskruns: TaskRuns, name: str) -> dict[str, Any]:
    """`kubectl get taskrun NAME -o json`."""
    shown = taskruns.control_plane.kubectl_run(
        "-n", taskruns.namespace, "get", "taskrun", name, "-o", "json"
    )
    saved: dict[str, Any] = json.loads(shown.stdout)
    return saved


def restore(
    plane: ControlPlane,
    saved: dict[str, Any],
    namespace: str,
    *,
    with_status: bool,
    spec: dict[str, Any] | None = None,
) -> None:
    """docs/operations.md's restore by hand: `kubectl create` of the backup without what the
    server sets (the status in it is ignored), then, with_status, the status written
    through the status subresource."""
    doc = json.loads(json.dumps(saved))
    for key in SERVER_SET:
        doc["metadata"].pop(key, None)
    doc["metadata"]["namespace"] = namespace
    doc["spec"].update(spec or {})
    plane.kubectl_run("create", "-f", "-", input=json.dumps(doc))
    if with_status:
        plane.kubectl_run(
            "-n", namespace, "patch", "taskrun", saved["metadata"]["name"],
            "--subresource=status", "--type=merge", "-p", json.dumps({"status": saved["status"]}),
        )  # fmt: skip


def executions_of(sim: SimulatorHandle, task_id: str) -> list[str]:
    found = []
    for item in sim.control.executions():
        execution = item.get("execution", item)
        if execution["metadata"]["taskId"] == task_id:
            found.append(str(execution["id"]))
    return found


@pytest.fixture
def new_cluster(k8s_admin: client.ApiClient, control_plane: ControlPlane) -> Iterator[TaskRuns]:
    """The namespace restored into, as a user there sees it."""
    name = f"t-restored-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(k8s_admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield TaskRuns(control_plane, client.CustomObjectsApi(k8s_admin), name)
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


@pytest.fixture
def task_id(e2e_simulator: SimulatorHandle) -> str:
    """An Ona task of its own, so its executions are this test's alone."""
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="make"
    )
    return str(task["id"])


def run_to_the_end(
    operator_factory: OperatorFactory, taskruns: TaskRuns, task_id: str
) -> tuple[OperatorProcess, dict[str, Any]]:
    """The old cluster: its operator runs `report` (a taskRef run) to SUCCEEDED."""
    operator = operator_factory(taskruns.namespace)
    taskruns.apply("report", {"taskRef": {"id": task_id}})
    return operator, taskruns.wait_phase("report", "SUCCEEDED", timeout=60)


@pytest.fixture
def finished(
    operator_factory: OperatorFactory,
    taskruns: TaskRuns,
    task_id: str,
    e2e_simulator: SimulatorHandle,
) -> dict[str, Any]:
    """A TaskRun that ran once and succeeded, backed up; the old cluster's operator gone."""
    old_operator, status = run_to_the_end(operator_factory, taskruns, task_id)
    saved = backup(taskruns, "report")
    old_operator.stop()
    assert saved["status"]["phase"] == "SUCCEEDED"
    assert executions_of(e2e_simulator, task_id) == [status["taskExecutionId"]]
    # The signed start claim is in the backup, as it is in any backup.
    assert "automation.ona.com/start-claim-signature" in saved["metadata"]["annotations"]
    return saved


def test_restored_without_status_it_runs_again(
    finished: dict[str, Any],
    new_cluster: TaskRuns,
    operator_factory: OperatorFactory,
    task_id: str,
    e2e_simulator: SimulatorHandle,
) -> None:
    restore(new_cluster.control_plane, finished, new_cluster.namespace, with_status=False)
    # `kubectl create` of the whole backup: the API server ignored its status.
    restored = new_cluster.get("report")
    assert not restored.get("status")
    assert restored["metadata"]["uid"] != finished["metadata"]["uid"]
    operator_factory(new_cluster.namespace)
    again = new_cluster.wait_phase("report", "SUCCEEDED", timeout=60)
    first = finished["status"]["taskExecutionId"]
    assert again["taskExecutionId"] != first
    # The same task was executed a second time: what the docs warn of.
    assert executions_of(e2e_simulator, task_id) == [first, again["taskExecutionId"]]


def test_restored_stopped_it_starts_nothing(
    finished: dict[str, Any],
    new_cluster: TaskRuns,
    operator_factory: OperatorFactory,
    task_id: str,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(new_cluster.namespace)
    restore(
        new_cluster.control_plane,
        finished,
        new_cluster.namespace,
        with_status=False,
        spec={"desiredPhase": "STOPPED"},
    )
    status = new_cluster.wait_phase("report", "STOPPED", timeout=60)
    cond = new_cluster.wait_condition("report", "Succeeded", "False", reason="Stopped")
    assert cond["reason"] == "Stopped"
    assert not status.get("taskExecutionId")
    assert executions_of(e2e_simulator, task_id) == [finished["status"]["taskExecutionId"]]


def test_restored_with_status_while_no_operator_runs_it_is_followed_not_restarted(
    operator_factory: OperatorFactory,
    taskruns: TaskRuns,
    new_cluster: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    # The old cluster: one run finished, one still running when the backup is taken.
    done_task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="make"
    )["id"]
    hanging_task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:hang"
    )["id"]
    old_operator = operator_factory(taskruns.namespace)
    taskruns.apply("done", {"taskRef": {"id": done_task}})
    taskruns.apply("running", {"taskRef": {"id": hanging_task}})
    taskruns.wait_phase("done", "SUCCEEDED", timeout=60)
    running = taskruns.wait_phase("running", "RUNNING", timeout=60)
    saved = {name: backup(taskruns, name) for name in ("done", "running")}
    old_operator.stop()

    # The new cluster, operator scaled to 0: create each, then write its status.
    for name in ("done", "running"):
        restore(new_cluster.control_plane, saved[name], new_cluster.namespace, with_status=True)
        restored = new_cluster.get(name)
        assert restored["metadata"]["uid"] != saved[name]["metadata"]["uid"]
        assert restored["status"] == saved[name]["status"]
    new_operator = operator_factory(new_cluster.namespace)

    # The operator has listed both and acts; nothing was started again.
    wait_for(
        lambda: "operator ready:" in new_operator.log(),
        timeout=60,
        what="the new cluster's operator to be ready",
    )
    assert "2 TaskRuns listed" in new_operator.log()
    execution = running["taskExecutionId"]
    assert new_cluster.status("running")["phase"] == "RUNNING"
    assert executions_of(e2e_simulator, hanging_task) == [execution]
    # The running one is followed: its end in Ona reaches the restored TaskRun.
    e2e_simulator.control.set_phase(execution, "SUCCEEDED")
    ended = new_cluster.wait_phase("running", "SUCCEEDED", timeout=60)
    assert ended["taskExecutionId"] == execution
    assert executions_of(e2e_simulator, hanging_task) == [execution]
    # The finished one stayed finished, with its one execution.
    assert new_cluster.status("done") == saved["done"]["status"]
    assert executions_of(e2e_simulator, done_task) == [saved["done"]["status"]["taskExecutionId"]]
    assert new_operator.running
