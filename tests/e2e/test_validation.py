"""The API server, through the CRD's schema and CEL rules, rejects what cannot run."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.operator_fixtures import ENVIRONMENT_ID, TaskRuns, inline_task

pytestmark = pytest.mark.e2e

TASK_ID = str(uuid.UUID(int=7))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"task": inline_task("echo"), "taskRef": {"id": TASK_ID}},
            "exactly one of spec.task and spec.taskRef",
            id="both-forms",
        ),
        pytest.param({"timeout": "5m"}, "exactly one of spec.task and spec.taskRef", id="neither"),
        pytest.param({"taskRef": {"id": "not-a-uuid"}}, "spec.taskRef.id", id="malformed-id"),
        pytest.param(
            {"taskRef": {"environmentId": ENVIRONMENT_ID}},
            "either id, or both environmentId and reference",
            id="ref-without-reference",
        ),
        pytest.param(
            {"task": {"environmentId": ENVIRONMENT_ID, "name": "x"}},
            "spec.task.command",
            id="task-without-command",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "desiredPhase": "PAUSED"},
            "spec.desiredPhase",
            id="unknown-phase",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "timeout": "ten minutes"},
            "spec.timeout",
            id="bad-timeout",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "deletionPolicy": "Keep"},
            "spec.deletionPolicy",
            id="bad-deletion-policy",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "retries": 11},
            "spec.retries: Invalid value: 11: spec.retries in body should be less than or "
            "equal to 10",
            id="too-many-retries",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "retries": -1},
            "spec.retries in body should be greater than or equal to 0",
            id="negative-retries",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "retries": "3"},
            "spec.retries: Invalid value",
            id="retries-not-a-number",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "ttlSecondsAfterFinished": -1},
            "spec.ttlSecondsAfterFinished in body should be greater than or equal to 0",
            id="negative-ttl",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "ttlSecondsAfterFinished": 31536001},
            "spec.ttlSecondsAfterFinished in body should be less than or equal to 31536000",
            id="ttl-past-a-year",
        ),
        pytest.param(
            {"taskRef": {"id": TASK_ID}, "retries": 2, "desiredPhase": "STOPPED"},
            "spec.retries cannot be set on a TaskRun created with desiredPhase STOPPED",
            id="retries-on-a-run-that-never-starts",
        ),
    ],
)
def test_bad_objects_are_rejected_at_apply(
    spec: dict[str, Any], message: str, taskruns: TaskRuns
) -> None:
    result = taskruns.try_apply("bad", spec)
    assert result.returncode != 0
    assert message in result.stderr
    assert not taskruns.exists("bad")


def test_stopped_cannot_go_back_to_running(taskruns: TaskRuns) -> None:
    taskruns.apply("oneway", {"taskRef": {"id": TASK_ID}, "desiredPhase": "STOPPED"})
    result = taskruns.patch_spec("oneway", {"desiredPhase": "RUNNING"})
    assert result.returncode != 0
    assert "cannot be set back to RUNNING" in result.stderr
    assert taskruns.get("oneway")["spec"]["desiredPhase"] == "STOPPED"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param({"task": {"command": "rm -rf /"}}, "spec.task is immutable", id="task"),
        pytest.param({"timeout": "1h"}, "spec.timeout is immutable", id="timeout"),
        pytest.param({"deletionPolicy": "Orphan"}, "spec.deletionPolicy is immutable", id="policy"),
    ],
)
def test_spec_is_immutable_except_desired_phase(
    edit: dict[str, Any], message: str, taskruns: TaskRuns
) -> None:
    taskruns.apply("fixed", {"task": inline_task("echo # sim:hang"), "timeout": "30m"})
    result = taskruns.patch_spec("fixed", edit)
    assert result.returncode != 0
    assert message in result.stderr
    assert taskruns.get("fixed")["spec"]["task"]["command"] == "echo # sim:hang"
    allowed = taskruns.patch_spec("fixed", {"desiredPhase": "STOPPED"})
    assert allowed.returncode == 0, allowed.stderr


def test_taskref_edit_is_rejected(taskruns: TaskRuns) -> None:
    taskruns.apply("ref", {"taskRef": {"id": TASK_ID}})
    result = taskruns.patch_spec("ref", {"taskRef": {"id": str(uuid.uuid4())}})
    assert result.returncode != 0
    assert "spec.taskRef is immutable" in result.stderr


def test_a_retrying_run_may_still_be_stopped_and_created_stopped_without_retries(
    taskruns: TaskRuns,
) -> None:
    taskruns.apply("retrying", {"taskRef": {"id": TASK_ID}, "retries": 3})
    stopped = taskruns.patch_spec("retrying", {"desiredPhase": "STOPPED"})
    assert stopped.returncode == 0, stopped.stderr
    zero = taskruns.try_apply(
        "never", {"taskRef": {"id": TASK_ID}, "retries": 0, "desiredPhase": "STOPPED"}
    )
    assert zero.returncode == 0, zero.stderr
