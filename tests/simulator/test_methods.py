"""Each API method's happy path and wire shape, auth, not-found and invalid arguments."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.simulator.conftest import FAST, JSON, Api
from tests.support.simulator_fixtures import SimulatorHandle

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ENV = "6f1c2b7e-2d7a-4c43-9a55-0c4b7d6f2a10"


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


async def create_task(api: Api, reference: str = "build", command: str = f"make {FAST}") -> JSON:
    result = await api.call(
        "CreateTask",
        {
            "environmentId": ENV,
            "metadata": {"reference": reference, "name": "Build", "description": "builds it"},
            "spec": {"command": command, "env": [{"name": "A", "value": "1"}]},
        },
    )
    task: JSON = result["task"]
    return task


async def test_create_get_list_delete_task(api: Api, simulator: SimulatorHandle) -> None:
    task = await create_task(api)
    assert is_uuid(task["id"])
    assert task["environmentId"] == ENV
    assert task["metadata"]["reference"] == "build"
    assert task["metadata"]["name"] == "Build"
    assert task["metadata"]["creator"] == {
        "id": simulator.control.subject_of(simulator.token),
        "principal": "PRINCIPAL_USER",
    }
    assert RFC3339.match(task["metadata"]["createdAt"])
    assert task["spec"] == {"command": f"make {FAST}", "env": [{"name": "A", "value": "1"}]}

    assert (await api.call("GetTask", {"id": task["id"]}))["task"] == task

    listed = await api.call("ListTasks", {"filter": {"references": ["build"]}})
    assert listed == {"tasks": [task], "pagination": {"nextToken": ""}}
    other_env = await api.call("ListTasks", {"filter": {"environmentIds": [str(uuid.uuid4())]}})
    assert other_env["tasks"] == []

    assert await api.call("DeleteTask", {"id": task["id"]}) == {}
    missing = await api.raw("GetTask", {"id": task["id"]})
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


async def test_duplicate_reference_in_one_environment_is_already_exists(api: Api) -> None:
    await create_task(api, reference="dup")
    response = await api.raw("CreateTask", {"environmentId": ENV, "metadata": {"reference": "dup"}})
    assert response.status_code == 409
    assert response.json()["code"] == "already_exists"


async def test_start_get_list_stop_execution_shapes(api: Api, simulator: SimulatorHandle) -> None:
    task = await create_task(api, command="make sim:pending=5s")
    started = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
    assert is_uuid(started["id"])
    metadata = started["metadata"]
    assert metadata["taskId"] == task["id"]
    assert metadata["environmentId"] == ENV
    assert metadata["creator"] == {
        "id": simulator.control.subject_of(simulator.token),
        "principal": "PRINCIPAL_USER",
    }
    assert RFC3339.match(metadata["createdAt"])
    assert metadata["startedBy"]
    assert "completedAt" not in metadata
    assert started["spec"]["desiredPhase"] == "TASK_EXECUTION_PHASE_RUNNING"
    [group] = started["spec"]["plan"]
    [step] = group["steps"]
    assert step["task"] == {"id": task["id"], "spec": task["spec"]}
    assert started["status"]["phase"] == "TASK_EXECUTION_PHASE_PENDING"
    assert isinstance(started["status"]["statusVersion"], str)
    assert int(started["status"]["statusVersion"]) > 0
    assert "steps" not in started["status"], "no step has started while pending"
    assert "logUrl" not in started["status"]

    assert await api.execution(started["id"]) == started
    listed = await api.call("ListTaskExecutions", {"filter": {"taskIds": [task["id"]]}})
    assert listed == {"taskExecutions": [started], "pagination": {"nextToken": ""}}

    assert await api.call("StopTaskExecution", {"id": started["id"]}) == {}
    stopped = await api.wait_phase(started["id"], "TASK_EXECUTION_PHASE_STOPPED")
    assert stopped["spec"]["desiredPhase"] == "TASK_EXECUTION_PHASE_STOPPED"
    assert RFC3339.match(stopped["metadata"]["completedAt"])


async def test_list_executions_filters(api: Api, simulator: SimulatorHandle) -> None:
    env_a, env_b = str(uuid.uuid4()), str(uuid.uuid4())
    task_a = simulator.control.seed_task(environment_id=env_a, reference="a", command="x sim:hang")
    task_b = simulator.control.seed_task(
        environment_id=env_b, reference="b", command="x sim:pending=0ms sim:duration=0ms"
    )
    run_a = (await api.call("StartTask", {"id": task_a["id"]}))["taskExecution"]
    run_b = (await api.call("StartTask", {"id": task_b["id"]}))["taskExecution"]
    await api.wait_phase(run_b["id"], "TASK_EXECUTION_PHASE_SUCCEEDED")

    async def ids(filter_: JSON) -> list[str]:
        result = await api.call("ListTaskExecutions", {"filter": filter_})
        return [item["id"] for item in result["taskExecutions"]]

    assert await ids({}) == [run_a["id"], run_b["id"]]
    assert await ids({"taskReferences": ["b"]}) == [run_b["id"]]
    assert await ids({"environmentIds": [env_a]}) == [run_a["id"]]
    assert await ids({"taskIds": [task_b["id"]]}) == [run_b["id"]]
    assert await ids({"phases": ["TASK_EXECUTION_PHASE_SUCCEEDED"]}) == [run_b["id"]]
    assert await ids({"phases": ["TASK_EXECUTION_PHASE_FAILED"]}) == []
    assert await ids({"taskReferences": ["a"], "phases": ["TASK_EXECUTION_PHASE_SUCCEEDED"]}) == []


async def test_start_of_unknown_task_is_not_found_naming_the_id(api: Api) -> None:
    unknown = str(uuid.uuid4())
    response = await api.raw("StartTask", {"id": unknown})
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found"
    assert unknown in body["message"]


@pytest.mark.parametrize(
    "method", ["GetTask", "DeleteTask", "GetTaskExecution", "StopTaskExecution"]
)
async def test_unknown_ids_are_not_found(api: Api, method: str) -> None:
    unknown = str(uuid.uuid4())
    response = await api.raw(method, {"id": unknown})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert unknown in response.json()["message"]


async def test_missing_and_wrong_token_are_unauthenticated(api: Api) -> None:
    for token in ("", "not-a-known-token"):
        response = await api.raw("ListTasks", {}, token=token)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        assert "not-a-known-token" not in response.text


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("CreateTask", {"environmentId": ENV}),
        ("DeleteTask", {"id": str(uuid.uuid4())}),
        ("StartTask", {"id": str(uuid.uuid4())}),
        ("StopTaskExecution", {"id": str(uuid.uuid4())}),
    ],
)
async def test_read_only_token_may_not_change_things(
    api: Api, simulator: SimulatorHandle, method: str, body: JSON
) -> None:
    response = await api.raw(method, body, token=simulator.readonly_token)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


async def test_read_only_token_may_read(api: Api, simulator: SimulatorHandle) -> None:
    task = await create_task(api)
    result = await api.call("GetTask", {"id": task["id"]}, token=simulator.readonly_token)
    assert result["task"]["id"] == task["id"]
    listed = await api.call("ListTaskExecutions", {}, token=simulator.readonly_token)
    assert listed["taskExecutions"] == []


async def test_tokens_added_by_control_act_as_their_own_subject(
    api: Api, simulator: SimulatorHandle
) -> None:
    task = simulator.control.seed_task(command=f"x {FAST}")
    other = simulator.control.add_token("second-token")
    readonly = simulator.control.add_token("readonly-token", read_only=True)
    mine = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
    theirs = (await api.call("StartTask", {"id": task["id"]}, token="second-token"))[
        "taskExecution"
    ]
    assert theirs["metadata"]["creator"]["id"] == other
    assert mine["metadata"]["creator"]["id"] != other
    denied = await api.raw("StartTask", {"id": task["id"]}, token="readonly-token")
    assert denied.status_code == 403
    assert readonly != other
    simulator.control.revoke_token("second-token")
    revoked = await api.raw("GetTask", {"id": task["id"]}, token="second-token")
    assert revoked.status_code == 401


async def test_connect_headers_are_accepted_and_not_required(api: Api) -> None:
    with_headers = await api.raw(
        "ListTasks", {}, headers={"Connect-Protocol-Version": "1", "Connect-Timeout-Ms": "5000"}
    )
    assert with_headers.status_code == 200
    without = await api.raw("ListTasks", {})
    assert without.status_code == 200


async def test_unknown_fields_are_ignored(api: Api) -> None:
    task = await create_task(api)
    result = await api.call("GetTask", {"id": task["id"], "someFutureField": {"x": 1}})
    assert result["task"]["id"] == task["id"]


INVALID_CASES = [
    ("GetTask", b"{not json", "not valid JSON"),
    ("GetTask", b"[1, 2]", "must be a JSON object"),
    ("GetTask", b'{"id": 42}', "id: expected a string, got number"),
    ("GetTaskExecution", b'{"id": "not-a-uuid"}', "id: 'not-a-uuid' is not a valid UUID"),
    ("StartTask", b'{"id": "1234"}', "id: '1234' is not a valid UUID"),
    ("StartTask", b"{}", "id: must be a valid UUID"),
    ("ListTaskExecutions", b'{"filter": []}', "filter: expected an object, got array"),
    ("ListTasks", b'{"filter": "x"}', "filter: expected an object, got string"),
    (
        "ListTaskExecutions",
        b'{"filter": {"taskIds": ["nope"]}}',
        "filter.taskIds[0]: 'nope' is not a valid UUID",
    ),
    (
        "ListTaskExecutions",
        b'{"filter": {"phases": ["TASK_EXECUTION_PHASE_DANCING"]}}',
        "filter.phases[0]",
    ),
    (
        "ListTaskExecutions",
        b'{"pagination": {"pageSize": 101}}',
        "pagination.pageSize: must be at most 100, got 101",
    ),
    ("ListTasks", b'{"pagination": {"pageSize": 500}}', "must be at most 100"),
    ("ListTasks", b'{"pagination": {"token": "garbage!"}}', "pagination.token"),
    ("CreateTask", b'{"environmentId": "env-1"}', "environmentId: 'env-1' is not a valid UUID"),
    (
        "CreateTask",
        b'{"environmentId": "6f1c2b7e-2d7a-4c43-9a55-0c4b7d6f2a10", "spec": {"command": 7}}',
        "spec.command: expected a string, got number",
    ),
    (
        "CreateTask",
        b'{"environmentId": "6f1c2b7e-2d7a-4c43-9a55-0c4b7d6f2a10",'
        b' "spec": {"command": "x sim:steps=zero"}}',
        "sim:steps",
    ),
]


@pytest.mark.parametrize(("method", "content", "expected"), INVALID_CASES)
async def test_invalid_arguments(api: Api, method: str, content: bytes, expected: str) -> None:
    response = await api.raw(method, content=content)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_argument"
    assert expected in body["message"]


@pytest.mark.parametrize(
    ("method", "field"),
    [
        ("ListTaskExecutions", "taskIds"),
        ("ListTaskExecutions", "taskReferences"),
        ("ListTaskExecutions", "environmentIds"),
        ("ListTaskExecutions", "phases"),
        ("ListTasks", "references"),
        ("ListTasks", "taskIds"),
    ],
)
async def test_filters_take_at_most_25_values(api: Api, method: str, field: str) -> None:
    def values(count: int) -> list[str]:
        if field == "phases":
            return ["TASK_EXECUTION_PHASE_RUNNING"] * count
        if field.endswith("Ids"):
            return [str(uuid.uuid4()) for _ in range(count)]
        return [f"ref-{index}" for index in range(count)]

    accepted = await api.raw(method, {"filter": {field: values(25)}})
    assert accepted.status_code == 200, accepted.text
    refused = await api.raw(method, {"filter": {field: values(26)}})
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "invalid_argument",
        "message": f"filter.{field}: at most 25 values allowed, got 26",
    }
