"""Reading a TaskRun's spec: every field checked, with a clear error for each mistake
(`InvalidSpec`), before anything is decided.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .model import (
    CLUSTER_CONNECTION,
    NAMESPACED_CONNECTION,
    Cleanup,
    ConnectionRef,
    EnvironmentSpec,
    FromProject,
    InlineTask,
    InvalidSpec,
    Spec,
    TaskRef,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


MAX_TIMEOUT = timedelta(hours=720)


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as `30m`, `1h30m` or `1.5s`."""
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise InvalidSpec(f"spec.timeout {text[:40]!r} is not a duration such as 30m or 1h30m")
    if total <= 0:
        raise InvalidSpec(f"spec.timeout {text!r} must be longer than zero")
    if not total <= MAX_TIMEOUT.total_seconds():
        # Also what the CRD says; checked here too for objects that predate that rule.
        raise InvalidSpec(f"spec.timeout {text[:40]!r} must be at most 720h (30 days)")
    return timedelta(seconds=total)


def parse_spec(spec: Mapping[str, Any]) -> Spec:
    """Read a TaskRun's spec; raise InvalidSpec with a precise message when unusable."""
    task_raw, ref_raw = spec.get("task"), spec.get("taskRef")
    if (task_raw is None) == (ref_raw is None):
        raise InvalidSpec("exactly one of spec.task and spec.taskRef must be set")
    env_spec = parse_environment(spec.get("environment"))
    from_project = env_spec is not None and env_spec.from_project is not None
    if from_project and not (isinstance(task_raw, Mapping) and not task_raw.get("environmentId")):
        raise InvalidSpec(
            "spec.environment.fromProject needs an inline spec.task without environmentId"
        )
    task: InlineTask | None = None
    ref: TaskRef | None = None
    if isinstance(task_raw, Mapping):
        needed = ("name", "command") if from_project else ("environmentId", "name", "command")
        missing = [k for k in needed if not task_raw.get(k)]
        if missing:
            raise InvalidSpec(f"spec.task needs {', '.join(missing)}")
        env = tuple(
            (str(item.get("name", "")), str(item.get("value", "")))
            for item in task_raw.get("env") or ()
        )
        task = InlineTask(
            environment_id=str(task_raw.get("environmentId") or ""),
            name=str(task_raw["name"]),
            command=str(task_raw["command"]),
            description=str(task_raw.get("description", "")),
            env=env,
            runs_on=task_raw.get("runsOn"),
            depends_on=tuple(str(d) for d in task_raw.get("dependsOn") or ()),
        )
    elif isinstance(ref_raw, Mapping):
        ref = TaskRef(
            id=ref_raw.get("id"),
            environment_id=ref_raw.get("environmentId"),
            reference=ref_raw.get("reference"),
        )
        if not ref.id and not (ref.environment_id and ref.reference):
            raise InvalidSpec("spec.taskRef needs either id, or both environmentId and reference")
    else:
        raise InvalidSpec("spec.task and spec.taskRef must be objects")
    timeout_raw = spec.get("timeout")
    retries, ttl = parse_lifecycle(spec)
    suspend = spec.get("suspend", False)
    if not isinstance(suspend, bool):
        raise InvalidSpec(f"spec.suspend {suspend!r} must be true or false")
    return Spec(
        task=task,
        task_ref=ref,
        desired_stopped=spec.get("desiredPhase", "RUNNING") == "STOPPED",
        orphan_on_delete=spec.get("deletionPolicy", "Stop") == "Orphan",
        timeout=parse_duration(str(timeout_raw)) if timeout_raw else None,
        connection_ref=parse_connection_ref(spec.get("connectionRef")),
        retries=retries,
        ttl_after_finished=ttl,
        environment=env_spec,
        suspend=suspend,
    )


def parse_connection_ref(raw: Any) -> ConnectionRef | None:
    """Read `spec.connectionRef`; None when absent (the default connection)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise InvalidSpec("spec.connectionRef needs a name")
    kind = str(raw.get("kind") or NAMESPACED_CONNECTION)
    if kind not in (NAMESPACED_CONNECTION, CLUSTER_CONNECTION):
        raise InvalidSpec(
            f"spec.connectionRef.kind {kind!r} must be {NAMESPACED_CONNECTION} "
            f"or {CLUSTER_CONNECTION}"
        )
    if "namespace" in raw:
        raise InvalidSpec("spec.connectionRef has no namespace: a TaskRun uses its own")
    return ConnectionRef(name=str(raw["name"]), kind=kind)


def task_reference(uid: str) -> str:
    """The `metadata.reference` of the Ona task created for an inline TaskRun."""
    return f"k8s-taskrun-{uid}"


def parse_environment(raw: Any) -> EnvironmentSpec | None:
    """Read `spec.environment`; None when absent. Raises InvalidSpec."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidSpec("spec.environment must be an object")
    when = raw.get("whenStopped", "Start")
    if when not in ("Start", "Fail"):
        raise InvalidSpec(f"spec.environment.whenStopped {when!r} must be Start or Fail")
    keep_alive = raw.get("keepAlive", True)
    if not isinstance(keep_alive, bool):
        raise InvalidSpec("spec.environment.keepAlive must be true or false")
    cleanup_raw = raw.get("cleanup", "Delete")
    try:
        cleanup = Cleanup(cleanup_raw)
    except ValueError:
        raise InvalidSpec(
            f"spec.environment.cleanup {cleanup_raw!r} must be Delete, Stop or Keep"
        ) from None
    project_raw = raw.get("fromProject")
    project: FromProject | None = None
    if project_raw is not None:
        if not isinstance(project_raw, Mapping) or not project_raw.get("projectId"):
            raise InvalidSpec("spec.environment.fromProject needs a projectId")
        project = FromProject(
            project_id=str(project_raw["projectId"]),
            branch=str(project_raw.get("branch") or ""),
            commit=str(project_raw.get("commit") or ""),
            machine_class=str(project_raw.get("class") or ""),
        )
        if project.branch and project.commit:
            raise InvalidSpec("spec.environment.fromProject takes a branch or a commit")
    return EnvironmentSpec(
        start_when_stopped=when == "Start",
        keep_alive=keep_alive,
        from_project=project,
        cleanup=cleanup,
    )


MAX_RETRIES = 10


# A year: a longer wait is better said by leaving spec.ttlSecondsAfterFinished out.
MAX_TTL_SECONDS = 365 * 24 * 3600


def parse_lifecycle(spec: Mapping[str, Any]) -> tuple[int, timedelta | None]:
    """`spec.retries` and `spec.ttlSecondsAfterFinished`; InvalidSpec when out of range
    (the CRD rejects those at apply time; this guards objects that skipped it)."""
    retries = spec.get("retries")
    if retries is None:
        retries = 0
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise InvalidSpec(f"spec.retries {retries!r} is not a whole number")
    if not 0 <= retries <= MAX_RETRIES:
        raise InvalidSpec(f"spec.retries {retries} must be from 0 to {MAX_RETRIES}")
    ttl_raw = spec.get("ttlSecondsAfterFinished")
    if ttl_raw is None:
        return retries, None
    if isinstance(ttl_raw, bool) or not isinstance(ttl_raw, int):
        raise InvalidSpec(f"spec.ttlSecondsAfterFinished {ttl_raw!r} is not a whole number")
    if not 0 <= ttl_raw <= MAX_TTL_SECONDS:
        raise InvalidSpec(
            f"spec.ttlSecondsAfterFinished {ttl_raw} must be from 0 to {MAX_TTL_SECONDS}"
        )
    return retries, timedelta(seconds=ttl_raw)
