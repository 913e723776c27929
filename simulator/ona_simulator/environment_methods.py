"""The gitpod.v1.EnvironmentService methods the operator uses, over `Environments`.

Like `methods`, each takes the decoded request, the caller's subject, the query and the
call record, returns the response message, and raises `ConnectError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ona_simulator.auth import Subject
from ona_simulator.core import CallRecord, Simulator
from ona_simulator.environments import Environment, Timing, parse_env_phase
from ona_simulator.store import decode_page_token, encode_page_token
from ona_simulator.wire import (
    JSON,
    MAX_FILTER_VALUES,
    ConnectError,
    get_bool,
    get_object,
    get_string,
    get_string_list,
    get_uuid,
    invalid,
    new_id,
    page_size,
    type_name,
)

MUTATING_ENVIRONMENT_METHODS: Final = frozenset(
    {
        "CreateEnvironmentFromProject",
        "StartEnvironment",
        "StopEnvironment",
        "DeleteEnvironment",
        "MarkEnvironmentActive",
    }
)


def _environment_id(body: JSON, call: CallRecord) -> str:
    env_id = get_uuid(body, "environmentId")
    call.request_id = env_id
    return env_id


def get_environment(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    env = sim.store.environments.get(_environment_id(body, call))
    return {"environment": env.view()}


def start_environment(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    sim.store.environments.start_environment(_environment_id(body, call))
    return {}


def stop_environment(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    sim.store.environments.stop_environment(_environment_id(body, call))
    return {}


def delete_environment(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    sim.store.environments.delete_environment(_environment_id(body, call), get_bool(body, "force"))
    return {}


def mark_environment_active(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    env_id = _environment_id(body, call)
    signal = get_object(body, "activitySignal")
    get_string(signal, "source", "activitySignal.")
    get_string(signal, "timestamp", "activitySignal.")
    sim.store.environments.mark_active(env_id)
    return {}


def environment_spec(spec: JSON) -> JSON:
    """Keep the spec parts the simulator understands: machine class and git initializer."""
    result: JSON = {}
    machine = get_object(spec, "machine", "spec.")
    machine_class = get_string(machine, "class", "spec.machine.")
    if machine_class:
        result["machine"] = {"class": machine_class}
    content = get_object(spec, "content", "spec.")
    initializer = get_object(content, "initializer", "spec.content.")
    specs = initializer.get("specs")
    if specs is not None:
        if not isinstance(specs, list):
            raise invalid(
                f"spec.content.initializer.specs: expected an array, got {type_name(specs)}"
            )
        for index, item in enumerate(specs):
            where = f"spec.content.initializer.specs[{index}]"
            if not isinstance(item, dict):
                raise invalid(f"{where}: expected an object, got {type_name(item)}")
            git = get_object(item, "git", where + ".")
            for key in ("remoteUri", "cloneTarget", "targetMode", "checkoutLocation"):
                get_string(git, key, where + ".git.")
        if specs:
            result["content"] = {"initializer": {"specs": specs}}
    return result


def create_environment_from_project(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    project_id = get_uuid(body, "projectId")
    name = get_string(body, "name")
    spec = environment_spec(get_object(body, "spec"))
    project = sim.store.environments.projects.get(project_id)
    if project is None:
        raise ConnectError("not_found", f"project {project_id} not found")
    env = sim.store.environments.add(
        env_id=new_id(),
        name=name,
        project_id=project_id,
        creator_id=subject.id,
        timing=Timing(**vars(project.timing)),
        spec=spec,
    )
    call.result_id = env.id
    return {"environment": env.view()}


def list_environments(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    filter_ = get_object(body, "filter")
    pagination = get_object(body, "pagination")
    token = query.get("token") or get_string(pagination, "token", "pagination.")
    size = page_size(pagination, query.get("pageSize"))
    raw_phases = filter_.get("statusPhases") or []
    if not isinstance(raw_phases, list):
        raise invalid("filter.statusPhases: expected an array")
    found = sim.store.environments.select(
        project_ids=get_string_list(
            filter_, "projectIds", "filter.", uuids=True, limit=MAX_FILTER_VALUES
        ),
        creator_ids=get_string_list(
            filter_, "creatorIds", "filter.", uuids=True, limit=MAX_FILTER_VALUES
        ),
        phases=[parse_env_phase(p, f"filter.statusPhases[{i}]") for i, p in enumerate(raw_phases)],
    )
    after = decode_page_token("environments", token)
    remaining: list[Environment] = [env for env in found if env.seq > after]
    page, rest = remaining[:size], remaining[size:]
    next_token = encode_page_token("environments", page[-1].seq) if rest else ""
    return {
        "environments": [env.view() for env in page],
        "pagination": {"nextToken": next_token},
    }


ENVIRONMENT_METHODS: Final = {
    "GetEnvironment": get_environment,
    "ListEnvironments": list_environments,
    "StartEnvironment": start_environment,
    "StopEnvironment": stop_environment,
    "DeleteEnvironment": delete_environment,
    "MarkEnvironmentActive": mark_environment_active,
    "CreateEnvironmentFromProject": create_environment_from_project,
}
