"""End to end: what docs/gitops.md relies on. Every TaskRun and TaskRunSchedule on that
page is accepted by the API server exactly as written; a TaskRun deleted and created
again under the same name (what Argo CD's BeforeHookCreation and Flux's force apply do)
starts one new execution, its old one stopped first; and a TaskRun named with
generateName (an Argo CD hook per sync) gives every create a run of its own."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import OperatorProcess, TaskRuns, wait_for
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

GITOPS = Path(__file__).resolve().parents[2] / "docs" / "gitops.md"
OURS = "automation.ona.com/v1alpha1"


def documented() -> list[dict[str, Any]]:
    """The project's objects in the page's YAML blocks, as written."""
    blocks = re.findall(r"```yaml\n(.*?)```", GITOPS.read_text(), flags=re.DOTALL)
    docs = [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]
    return [doc for doc in docs if doc.get("apiVersion") == OURS]


def in_namespace(doc: dict[str, Any], namespace: str, command: str | None = None) -> str:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    if command is not None:
        doc["spec"]["task"]["command"] = command
    return yaml.safe_dump(doc)


def hook(generate_name: bool) -> dict[str, Any]:
    (found,) = (
        d
        for d in documented()
        if d["kind"] == "TaskRun"
        and "argocd.argoproj.io/hook" in d["metadata"].get("annotations", {})
        and ("generateName" in d["metadata"]) == generate_name
    )
    return found


def test_every_documented_manifest_is_accepted(control_plane: ControlPlane, namespace: str) -> None:
    docs = documented()
    assert sorted(d["kind"] for d in docs) == ["TaskRun", "TaskRun", "TaskRun", "TaskRunSchedule"]
    for doc in docs:
        result = control_plane.kubectl_run(
            "create", "--dry-run=server", "-f", "-", input=in_namespace(doc, namespace), check=False
        )
        assert result.returncode == 0, result.stderr


def _execution_phase(sim: SimulatorHandle, execution_id: str) -> str:
    return str(sim.control.execution(execution_id)["execution"]["status"]["phase"])


def test_a_taskrun_created_again_under_its_name_starts_a_new_execution(
    operator: OperatorProcess,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    doc = hook(generate_name=False)
    name = doc["metadata"]["name"]
    control_plane.kubectl_run(
        "apply", "-f", "-", input=in_namespace(doc, namespace, "t # sim:hang")
    )
    old = taskruns.wait_phase(name, "RUNNING")
    old_uid = taskruns.get(name)["metadata"]["uid"]

    # The next sync: the old object goes first (its finalizer stops the execution) ...
    control_plane.kubectl_run("-n", namespace, "delete", "taskrun", name, "--wait=false")
    wait_for(lambda: not taskruns.exists(name), what=f"{name} to be gone")
    # The stop was asked before the finalizer went; the execution takes a moment to stop.
    wait_for(
        lambda: (
            _execution_phase(e2e_simulator, old["taskExecutionId"])
            == "TASK_EXECUTION_PHASE_STOPPED"
        ),
        timeout=10,
        what="the old execution to be stopped",
    )

    # ... and the same name is created again, here with a changed command.
    command = "t # sim:duration=0.5s"
    control_plane.kubectl_run("apply", "-f", "-", input=in_namespace(doc, namespace, command))
    new = taskruns.wait_phase(name, "SUCCEEDED", timeout=60)
    assert taskruns.get(name)["metadata"]["uid"] != old_uid
    assert new["taskId"] != old["taskId"]  # a new inline task, from the new uid
    assert new["taskExecutionId"] != old["taskExecutionId"]
    task = next(t for t in e2e_simulator.control.tasks() if t["id"] == new["taskId"])
    assert task["spec"]["command"] == command
    started = [
        e["execution"]["id"]
        for e in e2e_simulator.control.executions()
        if e["execution"]["metadata"]["taskId"] == new["taskId"]
    ]
    assert started == [new["taskExecutionId"]]


def test_generate_name_gives_every_create_its_own_run(
    operator: OperatorProcess,
    taskruns: TaskRuns,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    doc = hook(generate_name=True)
    manifest = in_namespace(doc, namespace, "t # sim:duration=0.5s")
    names = [
        control_plane.kubectl_run("create", "-f", "-", "-o", "name", input=manifest)
        .stdout.strip()
        .removeprefix("taskrun.automation.ona.com/")
        for _ in range(2)
    ]
    assert len(set(names)) == 2
    assert all(n.startswith(doc["metadata"]["generateName"]) for n in names)
    finals = [taskruns.wait_phase(n, "SUCCEEDED", timeout=60) for n in names]
    assert finals[0]["taskExecutionId"] != finals[1]["taskExecutionId"]
