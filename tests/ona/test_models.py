"""Parsing the API's messages: full and minimal, unknown fields and values, versions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ona_taskrun.clients.ona import (
    Principal,
    ResourceEvent,
    ResourceOperation,
    Task,
    TaskExecution,
    TaskExecutionPhase,
)

FULL_EXECUTION = {
    "id": "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e",
    "metadata": {
        "completedAt": "2019-12-27T18:11:19.117Z",
        "createdAt": "2019-12-27T18:10:00Z",
        "creator": {"id": "c0ffee00-0000-4000-8000-000000000001", "principal": "PRINCIPAL_USER"},
        "environmentId": "e1",
        "startedAt": "2019-12-27T18:10:01.123456789Z",
        "startedBy": "manual",
        "taskId": "t1",
        "somethingNew": {"nested": True},
    },
    "spec": {
        "desiredPhase": "TASK_EXECUTION_PHASE_STOPPED",
        "plan": [
            {
                "steps": [
                    {
                        "id": "s1",
                        "dependsOn": ["s0"],
                        "label": "build",
                        "task": {
                            "id": "t1",
                            "spec": {
                                "command": "make",
                                "env": [{"name": "A", "value": "1"}],
                                "runsOn": {"docker": {"image": "alpine", "environment": []}},
                            },
                        },
                    }
                ]
            }
        ],
    },
    "status": {
        "failureMessage": "exit status 2",
        "logUrl": "https://logs.example/x",
        "phase": "TASK_EXECUTION_PHASE_FAILED",
        "statusVersion": "42",
        "steps": [
            {
                "id": "s1",
                "failureMessage": "exit status 2",
                "output": {"result": "no"},
                "phase": "TASK_EXECUTION_PHASE_FAILED",
            }
        ],
    },
}


def test_full_execution_parses_every_field() -> None:
    execution = TaskExecution.model_validate(FULL_EXECUTION)
    assert execution.id == "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e"
    assert execution.metadata.task_id == "t1"
    assert execution.metadata.environment_id == "e1"
    assert execution.metadata.created_at == datetime(2019, 12, 27, 18, 10, tzinfo=UTC)
    assert execution.metadata.started_at is not None
    assert execution.metadata.started_at.microsecond == 123456
    assert execution.metadata.completed_at is not None
    assert execution.metadata.creator.principal is Principal.USER
    assert execution.metadata.started_by == "manual"
    assert execution.spec.desired_phase is TaskExecutionPhase.STOPPED
    step = execution.spec.plan[0].steps[0]
    assert (step.id, step.label, step.depends_on) == ("s1", "build", ["s0"])
    assert step.task is not None
    assert step.task.spec.command == "make"
    assert step.task.spec.env[0].name == "A"
    assert step.task.spec.runs_on == {"docker": {"image": "alpine", "environment": []}}
    assert execution.phase is TaskExecutionPhase.FAILED
    assert execution.is_final
    assert execution.status.status_version == "42"
    assert execution.status_version_int == 42
    assert execution.status.failure_message == "exit status 2"
    assert execution.status.log_url == "https://logs.example/x"
    step_status = execution.step_status("s1")
    assert step_status is not None
    assert step_status.output == {"result": "no"}
    assert execution.step_status("s2") is None


def test_minimal_execution_gets_protobuf_defaults() -> None:
    execution = TaskExecution.model_validate({"id": "x"})
    assert execution.phase is TaskExecutionPhase.UNSPECIFIED
    assert execution.status.status_version == "0"
    assert execution.status_version_int == 0
    assert execution.status.steps == []
    assert execution.status.failure_message == ""
    assert execution.spec.plan == []
    assert execution.metadata.task_id == ""
    assert execution.metadata.created_at is None
    assert not execution.is_final


def test_unknown_phase_and_principal_map_to_unspecified() -> None:
    execution = TaskExecution.model_validate(
        {
            "id": "x",
            "metadata": {"creator": {"principal": "PRINCIPAL_FROM_THE_FUTURE"}},
            "status": {
                "phase": "TASK_EXECUTION_PHASE_PAUSED",
                "steps": [{"id": "s", "phase": "TASK_EXECUTION_PHASE_SKIPPED"}],
            },
        }
    )
    assert execution.phase is TaskExecutionPhase.UNSPECIFIED
    assert execution.status.steps[0].phase is TaskExecutionPhase.UNSPECIFIED
    assert execution.metadata.creator.principal is Principal.UNSPECIFIED


def test_phase_given_as_enum_number() -> None:
    execution = TaskExecution.model_validate({"id": "x", "status": {"phase": 2}})
    assert execution.phase is TaskExecutionPhase.RUNNING


@pytest.mark.parametrize(
    ("older", "newer"),
    [("9", "10"), ("99", "100"), ("0", "1"), ("18446744073709551614", "18446744073709551615")],
)
def test_status_versions_compare_as_integers(older: str, newer: str) -> None:
    a = TaskExecution.model_validate({"id": "x", "status": {"statusVersion": older}})
    b = TaskExecution.model_validate({"id": "x", "status": {"statusVersion": newer}})
    assert a.status_version_int < b.status_version_int
    # The string is kept as sent, so writing it back loses nothing.
    assert (a.status.status_version, b.status.status_version) == (older, newer)


def test_status_version_sent_as_number_is_kept_as_text() -> None:
    execution = TaskExecution.model_validate({"id": "x", "status": {"statusVersion": 17}})
    assert execution.status.status_version == "17"
    assert execution.status_version_int == 17


def test_undecodable_status_version_counts_as_oldest() -> None:
    # The API reference's own example carries the placeholder "statusVersion".
    execution = TaskExecution.model_validate(
        {"id": "x", "status": {"statusVersion": "statusVersion"}}
    )
    assert execution.status_version_int == 0


def test_task_full_and_minimal() -> None:
    task = Task.model_validate(
        {
            "id": "t1",
            "environmentId": "e1",
            "dependsOn": ["t0"],
            "metadata": {
                "reference": "ns/run-1",
                "name": "build",
                "description": "d",
                "creator": {"id": "u", "principal": "PRINCIPAL_SERVICE_ACCOUNT"},
                "createdAt": "2024-01-01T00:00:00Z",
                "triggeredBy": [{"manual": True}],
            },
            "spec": {"command": "make", "env": [{"name": "A", "value": "1"}, {"name": "B"}]},
            "unknown": 1,
        }
    )
    assert task.metadata.reference == "ns/run-1"
    assert task.metadata.triggered_by == [{"manual": True}]
    assert task.metadata.creator.principal is Principal.SERVICE_ACCOUNT
    assert [(e.name, e.value) for e in task.spec.env] == [("A", "1"), ("B", "")]
    assert task.depends_on == ["t0"]
    minimal = Task.model_validate({"id": "t2"})
    assert minimal.metadata.reference == ""
    assert minimal.spec.env == []
    assert minimal.spec.runs_on is None


def test_resource_event_tolerates_unknown_operation() -> None:
    event = ResourceEvent.model_validate(
        {
            "operation": "RESOURCE_OPERATION_UPDATE_STATUS",
            "resourceType": "RESOURCE_TYPE_TASK_EXECUTION",
            "resourceId": "x1",
        }
    )
    assert event.operation is ResourceOperation.UPDATE_STATUS
    assert event.is_task_execution
    odd = ResourceEvent.model_validate({"operation": "RESOURCE_OPERATION_MERGE"})
    assert odd.operation is ResourceOperation.UNSPECIFIED
    assert not odd.is_task_execution


def test_models_dump_back_to_camel_case() -> None:
    execution = TaskExecution.model_validate(FULL_EXECUTION)
    dumped = execution.to_json_dict()
    assert dumped["status"]["statusVersion"] == "42"
    assert dumped["metadata"]["taskId"] == "t1"
    assert "somethingNew" not in dumped["metadata"]
