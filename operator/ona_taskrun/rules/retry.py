"""Retries and clean-up: the pure rules of `spec.retries` and `spec.ttlSecondsAfterFinished`.

Part of the pure rules: `pipeline.decide`, `start` and `running` call these at a few
named points. No I/O.

Retries. A TaskRun has at most `spec.retries + 1` attempts. An attempt whose execution
ends FAILED remotely is followed by the next one after a back-off (the base setting,
10 s by default, doubling with each attempt, at most 5 minutes). Nothing else is
retried: a stop the spec asked for, a timeout, a stop made outside the TaskRun, and every
refusal before a start (NotPermitted, TaskNotFound, Unauthorized, Forbidden, InvalidTask)
end the run as they do without retries. `spec.timeout` bounds each attempt's execution.

At most one execution per attempt. Every attempt starts through the same start claim as
a run without retries (see `start.decide_start`), and the claim names its attempt
(`model.CLAIM_ATTEMPT_ANNOTATION`):
- The move from attempt N to N+1 is one status write: attempt N's execution goes into
  `status.attempts[]`, the execution id is cleared and attempt N's claim is voided. The
  reconciler writes it at once, before anything else happens for the TaskRun.
- A claim for an earlier attempt than the current one is void: it can start nothing.
- When the outcome of attempt N's start is unknown, only an execution created after
  attempt N's claim, and never one recorded in `status.attempts[]`, can be adopted.
The attempt number grows only in that one write, and only while attempts remain, so no
crash, lost answer or second replica can make more attempts than the spec allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from .backoff import exponential
from .conditions import pending
from .model import (
    SUCCEEDED,
    Action,
    ActionKind,
    Decision,
    Event,
    RemoteExecution,
    Settings,
    Spec,
    Status,
    TaskRun,
    parse_time,
    rfc3339,
)

BACKOFF_CAP_SECONDS = 300.0


RETRYING = "Retrying"


_MESSAGE_LIMIT = 512


def backoff(failed_attempt: int, base: float) -> float:
    """Seconds to wait after attempt `failed_attempt` (1-based) failed."""
    return exponential(base, failed_attempt - 1, BACKOFF_CAP_SECONDS)


def current_attempt(status: Status) -> int:
    return max(status.attempt, 1)


def past_executions(status: Status) -> frozenset[str]:
    """The executions of attempts that are over: never adopted for a later one."""
    return frozenset(str(a.get("executionId")) for a in status.attempts if a.get("executionId"))


def void_stale_claim(status: Status) -> Status:
    """A start claim made for an earlier attempt than the current one starts nothing."""
    if status.start_requested_at and 0 < status.claim_attempt < current_attempt(status):
        return replace(status, start_requested_at="", claim_attempt=0)
    return status


def candidates_of_attempt(
    candidates: Sequence[RemoteExecution],
    status: Status,
    since: datetime,
    now: datetime,
) -> list[RemoteExecution]:
    """The executions an unknown start of the current attempt may have made: none that an
    earlier attempt recorded and, after the first attempt, only those created since the
    claim (`since` allows for clock skew)."""
    past = past_executions(status)
    kept = [c for c in candidates if c.id not in past]
    if current_attempt(status) > 1:
        kept = [c for c in kept if (parse_time(c.created_at) or now) >= since]
    return kept


def _shorten(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _retrying_message(spec: Spec, status: Status) -> str:
    last = status.attempts[-1] if status.attempts else {}
    why = str(last.get("failureMessage") or "the task execution failed")
    return _shorten(
        f"attempt {status.attempt - 1} failed ({why}); attempt {status.attempt} of "
        f"{spec.retries + 1} starts at {status.next_attempt_at}"
    )


def _second_after(moment: datetime) -> datetime:
    """The status keeps whole seconds: round up, so a back-off is never cut short."""
    if moment.microsecond:
        return moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


def retry_after_failure(
    run: TaskRun, spec: Spec, status: Status, now: datetime, cfg: Settings
) -> Decision | None:
    """The move to the next attempt after the current one's execution FAILED, or None
    when the run ends here (no retries left, or a stop was asked)."""
    attempt = current_attempt(status)
    if attempt > spec.retries or spec.desired_stopped or status.stop_requested_at:
        return None
    record = {
        key: value
        for key, value in (
            ("executionId", status.task_execution_id),
            ("phase", status.phase),
            ("failureMessage", status.failure_message),
            ("startedAt", status.started_at),
            ("completedAt", status.completed_at),
        )
        if value
    }
    delay = backoff(attempt, cfg.retry_backoff_base)
    next_at = _second_after(now + timedelta(seconds=delay))
    # A claim already made for the next attempt (its status write lost) is kept: its
    # start's outcome is then resolved like any unknown one, never started twice.
    ahead = bool(status.start_requested_at) and status.claim_attempt == attempt + 1
    new = replace(
        status,
        attempt=attempt + 1,
        attempts=(*status.attempts, record),
        next_attempt_at=rfc3339(next_at),
        task_execution_id="",
        phase="",
        status_version="",
        steps=(),
        failure_message="",
        log_url="",
        created_at="",
        started_at="",
        completed_at="",
        stop_requested_at="",
        stop_reason="",
        start_requested_at=status.start_requested_at if ahead else "",
        claim_attempt=status.claim_attempt if ahead else 0,
    )
    message = _retrying_message(spec, new)
    return Decision(
        pending(run, new, now, RETRYING, message),
        track=None,
        requeue_after=(next_at - now).total_seconds(),
        events=(Event("Warning", RETRYING, f"execution {status.task_execution_id}: {message}"),),
    )


def wait_to_retry(run: TaskRun, spec: Spec, now: datetime) -> Decision | None:
    """While the back-off before the next attempt lasts: Retrying, and look again then."""
    status = run.status
    due = parse_time(status.next_attempt_at)
    if due is None or now >= due:
        return None
    waiting = pending(run, status, now, RETRYING, _retrying_message(spec, status))
    return Decision(waiting, requeue_after=(due - now).total_seconds())


def failed_message(spec: Spec, status: Status) -> str:
    message = status.failure_message or "the task execution failed"
    attempt = current_attempt(status)
    if spec.retries and attempt > spec.retries:
        message += f" (attempt {attempt} of {spec.retries + 1}; no retries left)"
    return message


def never_started_message(status: Status) -> str:
    if status.attempts:
        return (
            f"spec.desiredPhase is STOPPED: stopped while waiting to retry; attempt "
            f"{current_attempt(status)} was never started"
        )
    return "spec.desiredPhase is STOPPED: the task was never started"


def finished_at(status: Status) -> datetime | None:
    """When the run ended: the execution's completedAt, else when Succeeded became final
    (a run that ended before any execution, e.g. NotPermitted)."""
    ended = parse_time(status.completed_at)
    if ended is not None:
        return ended
    succeeded = status.condition(SUCCEEDED)
    return parse_time(succeeded.last_transition_time) if succeeded else None


def decide_finished(run: TaskRun, spec: Spec, now: datetime) -> Decision:
    """A finished TaskRun: nothing to do, unless spec.ttlSecondsAfterFinished is over."""
    status = replace(run.status, observed_generation=run.generation)
    ttl = spec.ttl_after_finished
    ended = finished_at(status)
    if ttl is None or ended is None:
        return Decision(status=status)
    due = ended + ttl
    if now < due:
        return Decision(status=status, requeue_after=(due - now).total_seconds())
    seconds = int(ttl.total_seconds())
    message = (
        f"deleting the TaskRun: finished at {rfc3339(ended)}, "
        f"spec.ttlSecondsAfterFinished is {seconds}"
    )
    return Decision(
        status=status,
        action=Action(ActionKind.DELETE_TASKRUN),
        events=(Event("Normal", "Expired", message),),
    )
