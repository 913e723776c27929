"""The status as stored on the object (round trip, merge patches, condition timestamps)
and the parsing of what users write in spec (durations, task forms, phases)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ona_taskrun.rules.conditions import status_patch
from ona_taskrun.rules.model import (
    InlineTask,
    InvalidSpec,
    Observation,
    Phase,
    Settings,
    Status,
    TaskRef,
)
from ona_taskrun.rules.pipeline import decide
from ona_taskrun.rules.spec import parse_duration, parse_spec, task_reference

from .builders import (
    EXEC,
    NOW,
    TASK,
    at,
    cond,
    execution,
    finished_conditions,
    inline_spec,
    pending_conditions,
    taskrun,
)

# ----------------------------------------------------------------- round trip

FULL_STATUS: dict[str, Any] = {
    "observedGeneration": 2,
    "taskId": TASK,
    "taskExecutionId": EXEC,
    "phase": "FAILED",
    "statusVersion": "18446744073709551615",
    "failureMessage": "exit code 2",
    "logUrl": "https://logs.example/exec-1",
    "createdAt": at(-600),
    "startedAt": at(-590),
    "completedAt": at(-10),
    "startRequestedAt": at(-601),
    "startAttempts": 2,
    "stopRequestedAt": at(-30),
    "stopReason": "TimedOut",
    "steps": [
        {"id": "s1", "label": "make", "phase": "FAILED", "failureMessage": "boom", "output": {}}
    ],
    "conditions": finished_conditions(False, "Failed", stalled=True),
}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({}, id="empty"),
        pytest.param({"observedGeneration": 1, "conditions": []}, id="generation-only"),
        pytest.param(
            {
                "taskId": TASK,
                "startRequestedAt": at(0),
                "startAttempts": 1,
                "conditions": pending_conditions("Starting"),
            },
            id="start-claimed",
        ),
        pytest.param(FULL_STATUS, id="every-field"),
    ],
)
def test_status_round_trips(raw: dict[str, Any]) -> None:
    status = Status.from_dict(raw)
    again = Status.from_dict(status.to_dict())

    assert again == status
    assert again.to_dict() == status.to_dict()


def test_status_to_dict_writes_what_users_read() -> None:
    written = Status.from_dict(FULL_STATUS).to_dict()

    assert written == FULL_STATUS


def test_status_from_dict_of_nothing_is_the_empty_status() -> None:
    assert Status.from_dict(None) == Status()
    assert Status().to_dict() == {"observedGeneration": 0, "conditions": []}


# ----------------------------------------------------------------- merge patches


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        pytest.param({"a": 1}, {"a": 1}, {}, id="no-op-is-empty"),
        pytest.param({}, {}, {}, id="empty-to-empty"),
        pytest.param({"a": 1}, {"a": 2}, {"a": 2}, id="changed-key"),
        pytest.param({"a": 1}, {"a": 1, "b": "x"}, {"b": "x"}, id="added-key"),
        pytest.param(
            {"a": 1, "startRequestedAt": at(0)},
            {"a": 1},
            {"startRequestedAt": None},
            id="removed-key-is-deleted-with-none",
        ),
        pytest.param(
            {"conditions": [{"type": "Succeeded", "status": "Unknown"}]},
            {"conditions": [{"type": "Succeeded", "status": "True"}]},
            {"conditions": [{"type": "Succeeded", "status": "True"}]},
            id="lists-replace-whole",
        ),
        pytest.param(
            {"phase": "RUNNING", "stopReason": "Requested", "taskId": TASK},
            {"phase": "STOPPED", "taskId": TASK},
            {"phase": "STOPPED", "stopReason": None},
            id="changed-and-removed",
        ),
    ],
)
def test_status_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert status_patch(old, new) == patch


def test_status_patch_of_a_decision_applies_to_the_old_status() -> None:
    old = {
        "observedGeneration": 1,
        "taskId": TASK,
        "startRequestedAt": at(-20),
        "startAttempts": 1,
        "conditions": pending_conditions("StartOutcomeUnknown"),
    }
    run = taskrun(inline_spec(), old)
    new = decide(run, Observation(candidates=()), NOW).status.to_dict()

    patch = status_patch(old, new)
    merged = {k: v for k, v in {**old, **patch}.items() if v is not None}
    assert merged == new
    assert patch["startRequestedAt"] is None


# --------------------------------------------------------------- condition times


def test_condition_times_change_only_when_status_changes() -> None:
    running = {
        "observedGeneration": 1,
        "taskId": TASK,
        "taskExecutionId": EXEC,
        "phase": "PENDING",
        "statusVersion": "1",
        "startRequestedAt": at(-600),
    }
    run = taskrun(inline_spec(), running)
    first = decide(run, Observation(), NOW, Settings())
    assert {c.last_transition_time for c in first.status.conditions} == {at(0)}

    # A minute later the reason changes (Pending -> Running) but no status does.
    later = NOW + timedelta(minutes=1)
    run = taskrun(inline_spec(), first.status.to_dict())
    second = decide(run, Observation(execution=execution(version=2)), later, Settings())
    assert second.status.condition("Succeeded") is not None
    assert {c.type: c.last_transition_time for c in second.status.conditions} == {
        "Succeeded": at(0),
        "Reconciling": at(0),
        "Stalled": at(0),
        "RemoteReachable": at(0),
    }
    assert {c.type: c.reason for c in second.status.conditions}["Succeeded"] == "Running"

    # Two minutes later it succeeds: Succeeded and Reconciling flip, Stalled stays False.
    end = NOW + timedelta(minutes=2)
    run = taskrun(inline_spec(), second.status.to_dict())
    done = decide(run, Observation(execution=execution(phase=Phase.SUCCEEDED, version=3)), end)
    assert {c.type: c.last_transition_time for c in done.status.conditions} == {
        "Succeeded": at(120),
        "Reconciling": at(120),
        "Stalled": at(0),
        "RemoteReachable": at(0),
    }


def test_condition_without_a_time_gets_one() -> None:
    untimed = {**cond("Succeeded", "Unknown", "Starting"), "lastTransitionTime": ""}
    status = {"taskId": TASK, "conditions": [untimed]}
    decision = decide(taskrun(inline_spec(), status), Observation(), NOW)

    found = decision.status.condition("Succeeded")
    assert found is not None
    assert found.last_transition_time == at(0)


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("1h30m", 5400),
        ("1h", 3600),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2h45m30s", 9930),
        ("90s", 90),
        ("1m500ms", 60.5),
        ("0.5h", 1800),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is not a duration"),
        ("30", "is not a duration"),
        ("ten minutes", "is not a duration"),
        ("30x", "is not a duration"),
        ("-5m", "is not a duration"),
        ("1h 30m", "is not a duration"),
        ("5m30", "is not a duration"),
        ("30M", "is not a duration"),
        ("0s", "must be longer than zero"),
        ("0h0m", "must be longer than zero"),
    ],
)
def test_parse_duration_refuses(text: str, why: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert f"spec.timeout {text!r}" in message
    assert why in message


# ---------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({}, "exactly one of spec.task and spec.taskRef must be set", id="neither"),
        pytest.param(
            {**inline_spec(), "taskRef": {"id": "t"}},
            "exactly one of spec.task and spec.taskRef must be set",
            id="both",
        ),
        pytest.param(
            {"task": {"environmentId": "env-1"}}, "spec.task needs name, command", id="task-fields"
        ),
        pytest.param(
            {"task": {"name": "n", "command": ""}},
            "spec.task needs environmentId, command",
            id="task-empty-command",
        ),
        pytest.param(
            {"taskRef": {}},
            "spec.taskRef needs either id, or both environmentId and reference",
            id="ref-empty",
        ),
        pytest.param(
            {"taskRef": {"reference": "nightly"}},
            "spec.taskRef needs either id, or both environmentId and reference",
            id="ref-without-environment",
        ),
        pytest.param(
            {"task": "make test"}, "spec.task and spec.taskRef must be objects", id="task-string"
        ),
        pytest.param(
            inline_spec(timeout="soon"),
            "spec.timeout 'soon' is not a duration such as 30m or 1h30m",
            id="bad-timeout",
        ),
    ],
)
def test_parse_spec_refuses_with_a_precise_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(spec)
    assert str(caught.value) == message


def test_parse_spec_reads_an_inline_task() -> None:
    spec = parse_spec(
        {
            "task": {
                "environmentId": "env-1",
                "name": "build",
                "command": "make",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "two"}],
                "runsOn": {"docker": {"image": "alpine"}},
                "dependsOn": ["setup"],
            },
            "desiredPhase": "STOPPED",
            "deletionPolicy": "Orphan",
            "timeout": "1h30m",
        }
    )
    assert spec.task == InlineTask(
        environment_id="env-1",
        name="build",
        command="make",
        env=(("A", "1"), ("B", "two")),
        runs_on={"docker": {"image": "alpine"}},
        depends_on=("setup",),
    )
    assert spec.task_ref is None
    assert (spec.desired_stopped, spec.orphan_on_delete) == (True, True)
    assert spec.timeout == timedelta(hours=1, minutes=30)
    assert spec.environment_id == "env-1"


@pytest.mark.parametrize(
    ("raw", "ref"),
    [
        ({"id": "t-1"}, TaskRef(id="t-1")),
        (
            {"environmentId": "env-1", "reference": "nightly"},
            TaskRef(environment_id="env-1", reference="nightly"),
        ),
    ],
)
def test_parse_spec_reads_a_task_ref_with_defaults(raw: dict[str, str], ref: TaskRef) -> None:
    spec = parse_spec({"taskRef": raw})
    assert spec.task_ref == ref
    assert spec.task is None
    assert (spec.desired_stopped, spec.orphan_on_delete, spec.timeout) == (False, False, None)


def test_task_reference_is_derived_from_the_uid() -> None:
    assert task_reference("abc-123") == "k8s-taskrun-abc-123"
    assert task_reference("a") != task_reference("b")


# --------------------------------------------------------------------- phases


@pytest.mark.parametrize(
    ("remote", "phase"),
    [
        ("TASK_EXECUTION_PHASE_PENDING", Phase.PENDING),
        ("TASK_EXECUTION_PHASE_RUNNING", Phase.RUNNING),
        ("TASK_EXECUTION_PHASE_SUCCEEDED", Phase.SUCCEEDED),
        ("TASK_EXECUTION_PHASE_FAILED", Phase.FAILED),
        ("TASK_EXECUTION_PHASE_STOPPED", Phase.STOPPED),
        ("RUNNING", Phase.RUNNING),
        ("TASK_EXECUTION_PHASE_UNSPECIFIED", None),
        ("TASK_EXECUTION_PHASE_SOMETHING_NEW", None),
        ("", None),
        ("running", None),
    ],
)
def test_phase_from_remote(remote: str, phase: Phase | None) -> None:
    assert Phase.from_remote(remote) is phase


@pytest.mark.parametrize(
    ("phase", "final"),
    [
        (Phase.PENDING, False),
        (Phase.RUNNING, False),
        (Phase.SUCCEEDED, True),
        (Phase.FAILED, True),
        (Phase.STOPPED, True),
    ],
)
def test_phase_final(phase: Phase, final: bool) -> None:
    assert phase.final is final
