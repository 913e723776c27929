"""A TaskRun being deleted: stop what runs, clean up what the operator created, and
let the finalizer go, or say what was left behind.
"""

from __future__ import annotations

from dataclasses import replace

from . import environment
from .model import (
    DELETED,
    DELETING,
    Access,
    Action,
    ActionKind,
    Cleanup,
    Decision,
    Event,
    Observation,
    Phase,
    Spec,
    TaskRun,
)


def decide_deletion(run: TaskRun, obs: Observation) -> Decision:
    status = run.status
    remove = Decision(status=status, action=Action(ActionKind.REMOVE_FINALIZER), track=None)
    if not run.has_finalizer:
        return Decision(status=status, track=None)
    spec = run.spec
    if not isinstance(spec, Spec) or spec.orphan_on_delete:
        return remove
    cleanup = deletion_cleanup(run, spec, obs) or environment.on_delete(run, spec, obs)
    if cleanup is None:
        return remove
    if obs.connection.access is not Access.READY:
        # Deletion never hangs on a connection that is gone or no longer serves the run:
        # say what was left behind.
        msg = f"{left_behind(run, spec)} on delete: {obs.connection.message}"
        return replace(remove, events=(Event("Warning", "CleanupSkipped", msg),))
    return Decision(status, action=cleanup)


def left_behind(run: TaskRun, spec: Spec) -> str:
    """What a delete without a usable connection leaves in Ona, in a user's words."""
    status = run.status
    phase = Phase.from_remote(status.phase) if status.phase else None
    parts = []
    if status.task_execution_id and (phase is None or not phase.final):
        parts.append(f"execution {status.task_execution_id} was not stopped")
    elif status.start_requested_at and not status.task_execution_id:
        parts.append("an execution its unresolved start may have made was not stopped")
    if spec.task is not None and status.task_id:
        parts.append(f"Ona task {status.task_id} was not deleted")
    env = spec.environment
    cleanup = env.cleanup if env is not None and env.from_project is not None else None
    gone = (DELETED, DELETING)
    if cleanup is not None and cleanup is not Cleanup.KEEP:
        made = status.environment_id or (
            "an environment its unresolved creation may have made"
            if status.environment_requested_at
            else ""
        )
        if made and status.environment_phase not in gone:
            verb = "deleted" if cleanup is Cleanup.DELETE else "stopped"
            parts.append(f"environment {made} was not {verb}")
    return "; ".join(parts)


def deletion_cleanup(run: TaskRun, spec: Spec, obs: Observation) -> Action | None:
    """The next remote clean-up a deleted TaskRun needs, if any."""
    status = run.status
    phase = Phase.from_remote(status.phase) if status.phase else None
    running = phase is None or not phase.final
    if status.task_execution_id and running and not obs.stopped:
        return Action(ActionKind.STOP, execution_id=status.task_execution_id, reason="Deleted")
    owned = spec.task is not None and bool(status.task_id)
    if owned and status.start_requested_at and not status.task_execution_id and not obs.stopped:
        # A start may be in flight with no id recorded: stop whatever runs of our own task.
        return Action(ActionKind.STOP_OWNED_EXECUTIONS, task_id=status.task_id)
    if owned and not obs.task_deleted:
        return Action(ActionKind.DELETE_TASK, task_id=status.task_id)
    return None
