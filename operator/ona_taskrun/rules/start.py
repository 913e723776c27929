"""Starting a run: its task, then one StartTask, exactly once.

The claim goes out before the call; an unknown outcome is settled by `exactly_once`
(settle, look, then none, one or several candidates), the same mechanism the
environment's creation uses.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from . import exactly_once, retry
from .conditions import (
    apply_execution,
    finish,
    is_stalled,
    observed,
    pending,
    remote_backoff,
    stall_start,
    stalled_message,
)
from .model import (
    ADOPT_ANNOTATION,
    ALLOW_RESTART_ANNOTATION,
    START_IN_FLIGHT_RECHECK,
    Action,
    ActionKind,
    Decision,
    Event,
    FailureKind,
    Observation,
    Phase,
    RemoteExecution,
    Settings,
    Spec,
    TaskRun,
    parse_time,
    rfc3339,
)


def decide_task(run: TaskRun, spec: Spec, obs: Observation, now: datetime) -> Decision:
    status = run.status
    failure = obs.remote_failure if obs.remote_failure and obs.remote_failure.transient else None
    if spec.task_ref is not None:
        new = pending(
            run, status, now, "ResolvingTask", "looking up the task by reference", failure
        )
        return Decision(
            new,
            action=Action(ActionKind.RESOLVE_TASK_REF),
            requeue_after=remote_backoff(obs) if failure else None,
        )
    new = pending(run, status, now, "CreatingTask", "creating the Ona task", failure)
    kind = ActionKind.CREATE_TASK if obs.owned_task_missing else ActionKind.FIND_OWNED_TASK
    return Decision(
        new, action=Action(kind), requeue_after=remote_backoff(obs) if failure else None
    )


def decide_start(
    run: TaskRun, spec: Spec, obs: Observation, now: datetime, cfg: Settings
) -> Decision:
    status = run.status
    failure = obs.remote_failure
    transient = failure if failure and failure.transient else None
    if not status.start_requested_at:
        backing_off = retry.wait_to_retry(run, spec, now)
        if backing_off is not None:
            return backing_off
        # Record that a start is under way before calling StartTask; the edge writes
        # this with a resourceVersion precondition, so two operators cannot both go on.
        attempt = max(status.attempt, 1)
        new = replace(
            status,
            start_requested_at=rfc3339(now),
            start_attempts=status.start_attempts + 1,
            attempt=attempt,
            claim_attempt=attempt,
            next_attempt_at="",
        )
        new = pending(run, new, now, "Starting", "starting the task execution", transient)
        return Decision(new, action=Action(ActionKind.START, task_id=status.task_id))

    # A start was under way and no execution id was recorded: the outcome is unknown, and
    # exactly_once resolves it. A person may name the execution to adopt; the name is a
    # request, honoured only for an execution the run's own look finds (_found_executions).
    if run.annotations.get(ALLOW_RESTART_ANNOTATION, "").lower() == "true" and is_stalled(status):
        new = replace(status, start_requested_at="")
        return Decision(pending(run, new, now, "Starting", "a new start was allowed"))
    requested = parse_time(status.start_requested_at) or now
    settle_at = exactly_once.settle_at(requested, cfg.start_settle)
    if now >= settle_at and is_stalled(status) and spec.desired_stopped:
        return stop_unresolved(run, spec, obs, now)
    refused = failure if failure and failure.kind is not FailureKind.OUTCOME_UNKNOWN else None
    outcome = exactly_once.resolve(
        exactly_once.Creation(
            words=_START_WORDS,
            claimed_at=requested,
            settle=cfg.start_settle,
            stalled=stalled_message(status),
            annotation=run.annotations.get(ADOPT_ANNOTATION, ""),
            found=_found_executions(run, spec, obs, now, cfg, requested, settle_at),
            spent=retry.past_executions(status),
            outage=transient is not None,
            retry_after=failure.retry_after if failure else None,
            look_refused=refused.message if refused and not refused.transient else "",
        ),
        now,
    )
    shown = {exactly_once.Trouble.OUTAGE: transient, exactly_once.Trouble.REFUSED: refused}
    events = tuple(Event(n.type, n.reason, n.message) for n in (outcome.event,) if n)
    step = exactly_once.Step
    if outcome.step is step.AWAIT_PERSON:
        return Decision(observed(status, run.generation))  # only the generation is noted
    if outcome.step is step.ADOPT and outcome.chosen is not None:
        chosen = outcome.chosen
        new = apply_execution(replace(status, task_execution_id=chosen.id), chosen)
        return Decision(
            pending(run, new, now, "Adopted", outcome.message), events=events, track=chosen.id
        )
    if outcome.step is step.CREATE_AGAIN:
        # The API confirms no execution exists: starting again cannot duplicate one.
        new = replace(status, start_requested_at="")
        return Decision(pending(run, new, now, "Starting", outcome.message), events=events)
    if outcome.step is step.STALL:
        return Decision(stall_start(run, status, now, outcome.message), events=events)
    look = Action(ActionKind.FIND_EXECUTIONS, task_id=status.task_id)
    return Decision(
        pending(
            run, status, now, "StartOutcomeUnknown", outcome.message, shown.get(outcome.trouble)
        ),
        action=look if outcome.step is step.LOOK else None,
        requeue_after=outcome.requeue,
    )


_START_WORDS = exactly_once.Words(
    thing="execution",
    act="start",
    annotation=ADOPT_ANNOTATION,
    waiting="the outcome of StartTask is unknown; waiting before looking for the execution",
    recreating="no execution was created by the earlier start; starting again",
    made="the start created",
    again="started",
    choose=f"to adopt one, or {ALLOW_RESTART_ANNOTATION}=true to start anew",
    eligible=(
        "an execution of this run's own task, created by the connection's principal since "
        "this attempt's start claim and held by no other TaskRun"
    ),
    otherwise=f", or set {ALLOW_RESTART_ANNOTATION}=true to start anew",
    unknown_reason="StartOutcomeUnknown",
    adopted_reason="Adopted",
    recreating_reason="Restarting",
    refused_reason="AdoptionRefused",
)


def _found_executions(
    run: TaskRun,
    spec: Spec,
    obs: Observation,
    now: datetime,
    cfg: Settings,
    requested: datetime,
    settle_at: datetime,
) -> exactly_once.Found[RemoteExecution] | None:
    """Which executions the look found may be this run's start's: held by no other
    TaskRun, of the current attempt and, for a referenced task (which others may start
    too), created since the claim by the operator's own principal."""
    if obs.candidates is None:
        return None
    since = requested - cfg.clock_skew
    candidates = [c for c in obs.candidates if c.id not in obs.claimed_elsewhere]
    candidates = retry.candidates_of_attempt(candidates, run.status, since, now)
    why = ""
    not_yet = None
    if spec.task is None:
        candidates = [c for c in candidates if (parse_time(c.created_at) or now) >= since]
        if obs.own_principal:
            candidates = [c for c in candidates if c.creator_id == obs.own_principal]
        elif candidates:
            give_up_at = settle_at + cfg.principal_wait
            if now < give_up_at:
                not_yet = exactly_once.Wait(
                    "waiting to learn the operator's own principal to tell executions apart",
                    min(5.0, (give_up_at - now).total_seconds()),
                )
            why = "the operator's own principal is unknown, so it cannot tell whose they are"
    in_flight = None
    if obs.starts_in_flight:
        # Another TaskRun of this task is starting it right now: until its answer names
        # its execution (held for it from then on), that cannot be told from this run's.
        in_flight = exactly_once.Wait(
            "waiting for another TaskRun's start of the same task to be answered",
            START_IN_FLIGHT_RECHECK,
        )
    return exactly_once.Found(
        tuple(candidates), cannot_tell=why, not_yet=not_yet, in_flight=in_flight
    )


def stop_unresolved(run: TaskRun, spec: Spec, obs: Observation, now: datetime) -> Decision:
    """The user asked to stop a run whose start could not be resolved."""
    status = run.status
    if spec.task is not None and not obs.stopped:
        # Every execution of an owned task is this TaskRun's: stop them all.
        return Decision(
            observed(status, run.generation),
            action=Action(ActionKind.STOP_OWNED_EXECUTIONS, task_id=status.task_id),
        )
    msg = "stopped as spec.desiredPhase asked before its start was resolved"
    if spec.task is None:
        msg += "; executions of the referenced task listed earlier were left alone"
    new = replace(status, phase=Phase.STOPPED.value, start_requested_at="")
    return Decision(
        finish(run, new, now, "Stopped", msg, ok=False),
        events=(Event("Normal", "Stopped", msg),),
    )
