"""Folding an action's outcome back into the status: what a call's answer or refusal
means for the run (one map from a failure to a reason, `refusal_reason`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from . import environment
from .conditions import apply_execution, finish, pending, refusal_reason, set_conditions
from .model import (
    ENVIRONMENT_ACTIONS,
    Action,
    ActionKind,
    Event,
    FailureKind,
    Observation,
    Result,
    Spec,
    TaskRun,
)


# Who may call is the same for every call; what was not found or invalid is the call's.
def apply_result(
    run: TaskRun, action: Action, result: Result, obs: Observation, now: datetime
) -> tuple[TaskRun, Observation, tuple[Event, ...]]:
    """Fold an action's outcome into the TaskRun and the observation."""
    if action.kind in ENVIRONMENT_ACTIONS:
        return environment.apply_result(run, action, result, obs, now)
    status = run.status
    failure = result.failure
    if (
        action.kind is ActionKind.START
        and failure is not None
        and failure.reason == "FailedPrecondition"
        and isinstance(run.spec, Spec)
    ):
        # The environment is not running: every run starts it (or fails as whenStopped
        # says), with or without spec.environment.
        return environment.start_refused(run, failure, obs, now)
    events: list[Event] = []
    obs = replace(obs, remote_failure=failure if failure and failure.transient else None)
    kind = action.kind

    if failure is not None and not failure.transient:
        terminal = refusal_reason(failure.kind, not_found="TaskNotFound", invalid="InvalidTask")
        before_start = kind in (
            ActionKind.CREATE_TASK,
            ActionKind.RESOLVE_TASK_REF,
            ActionKind.START,
            ActionKind.FIND_OWNED_TASK,
        )
        if kind is ActionKind.START and failure.kind is FailureKind.OUTCOME_UNKNOWN:
            msg = f"the outcome of StartTask is unknown: {failure.message}"
            status = pending(run, status, now, "StartOutcomeUnknown", msg)
            events.append(Event("Warning", "StartOutcomeUnknown", msg))
        elif kind is ActionKind.CREATE_TASK and failure.kind is FailureKind.OUTCOME_UNKNOWN:
            obs = replace(obs, owned_task_missing=False)  # look it up again by reference
        elif before_start and terminal is not None:
            # The API refused: the run cannot start. A refused StartTask started nothing.
            status = replace(status, start_requested_at="")
            if kind is ActionKind.START and failure.kind is FailureKind.NOT_FOUND:
                msg = f"task {action.task_id} was not found: {failure.message}"
            else:
                msg = f"{kind.value} was refused: {failure.message}"
            status = finish(run, status, now, terminal, msg, ok=False)
            events.append(Event("Warning", terminal, msg))
        elif kind in (ActionKind.STOP, ActionKind.STOP_OWNED_EXECUTIONS) and (
            failure.kind is FailureKind.NOT_FOUND
        ):
            obs = replace(obs, stopped=True)
        elif kind is ActionKind.DELETE_TASK and failure.kind is FailureKind.NOT_FOUND:
            obs = replace(obs, task_deleted=True)
        elif kind is ActionKind.STOP and action.reason in ("Requested", "TimedOut"):
            # The stop was refused: not retried blindly; the run stays tracked (it may still
            # end remotely) and a person is told why it does not stop.
            msg = f"StopTaskExecution was refused: {failure.message}"
            status = set_conditions(
                status,
                run.generation,
                now,
                succeeded=("Unknown", "StopRefused", msg),
                stalled=("True", failure.kind.value, msg),
            )
            events.append(Event("Warning", "StopRefused", msg))
        elif kind is ActionKind.FIND_EXECUTIONS:
            msg = f"cannot look for the execution of an unknown start: {failure.message}"
            status = pending(run, status, now, "StartOutcomeUnknown", msg, failure)
            obs = replace(obs, remote_failure=failure)
        else:
            # Other refusals while cleaning up: deletion goes on rather than hang.
            obs = replace(obs, remote_failure=failure, stopped=True, task_deleted=True)
        return replace(run, status=status), obs, tuple(events)

    if failure is not None:
        if kind is ActionKind.START:
            # 429 or a refusal before sending: nothing was started, the claim is void.
            status = replace(status, start_requested_at="")
        elif kind is ActionKind.STOP and not run.deleting:
            status = replace(status, stop_requested_at="", stop_reason="")
        if not (status.finished or run.deleting):
            status = pending(run, status, now, "Waiting", failure.message, failure)
        return replace(run, status=status), obs, ()

    if kind in (ActionKind.FIND_OWNED_TASK, ActionKind.CREATE_TASK, ActionKind.RESOLVE_TASK_REF):
        if result.missing:
            if kind is ActionKind.RESOLVE_TASK_REF:
                ref = run.spec.task_ref if isinstance(run.spec, Spec) else None
                msg = (
                    f"no task with reference {ref.reference!r} in environment {ref.environment_id}"
                    if ref
                    else "the task was not found"
                )
                status = finish(run, status, now, "TaskNotFound", msg, ok=False)
                events.append(Event("Warning", "TaskNotFound", msg))
            else:
                obs = replace(obs, owned_task_missing=True)
        else:
            # No Event: status.taskId says it, and at thousands of runs an Event per step
            # costs an API server write each (only outcomes and trouble get one).
            status = replace(status, task_id=result.task_id)
    elif kind is ActionKind.START and result.execution is not None:
        execution = result.execution
        status = replace(status, task_execution_id=execution.id)
        status = apply_execution(status, execution)
        obs = replace(obs, execution=execution)
    elif kind is ActionKind.FIND_EXECUTIONS:
        obs = replace(obs, candidates=result.candidates or ())
    elif kind in (ActionKind.STOP, ActionKind.STOP_OWNED_EXECUTIONS):
        obs = replace(obs, stopped=True)
        if action.reason in ("Requested", "TimedOut"):
            msg = (
                "stopping the execution: spec.timeout exceeded"
                if action.reason == "TimedOut"
                else "stopping the execution as spec.desiredPhase asks"
            )
            events.append(Event("Normal", "Stopping", msg))
    elif kind is ActionKind.DELETE_TASK:
        obs = replace(obs, task_deleted=True)
    return replace(run, status=status), obs, tuple(events)
