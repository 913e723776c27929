"""The Argo Workflows recipe of docs/pipelines.md against live TaskRuns: its manifest,
created as Argo creates it; its conditions, evaluated by Argo's rules (tests/tekton/argo.py)
while a run is pending and in each final phase; its output paths, read with kubectl as
Argo's executor reads them. The recipe is read from the page itself, so it cannot drift
from the status the operator writes. (No Tekton here: these tests ask for no `tekton`.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import ENVIRONMENT_ID, OperatorProcess, TaskRuns, wait_for
from tests.tekton import argo
from tests.tekton.argo import ConditionError, Op, Requirement, Verdict

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pipelines.md"


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    """The `resource` template of the page's Workflow."""
    workflows = [
        doc
        for block in argo.yaml_blocks(DOCS.read_text())
        for doc in yaml.safe_load_all(block)
        if isinstance(doc, dict) and doc.get("kind") == "Workflow"
    ]
    assert len(workflows) == 1, "docs/pipelines.md holds one Workflow, the recipe"
    (template,) = [t for t in workflows[0]["spec"]["templates"] if "resource" in t]
    return dict(template)


# --------------------------------------------------------------------------- the recipe


def test_the_recipe_is_what_the_issue_asks_for(recipe: dict[str, Any]) -> None:
    resource = recipe["resource"]
    assert resource["action"] == "create"
    assert resource["setOwnerReference"] is True
    assert argo.parse(resource["successCondition"]) == [
        Requirement("status.phase", Op.EQUALS, ("SUCCEEDED",))
    ]
    assert argo.parse(resource["failureCondition"]) == [
        Requirement("status.phase", Op.IN, ("FAILED", "STOPPED"))
    ]
    manifest = yaml.safe_load(argo.render(resource["manifest"], {"command": "make"}))
    assert manifest["apiVersion"] == "automation.ona.com/v1alpha1"
    assert manifest["kind"] == "TaskRun"
    assert "generateName" in manifest["metadata"]
    assert "name" not in manifest["metadata"]
    outputs = {p["name"]: p["valueFrom"]["jsonPath"] for p in recipe["outputs"]["parameters"]}
    assert set(outputs) == {"execution-id", "log-url", "result"}
    # A run refused before it starts has no phase: the deadline is what ends its step.
    timeout_seconds = 3600  # the manifest's spec.timeout: 1h
    assert manifest["spec"]["timeout"] == "1h"
    assert recipe["activeDeadlineSeconds"] > timeout_seconds


@pytest.mark.parametrize(
    "command",
    ["echo \"quoted\" 'twice'", "line one\nline two: {not: yaml}", "# sim:duration=1s"],
)
def test_any_command_goes_into_the_manifest_as_one_string(
    recipe: dict[str, Any], command: str
) -> None:
    manifest = yaml.safe_load(argo.render(recipe["resource"]["manifest"], {"command": command}))
    assert manifest["spec"]["task"]["command"] == command


# --------------------------------------------------------------------------- Argo's rules


@pytest.mark.parametrize(
    ("condition", "obj", "holds"),
    [
        ("status.phase == SUCCEEDED", {"status": {"phase": "SUCCEEDED"}}, True),
        ("status.phase = SUCCEEDED", {"status": {"phase": "RUNNING"}}, False),
        ("status.phase == SUCCEEDED", {"status": {}}, False),
        ("status.phase in (FAILED,STOPPED)", {"status": {"phase": "STOPPED"}}, True),
        ("status.phase in (FAILED, STOPPED)", {"status": {"phase": ""}}, False),
        ("status.phase in (FAILED,STOPPED)", {}, False),
        # A missing key satisfies != and notin, as for labels.
        ("status.phase != SUCCEEDED", {}, True),
        ("status.phase notin (SUCCEEDED)", {"status": {"phase": "FAILED"}}, True),
        ("status.attempt gt 1", {"status": {"attempt": 2}}, True),
        ("status.attempt lt 2", {"status": {"attempt": 2}}, False),
        ("status.attempt gt 1", {"status": {}}, False),
        ("status.logUrl", {"status": {"logUrl": "x"}}, True),
        ("!status.logUrl", {"status": {"logUrl": "x"}}, False),
        (
            "status.steps.0.phase == SUCCEEDED",
            {"status": {"steps": [{"phase": "SUCCEEDED"}]}},
            True,
        ),
        (
            "status.steps.1.phase == SUCCEEDED",
            {"status": {"steps": [{"phase": "SUCCEEDED"}]}},
            False,
        ),
    ],
)
def test_a_requirement_holds_as_for_labels(condition: str, obj: Any, holds: bool) -> None:
    (requirement,) = argo.parse(condition)
    assert argo.matches(requirement, obj) is holds


def test_any_failure_requirement_fails_and_every_success_requirement_must_hold() -> None:
    failure = "status.phase == FAILED, status.phase == STOPPED"
    success = "status.phase == SUCCEEDED, status.logUrl"
    # Argo checks failure requirements one by one: a comma there is an "or".
    assert argo.evaluate(success, failure, {"status": {"phase": "STOPPED"}}) is Verdict.FAILED
    assert argo.evaluate(success, failure, {"status": {"phase": "SUCCEEDED"}}) is Verdict.WAITING
    done = {"status": {"phase": "SUCCEEDED", "logUrl": "u"}}
    assert argo.evaluate(success, failure, done) is Verdict.SUCCEEDED


@pytest.mark.parametrize(
    "condition",
    [
        "status.conditions[0].status == True",  # no brackets in a key: arrays cannot be matched
        'status.conditions.#(type=="Succeeded").status == True',
        "status.phase == Has Spaces",
        "status.phase in ()",
        "status.phase in (A B)",
        "status.phase gt many",
        "status.phase ~= x",
        "status.phase == SUCCEEDED,",
    ],
)
def test_what_the_selector_parser_refuses_is_refused(condition: str) -> None:
    with pytest.raises(ConditionError):
        argo.parse(condition)


# --------------------------------------------------------------------------- live TaskRuns


class Argo:
    """Does what Argo's executor does with the recipe, as kubectl in the test namespace."""

    def __init__(self, recipe: dict[str, Any], plane: ControlPlane, namespace: str) -> None:
        self.resource = recipe["resource"]
        self.outputs = {
            p["name"]: p["valueFrom"]["jsonPath"] for p in recipe["outputs"]["parameters"]
        }
        self.plane = plane
        self.namespace = namespace

    def create(self, command: str) -> str:
        manifest = argo.render(self.resource["manifest"], {"command": command})
        out = self.plane.kubectl_run(
            "create", "-n", self.namespace, "-o", "json", "-f", "-", input=manifest
        )
        return str(json.loads(out.stdout)["metadata"]["name"])

    def get(self, name: str) -> dict[str, Any]:
        out = self.plane.kubectl_run(
            "get", f"taskruns.automation.ona.com/{name}", "-n", self.namespace, "-o", "json"
        )
        found: dict[str, Any] = json.loads(out.stdout)
        return found

    def verdict(self, name: str) -> Verdict:
        return argo.evaluate(
            self.resource["successCondition"], self.resource["failureCondition"], self.get(name)
        )

    def wait(self, name: str, timeout: float = 60.0) -> Verdict:
        verdict = wait_for(
            lambda: (v := self.verdict(name)) is not Verdict.WAITING and v,
            timeout=timeout,
            what=f"the recipe's conditions to decide on TaskRun {name}",
        )
        return verdict

    def output(self, name: str, parameter: str) -> str:
        out = self.plane.kubectl_run(
            "get",
            f"taskruns.automation.ona.com/{name}",
            "-n",
            self.namespace,
            "-o",
            f"jsonpath={self.outputs[parameter]}",
        )
        return str(out.stdout)


@pytest.fixture
def runner(recipe: dict[str, Any], control_plane: ControlPlane, namespace: str) -> Argo:
    return Argo(recipe, control_plane, namespace)


def test_a_succeeded_run_succeeds_the_step_with_its_outputs(
    runner: Argo, operator: OperatorProcess
) -> None:
    name = runner.create("make build # sim:duration=2s sim:output.result=v1.2.3")
    # While it is pending or running, Argo keeps looking.
    wait_for(
        lambda: runner.get(name).get("status", {}).get("phase") in ("PENDING", "RUNNING"),
        what=f"TaskRun {name} to start",
    )
    assert runner.verdict(name) is Verdict.WAITING
    assert runner.wait(name) is Verdict.SUCCEEDED
    status = runner.get(name)["status"]
    assert status["phase"] == "SUCCEEDED"
    assert runner.output(name, "execution-id") == status["taskExecutionId"]
    assert runner.output(name, "log-url") == status["logUrl"]
    assert runner.output(name, "log-url").startswith("http")
    assert runner.output(name, "result") == "v1.2.3"


def test_a_failed_run_fails_the_step(runner: Argo, operator: OperatorProcess) -> None:
    name = runner.create('make build # sim:duration=0.5s sim:fail="compile error"')
    assert runner.wait(name) is Verdict.FAILED
    status = runner.get(name)["status"]
    assert status["phase"] == "FAILED"
    assert runner.output(name, "execution-id") == status["taskExecutionId"]
    assert runner.output(name, "result") == ""


def test_a_stopped_run_fails_the_step(
    runner: Argo, operator: OperatorProcess, taskruns: TaskRuns
) -> None:
    name = runner.create("sleep infinity # sim:hang")
    wait_for(
        lambda: runner.get(name).get("status", {}).get("phase") == "RUNNING",
        what=f"TaskRun {name} to run",
    )
    assert runner.verdict(name) is Verdict.WAITING
    taskruns.patch_spec(name, {"desiredPhase": "STOPPED"})
    assert runner.wait(name) is Verdict.FAILED
    assert runner.get(name)["status"]["phase"] == "STOPPED"


def test_a_timed_out_run_fails_the_step(runner: Argo, operator: OperatorProcess) -> None:
    # The recipe's manifest with a short timeout, as a user would shorten it.
    manifest = yaml.safe_load(
        argo.render(runner.resource["manifest"], {"command": "sleep infinity # sim:hang"})
    )
    manifest["spec"]["timeout"] = "2s"
    out = runner.plane.kubectl_run(
        "create", "-n", runner.namespace, "-o", "json", "-f", "-", input=json.dumps(manifest)
    )
    name = json.loads(out.stdout)["metadata"]["name"]
    assert runner.wait(name) is Verdict.FAILED
    status = runner.get(name)["status"]
    reason = next(c["reason"] for c in status["conditions"] if c["type"] == "Succeeded")
    assert (status["phase"], reason) == ("STOPPED", "TimedOut")


def test_a_run_refused_before_it_starts_decides_nothing_so_the_deadline_must(
    runner: Argo, operator: OperatorProcess, taskruns: TaskRuns
) -> None:
    """The recipe's known limit, pinned: a run the operator refuses before any execution
    has no phase, so Argo would look until the template's activeDeadlineSeconds."""
    taskruns.apply(
        "refused",
        {"taskRef": {"environmentId": ENVIRONMENT_ID, "reference": "no-such-task"}},
    )
    ended = taskruns.wait_condition("refused", "Succeeded", "False", timeout=60)
    assert ended["reason"] == "TaskNotFound"
    assert not runner.get("refused")["status"].get("phase")
    assert runner.verdict("refused") is Verdict.WAITING
