"""The EnvironmentAutomationService methods: request validation and response messages.

Each method takes the decoded request body, the caller's subject and the query string,
and returns the response message. Errors are raised as `ConnectError`. Nothing here knows
about HTTP, faults or the call log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from ona_simulator.auth import Subject
from ona_simulator.core import CallRecord, Simulator
from ona_simulator.environment_methods import (
    ENVIRONMENT_METHODS,
    MUTATING_ENVIRONMENT_METHODS,
)
from ona_simulator.logs import create_environment_logs_token
from ona_simulator.wire import (
    JSON,
    MAX_FILTER_VALUES,
    get_object,
    get_phase_list,
    get_string,
    get_string_list,
    get_uuid,
    invalid,
    new_id,
    page_size,
    type_name,
)

Method = Callable[[Simulator, JSON, Subject, Mapping[str, str], CallRecord], JSON]

# Methods a read-only token may not call.
MUTATING: Final = (
    frozenset({"CreateTask", "DeleteTask", "StartTask", "StopTaskExecution"})
    | MUTATING_ENVIRONMENT_METHODS
)


def _page_request(body: JSON, query: Mapping[str, str]) -> tuple[str, int]:
    """The page token and size, from the body or (as the 0.x SDK sends them) the query."""
    pagination = get_object(body, "pagination")
    body_token = get_string(pagination, "token", "pagination.")
    token = query.get("token") or body_token
    return token, page_size(pagination, query.get("pageSize"))


def create_task(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    environment_id = get_uuid(body, "environmentId")
    depends_on = get_string_list(body, "dependsOn", uuids=True)
    metadata = get_object(body, "metadata")
    triggered_by = metadata.get("triggeredBy") or []
    if not isinstance(triggered_by, list) or not all(isinstance(t, dict) for t in triggered_by):
        raise invalid(
            f"metadata.triggeredBy: expected an array of objects, got {type_name(triggered_by)}"
        )
    task = sim.store.create_task(
        task_id=new_id(),
        environment_id=environment_id,
        reference=get_string(metadata, "reference", "metadata."),
        name=get_string(metadata, "name", "metadata."),
        description=get_string(metadata, "description", "metadata."),
        creator_id=subject.id,
        depends_on=depends_on,
        triggered_by=triggered_by,
        spec=task_spec(get_object(body, "spec")),
    )
    call.result_id = task.id
    return {"task": task.to_json()}


def task_spec(spec: JSON) -> JSON:
    """Keep the TaskSpec fields the service knows, in their wire shape, and drop the rest."""
    result: JSON = {}
    command = get_string(spec, "command", "spec.")
    if command:
        result["command"] = command
    env = spec.get("env")
    if env is not None:
        if not isinstance(env, list):
            raise invalid(f"spec.env: expected an array, got {type_name(env)}")
        for index, item in enumerate(env):
            if not isinstance(item, dict):
                raise invalid(f"spec.env[{index}]: expected an object, got {type_name(item)}")
            get_string(item, "name", f"spec.env[{index}].")
            get_string(item, "value", f"spec.env[{index}].")
        if env:
            result["env"] = env
    runs_on = get_object(spec, "runsOn", "spec.")
    if runs_on:
        result["runsOn"] = runs_on
    if spec.get("prebuildRequiresSuccess") is True:
        result["prebuildRequiresSuccess"] = True
    return result


def get_task(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    return {"task": sim.store.get_task(get_uuid(body, "id")).to_json()}


def list_tasks(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    filter_ = get_object(body, "filter")
    token, size = _page_request(body, query)
    page = sim.store.list_tasks(
        environment_ids=get_string_list(
            filter_, "environmentIds", "filter.", uuids=True, limit=MAX_FILTER_VALUES
        ),
        references=get_string_list(filter_, "references", "filter.", limit=MAX_FILTER_VALUES),
        task_ids=get_string_list(
            filter_, "taskIds", "filter.", uuids=True, limit=MAX_FILTER_VALUES
        ),
        token=token,
        page_size=size,
    )
    return {"tasks": page.items, "pagination": {"nextToken": page.next_token}}


def delete_task(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    sim.store.delete_task(get_uuid(body, "id"))
    return {}


def start_task(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    execution = sim.store.start_execution(get_uuid(body, "id"), subject.id)
    call.result_id = execution.id
    return {"taskExecution": execution.view()}


def get_task_execution(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    return {"taskExecution": sim.store.get_execution(get_uuid(body, "id")).view()}


def list_task_executions(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    filter_ = get_object(body, "filter")
    token, size = _page_request(body, query)
    page = sim.store.list_executions(
        task_ids=get_string_list(
            filter_, "taskIds", "filter.", uuids=True, limit=MAX_FILTER_VALUES
        ),
        task_references=get_string_list(
            filter_, "taskReferences", "filter.", limit=MAX_FILTER_VALUES
        ),
        environment_ids=get_string_list(
            filter_, "environmentIds", "filter.", uuids=True, limit=MAX_FILTER_VALUES
        ),
        phases=get_phase_list(filter_, "phases", "filter."),
        token=token,
        page_size=size,
    )
    return {"taskExecutions": page.items, "pagination": {"nextToken": page.next_token}}


def stop_task_execution(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    sim.store.stop_execution(get_uuid(body, "id"))
    return {}


# The organization every simulated token belongs to.
ORGANIZATION_ID: Final = "5e1a7c3e-0000-4000-8000-00000000a11a"


def get_authenticated_identity(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    """gitpod.v1.IdentityService/GetAuthenticatedIdentity: who the token acts as."""
    return {
        "organizationId": ORGANIZATION_ID,
        "subject": {"id": subject.id, "principal": "PRINCIPAL_USER"},
    }


METHODS: Final[Mapping[str, Method]] = {
    "GetAuthenticatedIdentity": get_authenticated_identity,
    "CreateTask": create_task,
    "GetTask": get_task,
    "ListTasks": list_tasks,
    "DeleteTask": delete_task,
    "StartTask": start_task,
    "GetTaskExecution": get_task_execution,
    "ListTaskExecutions": list_task_executions,
    "StopTaskExecution": stop_task_execution,
    "CreateEnvironmentLogsToken": create_environment_logs_token,
    **ENVIRONMENT_METHODS,
}
