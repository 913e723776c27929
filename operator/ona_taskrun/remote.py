"""Translation between the Ona client's models and errors and the pure core's types."""

from __future__ import annotations

from datetime import datetime

from . import core
from .ona import errors
from .ona.models import TaskExecution


def _time(value: datetime | None) -> str:
    return core.rfc3339(value) if value is not None else ""


def to_remote(execution: TaskExecution) -> core.RemoteExecution:
    labels: dict[str, str] = {}
    for group in execution.spec.plan:
        for step in group.steps:
            labels[step.id] = step.label
    return core.RemoteExecution(
        id=execution.id,
        task_id=execution.metadata.task_id,
        phase=core.Phase.from_remote(execution.status.phase.value),
        status_version=execution.status_version_int,
        status_version_text=str(execution.status_version_int),
        steps=tuple(
            core.RemoteStep(
                id=s.id,
                phase=s.phase.value,
                label=labels.get(s.id, ""),
                failure_message=s.failure_message,
                output=dict(s.output),
            )
            for s in execution.status.steps
        ),
        failure_message=execution.status.failure_message,
        log_url=execution.status.log_url,
        created_at=_time(execution.metadata.created_at),
        started_at=_time(execution.metadata.started_at),
        completed_at=_time(execution.metadata.completed_at),
        creator_id=execution.metadata.creator.id,
        environment_id=execution.metadata.environment_id,
    )


_KINDS: tuple[tuple[type[errors.OnaError], core.FailureKind], ...] = (
    (errors.Unauthenticated, core.FailureKind.UNAUTHENTICATED),
    (errors.PermissionDenied, core.FailureKind.PERMISSION_DENIED),
    (errors.NotFound, core.FailureKind.NOT_FOUND),
    (errors.InvalidArgument, core.FailureKind.INVALID_ARGUMENT),
    (errors.Conflict, core.FailureKind.INVALID_ARGUMENT),
    (errors.RateLimited, core.FailureKind.RATE_LIMITED),
    (errors.OutcomeUnknown, core.FailureKind.OUTCOME_UNKNOWN),
    # A wrong base URL answers "unimplemented": retry slowly, the message says why.
    (errors.Unimplemented, core.FailureKind.UNAVAILABLE),
    (errors.Unavailable, core.FailureKind.UNAVAILABLE),
)


def to_failure(exc: errors.OnaError) -> core.RemoteFailure:
    kind = next((k for cls, k in _KINDS if isinstance(exc, cls)), core.FailureKind.UNAVAILABLE)
    # failed_precondition (e.g. StartTask in an environment that is not running) is told
    # apart from other refusals: a run that looks after its environment can act on it.
    reason = "FailedPrecondition" if exc.code == "failed_precondition" else ""
    return core.RemoteFailure(
        kind=kind, message=str(exc), retry_after=exc.retry_after, reason=reason
    )
