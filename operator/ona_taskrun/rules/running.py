"""Following a started execution: its reports folded into the status, the timeout,
a requested stop, and the end of the run (with a retry when spec.retries allows).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from . import retry
from .conditions import apply_execution, finish, pending, remote_backoff, set_conditions
from .model import (
    STALLED,
    Action,
    ActionKind,
    Decision,
    Event,
    Observation,
    Phase,
    Settings,
    Spec,
    TaskRun,
    parse_time,
    rfc3339,
)


def decide_running(
    run: TaskRun, spec: Spec, obs: Observation, now: datetime, cfg: Settings
) -> Decision:
    status = run.status
    exec_id = status.task_execution_id
    if obs.execution is not None and obs.execution.id == exec_id:
        status = apply_execution(status, obs.execution)
    phase = Phase.from_remote(status.phase) if status.phase else None
    events: list[Event] = []
    if phase is not None and phase.final:
        if phase is Phase.SUCCEEDED:
            new = finish(run, status, now, "Succeeded", "the task execution succeeded", ok=True)
            events.append(Event("Normal", "Succeeded", f"execution {exec_id} succeeded"))
        elif phase is Phase.FAILED:
            again = retry.retry_after_failure(run, spec, status, now, cfg)
            if again is not None:
                return again
            msg = retry.failed_message(spec, status)
            new = finish(run, status, now, "Failed", msg, ok=False)
            events.append(Event("Warning", "Failed", f"execution {exec_id} failed: {msg}"))
        elif status.stop_reason == "TimedOut":
            msg = "the execution ran longer than spec.timeout and was stopped"
            new = finish(run, status, now, "TimedOut", msg, ok=False)
            events.append(Event("Warning", "TimedOut", f"execution {exec_id}: {msg}"))
        else:
            msg = (
                "stopped as spec.desiredPhase asked"
                if spec.desired_stopped
                else "the execution was stopped outside this TaskRun"
            )
            new = finish(run, status, now, "Stopped", msg, ok=False)
            events.append(Event("Normal", "Stopped", f"execution {exec_id} {msg}"))
        return Decision(new, track=None, events=tuple(events))

    failure = obs.remote_failure
    label = phase.value.capitalize() if phase else "Pending"
    message = f"execution {exec_id} is {label.lower()}"
    refused = status.condition(STALLED)
    stop_refused = (
        refused is not None and refused.status == "True" and bool(status.stop_requested_at)
    )
    if refused is not None and stop_refused:
        # A refused stop stays in view until the run ends.
        new = set_conditions(
            status,
            run.generation,
            now,
            succeeded=("Unknown", "StopRefused", refused.message),
            stalled=("True", refused.reason, refused.message),
            remote=failure,
        )
    else:
        new = pending(run, status, now, label, message, failure)

    begun = (
        parse_time(status.started_at)
        or parse_time(status.created_at)
        or parse_time(status.start_requested_at)
    )
    stop_reason = ""
    if spec.desired_stopped:
        stop_reason = "Requested"
    elif spec.timeout is not None and begun is not None and now >= begun + spec.timeout:
        stop_reason = "TimedOut"
    requeue = cfg.resync_seconds
    resend = False
    if stop_reason and status.stop_requested_at and not stop_refused:
        asked = parse_time(status.stop_requested_at)
        resend_at = asked + cfg.stop_resend if asked is not None else now
        if now < resend_at:
            requeue = min(requeue, (resend_at - now).total_seconds())
        else:
            # Asked for a while ago and the execution still runs: the call may never
            # have gone out (the operator died between writing the stop and making it).
            # Ask again, written first like the first time. A refused stop is not asked
            # again blindly: a person sees why (Stalled).
            resend = True
            stop_reason = status.stop_reason or stop_reason
    if stop_reason and (resend or not status.stop_requested_at):
        new = replace(new, stop_requested_at=rfc3339(now), stop_reason=stop_reason)
        return Decision(
            new,
            action=Action(ActionKind.STOP, execution_id=exec_id, reason=stop_reason),
            track=exec_id,
        )

    if spec.timeout is not None and begun is not None and not status.stop_requested_at:
        requeue = min(requeue, max((begun + spec.timeout - now).total_seconds(), 0.1))
    if failure is not None:
        requeue = min(requeue, remote_backoff(obs, 10.0))
    return Decision(new, track=exec_id, requeue_after=requeue)
