"""Small builders for the pure core's inputs, so each table row reads as a situation.

Times are fixed: `NOW` is the moment every decision is taken, and `at(seconds)` is a
moment relative to it, written the way the status stores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ona_taskrun.rules.model import (
    Event,
    FailureKind,
    InvalidSpec,
    Phase,
    RemoteExecution,
    RemoteFailure,
    RemoteStep,
    Spec,
    Status,
    TaskRun,
    rfc3339,
)
from ona_taskrun.rules.spec import parse_spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
UID = "0b7a3c9e-1111-4222-8333-444455556666"
TASK = "task-1"
EXEC = "exec-1"


def at(seconds: float) -> str:
    """The RFC 3339 text of NOW + seconds (negative: in the past)."""
    return rfc3339(NOW + timedelta(seconds=seconds))


def inline_spec(**extra: Any) -> dict[str, Any]:
    task = {"environmentId": "env-1", "name": "build", "command": "make test"}
    return {"task": task, **extra}


def ref_id_spec(**extra: Any) -> dict[str, Any]:
    return {"taskRef": {"id": "task-ref"}, **extra}


def ref_name_spec(**extra: Any) -> dict[str, Any]:
    return {"taskRef": {"environmentId": "env-1", "reference": "nightly"}, **extra}


def cond(type_: str, status: str, reason: str, message: str = "", when: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when or at(-600),
        "observedGeneration": 1,
    }


def pending_conditions(reason: str) -> list[dict[str, Any]]:
    """The condition set of a run that is not over, as the operator writes it."""
    return [
        cond("Succeeded", "Unknown", reason),
        cond("Reconciling", "True", reason),
        cond("Stalled", "False", reason),
        cond("RemoteReachable", "True", "Reachable"),
    ]


def finished_conditions(ok: bool, reason: str, stalled: bool) -> list[dict[str, Any]]:
    return [
        cond("Succeeded", "True" if ok else "False", reason),
        cond("Reconciling", "False", reason),
        cond("Stalled", "True" if stalled else "False", reason),
        cond("RemoteReachable", "True", "Reachable"),
    ]


def taskrun(
    spec: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
    *,
    generation: int = 1,
    finalizer: bool = True,
    deleting: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> TaskRun:
    """A TaskRun as the reconciler parses it from the object."""
    parsed: Spec | InvalidSpec
    try:
        parsed = parse_spec(inline_spec() if spec is None else spec)
    except InvalidSpec as exc:
        parsed = exc
    return TaskRun(
        uid=UID,
        generation=generation,
        spec=parsed,
        status=Status.from_dict(status),
        deleting=deleting,
        has_finalizer=finalizer,
        annotations=dict(annotations or {}),
    )


def execution(
    id_: str = EXEC,
    phase: Phase | None = Phase.RUNNING,
    version: int = 2,
    *,
    task_id: str = TASK,
    created_at: str = "",
    started_at: str = "",
    completed_at: str = "",
    failure_message: str = "",
    log_url: str = "",
    steps: Sequence[RemoteStep] = (),
    creator_id: str = "",
) -> RemoteExecution:
    """A remote execution as the Ona client reports it (statusVersion as int and text)."""
    return RemoteExecution(
        id=id_,
        task_id=task_id,
        phase=phase,
        status_version=version,
        status_version_text=str(version),
        steps=tuple(steps),
        failure_message=failure_message,
        log_url=log_url,
        created_at=created_at,
        started_at=started_at,
        completed_at=completed_at,
        creator_id=creator_id,
    )


def failure(kind: FailureKind, retry_after: float | None = None) -> RemoteFailure:
    return RemoteFailure(kind=kind, message=f"the API says {kind.value}", retry_after=retry_after)


def condition_table(status: Status) -> dict[str, tuple[str, str]]:
    """{type: (status, reason)} of every condition, for comparing with an expected table."""
    return {c.type: (c.status, c.reason) for c in status.conditions}


def events_table(events: Sequence[Event]) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in events]


def pending(reason: str, reachable: tuple[str, str] = ("True", "Reachable")) -> dict[str, Any]:
    """Expected conditions of a run that is not over."""
    return {
        "Succeeded": ("Unknown", reason),
        "Reconciling": ("True", reason),
        "Stalled": ("False", reason),
        "RemoteReachable": reachable,
    }


def finished(succeeded: str, reason: str, *, stalled: bool) -> dict[str, Any]:
    """Expected conditions of a run that is over."""
    return {
        "Succeeded": (succeeded, reason),
        "Reconciling": ("False", reason),
        "Stalled": ("True" if stalled else "False", reason),
        "RemoteReachable": ("True", "Reachable"),
    }
