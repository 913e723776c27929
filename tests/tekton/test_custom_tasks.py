"""The operator as Tekton's custom task controller (TEKTON_CUSTOM_TASKS=true), against the
real Tekton controller, the simulator and the operator running as its own RBAC identity
with the grants of manifests/tekton: a pipeline of two Ona tasks passing a result, a
cancelled pipeline and a timed-out one stopping the Ona execution, a CustomRun's own retries
and timeout, and the child TaskRun held to its connection's rules like any other."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from ona_taskrun.cli.main import main as kubectl_ona
from ona_taskrun.rules import customrun as customrun_rules
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import ENVIRONMENT_ID, OperatorFactory, OperatorProcess
from tests.support.simulator_fixtures import SimulatorHandle
from tests.support.tekton import Tekton
from tests.tekton.test_tekton_controller import (
    CANCELLED_BY_PIPELINE,
    CANCELLED_BY_TIMEOUT,
    TASK_API_VERSION,
    Cluster,
    custom_task,
    pipeline_run,
    succeeded_condition,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "config" / "samples" / "tekton"
COMPONENT = REPO_ROOT / "manifests" / "tekton"
CUSTOMRUNS = "customruns.tekton.dev"
TASKRUNS = "taskruns.automation.ona.com"
# Runs are short here; the wait between attempts too.
OPERATOR_ENV = {"TEKTON_CUSTOM_TASKS": "true", "RETRY_BACKOFF_BASE_SECONDS": "0.5"}


@pytest.fixture(scope="session")
def tekton_rbac(control_plane: ControlPlane) -> None:
    """The operator identity gets what the manifests/tekton component grants, from its
    own files (a kustomize Component cannot be applied alone)."""
    control_plane.kubectl_run(
        "apply", "-f", str(COMPONENT / "role.yaml"), "-f", str(COMPONENT / "role_binding.yaml")
    )


@pytest.fixture
def cluster(tekton: Tekton, namespace: str) -> Cluster:
    return Cluster(tekton, namespace)


@pytest.fixture
def custom_task_operator(
    tekton_rbac: None, operator_factory: OperatorFactory, namespace: str
) -> OperatorProcess:
    return operator_factory(namespace, extra_env=OPERATOR_ENV)


def template(cluster: Cluster, name: str, command: str, **spec: Any) -> None:
    """A TaskRun used as a template: never run itself."""
    task = {"environmentId": ENVIRONMENT_ID, "name": name, "command": command}
    cluster.create(
        {
            "apiVersion": TASK_API_VERSION,
            "kind": "TaskRun",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "spec": {"desiredPhase": "STOPPED", "task": task, **spec},
        }
    )


def standalone(cluster: Cluster, name: str, task_spec: dict[str, Any], **spec: Any) -> None:
    """A CustomRun of its own (no PipelineRun), with the TaskRun spec inline."""
    cluster.create(
        {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "CustomRun",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "spec": {
                "customSpec": {
                    "apiVersion": TASK_API_VERSION,
                    "kind": "TaskRun",
                    "spec": task_spec,
                },
                **spec,
            },
        }
    )


def outcome(obj: dict[str, Any]) -> dict[str, Any]:
    """The Succeeded condition, which must be there."""
    cond = succeeded_condition(obj)
    assert cond is not None, obj.get("status")
    return cond


def inline(command: str) -> dict[str, Any]:
    return {"task": {"environmentId": ENVIRONMENT_ID, "name": "inline", "command": command}}


def wait_customrun(
    cluster: Cluster, name: str, status: str, timeout: float = 90.0
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run = cluster.get(CUSTOMRUNS, name)
        cond = succeeded_condition(run)
        return run if cond and cond["status"] == status else None

    return cluster.tekton.wait_for(
        probe, what=f"CustomRun {name} Succeeded={status}", timeout=timeout
    )


def child_of(cluster: Cluster, run: dict[str, Any]) -> dict[str, Any]:
    meta = run["metadata"]
    return cluster.get(TASKRUNS, customrun_rules.child_name(meta["name"], meta["uid"]))


def running_execution(cluster: Cluster, name: str) -> str:
    """The execution id of a CustomRun's child once it runs."""

    def probe() -> str | None:
        run = cluster.get(CUSTOMRUNS, name)
        extra = (run.get("status") or {}).get("extraFields") or {}
        return str(extra["executionId"]) if extra.get("phase") == "RUNNING" else None

    return cluster.tekton.wait_for(probe, what=f"CustomRun {name}'s execution to run", timeout=90)


def wait_stopped(simulator: SimulatorHandle, cluster: Cluster, execution_id: str) -> None:
    def probe() -> bool:
        item = simulator.control.execution(execution_id)
        return bool(item["stopRequested"]) and item["execution"]["status"]["phase"].endswith(
            "STOPPED"
        )

    cluster.tekton.wait_for(probe, what=f"execution {execution_id} stopped", timeout=60)


def task_command(simulator: SimulatorHandle, execution_id: str) -> str:
    item = simulator.control.execution(execution_id)
    task_id = item["execution"]["metadata"]["taskId"]
    (task,) = [t for t in simulator.control.tasks() if t["id"] == task_id]
    return str(task["spec"]["command"])


# --------------------------------------------------------------------------- pipelines


def test_the_samples_pipeline_of_two_ona_tasks_passes_a_result_and_succeeds(
    cluster: Cluster,
    custom_task_operator: OperatorProcess,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
) -> None:
    control_plane.kubectl_run("-n", cluster.namespace, "apply", "-k", str(SAMPLES))
    done = cluster.wait_pipeline_run_done("greet", timeout=180)
    assert outcome(done)["status"] == "True", done["status"]
    assert done["status"]["results"] == [{"name": "final", "value": "hello world!"}]

    first = cluster.custom_run_of("greet", "first")
    second = cluster.custom_run_of("greet", "second")
    assert first is not None
    assert second is not None
    for run in (first, second):
        assert outcome(run)["status"] == "True"
        assert outcome(run)["reason"] == "Succeeded"
        child = child_of(cluster, run)
        # The child: controlled by its CustomRun, found by the pipeline's labels.
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "CustomRun",
            run["metadata"]["uid"],
            True,
        )
        assert child["metadata"]["labels"]["tekton.dev/pipelineRun"] == "greet"
        assert child["status"]["phase"] == "SUCCEEDED"
        extra = run["status"]["extraFields"]
        assert extra["executionId"] == child["status"]["taskExecutionId"]
        assert extra["taskRun"] == child["metadata"]["name"]
        assert extra["logUrl"] == child["status"]["logUrl"]
        # The simulator's record: that execution ran to the end.
        item = e2e_simulator.control.execution(extra["executionId"])
        assert item["execution"]["status"]["phase"] == "TASK_EXECUTION_PHASE_SUCCEEDED"
    assert first["status"]["results"] == [{"name": "greeting", "value": "hello world"}]
    assert second["status"]["results"] == [{"name": "echoed", "value": "hello world!"}]
    # The first step's result reached the second's command.
    command = task_command(e2e_simulator, second["status"]["extraFields"]["executionId"])
    assert 'sim:output.echoed="hello world!"' in command
    # The pipeline task's timeout and retries became the child's.
    first_child = child_of(cluster, first)
    assert (first_child["spec"]["timeout"], first_child["spec"]["retries"]) == ("10m0s", 1)
    # kubectl ona describe shows where a child belongs.
    out = io.StringIO()
    argv = ["describe", first_child["metadata"]["name"], "-n", cluster.namespace]
    assert kubectl_ona([*argv, "--kubeconfig", str(control_plane.admin_kubeconfig)], out) == 0
    fields = dict(
        (label, value.strip())
        for label, _, value in (line.partition(":") for line in out.getvalue().splitlines())
    )
    assert fields["Controlled By"] == f"CustomRun/{first['metadata']['name']}"
    assert fields["Custom Run"] == "True (Succeeded)"
    assert fields["Pipeline Run"] == "greet (task first)"
    # The templates themselves never ran.
    for name in ("greet-template", "echo-template"):
        assert "taskExecutionId" not in cluster.get(TASKRUNS, name).get("status", {})


def test_cancelling_the_pipeline_run_stops_the_ona_execution(
    cluster: Cluster, custom_task_operator: OperatorProcess, e2e_simulator: SimulatorHandle
) -> None:
    template(cluster, "hang-template", "sleep infinity # sim:hang")
    cluster.create(
        pipeline_run(cluster.namespace, "cancel-me", [custom_task("only", "hang-template", {})])
    )
    run = cluster.wait_custom_run("cancel-me", "only")
    name = run["metadata"]["name"]
    execution_id = running_execution(cluster, name)

    cluster.patch("pipelineruns.tekton.dev", "cancel-me", {"spec": {"status": "Cancelled"}})

    wait_stopped(e2e_simulator, cluster, execution_id)
    ended = wait_customrun(cluster, name, "False")
    cond = outcome(ended)
    assert cond["reason"] == customrun_rules.REASON_CANCELLED
    assert CANCELLED_BY_PIPELINE in cond["message"]
    child = child_of(cluster, ended)
    assert child["spec"]["desiredPhase"] == "STOPPED"
    assert child["status"]["phase"] == "STOPPED"
    done = cluster.wait_pipeline_run_done("cancel-me")
    assert outcome(done)["reason"] == "Cancelled"


def test_a_pipeline_timeout_stops_the_ona_execution(
    cluster: Cluster, custom_task_operator: OperatorProcess, e2e_simulator: SimulatorHandle
) -> None:
    template(cluster, "hang-template", "sleep infinity # sim:hang")
    cluster.create(
        pipeline_run(
            cluster.namespace,
            "too-slow",
            [custom_task("only", "hang-template", {})],
            # Long enough for the execution to be running first on a slow machine.
            pipeline_timeout="20s",
        )
    )
    run = cluster.wait_custom_run("too-slow", "only")
    name = run["metadata"]["name"]
    execution_id = running_execution(cluster, name)

    wait_stopped(e2e_simulator, cluster, execution_id)
    ended = wait_customrun(cluster, name, "False")
    cond = outcome(ended)
    assert cond["reason"] == customrun_rules.REASON_CANCELLED
    assert CANCELLED_BY_TIMEOUT in cond["message"]
    done = cluster.wait_pipeline_run_done("too-slow")
    assert outcome(done)["reason"] == "PipelineRunTimeout"


def test_a_failing_step_fails_the_pipeline_and_the_next_step_never_runs(
    cluster: Cluster, custom_task_operator: OperatorProcess
) -> None:
    template(cluster, "fail-template", 'make # sim:duration=0.3s sim:fail="tests failed"')
    template(cluster, "after-template", "echo $(params.x) # sim:duration=0.3s")
    cluster.create(
        pipeline_run(
            cluster.namespace,
            "fails",
            [
                custom_task("only", "fail-template", {}),
                custom_task("after", "after-template", {"x": "$(tasks.only.results.out)"}),
            ],
        )
    )
    done = cluster.wait_pipeline_run_done("fails", timeout=120)
    assert outcome(done)["reason"] == "Failed"
    only = cluster.custom_run_of("fails", "only")
    assert only is not None
    cond = outcome(only)
    assert (cond["status"], cond["reason"]) == ("False", "Failed")
    assert "tests failed" in cond["message"]
    assert cluster.custom_run_of("fails", "after") is None


# --------------------------------------------------------------------------- one CustomRun


def test_a_customruns_retries_are_its_childs_and_reported_in_retries_status(
    cluster: Cluster, custom_task_operator: OperatorProcess
) -> None:
    standalone(
        cluster,
        "flaky",
        inline("make test # sim:duration=0.3s sim:fail_first=1 sim:output.result=ok"),
        retries=1,
    )
    done = wait_customrun(cluster, "flaky", "True")
    status = done["status"]
    assert status["results"] == [{"name": "result", "value": "ok"}]
    (earlier,) = status["retriesStatus"]
    assert earlier["conditions"][0]["status"] == "False"
    assert earlier["extraFields"]["executionId"] != status["extraFields"]["executionId"]
    assert status["extraFields"]["attempt"] == 2
    assert len(status["extraFields"]["attempts"]) == 1


def test_a_customruns_timeout_bounds_its_attempt(
    cluster: Cluster, custom_task_operator: OperatorProcess, e2e_simulator: SimulatorHandle
) -> None:
    standalone(cluster, "slow", inline("sleep infinity # sim:hang"), timeout="3s")
    execution_id = running_execution(cluster, "slow")
    wait_stopped(e2e_simulator, cluster, execution_id)
    ended = wait_customrun(cluster, "slow", "False")
    assert outcome(ended)["reason"] == customrun_rules.REASON_TIMED_OUT
    assert child_of(cluster, ended)["spec"]["timeout"] == "3s"


def test_a_customrun_with_unknown_params_is_refused_and_starts_nothing(
    cluster: Cluster, custom_task_operator: OperatorProcess
) -> None:
    standalone(
        cluster,
        "typo",
        inline("echo $(params.who) # sim:duration=0.3s"),
        params=[{"name": "who", "value": "a"}, {"name": "whom", "value": "b"}],
    )
    ended = wait_customrun(cluster, "typo", "False")
    cond = outcome(ended)
    assert cond["reason"] == "InvalidParams"
    assert "params whom are not used" in cond["message"]
    out = cluster.tekton.plane.kubectl_run("get", TASKRUNS, "-n", cluster.namespace, "-o", "json")
    assert json.loads(out.stdout)["items"] == []


def test_the_child_is_held_to_its_connections_rules_like_any_taskrun(
    cluster: Cluster,
    tekton_rbac: None,
    operator_factory: OperatorFactory,
    e2e_simulator: SimulatorHandle,
) -> None:
    """A CustomRun's author asks for a run in a namespace the default connection does not
    serve: the child is refused before any Ona call, and the CustomRun says so."""
    operator_factory(
        cluster.namespace,
        extra_env={**OPERATOR_ENV, "DEFAULT_CONNECTION_NAMESPACE_SELECTOR": "ona.com/none=true"},
    )
    standalone(cluster, "not-here", inline("echo hi # sim:duration=0.3s"))
    ended = wait_customrun(cluster, "not-here", "False")
    cond = outcome(ended)
    assert cond["reason"] == "NotPermitted", cond
    child = child_of(cluster, ended)
    assert not child["status"].get("taskId")
    assert not child["status"].get("taskExecutionId")
    assert ended["status"]["extraFields"]["executionId"] == ""
