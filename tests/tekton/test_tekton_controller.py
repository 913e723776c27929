"""The real Tekton controller on our control plane: what it does with a custom task.

No custom task controller runs here: the test plays that part by writing the CustomRun's
status itself. So these tests pin down Tekton's side of the Custom Task protocol, the facts
the operator's CustomRun controller relies on (docs/pipelines.md, "What the Tekton
controller does, as tested here").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.tekton import Tekton

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASK_API_VERSION = "automation.ona.com/v1alpha1"
CANCELLED_BY_PIPELINE = "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
CANCELLED_BY_TIMEOUT = "CustomRun cancelled as the PipelineRun it belongs to has timed out."


def custom_task(name: str, template: str, params: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A pipeline task handed to a custom task controller: a TaskRun of ours as template."""
    return {
        "name": name,
        "taskRef": {"apiVersion": TASK_API_VERSION, "kind": "TaskRun", "name": template},
        "params": [{"name": k, "value": v} for k, v in params.items()],
        **extra,
    }


def pipeline_run(
    namespace: str,
    name: str,
    tasks: list[dict[str, Any]],
    *,
    params: dict[str, str] | None = None,
    results: dict[str, str] | None = None,
    pipeline_timeout: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "pipelineSpec": {
            "params": [{"name": k, "type": "string"} for k in (params or {})],
            "tasks": tasks,
            "results": [{"name": k, "value": v} for k, v in (results or {}).items()],
        },
        "params": [{"name": k, "value": v} for k, v in (params or {}).items()],
    }
    if pipeline_timeout:
        spec["timeouts"] = {"pipeline": pipeline_timeout}
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class Cluster:
    """kubectl as admin, for one test's namespace."""

    def __init__(self, tekton: Tekton, namespace: str) -> None:
        self.tekton = tekton
        self.namespace = namespace

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = self.tekton.plane.kubectl_run(
            "create", "-o", "json", "-f", "-", input=json.dumps(obj)
        )
        created: dict[str, Any] = json.loads(out.stdout)
        return created

    def get(self, resource: str, name: str) -> dict[str, Any]:
        out = self.tekton.plane.kubectl_run(
            "get", resource, name, "-n", self.namespace, "-o", "json"
        )
        found: dict[str, Any] = json.loads(out.stdout)
        return found

    def patch(
        self, resource: str, name: str, body: dict[str, Any], *, status: bool = False
    ) -> None:
        self.tekton.plane.kubectl_run(
            "patch",
            resource,
            name,
            "-n",
            self.namespace,
            "--type=merge",
            *(["--subresource=status"] if status else []),
            "-p",
            json.dumps(body),
        )

    def custom_run_of(self, pipeline_run: str, task: str) -> dict[str, Any] | None:
        out = self.tekton.plane.kubectl_run(
            "get",
            "customruns.tekton.dev",
            "-n",
            self.namespace,
            "-l",
            f"tekton.dev/pipelineRun={pipeline_run},tekton.dev/pipelineTask={task}",
            "-o",
            "json",
        )
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        assert len(items) <= 1, f"more than one CustomRun for task {task}: {items}"
        return items[0] if items else None

    def wait_custom_run(self, pipeline_run: str, task: str) -> dict[str, Any]:
        return self.tekton.wait_for(
            lambda: self.custom_run_of(pipeline_run, task),
            what=f"a CustomRun for task {task} of PipelineRun {pipeline_run}",
        )

    def finish_custom_run(
        self, name: str, *, succeeded: bool, results: dict[str, str] | None = None
    ) -> None:
        """Write what a custom task controller writes when its run ends."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status: dict[str, Any] = {
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "True" if succeeded else "False",
                    "reason": "Succeeded" if succeeded else "Failed",
                    "message": "set by the test",
                    "lastTransitionTime": now,
                }
            ],
            "startTime": now,
            "completionTime": now,
            "results": [{"name": k, "value": v} for k, v in (results or {}).items()],
        }
        self.patch("customruns.tekton.dev", name, {"status": status}, status=True)

    def wait_pipeline_run_done(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            run = self.get("pipelineruns.tekton.dev", name)
            cond = succeeded_condition(run)
            return run if cond and cond["status"] in ("True", "False") else None

        return self.tekton.wait_for(done, what=f"PipelineRun {name} to finish", timeout=timeout)


def succeeded_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == "Succeeded":
            found: dict[str, Any] = cond
            return found
    return None


@pytest.fixture
def cluster(tekton: Tekton, namespace: str) -> Cluster:
    return Cluster(tekton, namespace)


def test_custom_task_steps_get_customruns_and_results_flow_between_them(
    cluster: Cluster,
) -> None:
    cluster.create(
        pipeline_run(
            cluster.namespace,
            "greet",
            [
                custom_task(
                    "first", "greet-template", {"who": "$(params.who)"}, timeout="10m", retries=2
                ),
                custom_task(
                    "second", "echo-template", {"previous": "$(tasks.first.results.greeting)"}
                ),
            ],
            params={"who": "world"},
            results={"final": "$(tasks.second.results.echoed)"},
        )
    )

    first = cluster.wait_custom_run("greet", "first")
    assert first["apiVersion"] == "tekton.dev/v1beta1"
    assert first["metadata"]["name"] == "greet-first"
    assert first["spec"]["customRef"] == {
        "apiVersion": TASK_API_VERSION,
        "kind": "TaskRun",
        "name": "greet-template",
    }
    assert first["spec"]["params"] == [{"name": "who", "value": "world"}]
    # The pipeline task's timeout and retries are the custom task controller's to enforce.
    assert first["spec"]["timeout"] == "10m0s"
    assert first["spec"]["retries"] == 2
    assert "status" not in first["spec"]
    owner = first["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o.get("controller")) for o in owner] == [
        ("PipelineRun", "greet", True)
    ]
    # The second step needs the first's result, so Tekton holds it back until then.
    assert cluster.custom_run_of("greet", "second") is None
    children = cluster.get("pipelineruns.tekton.dev", "greet")["status"]["childReferences"]
    assert {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "name": first["metadata"]["name"],
        "pipelineTaskName": "first",
    }.items() <= children[0].items()

    cluster.finish_custom_run(
        first["metadata"]["name"], succeeded=True, results={"greeting": "hello world"}
    )
    second = cluster.wait_custom_run("greet", "second")
    assert second["spec"]["customRef"]["name"] == "echo-template"
    assert second["spec"]["params"] == [{"name": "previous", "value": "hello world"}]
    # No timeout of its own, and the pipeline's (the default hour) is not handed down: the
    # PipelineRun enforces that itself by cancelling (test_a_pipeline_timeout_...).
    assert "timeout" not in second["spec"]
    assert succeeded_condition(cluster.get("pipelineruns.tekton.dev", "greet"))["status"] == (
        "Unknown"
    )

    cluster.finish_custom_run(
        second["metadata"]["name"], succeeded=True, results={"echoed": "hello world!"}
    )
    done = cluster.wait_pipeline_run_done("greet")
    assert succeeded_condition(done)["status"] == "True", done["status"]
    assert succeeded_condition(done)["reason"] == "Succeeded"
    assert done["status"]["results"] == [{"name": "final", "value": "hello world!"}]


def test_a_failed_customrun_fails_the_pipeline_run(cluster: Cluster) -> None:
    cluster.create(
        pipeline_run(
            cluster.namespace,
            "fails",
            [
                custom_task("only", "a-template", {}),
                custom_task("after", "a-template", {"x": "$(tasks.only.results.out)"}),
            ],
        )
    )
    only = cluster.wait_custom_run("fails", "only")
    cluster.finish_custom_run(only["metadata"]["name"], succeeded=False)
    done = cluster.wait_pipeline_run_done("fails")
    assert succeeded_condition(done)["status"] == "False", done["status"]
    assert succeeded_condition(done)["reason"] == "Failed"
    assert cluster.custom_run_of("fails", "after") is None


def test_cancelling_the_pipeline_run_cancels_its_customrun(cluster: Cluster) -> None:
    cluster.create(
        pipeline_run(cluster.namespace, "cancel-me", [custom_task("only", "a-template", {})])
    )
    run = cluster.wait_custom_run("cancel-me", "only")
    name = run["metadata"]["name"]
    assert "status" not in run["spec"]

    cluster.patch("pipelineruns.tekton.dev", "cancel-me", {"spec": {"status": "Cancelled"}})

    cancelled = cluster.tekton.wait_for(
        lambda: (r := cluster.get("customruns.tekton.dev", name))["spec"].get("status") and r,
        what=f"CustomRun {name} to be cancelled",
    )
    assert cancelled["spec"]["status"] == "RunCancelled"
    assert cancelled["spec"]["statusMessage"] == CANCELLED_BY_PIPELINE
    done = cluster.wait_pipeline_run_done("cancel-me")
    # Tekton does not wait for the custom task controller to confirm: nothing wrote the
    # CustomRun's status, and the PipelineRun is finished all the same.
    assert "conditions" not in cluster.get("customruns.tekton.dev", name).get("status", {})
    assert succeeded_condition(done)["status"] == "False"
    assert succeeded_condition(done)["reason"] == "Cancelled"


def test_a_pipeline_timeout_cancels_its_customrun(cluster: Cluster) -> None:
    cluster.create(
        pipeline_run(
            cluster.namespace,
            "too-slow",
            [custom_task("only", "a-template", {})],
            pipeline_timeout="5s",
        )
    )
    run = cluster.wait_custom_run("too-slow", "only")
    name = run["metadata"]["name"]
    assert "status" not in run["spec"]
    # A pipeline timeout no longer than Tekton's default (an hour) is not copied into the
    # CustomRun: the PipelineRun enforces it by cancelling, as below.
    assert "timeout" not in run["spec"], run["spec"]

    cancelled = cluster.tekton.wait_for(
        lambda: (r := cluster.get("customruns.tekton.dev", name))["spec"].get("status") and r,
        what=f"CustomRun {name} to be cancelled by the pipeline timeout",
    )
    assert cancelled["spec"]["status"] == "RunCancelled"
    assert cancelled["spec"]["statusMessage"] == CANCELLED_BY_TIMEOUT
    done = cluster.wait_pipeline_run_done("too-slow")
    # Tekton does not wait for the custom task controller to confirm: nothing wrote the
    # CustomRun's status, and the PipelineRun is finished all the same.
    assert "conditions" not in cluster.get("customruns.tekton.dev", name).get("status", {})
    assert succeeded_condition(done)["status"] == "False"
    assert succeeded_condition(done)["reason"] == "PipelineRunTimeout"
