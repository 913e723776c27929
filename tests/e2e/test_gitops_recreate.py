"""End to end: what a GitOps tool meets when a TaskRun changes in Git. A TaskRun runs once and
its spec is immutable, so an in-place edit is refused with a message that names the recipe
(re-create it; docs/gitops.md), and a TaskRun re-created under the same name, as Flux's
`force: true` does with `kubectl replace --force`, is a new run with a new execution."""

from __future__ import annotations

import pytest
import yaml

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    ENVIRONMENT_ID,
    OperatorProcess,
    TaskRuns,
    unique_reference,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e


def _executions_of(sim: SimulatorHandle, task_id: str) -> list[str]:
    return [
        str(item["execution"]["id"])
        for item in sim.control.executions()
        if item["execution"]["metadata"]["taskId"] == task_id
    ]


def test_edit_of_a_retrying_run_is_refused_with_the_recipe(taskruns: TaskRuns) -> None:
    spec = {"taskRef": {"id": "0b7a3c9e-1111-4222-8333-444455556666"}, "retries": 2}
    taskruns.apply("nightly", spec)

    changed = taskruns.try_apply("nightly", {**spec, "retries": 5})
    assert changed.returncode != 0
    assert "spec.retries is immutable" in changed.stderr
    assert "create a new TaskRun" in changed.stderr
    assert "generateName" in changed.stderr
    assert "docs/gitops.md" in changed.stderr
    assert taskruns.get("nightly")["spec"]["retries"] == 2

    ttl = taskruns.try_apply("nightly", {**spec, "ttlSecondsAfterFinished": 60})
    assert ttl.returncode != 0
    assert "spec.ttlSecondsAfterFinished is immutable" in ttl.stderr

    # Stopping stays an edit like any other run's.
    stopped = taskruns.patch_spec("nightly", {"desiredPhase": "STOPPED"})
    assert stopped.returncode == 0, stopped.stderr


def test_recreated_taskrun_with_the_same_name_starts_a_new_execution(
    operator: OperatorProcess,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID,
        reference=unique_reference(),
        command="report # sim:pending=0.1s sim:duration=0.3s",
    )
    spec = {"taskRef": {"id": task["id"]}, "retries": 1}
    taskruns.apply("report", spec)
    first = taskruns.wait_phase("report", "SUCCEEDED", timeout=30)
    first_uid = taskruns.get("report")["metadata"]["uid"]

    # What Flux's `force: true` does with a changed object: delete and create it again.
    manifest = yaml.safe_dump(taskruns.manifest("report", {**spec, "timeout": "10m"}))
    control_plane.kubectl_run("-n", namespace, "replace", "--force", "-f", "-", input=manifest)

    second = taskruns.wait_phase("report", "SUCCEEDED", timeout=30)
    assert taskruns.get("report")["metadata"]["uid"] != first_uid
    assert second["taskExecutionId"] != first["taskExecutionId"]
    assert second["attempt"] == 1
    assert "attempts" not in second  # a new run: nothing carried over from the old one
    assert sorted(_executions_of(e2e_simulator, task["id"])) == sorted(
        [first["taskExecutionId"], second["taskExecutionId"]]
    )
