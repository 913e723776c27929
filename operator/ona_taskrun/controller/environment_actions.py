"""The edge of `rules.environment`: environment actions performed through a TaskRun's
connection (gitpod.v1.EnvironmentService), and the translation of what comes back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from ..clients.ona import errors
from ..clients.ona.models import Environment
from ..rules import environment
from ..rules.model import (
    ACTIVITY_SOURCE,
    ADOPT_ENVIRONMENT_ANNOTATION,
    Action,
    ActionKind,
    Cleanup,
    FromProject,
    RemoteEnvironment,
    Result,
    Spec,
    TaskRun,
    rfc3339,
)
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
    known = remote.task_environments.lookup(task_id)
    if known is not None:
        return known
    task = await remote.client.get_task(task_id)
    remote.task_environments[task_id] = task.environment_id
    return task.environment_id


async def _named(remote: Remote, project_id: str, name: str) -> list[RemoteEnvironment]:
    found = await remote.client.list_environments(project_ids=[project_id])
    return [to_environment(env) for env in found if env.metadata.name == name]


async def perform(remote: Remote, action: Action, run: TaskRun, taskrun_name: str) -> Result:
    """Perform one environment action; Ona's refusals come back as the result's failure."""
    spec = run.spec if isinstance(run.spec, Spec) else None
    env_spec = spec.environment if spec is not None else None
    project = env_spec.from_project if env_spec is not None else None
    name = environment.environment_name(taskrun_name, run.uid)
    ona = remote.client
    kind = action.kind
    try:
        if kind is ActionKind.GET_ENVIRONMENT:
            env_id = action.environment_id or await _environment_of_task(remote, action.task_id)
            return Result(environment=to_environment(await ona.get_environment(env_id)))
        if kind is ActionKind.START_ENVIRONMENT:
            await ona.start_environment(action.environment_id)
            return Result()
        if kind is ActionKind.MARK_ENVIRONMENT_ACTIVE:
            stamp = rfc3339(datetime.now(UTC))
            await ona.mark_environment_active(
                action.environment_id, source=ACTIVITY_SOURCE, timestamp=stamp
            )
            return Result()
        if kind is ActionKind.CREATE_ENVIRONMENT and project is not None:
            created = await ona.create_environment_from_project(
                project.project_id, name=name, spec=environment.creation_spec(project)
            )
            return Result(environment=to_environment(created))
        if kind is ActionKind.FIND_ENVIRONMENTS and project is not None:
            return Result(environments=tuple(await _named(remote, project.project_id, name)))
        if kind is ActionKind.CLEAN_UP_ENVIRONMENT:
            ids = [action.environment_id] if action.environment_id else []
            if not ids and project is not None:
                # Created, but its id was never recorded: whatever carries its name.
                ids = [env.id for env in await _named(remote, project.project_id, name)]
            for env_id in ids:
                if action.reason == Cleanup.STOP.value:
                    await ona.stop_environment(env_id)
                else:
                    await ona.delete_environment(env_id)
            first = RemoteEnvironment(id=ids[0], phase="") if ids else None
            return Result(environment=first)
    except errors.OnaError as exc:
        failure = remote.failed(exc)
        if kind is ActionKind.FIND_ENVIRONMENTS and failure.reason == METHOD_NOT_SERVED:
            failure = replace(failure, message=_cannot_look(failure.message, name, project))
        return Result(failure=failure)
    raise ValueError(f"action {kind.value} does not fit this TaskRun")


def _cannot_look(why: str, name: str, project: FromProject | None) -> str:
    """What a person reads on a run whose environment creation had an unknown outcome and
    cannot be looked up: the name to look for, and how to hand the run its environment."""
    where = f" of project {project.project_id}" if project is not None else ""
    return (
        f"{why}; the environment that an earlier CreateEnvironmentFromProject may have "
        f"created cannot be looked up, and nothing more is created. Look in Ona for an "
        f"environment{where} named {name}: annotate the TaskRun with "
        f"{ADOPT_ENVIRONMENT_ANNOTATION}=<environment id> to use it, or, "
        "if there is none, delete the TaskRun and create it again"
    )
