"""The one decision: a TaskRun, what is known of its remote side and the time in;
the new status and at most one action out.

`decide` is a pipeline of named steps, each a module of its own concern: deletion,
the finalizer, the spec, a finished run (retry and TTL), the connection's verdict, the
environment's gate, then the task, the start and the running execution. No I/O happens
here; the controller writes the status (with a precondition) before it acts.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from . import environment, retry
from .conditions import finish, pending, unfollowable
from .deletion import decide_deletion, left_behind
from .model import (
    SUCCEEDED,
    Access,
    Decision,
    Event,
    InvalidSpec,
    Observation,
    Phase,
    Settings,
    Spec,
    TaskRun,
    rfc3339,
)
from .running import decide_running
from .start import decide_start, decide_task

DEFAULTS = Settings()
SUSPENDED = "Suspended"
SUSPENDED_MESSAGE = "spec.suspend is true: the run is accepted but not started"
QUEUED = "Queued"


def decide(run: TaskRun, obs: Observation, now: datetime, cfg: Settings = DEFAULTS) -> Decision:
    """The one decision: new status, and the next action, for a TaskRun."""
    status = run.status
    if run.deleting:
        return decide_deletion(run, obs)
    if isinstance(run.spec, InvalidSpec):
        if status.finished:
            return Decision(status=replace(status, observed_generation=run.generation))
        new = finish(run, status, now, "InvalidSpec", str(run.spec), ok=False)
        return Decision(new, events=(Event("Warning", "InvalidSpec", str(run.spec)),))
    spec = run.spec

    refused = obs.connection.access is Access.REFUSED
    if status.finished and spec.environment is not None and not refused:
        cleanup = environment.after_finish(run, spec, obs)
        if cleanup is not None:
            return cleanup
    if status.finished:
        # A final TaskRun costs no Ona API calls, whatever is edited later (only
        # spec.ttlSecondsAfterFinished deletes it in time).
        return retry.decide_finished(run, spec, now)
    status = retry.void_stale_claim(status)
    run = replace(run, status=status)

    if not status.task_execution_id and not status.start_requested_at and spec.desired_stopped:
        new = replace(status, phase=Phase.STOPPED.value, next_attempt_at="")
        msg = retry.never_started_message(status)
        return Decision(
            finish(run, new, now, "Stopped", msg, ok=False),
            events=(Event("Normal", "Stopped", msg),),
        )

    claimed = bool(status.task_execution_id or status.start_requested_at)
    never_started = not claimed and status.attempt == 0
    view = obs.connection
    if view.access is Access.REFUSED and not claimed:
        # Before any Ona call that could create or start something.
        return Decision(
            finish(run, status, now, "NotPermitted", view.message, ok=False),
            events=(Event("Warning", "NotPermitted", view.message),),
        )
    if never_started and spec.suspend:
        # Accepted and checked; nothing is created or started until spec.suspend is false.
        return Decision(pending(run, status, now, SUSPENDED, SUSPENDED_MESSAGE))
    if view.access is not Access.READY and not claimed:
        return Decision(
            pending(run, status, now, view.reason, view.message, view.failure),
            requeue_after=cfg.connection_wait,
        )
    if view.access is Access.REFUSED:
        # Claimed or started, and the connection no longer serves the run (its namespace
        # or policy changed): nothing more is done in Ona for it, not even a stop.
        msg = f"{view.message}; {left_behind(run, spec) or 'nothing was left in Ona'}"
        return Decision(
            finish(run, status, now, "NotPermitted", msg, ok=False),
            events=(Event("Warning", "NotPermitted", msg),),
        )
    if view.access is Access.WAITING:
        # Started, but its connection is gone: keep the last status and say why.
        return Decision(unfollowable(run, status, now, view), requeue_after=cfg.connection_wait)

    if never_started and obs.queued is not None:
        # Held back by its connection's limits (rules.capacity): the controller wakes it
        # when a slot frees; the requeue is a safety net. A run already in line keeps the
        # message it was queued with (its place then): a place written at every look would
        # cost a status write per waiting run per look.
        held = status.condition(SUCCEEDED)
        if held is not None and held.reason == QUEUED and status.queued_at:
            return Decision(status, requeue_after=cfg.queue_recheck)
        new = replace(status, queued_at=status.queued_at or rfc3339(now))
        return Decision(
            pending(run, new, now, QUEUED, obs.queued.message), requeue_after=cfg.queue_recheck
        )

    # Every run goes through its environment's gate: spec.environment, or the defaults,
    # which cost no call while the environment runs.
    ahead = environment.gate(run, spec, environment.of(spec), obs, now, cfg)
    if isinstance(ahead, Decision):
        return ahead
    return environment.within_look(_decide_run(ahead.run, spec, obs, now, cfg), ahead, now)


def _decide_run(
    run: TaskRun, spec: Spec, obs: Observation, now: datetime, cfg: Settings
) -> Decision:
    """Task, start and tracking: what follows once the connection (and the environment,
    when spec.environment asks) lets the run go on."""
    status = run.status
    if not status.task_id and spec.task_ref is not None and spec.task_ref.id:
        # Nothing to look up: the task id goes out with the start claim, in one write.
        status = replace(status, task_id=spec.task_ref.id)
        run = replace(run, status=status)
    if not status.task_id:
        return decide_task(run, spec, obs, now)

    if not status.task_execution_id:
        return decide_start(run, spec, obs, now, cfg)

    return decide_running(run, spec, obs, now, cfg)
