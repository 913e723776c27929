"""Conditions and time: how a status records where a run stands (Succeeded,
Reconciling, Stalled, RemoteReachable), what a remote execution's report does to it, and
the smallest patch from one status to the next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from . import backoff
from .model import (
    RECONCILING,
    REMOTE_REACHABLE,
    STALLED,
    SUCCEEDED,
    Condition,
    ConnectionView,
    FailureKind,
    Observation,
    Phase,
    RemoteExecution,
    RemoteFailure,
    Spec,
    Status,
    TaskRun,
    rfc3339,
)


def set_condition(
    conditions: Sequence[Condition],
    new: Condition,
    now: datetime,
) -> tuple[Condition, ...]:
    """Replace a condition, keeping lastTransitionTime unless its status changes."""
    old = next((c for c in conditions if c.type == new.type), None)
    stamp = (
        old.last_transition_time
        if old is not None and old.status == new.status and old.last_transition_time
        else rfc3339(now)
    )
    updated = replace(new, last_transition_time=stamp)
    kept = [c for c in conditions if c.type != new.type]
    return (*kept, updated)


def set_conditions(
    status: Status,
    generation: int,
    now: datetime,
    *,
    succeeded: tuple[str, str, str],
    stalled: tuple[str, str, str] | None = None,
    remote: RemoteFailure | None = None,
) -> Status:
    """Write the condition set from one Succeeded triple (status, reason, message)."""
    s_status, s_reason, s_message = succeeded
    over = s_status != "Unknown"
    conds = set_condition(
        status.conditions,
        Condition(SUCCEEDED, s_status, s_reason, s_message, observed_generation=generation),
        now,
    )
    conds = set_condition(
        conds,
        Condition(
            RECONCILING,
            "False" if over else "True",
            s_reason,
            "" if over else s_message,
            observed_generation=generation,
        ),
        now,
    )
    st_status, st_reason, st_message = stalled or ("False", s_reason, "")
    conds = set_condition(
        conds,
        Condition(STALLED, st_status, st_reason, st_message, observed_generation=generation),
        now,
    )
    if remote is not None and not over:
        reachable = Condition(
            REMOTE_REACHABLE,
            "False",
            remote.condition_reason,
            f"the Ona API cannot be reached ({remote.condition_reason}): {remote.message}; "
            "the last known status is kept",
            observed_generation=generation,
        )
    else:
        reachable = Condition(
            REMOTE_REACHABLE, "True", "Reachable", "", observed_generation=generation
        )
    conds = set_condition(conds, reachable, now)
    return replace(status, conditions=conds, observed_generation=generation)


def finish(
    run: TaskRun, status: Status, now: datetime, reason: str, message: str, *, ok: bool
) -> Status:
    """Conditions for a run that is over. Stalled when it ended other than asked."""
    spec = run.spec
    as_asked = ok or (reason == "Stopped" and isinstance(spec, Spec) and spec.desired_stopped)
    stalled = None if as_asked else ("True", reason, message)
    return set_conditions(
        status,
        run.generation,
        now,
        succeeded=("True" if ok else "False", reason, message),
        stalled=stalled,
    )


def apply_execution(status: Status, remote: RemoteExecution) -> Status:
    """Mirror a remote execution into the status if it is newer, else return it as is."""
    if remote.status_version <= status.version and status.status_version:
        return status
    if remote.id != status.task_execution_id:
        return status
    labels = {s.get("id"): s.get("label", "") for s in status.steps}
    steps = tuple(
        {
            "id": step.id,
            "label": step.label or str(labels.get(step.id, "")),
            "phase": (
                Phase.from_remote(step.phase) or step.phase.removeprefix("TASK_EXECUTION_PHASE_")
            ),
            "failureMessage": step.failure_message,
            "output": dict(step.output),
        }
        for step in remote.steps
    )
    return replace(
        status,
        phase=remote.phase.value if remote.phase else status.phase,
        status_version=remote.status_version_text,
        steps=steps,
        failure_message=remote.failure_message,
        log_url=remote.log_url,
        created_at=remote.created_at or status.created_at,
        started_at=remote.started_at or status.started_at,
        completed_at=remote.completed_at or status.completed_at,
    )


def pending(
    run: TaskRun,
    status: Status,
    now: datetime,
    reason: str,
    message: str,
    remote: RemoteFailure | None = None,
) -> Status:
    return set_conditions(
        status, run.generation, now, succeeded=("Unknown", reason, message), remote=remote
    )


def remote_backoff(obs: Observation, default: float = 5.0) -> float:
    failure = obs.remote_failure
    return backoff.after(failure.retry_after if failure is not None else None, default)


def unfollowable(run: TaskRun, status: Status, now: datetime, view: ConnectionView) -> Status:
    """A started run whose connection cannot be used: Succeeded and Stalled stay as they
    were; RemoteReachable says why the execution cannot be followed."""
    succeeded = status.condition(SUCCEEDED)
    stalled = status.condition(STALLED)
    return set_conditions(
        status,
        run.generation,
        now,
        succeeded=(
            ("Unknown", succeeded.reason, succeeded.message)
            if succeeded is not None
            else ("Unknown", view.reason, view.message)
        ),
        stalled=(stalled.status, stalled.reason, stalled.message) if stalled else None,
        remote=view.failure,
    )


def stalled_message(status: Status) -> str | None:
    """The Stalled message while the run waits for a person; None when it does not."""
    cond = status.condition(STALLED)
    return cond.message if cond is not None and cond.status == "True" else None


def observed(status: Status, generation: int) -> Status:
    conditions = tuple(replace(c, observed_generation=generation) for c in status.conditions)
    return replace(status, observed_generation=generation, conditions=conditions)


def is_stalled(status: Status) -> bool:
    cond = status.condition(STALLED)
    return cond is not None and cond.status == "True"


def stall_start(run: TaskRun, status: Status, now: datetime, msg: str) -> Status:
    return set_conditions(
        status,
        run.generation,
        now,
        succeeded=("Unknown", "StartOutcomeUnknown", msg),
        stalled=("True", "StartOutcomeUnknown", msg),
    )


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status `old` into `new` (None deletes a key)."""
    patch: dict[str, Any] = {key: value for key, value in new.items() if old.get(key) != value}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


_CALLER_REFUSALS = {
    FailureKind.UNAUTHENTICATED: "Unauthorized",
    FailureKind.PERMISSION_DENIED: "Forbidden",
}


def refusal_reason(kind: FailureKind, *, not_found: str, invalid: str) -> str | None:
    """The reason a run ends with when the API refuses a call that was to create or start
    something (`not_found` and `invalid` name what the call was about, e.g. TaskNotFound,
    InvalidTask); None for a failure that is no refusal (an outage, an unknown outcome)."""
    if kind is FailureKind.NOT_FOUND:
        return not_found
    if kind is FailureKind.INVALID_ARGUMENT:
        return invalid
    return _CALLER_REFUSALS.get(kind)
