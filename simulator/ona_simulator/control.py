"""The control API under /_simulator/: what tests use to set the scene and look behind it.

No authentication: it listens on loopback only and holds no secrets (tokens can be added
or looked up, never listed). Requests and answers are JSON; errors use the same
`{"code", "message"}` shape as the API.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from ona_simulator.api import SIMULATOR_KEY, error_response, json_response
from ona_simulator.core import Simulator
from ona_simulator.environments import (
    CREATING,
    RUNNING,
    STOPPED,
    Project,
    Timing,
    parse_env_phase,
)
from ona_simulator.faults import SWITCHABLE_METHODS
from ona_simulator.methods import task_spec
from ona_simulator.ratelimit import RateLimitRule
from ona_simulator.wire import (
    JSON,
    ConnectError,
    get_bool,
    get_int,
    get_object,
    get_string,
    get_string_list,
    get_uuid,
    invalid,
    new_id,
    parse_body,
    parse_phase,
)

PREFIX: Final = "/_simulator"
Handler = Callable[[Simulator, web.Request, JSON], Awaitable[JSON] | JSON]


def _route(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        sim = request.app[SIMULATOR_KEY]
        try:
            body = parse_body(await request.read()) if request.can_read_body else {}
            result = handler(sim, request, body)
            if not isinstance(result, dict):
                result = await result
            return json_response(result)
        except ConnectError as error:
            return error_response(error)

    return wrapped


def health(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return {
        "ok": True,
        "tasks": len(sim.store.tasks),
        "executions": len(sim.store.executions),
        "liveExecutions": sum(1 for _ in sim.store.live_executions()),
        "watchers": sim.store.events.watcher_count,
        "calls": len(sim.calls),
    }


def reset(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    sim.reset()
    return {}


def seed_task(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    """Create a task as if a user had, with the id, reference and environment chosen here."""
    task_id = get_uuid(body, "id", required=False) or new_id()
    environment_id = get_uuid(body, "environmentId", required=False) or new_id()
    creator_id = get_uuid(body, "creatorId", required=False)
    if not creator_id:
        subjects = [subject for subject in sim.tokens.subjects() if not subject.read_only]
        creator_id = subjects[0].id if subjects else new_id()
    spec = task_spec(get_object(body, "spec"))
    command = get_string(body, "command")
    if command:
        spec["command"] = command
    task = sim.store.create_task(
        task_id=task_id,
        environment_id=environment_id,
        reference=get_string(body, "reference"),
        name=get_string(body, "name"),
        description=get_string(body, "description"),
        creator_id=creator_id,
        depends_on=get_string_list(body, "dependsOn", uuids=True),
        triggered_by=[],
        spec=spec,
    )
    return {"task": task.to_json()}


def list_tasks(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return {"tasks": [task.to_json() for task in sim.store.all_tasks()]}


def list_executions(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return {"executions": [e.debug_json() for e in sim.store.all_executions()]}


def get_execution(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return sim.store.get_execution(request.match_info["id"]).debug_json()


def execution_logs(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    execution = sim.store.get_execution(request.match_info["id"])
    return {"lines": execution.log.view(time.monotonic()), "ended": execution.log.ended}


def set_phase(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    if "phase" not in body:
        raise invalid("phase: required")
    phase = parse_phase(body["phase"], "phase")
    execution = sim.store.force_phase(
        request.match_info["id"], phase, get_string(body, "failureMessage")
    )
    return execution.debug_json()


def replay(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    if "statusVersion" not in body:
        raise invalid("statusVersion: required")
    version = get_int(body, "statusVersion")
    return sim.store.replay(request.match_info["id"], version).debug_json()


def clear_replay(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return sim.store.replay(request.match_info["id"], None).debug_json()


def calls(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    method = request.query.get("method")
    records = [record.to_json() for record in sim.calls if not method or record.method == method]
    return {"calls": records}


def clear_calls(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    sim.calls.clear()
    return {}


def add_token(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    subject = sim.tokens.add(
        get_string(body, "token"),
        read_only=get_bool(body, "readOnly"),
        subject_id=get_uuid(body, "subjectId", required=False) or None,
    )
    return subject.to_json()


def lookup_token(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    subject = sim.tokens.lookup(get_string(body, "token"))
    if subject is None:
        raise ConnectError("not_found", "no such token")
    return subject.to_json()


def revoke_token(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    if not sim.tokens.revoke(get_string(body, "token")):
        raise ConnectError("not_found", "no such token")
    return {}


def get_faults(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return sim.faults.to_json()


def set_faults(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    method = request.match_info["method"]
    rule = sim.faults.set_rule(method, body)
    return {"method": method, "rule": rule.to_json()}


def clear_faults(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    sim.faults.clear(request.match_info.get("method"))
    return sim.faults.to_json()


def _unimplemented(sim: Simulator) -> JSON:
    return {"methods": sorted(sim.faults.unimplemented)}


def get_unimplemented(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return _unimplemented(sim)


def set_unimplemented(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    """Make one method (`service/method`) answer `unimplemented` until cleared."""
    name = get_string(body, "method")
    if not name:
        raise invalid("method: required, e.g. gitpod.v1.EnvironmentService/ListEnvironments")
    sim.faults.set_unimplemented(name)
    return _unimplemented(sim)


def clear_unimplemented(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    """Serve again the method named in the body, or every method without one."""
    sim.faults.clear_unimplemented(get_string(body, "method") or None)
    return _unimplemented(sim)


def get_rate_limit(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return sim.ratelimit.to_json()


def set_rate_limit(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    """Limit the API's calls (see `ratelimit`): a new rule, its buckets full."""
    sim.ratelimit.set(RateLimitRule.from_json(body, SWITCHABLE_METHODS))
    return sim.ratelimit.to_json()


def clear_rate_limit(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    sim.ratelimit.set(None)
    return sim.ratelimit.to_json()


def set_seed(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    if "seed" not in body:
        raise invalid("seed: required")
    sim.faults.reseed(get_int(body, "seed"))
    return sim.faults.to_json()


def _creator(sim: Simulator, body: JSON) -> str:
    creator_id = get_uuid(body, "creatorId", required=False)
    if creator_id:
        return creator_id
    subjects = [subject for subject in sim.tokens.subjects() if not subject.read_only]
    return subjects[0].id if subjects else new_id()


def seed_project(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    """A project that CreateEnvironmentFromProject can name, with its environments' timing."""
    project_id = get_uuid(body, "id", required=False) or new_id()
    timing = Timing.from_json(body, sim.store.environments.default_timing)
    project = Project(id=project_id, name=get_string(body, "name"), timing=timing)
    sim.store.environments.projects[project_id] = project
    return {"project": project.to_json()}


def list_projects(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return {"projects": [p.to_json() for p in sim.store.environments.projects.values()]}


def seed_environment(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    """An environment as if a user had made it: RUNNING unless `phase` says otherwise."""
    envs = sim.store.environments
    project_id = get_uuid(body, "projectId", required=False)
    project = envs.projects.get(project_id) if project_id else None
    base = project.timing if project is not None else envs.default_timing
    phase = parse_env_phase(body.get("phase") or "RUNNING", "phase")
    if phase not in (RUNNING, STOPPED, CREATING):
        raise invalid("phase: an environment is seeded RUNNING, STOPPED or CREATING")
    env = envs.add(
        env_id=get_uuid(body, "id", required=False) or new_id(),
        name=get_string(body, "name"),
        project_id=project_id,
        creator_id=_creator(sim, body),
        timing=Timing.from_json(body, base),
        phase=phase,
    )
    return {"environment": env.view()}


def list_environments(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return {"environments": [env.debug_json() for env in sim.store.environments.all()]}


def get_environment(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return sim.store.environments.get(request.match_info["id"]).debug_json()


def set_environment_phase(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    phase = parse_env_phase(body.get("phase"), "phase")
    message = get_string(body, "failureMessage")
    return sim.store.environments.force_phase(request.match_info["id"], phase, message).debug_json()


def disconnect_watchers(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    closed = sim.store.events.close_all("the stream was closed by the simulator")
    return {"closed": closed}


def watchers(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    """Each WatchEvents stream's environment and when it opened and closed (null while it
    is open): the open ones and the most recent that ended."""
    return {"open": sim.store.events.watcher_count, "streams": sim.store.events.history()}


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/health", health),
        ("POST", "/reset", reset),
        ("POST", "/tasks", seed_task),
        ("GET", "/tasks", list_tasks),
        ("GET", "/executions", list_executions),
        ("GET", "/executions/{id}", get_execution),
        ("POST", "/executions/{id}/phase", set_phase),
        ("POST", "/executions/{id}/replay", replay),
        ("DELETE", "/executions/{id}/replay", clear_replay),
        ("GET", "/logs/{id}", execution_logs),
        ("GET", "/calls", calls),
        ("DELETE", "/calls", clear_calls),
        ("POST", "/tokens", add_token),
        ("POST", "/tokens/lookup", lookup_token),
        ("POST", "/tokens/revoke", revoke_token),
        ("GET", "/faults", get_faults),
        ("PUT", "/faults/{method}", set_faults),
        ("DELETE", "/faults", clear_faults),
        ("DELETE", "/faults/{method}", clear_faults),
        ("GET", "/unimplemented", get_unimplemented),
        ("POST", "/unimplemented", set_unimplemented),
        ("DELETE", "/unimplemented", clear_unimplemented),
        ("POST", "/seed", set_seed),
        ("GET", "/rate-limit", get_rate_limit),
        ("PUT", "/rate-limit", set_rate_limit),
        ("DELETE", "/rate-limit", clear_rate_limit),
        ("POST", "/watchers/disconnect", disconnect_watchers),
        ("GET", "/watchers", watchers),
        ("POST", "/projects", seed_project),
        ("GET", "/projects", list_projects),
        ("POST", "/environments", seed_environment),
        ("GET", "/environments", list_environments),
        ("GET", "/environments/{id}", get_environment),
        ("POST", "/environments/{id}/phase", set_environment_phase),
    ]
    for verb, path, handler in routes:
        app.router.add_route(verb, PREFIX + path, _route(handler))
