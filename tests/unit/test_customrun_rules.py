"""The pure rules of Tekton CustomRuns (rules/customrun.py): which are ours, what one asks
for, its child TaskRun, and its status read from the child. The rows a CustomRun's author
could use against the operator are in test_customrun_attacks.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from ona_taskrun.rules import customrun as rules
from ona_taskrun.rules.customrun import InvalidCustomRun

NOW = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
UID = "6b1e8f0a-0000-4000-8000-000000000001"
ENV = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"
OURS = {"apiVersion": "automation.ona.com/v1alpha1", "kind": "TaskRun"}


def inline_spec(command: str = "echo hi", **extra: Any) -> dict[str, Any]:
    return {"task": {"environmentId": ENV, "name": "t", "command": command}, **extra}


def customrun(
    spec: dict[str, Any] | None = None,
    *,
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    name: str = "greet-first",
) -> dict[str, Any]:
    return {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {
            "namespace": "team-a",
            "name": name,
            "uid": UID,
            "generation": 1,
            "labels": labels or {},
        },
        "spec": spec if spec is not None else {"customRef": {**OURS, "name": "greet-template"}},
        "status": status or {},
    }


def with_ref(name: str = "greet-template", **spec: Any) -> dict[str, Any]:
    return {"customRef": {**OURS, "name": name}, **spec}


def with_inline(task_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"customSpec": {**OURS, "spec": task_spec}, **spec}


def params(**values: Any) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def template(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "greet-template", "namespace": "team-a"}, "spec": spec}


def invalid(body: dict[str, Any]) -> InvalidCustomRun:
    request = rules.parse(body).request
    assert isinstance(request, InvalidCustomRun), request
    return request


# --------------------------------------------------------------------------- ours or not


@pytest.mark.parametrize(
    ("spec", "ours"),
    [
        (with_ref(), True),
        (with_inline(inline_spec()), True),
        # Another version of our group: ours, and it is told the version is wrong.
        ({"customRef": {"apiVersion": "automation.ona.com/v9", "kind": "TaskRun"}}, True),
        # Tekton's own TaskRun, another controller's kind, or nothing at all.
        ({"customRef": {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "x"}}, False),
        ({"customRef": {"apiVersion": "example.dev/v1", "kind": "Wait"}}, False),
        ({"customRef": {"apiVersion": "automation.ona.com/v1alpha1", "kind": "Task"}}, False),
        ({}, False),
    ],
)
def test_only_customruns_naming_our_taskrun_kind_are_ours(spec: dict[str, Any], ours: bool) -> None:
    assert rules.is_ours(customrun(spec)) is ours


# --------------------------------------------------------------------------- reading


def test_a_customref_names_a_template_and_carries_params_timeout_and_retries() -> None:
    run = rules.parse(customrun(with_ref(params=params(who="world"), timeout="10m0s", retries=2)))
    assert run.request == rules.Request(
        template="greet-template", params=(("who", "world"),), timeout="10m0s", retries=2
    )
    assert (run.namespace, run.name, run.uid, run.cancelled) == (
        "team-a",
        "greet-first",
        UID,
        False,
    )


@pytest.mark.parametrize("timeout", [None, "", "0s", "0", "0h0m0s"])
def test_no_timeout_or_a_zero_one_leaves_the_tasks_own(timeout: str | None) -> None:
    spec = with_ref() if timeout is None else with_ref(timeout=timeout)
    request = rules.parse(customrun(spec)).request
    assert isinstance(request, rules.Request)
    assert request.timeout == ""


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        (
            {"customRef": {**OURS, "name": "a"}, "customSpec": {**OURS, "spec": inline_spec()}},
            "InvalidCustomRun",
            "cannot both be set",
        ),
        ({"customRef": {**OURS}}, "InvalidCustomRun", "customRef.name is needed"),
        (
            {"customRef": {"apiVersion": "automation.ona.com/v1", "kind": "TaskRun", "name": "a"}},
            "InvalidCustomRun",
            "use automation.ona.com/v1alpha1",
        ),
        (
            {"customRef": {**OURS, "name": "a", "resolver": "git"}},
            "InvalidCustomRun",
            "customRef.resolver is not supported",
        ),
        (with_ref(timeout="1us"), "InvalidCustomRun", "spec.timeout '1us'"),
        (with_ref(timeout="721h"), "InvalidCustomRun", "at most 720h"),
        (with_ref(retries=11), "InvalidCustomRun", "at most 10 times"),
        (with_ref(retries=-1), "InvalidCustomRun", "whole number"),
        (
            with_ref(workspaces=[{"name": "src", "emptyDir": {}}]),
            rules.REASON_WORKSPACES,
            "cannot mount a workspace",
        ),
        (with_ref(params=params(who=["a", "b"])), "InvalidParams", "'who' is an array"),
        (with_ref(params=params(who={"a": "b"})), "InvalidParams", "'who' is an object"),
        (
            with_ref(params=[{"name": "who", "value": "a"}, {"name": "who", "value": "b"}]),
            "InvalidParams",
            "'who' is given twice",
        ),
        (with_ref(params=params(**{"9lives": "x"})), "InvalidParams", "is not a param name"),
        (with_inline({}), "InvalidCustomRun", "customSpec.spec must be a TaskRun spec"),
    ],
)
def test_what_cannot_be_run_is_said_clearly(spec: dict[str, Any], reason: str, words: str) -> None:
    problem = invalid(customrun(spec))
    assert problem.reason == reason
    assert words in str(problem)


def test_cancelled_with_tektons_message() -> None:
    message = "CustomRun cancelled as the PipelineRun it belongs to has timed out."
    run = rules.parse(customrun(with_ref(status="RunCancelled", statusMessage=message)))
    assert run.cancelled
    assert run.cancel_message == message


# --------------------------------------------------------------------------- params


def test_params_go_into_the_command_and_env_values_in_every_form() -> None:
    task = inline_spec(
        """echo $(params.who) $(params["who"]) $(params['the.name']) $(context.taskRun.name)"""
    )
    task["task"]["env"] = [{"name": "WHO", "value": "$(params.who)"}, {"name": "N", "value": "1"}]
    run = rules.parse(customrun(with_inline(task, params=params(who="world", **{"the.name": "x"}))))
    spec = rules.child_spec(run, None)
    # Tekton's other variables are not ours to touch.
    assert spec["task"]["command"] == "echo world world x $(context.taskRun.name)"
    assert spec["task"]["env"] == [{"name": "WHO", "value": "world"}, {"name": "N", "value": "1"}]


def test_a_param_the_task_does_not_use_is_refused() -> None:
    run = rules.parse(
        customrun(with_inline(inline_spec("echo $(params.a)"), params=params(a="1", b="2")))
    )
    with pytest.raises(InvalidCustomRun, match="params b are not used") as caught:
        rules.child_spec(run, None)
    assert caught.value.reason == "InvalidParams"


def test_a_param_the_customrun_does_not_give_is_refused() -> None:
    run = rules.parse(
        customrun(with_inline(inline_spec("echo $(params.a) $(params.c)"), params=params(a="1")))
    )
    with pytest.raises(
        InvalidCustomRun, match=r"uses \$\(params.c\), which the CustomRun does not give"
    ):
        rules.child_spec(run, None)


@pytest.mark.parametrize("reference", ["$(params.obj.key)", "$(params.list[*])", "$(params.)"])
def test_references_to_object_or_array_params_are_refused(reference: str) -> None:
    run = rules.parse(
        customrun(with_inline(inline_spec(f"echo {reference}"), params=params(obj="x")))
    )
    with pytest.raises(InvalidCustomRun, match="is not a param reference this operator takes"):
        rules.child_spec(run, None)


def test_a_task_named_by_taskref_takes_no_params() -> None:
    ref_spec = {"taskRef": {"id": "7f4a2b1c-1111-4222-8333-444455556666"}}
    run = rules.parse(customrun(with_ref(params=params(who="world"))))
    with pytest.raises(InvalidCustomRun, match="a task named by taskRef"):
        rules.child_spec(run, template(ref_spec))
    without = rules.parse(customrun(with_ref()))
    assert rules.child_spec(without, template(ref_spec)) == ref_spec


def test_a_command_grown_past_the_crds_limit_by_its_params_is_refused() -> None:
    run = rules.parse(
        customrun(with_inline(inline_spec("$(params.a)"), params=params(a="x" * 70_000)))
    )
    with pytest.raises(InvalidCustomRun, match="at most 65536"):
        rules.child_spec(run, None)


# --------------------------------------------------------------------------- the child


def test_the_child_copies_the_templates_spec_runs_and_takes_the_customruns_limits() -> None:
    stopped = inline_spec("greet $(params.who)", desiredPhase="STOPPED", timeout="1h")
    run = rules.parse(
        customrun(
            with_ref(params=params(who="world"), timeout="10m0s", retries=2),
            labels={
                "tekton.dev/pipelineRun": "greet",
                "tekton.dev/pipelineTask": "first",
                "x": "y",
            },
        )
    )
    manifest = rules.child_manifest(run, template(stopped))
    assert manifest["apiVersion"] == "automation.ona.com/v1alpha1"
    assert manifest["kind"] == "TaskRun"
    # The template never runs; its child does, within the CustomRun's limits.
    assert manifest["spec"] == {
        "task": {"environmentId": ENV, "name": "t", "command": "greet world"},
        "timeout": "10m0s",
        "retries": 2,
    }
    meta = manifest["metadata"]
    assert meta["name"] == rules.child_name("greet-first", UID)
    assert meta["namespace"] == "team-a"
    assert meta["labels"] == {
        "tekton.dev/pipelineRun": "greet",
        "tekton.dev/pipelineTask": "first",
        rules.CUSTOMRUN_LABEL: "greet-first",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "CustomRun",
            "name": "greet-first",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    # The template is not changed by it.
    assert stopped["desiredPhase"] == "STOPPED"


def test_without_its_own_limits_the_child_keeps_the_templates() -> None:
    run = rules.parse(customrun(with_ref()))
    spec = rules.child_spec(run, template(inline_spec(timeout="5m", retries=1)))
    assert (spec["timeout"], spec["retries"]) == ("5m", 1)


def test_an_inline_spec_brings_its_labels_and_annotations() -> None:
    spec = with_inline(inline_spec())
    spec["customSpec"]["metadata"] = {"labels": {"team": "a"}, "annotations": {"note": "n"}}
    manifest = rules.child_manifest(rules.parse(customrun(spec)), None)
    assert manifest["metadata"]["labels"]["team"] == "a"
    assert manifest["metadata"]["annotations"] == {"note": "n"}


def test_the_childs_name_is_fixed_by_the_customrun_and_its_uid_and_fits_a_label() -> None:
    name = rules.child_name("greet-first", UID)
    assert name == rules.child_name("greet-first", UID)
    assert name.startswith("greet-first-")
    # The same name, created again: another uid, another child.
    assert rules.child_name("greet-first", "another-uid") != name
    long = rules.child_name("a" * 62 + ".-b", UID)
    assert len(long) <= 63
    assert long[-9] == "-"
    assert long[-10] not in "-."


def test_a_missing_or_unusable_template_is_said() -> None:
    run = rules.parse(customrun(with_ref()))
    with pytest.raises(
        InvalidCustomRun, match=r"greet-template .* does not exist in namespace team-a"
    ) as missing:
        rules.child_manifest(run, None)
    assert missing.value.reason == "TemplateNotFound"
    with pytest.raises(
        InvalidCustomRun, match=r"exactly one of spec\.task and spec\.taskRef"
    ) as bad:
        rules.child_manifest(run, template({"timeout": "1m"}))
    assert bad.value.reason == "InvalidTemplate"


def test_a_found_taskrun_is_the_child_if_controlled_by_the_customrun_with_its_spec() -> None:
    run = rules.parse(customrun(with_inline(inline_spec())))
    manifest = rules.child_manifest(run, None)
    # As the API server stores it: the CRD's defaults filled in.
    stored = copy.deepcopy(manifest)
    stored["metadata"]["uid"] = "child-uid"
    stored["spec"].update(desiredPhase="RUNNING", deletionPolicy="Stop")
    assert rules.is_child(run, stored, manifest["spec"])
    other_command = copy.deepcopy(stored)
    other_command["spec"]["task"]["command"] = "rm -rf /"
    assert not rules.is_child(run, other_command, manifest["spec"])
    other_owner = copy.deepcopy(stored)
    other_owner["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    assert not rules.is_child(run, other_owner, manifest["spec"])
    not_controller = copy.deepcopy(stored)
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    assert not rules.is_child(run, not_controller, manifest["spec"])
    # Stopped before it ran, but nobody cancelled the CustomRun: not the child it asked for.
    stopped = copy.deepcopy(stored)
    stopped["spec"]["desiredPhase"] = "STOPPED"
    assert not rules.is_child(run, stopped, manifest["spec"])
    # Once recorded in the status (written by controllers only), its uid is enough.
    recorded = rules.parse(
        customrun(
            with_inline(inline_spec()),
            status={
                "extraFields": {"taskRun": manifest["metadata"]["name"], "taskRunUid": "child-uid"}
            },
        )
    )
    assert rules.is_child(recorded, stopped, None)


# --------------------------------------------------------------------------- status


def child(
    succeeded: str | None = "Unknown",
    reason: str = "Running",
    message: str = "",
    *,
    desired: str = "RUNNING",
    **status: Any,
) -> rules.Child:
    conditions = []
    if succeeded is not None:
        conditions = [
            {"type": "Succeeded", "status": succeeded, "reason": reason, "message": message}
        ]
    body = {
        "metadata": {"name": "greet-first-1234abcd", "uid": "child-uid"},
        "spec": {"desiredPhase": desired},
        "status": {"conditions": conditions, **status},
    }
    return rules.parse_child(body)


def succeeded_of(status: dict[str, Any]) -> tuple[str, str]:
    (cond,) = status["conditions"]
    assert cond["type"] == "Succeeded"
    return cond["status"], cond["reason"]


@pytest.mark.parametrize(
    ("cancelled", "kid", "expected"),
    [
        (False, None, ("Unknown", "Pending")),
        (True, None, ("False", rules.REASON_CANCELLED)),
        (False, child(None), ("Unknown", "Pending")),
        (False, child("Unknown", "Running"), ("Unknown", "Running")),
        (False, child("Unknown", "Retrying"), ("Unknown", "Retrying")),
        (False, child("True", "Succeeded"), ("True", "Succeeded")),
        (False, child("False", "Failed", "exit 1"), ("False", "Failed")),
        (False, child("False", "NotPermitted", "policy"), ("False", "NotPermitted")),
        (False, child("False", "TimedOut"), ("False", rules.REASON_TIMED_OUT)),
        (True, child("Unknown", "Running"), ("Unknown", "Cancelling")),
        (True, child("False", "Stopped"), ("False", rules.REASON_CANCELLED)),
        (True, child("False", "Failed"), ("False", rules.REASON_CANCELLED)),
        # It ended well before the stop took: it succeeded, and says so.
        (True, child("True", "Succeeded"), ("True", "Succeeded")),
    ],
)
def test_the_childs_outcome_is_the_customruns(
    cancelled: bool, kid: rules.Child | None, expected: tuple[str, str]
) -> None:
    spec = with_ref(status="RunCancelled") if cancelled else with_ref()
    status = rules.status(rules.parse(customrun(spec)), kid, NOW)
    assert succeeded_of(status) == expected
    assert status["observedGeneration"] == 1
    assert status["startTime"] == "2026-05-04T12:00:00Z"
    assert ("completionTime" in status) is (expected[0] != "Unknown")


def test_a_finished_child_gives_results_extra_fields_and_attempt_history() -> None:
    attempts = [
        {
            "executionId": "e1",
            "phase": "FAILED",
            "failureMessage": "flaky",
            "startedAt": "2026-05-04T11:00:00Z",
            "completedAt": "2026-05-04T11:01:00Z",
        }
    ]
    kid = child(
        "True",
        "Succeeded",
        taskExecutionId="e2",
        logUrl="https://ona.example/logs/e2",
        phase="SUCCEEDED",
        attempt=2,
        attempts=attempts,
        completedAt="2026-05-04T11:59:00Z",
        steps=[
            {"id": "s1", "output": {"greeting": "hi", "shared": "first"}},
            {"id": "s2", "output": {"shared": "second"}},
        ],
    )
    status = rules.status(rules.parse(customrun()), kid, NOW)
    assert status["results"] == [
        {"name": "greeting", "value": "hi"},
        {"name": "shared", "value": "second"},  # a later step wins
    ]
    assert status["extraFields"] == {
        "taskRun": "greet-first-1234abcd",
        "taskRunUid": "child-uid",
        "executionId": "e2",
        "logUrl": "https://ona.example/logs/e2",
        "phase": "SUCCEEDED",
        "attempt": 2,
        "attempts": attempts,
        "resultNotes": [],
    }
    assert status["retriesStatus"] == [
        {
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "False",
                    "reason": "Failed",
                    "message": "flaky",
                    "lastTransitionTime": "2026-05-04T11:01:00Z",
                }
            ],
            "extraFields": {"executionId": "e1", "phase": "FAILED"},
            "startTime": "2026-05-04T11:00:00Z",
            "completionTime": "2026-05-04T11:01:00Z",
        }
    ]
    assert status["completionTime"] == "2026-05-04T11:59:00Z"


def test_the_transition_time_stays_while_the_condition_does() -> None:
    first = rules.status(rules.parse(customrun()), child("Unknown", "Pending"), NOW)
    later = datetime(2026, 5, 4, 12, 5, tzinfo=UTC)
    again = rules.status(rules.parse(customrun(status=first)), child("Unknown", "Running"), later)
    assert again["conditions"][0]["lastTransitionTime"] == "2026-05-04T12:00:00Z"
    assert again["startTime"] == "2026-05-04T12:00:00Z"
    done = rules.status(rules.parse(customrun(status=again)), child("True", "Succeeded"), later)
    assert done["conditions"][0]["lastTransitionTime"] == "2026-05-04T12:05:00Z"


def test_without_a_child_what_was_said_of_the_last_one_stays() -> None:
    before = rules.status(rules.parse(customrun()), child(taskExecutionId="e1"), NOW)
    problem = rules.Problem("False", "TaskRunDeleted", "gone")
    after = rules.status(rules.parse(customrun(status=before)), None, NOW, problem)
    assert after["extraFields"] == before["extraFields"]
    assert succeeded_of(after) == ("False", "TaskRunDeleted")


def test_outputs_become_results_bounded_to_tektons_limits() -> None:
    big = "é" * 3000  # 6000 bytes
    kid = child(
        "True",
        "Succeeded",
        steps=[{"id": "s", "output": {"big": big, "ok": "fine", "not a name": "x", "-x": "y"}}],
    )
    found, notes = rules.results(kid)
    by_name = {r["name"]: r["value"] for r in found}
    assert set(by_name) == {"big", "ok"}
    assert len(by_name["big"].encode()) == rules.MAX_RESULT_BYTES
    assert by_name["big"] == "é" * 2048  # cut between characters, never inside one
    assert "result 'big' cut from 6000 to 4096 bytes (Tekton's result size limit is 4096)" in notes
    assert sum("is not a Tekton result name" in n for n in notes) == 2
    status = rules.status(rules.parse(customrun()), kid, NOW)
    assert "result 'big' cut from 6000 to 4096 bytes" in status["conditions"][0]["message"]
    assert status["extraFields"]["resultNotes"] == notes


def test_results_together_are_bounded_and_counted() -> None:
    outputs = {f"r{i:02d}": "x" * 4000 for i in range(6)}
    found, notes = rules.results(child("True", steps=[{"id": "s", "output": outputs}]))
    assert [r["name"] for r in found] == ["r00", "r01", "r02", "r03"]
    assert sum(len(r["value"]) for r in found) <= rules.MAX_RESULTS_BYTES
    assert notes == [
        f"result 'r0{i}' left out: the results together may hold at most 16384 bytes"
        for i in (4, 5)
    ]
    many = {f"r{i:03d}": "x" for i in range(70)}
    found, notes = rules.results(child("True", steps=[{"id": "s", "output": many}]))
    assert len(found) == rules.MAX_RESULTS
    assert len(notes) == 70 - rules.MAX_RESULTS


@pytest.mark.parametrize(
    ("cancelled", "kid", "stop"),
    [
        (True, child("Unknown"), True),
        (False, child("Unknown"), False),
        (True, None, False),
        (True, child("Unknown", desired="STOPPED"), False),  # asked already
        (True, child("False", "Failed"), False),  # over already
    ],
)
def test_a_cancel_stops_a_running_child_once(
    cancelled: bool, kid: rules.Child | None, stop: bool
) -> None:
    spec = with_ref(status="RunCancelled") if cancelled else with_ref()
    assert rules.wants_stop(rules.parse(customrun(spec)), kid) is stop


def test_a_final_customrun_is_done() -> None:
    done = rules.status(rules.parse(customrun()), child("False", "Failed"), NOW)
    assert rules.parse(customrun(status=done)).done
    running = rules.status(rules.parse(customrun()), child("Unknown"), NOW)
    assert not rules.parse(customrun(status=running)).done
