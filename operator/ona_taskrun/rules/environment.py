"""Pure decisions about a TaskRun's environment (`spec.environment`, or its defaults).

An Ona task runs inside an environment, and environments stop on their own after an idle
timeout. For a TaskRun with `spec.environment` the operator, before it creates or starts
anything:

- reads the environment and waits while it is CREATING or STARTING;
- starts it when it is STOPPED (`whenStopped: Start`, the default) or ends the run with
  reason `EnvironmentNotRunning` (`whenStopped: Fail`);
- with `fromProject`, creates one environment for the run (CreateEnvironmentFromProject,
  named after the TaskRun) with the same exactly-once care as a start, by the same code
  (`exactly_once`): the claim (`status.environmentRequestedAt`) is written with a
  resourceVersion precondition before the call; after a crash or a lost answer the
  environment is looked up by name and adopted; two candidates stall the run for a person.

While the execution runs it signals activity (`keepAlive`, MarkEnvironmentActive) on a
period safely below the idle timeout and looks at the environment on the same period; an
environment that stops or fails under a running execution ends the run with reason
`EnvironmentStopped` or `EnvironmentFailed`. When the run is over (or the TaskRun deleted
with `deletionPolicy: Stop`), an environment created for it is deleted, stopped or kept
as `cleanup` says.

A TaskRun without `spec.environment` gets `whenStopped: Start` and `keepAlive: true`
(`IMPLIED`) at no cost while its environment runs: nothing is read before the start, and
only StartTask's `failed_precondition` sends it down the path above (read, start, wait,
start the task once). Its first look and signal come one keep-alive period after the
execution is first followed (with spec.environment they come at once), so a run shorter
than that makes no environment call at all.

Like `core`, nothing here does I/O; `core.decide` and `core.apply_result` call in here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from . import core, exactly_once

ENVIRONMENT_READY = "EnvironmentReady"
# A person resolves an ambiguous environment creation with this annotation.
ADOPT_ENVIRONMENT_ANNOTATION = "automation.ona.com/adopt-environment"
ACTIVITY_SOURCE = "ona-taskrun-operator"
# The EnvironmentReady reason of a run whose StartTask was refused with failed_precondition
# although its environment had just been read running.
START_REFUSED = "StartRefused"

# Environment phases in the short form the TaskRun status uses.
CREATING, STARTING, RUNNING, UPDATING = "CREATING", "STARTING", "RUNNING", "UPDATING"
STOPPING, STOPPED, DELETING, DELETED = "STOPPING", "STOPPED", "DELETING", "DELETED"
_UP = frozenset({RUNNING, UPDATING})  # UPDATING is still running
_GONE = frozenset({DELETING, DELETED})
# An execution cannot be running in these; a phase this operator does not know is not
# taken for one of them.
_DOWN = frozenset({STOPPING, STOPPED, DELETING, DELETED})


class Cleanup(enum.StrEnum):
    DELETE = "Delete"
    STOP = "Stop"
    KEEP = "Keep"


@dataclass(frozen=True)
class FromProject:
    project_id: str
    branch: str = ""
    commit: str = ""
    machine_class: str = ""


@dataclass(frozen=True)
class EnvironmentSpec:
    """`spec.environment`: what to do about the environment the task runs in."""

    start_when_stopped: bool = True
    keep_alive: bool = True
    from_project: FromProject | None = None
    cleanup: Cleanup = Cleanup.DELETE
    # Read the environment before the start (spec.environment says so). False: the run's
    # StartTask tells, by failed_precondition, that the environment is not running.
    look_first: bool = True


# What a run without spec.environment gets: the defaults, at no call while it runs.
IMPLIED = EnvironmentSpec(look_first=False)


def of(spec: core.Spec) -> EnvironmentSpec:
    """The environment handling a run gets: its spec.environment, or the defaults."""
    return spec.environment if spec.environment is not None else IMPLIED


def parse_environment(raw: Any) -> EnvironmentSpec | None:
    """Read `spec.environment`; None when absent. Raises core.InvalidSpec."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise core.InvalidSpec("spec.environment must be an object")
    when = raw.get("whenStopped", "Start")
    if when not in ("Start", "Fail"):
        raise core.InvalidSpec(f"spec.environment.whenStopped {when!r} must be Start or Fail")
    keep_alive = raw.get("keepAlive", True)
    if not isinstance(keep_alive, bool):
        raise core.InvalidSpec("spec.environment.keepAlive must be true or false")
    cleanup_raw = raw.get("cleanup", "Delete")
    try:
        cleanup = Cleanup(cleanup_raw)
    except ValueError:
        raise core.InvalidSpec(
            f"spec.environment.cleanup {cleanup_raw!r} must be Delete, Stop or Keep"
        ) from None
    project_raw = raw.get("fromProject")
    project: FromProject | None = None
    if project_raw is not None:
        if not isinstance(project_raw, Mapping) or not project_raw.get("projectId"):
            raise core.InvalidSpec("spec.environment.fromProject needs a projectId")
        project = FromProject(
            project_id=str(project_raw["projectId"]),
            branch=str(project_raw.get("branch") or ""),
            commit=str(project_raw.get("commit") or ""),
            machine_class=str(project_raw.get("class") or ""),
        )
        if project.branch and project.commit:
            raise core.InvalidSpec("spec.environment.fromProject takes a branch or a commit")
    return EnvironmentSpec(
        start_when_stopped=when == "Start",
        keep_alive=keep_alive,
        from_project=project,
        cleanup=cleanup,
    )


def environment_name(taskrun_name: str, uid: str) -> str:
    """The name of the environment created for a TaskRun: its name, made unique by its uid
    (the uid is what an adoption after a crash looks for)."""
    return f"{taskrun_name}-{uid}"


def creation_spec(project: FromProject) -> dict[str, Any]:
    """The EnvironmentSpec overrides sent with CreateEnvironmentFromProject."""
    spec: dict[str, Any] = {}
    if project.machine_class:
        spec["machine"] = {"class": project.machine_class}
    if project.branch or project.commit:
        git = (
            {"cloneTarget": project.commit, "targetMode": "CLONE_TARGET_MODE_REMOTE_COMMIT"}
            if project.commit
            else {"cloneTarget": project.branch, "targetMode": "CLONE_TARGET_MODE_REMOTE_BRANCH"}
        )
        spec["content"] = {"initializer": {"specs": [{"git": git}]}}
    return spec


@dataclass(frozen=True)
class RemoteEnvironment:
    """What the decisions need of an Ona environment."""

    id: str
    phase: str  # short form, e.g. RUNNING; "" when unknown
    failure_message: str = ""
    name: str = ""
    project_id: str = ""

    @property
    def up(self) -> bool:
        return self.phase in _UP and not self.failure_message


# The actions of this module, by their ActionKind value (core imports this module, so
# its enum cannot be read here at import time).
ACTIONS = frozenset(
    {
        "GetEnvironment",
        "StartEnvironment",
        "CreateEnvironment",
        "FindEnvironments",
        "MarkEnvironmentActive",
        "CleanUpEnvironment",
    }
)


# ----------------------------------------------------------------------- deciding


def decide(
    run: core.TaskRun,
    spec: core.Spec,
    env_spec: EnvironmentSpec,
    obs: core.Observation,
    now: datetime,
    cfg: core.Settings,
    rest: Callable[[core.TaskRun], core.Decision],
) -> core.Decision:
    """The decision for a TaskRun that is not over, as `env_spec` (see `of`) asks; `rest`
    is the ordinary decision (task, start, tracking), asked once the environment allows."""
    status = run.status
    if status.task_execution_id or status.start_requested_at:
        return _while_started(run, spec, env_spec, obs, now, cfg, rest)
    if env_spec.from_project is not None and not status.environment_id:
        return _create(run, env_spec.from_project, obs, now, cfg)
    if not env_spec.look_first and not _waiting_for_it(status):
        # The happy path of a run without spec.environment: no look before the start.
        return rest(run)
    return _before_start(run, spec, env_spec, obs, now, cfg, rest)


def _waiting_for_it(status: core.Status) -> bool:
    """Whether the run is waiting for its environment (a StartTask said it is not running,
    or a look since found it not running yet)."""
    ready = status.condition(ENVIRONMENT_READY)
    return ready is not None and ready.status != "True"


def _ready(
    run: core.TaskRun, status: core.Status, now: datetime, value: str, reason: str, message: str
) -> core.Status:
    cond = core.Condition(
        ENVIRONMENT_READY, value, reason, message, observed_generation=run.generation
    )
    return replace(status, conditions=core._set_condition(status.conditions, cond, now))


def _waiting(
    run: core.TaskRun,
    status: core.Status,
    now: datetime,
    ready_reason: str,
    message: str,
    failure: core.RemoteFailure | None = None,
) -> core.Status:
    """A run that waits for its environment: PENDING, Succeeded=Unknown with a reason that
    says the environment's state (it is the REASON column of `kubectl get otr`)."""
    status = replace(status, phase=status.phase or core.Phase.PENDING.value)
    status = _ready(run, status, now, "False", ready_reason, message)
    reason = _WAITING_REASONS.get(ready_reason, "WaitingForEnvironment")
    return core._pending(run, status, now, reason, message, failure)


_WAITING_REASONS = {
    "Checking": "CheckingEnvironment",
    START_REFUSED: "CheckingEnvironment",
    "Creating": "EnvironmentCreating",
    "Starting": "EnvironmentStarting",
    "Stopped": "EnvironmentStopping",
}


def _fail(
    run: core.TaskRun,
    status: core.Status,
    now: datetime,
    reason: str,
    message: str,
    ready_reason: str = "Failed",
) -> core.Decision:
    status = _ready(run, status, now, "False", ready_reason, message)
    return core.Decision(
        core._finish(run, status, now, reason, message, ok=False),
        events=(core.Event("Warning", reason, message),),
    )


def _transient(obs: core.Observation) -> core.RemoteFailure | None:
    failure = obs.remote_failure
    return failure if failure is not None and failure.transient else None


def _get(
    status: core.Status,
    spec: core.Spec | None = None,
    execution: core.RemoteExecution | None = None,
) -> core.Action:
    """Read the environment; a task named by id alone tells it by its execution, or else
    by its task (GetTask, once per task)."""
    env_id = (
        status.environment_id
        or (spec.environment_id if spec else None)
        or (execution.environment_id if execution else "")
    )
    task_id = status.task_id or (spec.task_ref.id if spec and spec.task_ref else None) or ""
    return core.Action(
        core.ActionKind.GET_ENVIRONMENT, environment_id=env_id or "", task_id=task_id
    )


def _before_start(
    run: core.TaskRun,
    spec: core.Spec,
    env_spec: EnvironmentSpec,
    obs: core.Observation,
    now: datetime,
    cfg: core.Settings,
    rest: Callable[[core.TaskRun], core.Decision],
) -> core.Decision:
    status = run.status
    env = obs.environment
    if env is None:
        # Read it in this pass, before anything is created or started in it.
        msg = "checking the environment before starting the task"
        new = _waiting(run, status, now, "Checking", msg, _transient(obs))
        return core.Decision(
            new,
            action=_get(status, spec),
            requeue_after=core._backoff(obs) if _transient(obs) else None,
        )
    status = replace(status, environment_id=env.id, environment_phase=env.phase)
    if env.up:
        if _ready_reason_now(status) != START_REFUSED:
            msg = f"environment {env.id} is running"
            status = _ready(run, status, now, "True", "Running", msg)
        # else: running, yet StartTask was refused in it a moment ago. It is started once
        # more; a second refusal in a running environment ends the run (start_refused).
        status = replace(status, environment_requested_at="")
        return rest(replace(run, status=status))
    label = env.phase or "UNKNOWN"
    requested = core.parse_time(status.environment_requested_at)
    if env.failure_message and (requested is not None or env.phase != STOPPED):
        return _fail(
            run,
            status,
            now,
            "EnvironmentFailed",
            f"environment {env.id} failed: {env.failure_message}",
        )
    if env.phase in _GONE:
        return _fail(
            run,
            status,
            now,
            "EnvironmentDeleted",
            f"environment {env.id} is {label.lower()}: the task cannot run in it",
            "Stopped",
        )
    if not env_spec.start_when_stopped:
        msg = (
            f"environment {env.id} is {label} and spec.environment.whenStopped is Fail: "
            "the task was not started"
        )
        return _fail(run, status, now, "EnvironmentNotRunning", msg, _ready_reason(env.phase))
    if requested is None:
        requested = now
        status = replace(status, environment_requested_at=core.rfc3339(now))
    if now >= requested + cfg.environment_timeout:
        msg = (
            f"environment {env.id} did not reach RUNNING within "
            f"{int(cfg.environment_timeout.total_seconds())}s (it is {label})"
        )
        return _fail(run, status, now, "EnvironmentNotReady", msg, _ready_reason(env.phase))
    if env.phase == STOPPED:
        msg = f"starting environment {env.id} (it was stopped)"
        new = _waiting(run, status, now, "Starting", msg)
        return core.Decision(
            new,
            action=core.Action(core.ActionKind.START_ENVIRONMENT, environment_id=env.id),
            events=(core.Event("Normal", "EnvironmentStarting", msg),),
            wait_environment=env.id,
        )
    msg = f"waiting for environment {env.id} to be running (it is {label})"
    return core.Decision(
        _waiting(run, status, now, _ready_reason(env.phase), msg),
        requeue_after=cfg.environment_poll,
        wait_environment=env.id,
    )


def _ready_reason_now(status: core.Status) -> str:
    ready = status.condition(ENVIRONMENT_READY)
    return ready.reason if ready is not None else ""


def _ready_reason(phase: str) -> str:
    if phase == CREATING:
        return "Creating"
    if phase in (STARTING, *_UP):
        return "Starting"
    return "Stopped"


def _create(
    run: core.TaskRun,
    project: FromProject,
    obs: core.Observation,
    now: datetime,
    cfg: core.Settings,
) -> core.Decision:
    status = run.status
    transient = _transient(obs)
    if not status.environment_requested_at:
        # The claim goes out (with a resourceVersion precondition) before the call.
        new = replace(status, environment_requested_at=core.rfc3339(now))
        msg = f"creating an environment of project {project.project_id}"
        new = _waiting(run, new, now, "Creating", msg, transient)
        return core.Decision(new, action=core.Action(core.ActionKind.CREATE_ENVIRONMENT))
    # The outcome is unknown: exactly_once resolves it, as for a start. A person may name
    # the environment to use; the name is a request, honoured only for an environment
    # created for this very run (its name carries the TaskRun's uid) of the project the
    # spec names, as a read of it shows.
    seen = obs.environment
    outcome = exactly_once.resolve(
        exactly_once.Creation(
            words=_creation_words(project),
            claimed_at=core.parse_time(status.environment_requested_at) or now,
            settle=cfg.start_settle,
            stalled=core.stalled_message(status),
            annotation=run.annotations.get(ADOPT_ENVIRONMENT_ANNOTATION, ""),
            # The look is by the run's name in the spec's project: all it finds may be ours.
            found=(
                exactly_once.Found(tuple(obs.environment_candidates))
                if obs.environment_candidates is not None
                else None
            ),
            named=exactly_once.NamedRead(
                seen,
                tried=obs.environment_looked,
                ours=seen is not None and _made_for(run, project, seen),
            ),
            outage=transient is not None,
            retry_after=obs.remote_failure.retry_after if obs.remote_failure else None,
        ),
        now,
    )
    events = tuple(core.Event(n.type, n.reason, n.message) for n in (outcome.event,) if n)
    step = exactly_once.Step
    if outcome.step is step.AWAIT_PERSON:
        return core.Decision(core._observe(status, run.generation))
    if outcome.step is step.ADOPT and outcome.chosen is not None:
        chosen = outcome.chosen
        new = replace(status, environment_id=chosen.id, environment_phase=chosen.phase)
        ready = _ready_reason(chosen.phase)
        return core.Decision(_waiting(run, new, now, ready, outcome.message), events=events)
    if outcome.step is step.CREATE_AGAIN:
        new = replace(status, environment_requested_at="")
        return core.Decision(_waiting(run, new, now, "Creating", outcome.message), events=events)
    if outcome.step is step.STALL:
        stalled = core._conditions(
            _ready(run, status, now, "False", "Creating", outcome.message),
            run.generation,
            now,
            succeeded=("Unknown", "EnvironmentOutcomeUnknown", outcome.message),
            stalled=("True", "EnvironmentOutcomeUnknown", outcome.message),
        )
        return core.Decision(stalled, events=events)
    action = None
    if outcome.step is step.LOOK:
        action = core.Action(core.ActionKind.FIND_ENVIRONMENTS)
    elif outcome.step is step.READ_NAMED:
        action = core.Action(
            core.ActionKind.GET_ENVIRONMENT, environment_id=outcome.name, reason=ADOPT_LOOKUP
        )
    shown = transient if outcome.trouble is exactly_once.Trouble.OUTAGE else None
    return core.Decision(
        _waiting(run, status, now, "Creating", outcome.message, shown),
        action=action,
        requeue_after=outcome.requeue,
    )


ADOPT_LOOKUP = "Adopt"  # the reason of a GET_ENVIRONMENT that checks a person's choice


def _creation_words(project: FromProject) -> exactly_once.Words:
    return exactly_once.Words(
        thing="environment",
        act="creation",
        annotation=ADOPT_ENVIRONMENT_ANNOTATION,
        waiting="the outcome of CreateEnvironmentFromProject is unknown; waiting before looking",
        recreating="no environment was created by the earlier request; creating one again",
        made="was created for this run",
        again="created",
        choose="to use one (and delete the others)",
        eligible=(
            f"an environment created for this run (named after it, of project {project.project_id})"
        ),
        unknown_reason="EnvironmentOutcomeUnknown",
        adopted_reason="EnvironmentAdopted",
        recreating_reason="EnvironmentRecreating",
        refused_reason="EnvironmentAdoptionRefused",
    )


def _made_for(run: core.TaskRun, project: FromProject, env: RemoteEnvironment) -> bool:
    """Whether an environment was created for this very run: named after it (the name
    carries its uid) in the project its spec names."""
    return (
        bool(run.uid)
        and env.name.endswith(f"-{run.uid}")
        and (env.project_id == project.project_id)
    )


def _while_started(
    run: core.TaskRun,
    spec: core.Spec,
    env_spec: EnvironmentSpec,
    obs: core.Observation,
    now: datetime,
    cfg: core.Settings,
    rest: Callable[[core.TaskRun], core.Decision],
) -> core.Decision:
    status = run.status
    exec_id = status.task_execution_id
    if not exec_id:
        return rest(run)  # a start whose outcome is being resolved: the core's business
    if _ready_reason_now(status) == START_REFUSED:
        # The start went through after all: the environment runs.
        msg = f"environment {status.environment_id} is running"
        status = _ready(run, status, now, "True", "Running", msg)
    execution = obs.execution if obs.execution and obs.execution.id == exec_id else None
    phase = (
        execution.phase if execution and execution.phase else core.Phase.from_remote(status.phase)
    )
    stopped_by_us = bool(status.stop_requested_at) and status.stop_reason != "EnvironmentStopped"
    if phase is core.Phase.SUCCEEDED or stopped_by_us:
        return rest(replace(run, status=status))
    final = phase is not None and phase.final
    if not env_spec.look_first and not status.environment_checked_at:
        # Without spec.environment the keep-alive clock starts when the execution is first
        # followed (its environment was running when it started), and goes out with the
        # status write that records the execution: a run shorter than one period makes no
        # environment call at all. With it, the first look and signal come at once.
        status = replace(status, environment_checked_at=core.rfc3339(now))
    checked = core.parse_time(status.environment_checked_at)
    due_at = checked + cfg.keepalive if checked is not None else now
    due = now >= due_at
    env = obs.environment
    # An execution that ended other than succeeded may have ended with its environment: a
    # look names it as the reason. A run without spec.environment is not charged that
    # call; its execution says how it ended.
    wanted = due or (final and env_spec.look_first) or status.stop_reason == "EnvironmentStopped"
    if env is None and wanted and not obs.environment_looked:
        return core.Decision(
            core._observe(status, run.generation),
            action=_get(status, spec, execution),
            track=exec_id,
        )
    if env is None and due and obs.environment_looked:
        # The look was refused (a token without rights on environments, say): the run is
        # followed without it, and the next look comes a period later, not at once.
        status = replace(status, environment_checked_at=core.rfc3339(now))
        due_at = now + cfg.keepalive
    if env is not None:
        status = replace(status, environment_id=env.id, environment_phase=env.phase)
        if env.failure_message or env.phase in _DOWN:
            return _lost(run, status, env, phase, now)
        if due:
            status = replace(status, environment_checked_at=core.rfc3339(now))
            due_at = now + cfg.keepalive
            if env_spec.keep_alive and not final:
                return core.Decision(
                    status,
                    action=core.Action(
                        core.ActionKind.MARK_ENVIRONMENT_ACTIVE, environment_id=env.id
                    ),
                    track=exec_id,
                )
    decision = rest(replace(run, status=status))
    if decision.status.finished or decision.action is not None:
        return decision  # an action comes first; the next decision sets the wait
    wait = max((due_at - now).total_seconds(), 0.1)
    requeue = decision.requeue_after
    return replace(decision, requeue_after=wait if requeue is None else min(requeue, wait))


def _lost(
    run: core.TaskRun,
    status: core.Status,
    env: RemoteEnvironment,
    phase: core.Phase | None,
    now: datetime,
) -> core.Decision:
    """The environment stopped or failed under a started execution."""
    failed = bool(env.failure_message)
    reason = "EnvironmentFailed" if failed else "EnvironmentStopped"
    what = f"failed: {env.failure_message}" if failed else f"is {(env.phase or 'gone').lower()}"
    exec_id = status.task_execution_id
    msg = f"environment {env.id} {what} while execution {exec_id} was running"
    status = _ready(run, status, now, "False", "Failed" if failed else "Stopped", msg)
    if phase is not None and phase.final:
        return _fail(run, status, now, reason, msg, "Failed" if failed else "Stopped")
    stop_at = core.parse_time(status.stop_requested_at)
    if stop_at is not None and now < stop_at + _STOP_GRACE:
        # Stopped already: wait (a little) for the execution to end, so the run's phase
        # says how it ended.
        return core.Decision(
            core._pending(run, status, now, reason, msg), track=exec_id, requeue_after=2.0
        )
    if not status.stop_requested_at:
        # Make sure it ends, then end the run with the environment's reason.
        new = replace(status, stop_requested_at=core.rfc3339(now), stop_reason="EnvironmentStopped")
        new = core._pending(run, new, now, reason, msg)
        return core.Decision(
            new,
            action=core.Action(
                core.ActionKind.STOP, execution_id=exec_id, reason="EnvironmentStopped"
            ),
            track=exec_id,
        )
    return _fail(run, status, now, reason, msg, "Failed" if failed else "Stopped")


# How long a run whose environment was lost waits for its stopped execution to end.
_STOP_GRACE = timedelta(seconds=30)


# ----------------------------------------------------------------------- clean-up


def _cleanup_action(
    run: core.TaskRun, env_spec: EnvironmentSpec | None, obs: core.Observation
) -> core.Action | None:
    """What an environment created for this run still needs when the run is over."""
    if env_spec is None or env_spec.from_project is None or env_spec.cleanup is Cleanup.KEEP:
        return None
    if obs.environment_cleaned:
        return None
    status = run.status
    if not status.environment_id and not status.environment_requested_at:
        return None
    phase = status.environment_phase
    done = _GONE if env_spec.cleanup is Cleanup.DELETE else _GONE | {STOPPING, STOPPED}
    if status.environment_id and phase in done:
        return None
    return core.Action(
        core.ActionKind.CLEAN_UP_ENVIRONMENT,
        environment_id=status.environment_id,
        reason=env_spec.cleanup.value,
    )


def after_finish(run: core.TaskRun, spec: core.Spec, obs: core.Observation) -> core.Decision | None:
    """A run that is over: clean up the environment made for it, if it still needs it."""
    action = _cleanup_action(run, spec.environment, obs)
    if action is None or obs.connection.access is not core.Access.READY:
        return None
    return core.Decision(core._observe(run.status, run.generation), action=action)


def on_delete(run: core.TaskRun, spec: core.Spec, obs: core.Observation) -> core.Action | None:
    """A deleted TaskRun (deletionPolicy Stop): its environment goes as `cleanup` says."""
    return _cleanup_action(run, spec.environment, obs)


# ------------------------------------------------------------------ action results


def apply_result(
    run: core.TaskRun,
    action: core.Action,
    result: core.Result,
    obs: core.Observation,
    now: datetime,
) -> tuple[core.TaskRun, core.Observation, tuple[core.Event, ...]]:
    status = run.status
    failure = result.failure
    kind = action.kind
    events: list[core.Event] = []
    obs = replace(obs, remote_failure=failure if failure and failure.transient else None)
    if kind is core.ActionKind.GET_ENVIRONMENT:
        obs = replace(obs, environment_looked=True)
    if kind is core.ActionKind.GET_ENVIRONMENT and action.reason == ADOPT_LOOKUP:
        # A person's choice that cannot be read is refused (by _create), never a failure
        # of the run; an outage is looked at again.
        return run, replace(obs, environment=result.environment), ()
    started = bool(status.task_execution_id)

    if kind is core.ActionKind.CLEAN_UP_ENVIRONMENT:
        obs = replace(obs, environment_cleaned=True)
        gone = failure is not None and failure.kind is core.FailureKind.NOT_FOUND
        if failure is None or gone:
            deleting = action.reason == Cleanup.DELETE.value
            phase = DELETING if deleting else STOPPING
            status = replace(
                status,
                environment_phase=DELETED if gone else phase,
                environment_requested_at="",
                environment_id=status.environment_id
                or (result.environment.id if result.environment else ""),
            )
            if not gone and status.environment_id:
                verb = "deleting" if deleting else "stopping"
                events.append(
                    core.Event(
                        "Normal",
                        "EnvironmentDeleted" if deleting else "EnvironmentStopped",
                        f"{verb} environment {status.environment_id} created for this run",
                    )
                )
        elif failure.transient:
            obs = replace(obs, environment_cleaned=False)
        else:
            msg = f"could not clean up environment {action.environment_id}: {failure.message}"
            events.append(core.Event("Warning", "EnvironmentCleanupFailed", msg))
        return replace(run, status=status), obs, tuple(events)

    if failure is not None and failure.transient:
        if kind is core.ActionKind.CREATE_ENVIRONMENT:
            # Refused before it was sent, or 429: nothing was created, the claim is void.
            status = replace(status, environment_requested_at="")
        if not (status.finished or started):
            status = core._pending(run, status, now, "Waiting", failure.message, failure)
        # A started run keeps its conditions: its execution is still followed.
        return replace(run, status=status), obs, ()

    if failure is not None and started and failure.kind is not core.FailureKind.NOT_FOUND:
        # A refused look or signal during the run does not end it: the execution is still
        # followed, and the next period tries again.
        return replace(run, status=status), obs, ()

    if failure is not None:
        if kind is core.ActionKind.CREATE_ENVIRONMENT and (
            failure.kind is core.FailureKind.OUTCOME_UNKNOWN
        ):
            msg = f"the outcome of CreateEnvironmentFromProject is unknown: {failure.message}"
            status = core._pending(run, status, now, "EnvironmentOutcomeUnknown", msg)
            events.append(core.Event("Warning", "EnvironmentOutcomeUnknown", msg))
            return replace(run, status=status), obs, tuple(events)
        if kind is core.ActionKind.MARK_ENVIRONMENT_ACTIVE:
            # A refused signal is looked at again on the next period, with the environment.
            return replace(run, status=status), obs, ()
        if kind is core.ActionKind.FIND_ENVIRONMENTS and failure.reason == "MethodNotServed":
            # remote.METHOD_NOT_SERVED: ListEnvironments would be refused again, so the run
            # waits for a person, who can look by the name the message gives. The claim
            # stays: nothing more is created.
            msg = failure.message
            status = core._conditions(
                _ready(run, status, now, "False", "Creating", msg),
                run.generation,
                now,
                succeeded=("Unknown", "EnvironmentOutcomeUnknown", msg),
                stalled=("True", "EnvironmentOutcomeUnknown", msg),
            )
            events.append(core.Event("Warning", "EnvironmentOutcomeUnknown", msg))
            return replace(run, status=status), obs, tuple(events)
        created = kind is core.ActionKind.CREATE_ENVIRONMENT
        reason = core.refusal_reason(
            failure.kind,
            not_found="ProjectNotFound" if created else "EnvironmentNotFound",
            invalid="InvalidEnvironment",
        )
        reason = reason or "InvalidEnvironment"  # any other refusal of an environment call
        msg = f"{_CALLS.get(kind, kind.value)} was refused: {failure.message}"
        status = replace(status, environment_requested_at="")
        decision = _fail(run, status, now, reason, msg)
        return replace(run, status=decision.status), obs, decision.events

    env = result.environment
    if kind is core.ActionKind.GET_ENVIRONMENT and env is not None:
        obs = replace(obs, environment=env)
    elif kind is core.ActionKind.CREATE_ENVIRONMENT and env is not None:
        status = replace(status, environment_id=env.id, environment_phase=env.phase)
        obs = replace(obs, environment=env)
        events.append(
            core.Event("Normal", "EnvironmentCreated", f"created environment {env.id} for this run")
        )
    elif kind is core.ActionKind.FIND_ENVIRONMENTS:
        obs = replace(obs, environment_candidates=result.environments or ())
    elif kind is core.ActionKind.START_ENVIRONMENT:
        obs = replace(obs, environment=None)  # read it again to see it starting
    return replace(run, status=status), obs, tuple(events)


def start_refused(
    run: core.TaskRun, failure: core.RemoteFailure, obs: core.Observation, now: datetime
) -> tuple[core.TaskRun, core.Observation, tuple[core.Event, ...]]:
    """StartTask said failed_precondition: the environment is not running (a run without
    spec.environment learns it so; with it, the environment stopped between the look and
    the start). Nothing was started, so the claim is void and the next start is claimed
    anew, for the same attempt. The environment is looked at (and started, or the run
    refused as whenStopped says) before the task is started again.

    Refused in an environment read as running in this very pass, the start is tried once
    more after another look; refused again so, the precondition is not the environment's
    and the run ends as any refused start does, reason InvalidTask."""
    status = replace(run.status, start_requested_at="")
    seen = obs.environment
    obs = replace(obs, environment=None, remote_failure=None)
    if seen is not None and seen.up:
        if _ready_reason_now(status) == START_REFUSED:
            msg = (
                f"StartTask was refused although environment {seen.id} is running: "
                f"{failure.message}"
            )
            status = core._finish(run, status, now, "InvalidTask", msg, ok=False)
            return replace(run, status=status), obs, (core.Event("Warning", "InvalidTask", msg),)
        msg = (
            f"StartTask was refused although environment {seen.id} was running: "
            f"{failure.message}; looking at the environment again"
        )
        return replace(run, status=_waiting(run, status, now, START_REFUSED, msg)), obs, ()
    msg = (
        f"StartTask was refused because the environment is not running: {failure.message}; "
        "looking at the environment"
    )
    return replace(run, status=_waiting(run, status, now, "Checking", msg)), obs, ()


_CALLS = {
    "GetEnvironment": "GetEnvironment",
    "StartEnvironment": "StartEnvironment",
    "CreateEnvironment": "CreateEnvironmentFromProject",
    "FindEnvironments": "ListEnvironments",
}
