"""Translation between the Ona client's models and errors and the pure rules' types, and
the one reading of a failed call that says whether the Ona API is down (`is_outage`)."""

from __future__ import annotations

from datetime import datetime

from ..clients.ona import errors
from ..clients.ona.client import qualified_method
from ..clients.ona.models import TaskExecution
from ..observability import logs
from ..rules import terminal
from ..rules.model import FailureKind, Phase, RemoteExecution, RemoteFailure, RemoteStep, rfc3339

# The RemoteFailure reason of a call the server does not serve (`unimplemented`, or a 404
# that is not a Connect error): rules.environment stalls an adoption on it.
METHOD_NOT_SERVED = "MethodNotServed"


def _time(value: datetime | None) -> str:
    return rfc3339(value) if value is not None else ""


# What of a task's own text (failure messages, step labels, outputs) goes into a
# TaskRun's status: a task is as hostile as its author, and the status is read by kubectl
# in terminals and by every controller that watches TaskRuns.
MESSAGE_LIMIT = 4096
LABEL_LIMIT = 256
OUTPUT_LIMIT = 4096  # each output value
OUTPUTS_PER_STEP = 64


def shown(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Remote text as the status may hold it: terminal control sequences removed whole (so
    nothing acts on a reader's terminal), tokens the operator holds masked, and cut to
    `limit` characters with a note saying so."""
    size = len(text)
    text = logs.scrub(terminal.clean(text[: limit * 4]))  # no work on what is cut anyway
    if size > limit or len(text) > limit:
        note = f"… [cut: {size} characters in all]"
        text = logs.scrub(text[: max(limit - len(note), 0)], cut=True) + note
    return text


def _outputs(raw: dict[str, str]) -> dict[str, str]:
    kept = sorted(raw.items())[:OUTPUTS_PER_STEP]
    return {shown(k, LABEL_LIMIT): shown(v, OUTPUT_LIMIT) for k, v in kept}


def to_remote(execution: TaskExecution) -> RemoteExecution:
    labels: dict[str, str] = {}
    for group in execution.spec.plan:
        for step in group.steps:
            labels[step.id] = step.label
    return RemoteExecution(
        id=execution.id,
        task_id=execution.metadata.task_id,
        phase=Phase.from_remote(execution.status.phase.value),
        status_version=execution.status_version_int,
        status_version_text=str(execution.status_version_int),
        steps=tuple(
            RemoteStep(
                id=s.id,
                phase=s.phase.value,
                label=shown(labels.get(s.id, ""), LABEL_LIMIT),
                failure_message=shown(s.failure_message),
                output=_outputs(dict(s.output)),
            )
            for s in execution.status.steps
        ),
        failure_message=shown(execution.status.failure_message),
        log_url=execution.status.log_url,
        created_at=_time(execution.metadata.created_at),
        started_at=_time(execution.metadata.started_at),
        completed_at=_time(execution.metadata.completed_at),
        creator_id=execution.metadata.creator.id,
        environment_id=execution.metadata.environment_id,
    )


_KINDS: tuple[tuple[type[errors.OnaError], FailureKind], ...] = (
    (errors.Unauthenticated, FailureKind.UNAUTHENTICATED),
    (errors.PermissionDenied, FailureKind.PERMISSION_DENIED),
    (errors.NotFound, FailureKind.NOT_FOUND),
    (errors.InvalidArgument, FailureKind.INVALID_ARGUMENT),
    (errors.Conflict, FailureKind.INVALID_ARGUMENT),
    (errors.RateLimited, FailureKind.RATE_LIMITED),
    (errors.OutcomeUnknown, FailureKind.OUTCOME_UNKNOWN),
    # A method the server does not serve is not served on the next try either: the run
    # that needs it is told so rather than retried without end (see unserved_method).
    (errors.Unimplemented, FailureKind.INVALID_ARGUMENT),
    (errors.Unavailable, FailureKind.UNAVAILABLE),
)


def to_failure(exc: errors.OnaError) -> RemoteFailure:
    kind = next((k for cls, k in _KINDS if isinstance(exc, cls)), FailureKind.UNAVAILABLE)
    message = shown(str(exc))
    reason = ""
    if exc.code == "failed_precondition":
        # e.g. StartTask in an environment that is not running: told apart from other
        # refusals, since a run that looks after its environment can act on it.
        reason = "FailedPrecondition"
    elif unserved_method(exc):
        reason = METHOD_NOT_SERVED
        message = f"the Ona API does not serve {unserved_method(exc)} ({exc.code}, {_http(exc)})"
        if exc.message:
            message += f": {shown(exc.message)}"
    return RemoteFailure(kind=kind, message=message, retry_after=exc.retry_after, reason=reason)


def _http(exc: errors.OnaError) -> str:
    return f"HTTP {exc.http_status}" if exc.http_status is not None else "no response"


# Connect codes by what they say. An outage: the API, or the way to it, cannot serve calls
# now (a connection error or reset and a timeout come as unavailable / deadline_exceeded).
_OUTAGE_CODES = frozenset(
    {"unavailable", "deadline_exceeded", "internal", "data_loss", "resource_exhausted"}
)
# About one request: the same call would fail however well the API is doing, so these
# never hold back the calls of other runs.
_REQUEST_CODES = frozenset(
    {
        "canceled",
        "invalid_argument",
        "failed_precondition",
        "out_of_range",
        "unauthenticated",
        "permission_denied",
        "not_found",
        "already_exists",
        "aborted",
        "unimplemented",
    }
)


def is_outage(exc: errors.OnaError) -> bool:
    """Whether a failed call says the Ona API is down or overloaded: what a connection's
    circuit breaker counts. Transport failures, timeouts, `unavailable`, `internal`,
    `data_loss`, 429 / `resource_exhausted`, and `unknown` (or a code this client does
    not know) with HTTP 5xx are; an answer about the one request (a refusal, a conflict, a
    method the server does not serve) is not, whatever its HTTP status."""
    if exc.code in _OUTAGE_CODES:
        return True
    if exc.code in _REQUEST_CODES:
        return False
    return exc.http_status is not None and exc.http_status >= 500


def unserved_method(exc: errors.OnaError) -> str:
    """The full name of the method a failure says the server does not serve, or "".

    The client reads `unimplemented`, and a 404 that is not a Connect error (no such
    route), as this; a Connect `not_found` is about a resource, not the method."""
    return qualified_method(exc.method) if exc.code == "unimplemented" else ""
