"""The edge of `environment_core`: environment actions performed through a TaskRun's
connection (gitpod.v1.EnvironmentService), and the translation of what comes back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from ..clients.ona import errors
from ..clients.ona.models import Environment
from ..rules import core, environment
from ..rules.environment import RemoteEnvironment
from .connections import Remote
from .remote import METHOD_NOT_SERVED


def to_environment(env: Environment) -> RemoteEnvironment:
    return RemoteEnvironment(
        id=env.id,
        phase=env.status.phase.value.removeprefix("ENVIRONMENT_PHASE_").replace("UNSPECIFIED", ""),
        failure_message="; ".join(m for m in env.status.failure_message if m),
        name=env.metadata.name,
        project_id=env.metadata.project_id,
    )


async def _environment_of_task(remote: Remote, task_id: str) -> str:
    known = remote.task_environments.get(task_id)
    if known is not None:
        return known
    task = await remote.client.get_task(task_id)
    remote.task_environments[task_id] = task.environment_id
    return task.environment_id


async def _named(remote: Remote, project_id: str, name: str) -> list[RemoteEnvironment]:
    found = await remote.client.list_environments(project_ids=[project_id])
    return [to_environment(env) for env in found if env.metadata.name == name]


async def perform(
    remote: Remote, action: core.Action, run: core.TaskRun, taskrun_name: str
) -> core.Result:
    """Perform one environment action; Ona's refusals come back as the result's failure."""
    spec = run.spec if isinstance(run.spec, core.Spec) else None
    env_spec = spec.environment if spec is not None else None
    project = env_spec.from_project if env_spec is not None else None
    name = environment.environment_name(taskrun_name, run.uid)
    ona = remote.client
    kind = action.kind
    try:
        if kind is core.ActionKind.GET_ENVIRONMENT:
            env_id = action.environment_id or await _environment_of_task(remote, action.task_id)
            return core.Result(environment=to_environment(await ona.get_environment(env_id)))
        if kind is core.ActionKind.START_ENVIRONMENT:
            await ona.start_environment(action.environment_id)
            return core.Result()
        if kind is core.ActionKind.MARK_ENVIRONMENT_ACTIVE:
            stamp = core.rfc3339(datetime.now(UTC))
            await ona.mark_environment_active(
                action.environment_id, source=environment.ACTIVITY_SOURCE, timestamp=stamp
            )
            return core.Result()
        if kind is core.ActionKind.CREATE_ENVIRONMENT and project is not None:
            created = await ona.create_environment_from_project(
                project.project_id, name=name, spec=environment.creation_spec(project)
            )
            return core.Result(environment=to_environment(created))
        if kind is core.ActionKind.FIND_ENVIRONMENTS and project is not None:
            return core.Result(environments=tuple(await _named(remote, project.project_id, name)))
        if kind is core.ActionKind.CLEAN_UP_ENVIRONMENT:
            ids = [action.environment_id] if action.environment_id else []
            if not ids and project is not None:
                # Created, but its id was never recorded: whatever carries its name.
                ids = [env.id for env in await _named(remote, project.project_id, name)]
            for env_id in ids:
                if action.reason == environment.Cleanup.STOP.value:
                    await ona.stop_environment(env_id)
                else:
                    await ona.delete_environment(env_id)
            first = RemoteEnvironment(id=ids[0], phase="") if ids else None
            return core.Result(environment=first)
    except errors.OnaError as exc:
        failure = remote.failed(exc)
        if kind is core.ActionKind.FIND_ENVIRONMENTS and failure.reason == METHOD_NOT_SERVED:
            failure = replace(failure, message=_cannot_look(failure.message, name, project))
        return core.Result(failure=failure)
    raise ValueError(f"action {kind.value} does not fit this TaskRun")


def _cannot_look(why: str, name: str, project: environment.FromProject | None) -> str:
    """What a person reads on a run whose environment creation had an unknown outcome and
    cannot be looked up: the name to look for, and how to hand the run its environment."""
    where = f" of project {project.project_id}" if project is not None else ""
    return (
        f"{why}; the environment that an earlier CreateEnvironmentFromProject may have "
        f"created cannot be looked up, and nothing more is created. Look in Ona for an "
        f"environment{where} named {name}: annotate the TaskRun with "
        f"{environment.ADOPT_ENVIRONMENT_ANNOTATION}=<environment id> to use it, or, "
        "if there is none, delete the TaskRun and create it again"
    )
