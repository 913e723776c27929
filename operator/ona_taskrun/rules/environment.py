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

Nothing here does I/O. `pipeline.decide` asks `gate` at one point (a decision of its own or
a go-ahead, never a callback), and `results.apply_result` hands it the outcomes of
`ENVIRONMENT_ACTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from . import exactly_once
from .conditions import (
    finish,
    observed,
    pending,
    refusal_reason,
    remote_backoff,
    set_condition,
    set_conditions,
    stalled_message,
)
from .model import (
    ADOPT_ENVIRONMENT_ANNOTATION,
    CREATING,
    DELETED,
    DELETING,
    DOWN_PHASES,
    ENVIRONMENT_READY,
    GONE_PHASES,
    IMPLIED,
    START_REFUSED,
    STARTING,
    STOPPED,
    STOPPING,
    UP_PHASES,
    Access,
    Action,
    ActionKind,
    Cleanup,
    Condition,
    Decision,
    EnvironmentSpec,
    Event,
    FailureKind,
    FromProject,
    Observation,
    Phase,
    RemoteEnvironment,
    RemoteExecution,
    RemoteFailure,
    Result,
    Settings,
    Spec,
    Status,
    TaskRun,
    parse_time,
    rfc3339,
)


def of(spec: Spec) -> EnvironmentSpec:
    """The environment handling a run gets: its spec.environment, or the defaults."""
    return spec.environment if spec.environment is not None else IMPLIED


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
class GoAhead:
    """The environment lets the run go on: the task, start and tracking decide next, with
    this run (its status may carry what the environment's look found). When the next
    keep-alive is due by `look_again_at`, the decision after waits no longer than that."""

    run: TaskRun
    look_again_at: datetime | None = None


def gate(
    run: TaskRun,
    spec: Spec,
    env_spec: EnvironmentSpec,
    obs: Observation,
    now: datetime,
    cfg: Settings,
) -> Decision | GoAhead:
    """The environment's step of the pipeline, for a TaskRun that is not over, as
    `env_spec` (see `of`) asks: a decision of its own (wait, create, start, fail, signal
    activity), or a go-ahead for the rest of the pipeline."""
    status = run.status
    if status.task_execution_id or status.start_requested_at:
        return _while_started(run, spec, env_spec, obs, now, cfg)
    if env_spec.from_project is not None and not status.environment_id:
        return _create(run, env_spec.from_project, obs, now, cfg)
    if not env_spec.look_first and not _waiting_for_it(status):
        # The happy path of a run without spec.environment: no look before the start.
        return GoAhead(run)
    return _before_start(run, spec, env_spec, obs, now, cfg)


def within_look(decision: Decision, ahead: GoAhead, now: datetime) -> Decision:
    """A decision made after a go-ahead waits no longer than the next keep-alive look."""
    if ahead.look_again_at is None or decision.status.finished or decision.action is not None:
        return decision  # an action comes first; the next decision sets the wait
    wait = max((ahead.look_again_at - now).total_seconds(), 0.1)
    requeue = decision.requeue_after
    return replace(decision, requeue_after=wait if requeue is None else min(requeue, wait))


def _waiting_for_it(status: Status) -> bool:
    """Whether the run is waiting for its environment (a StartTask said it is not running,
    or a look since found it not running yet)."""
    ready = status.condition(ENVIRONMENT_READY)
    return ready is not None and ready.status != "True"


def _ready(
    run: TaskRun, status: Status, now: datetime, value: str, reason: str, message: str
) -> Status:
    cond = Condition(ENVIRONMENT_READY, value, reason, message, observed_generation=run.generation)
    return replace(status, conditions=set_condition(status.conditions, cond, now))


def _waiting(
    run: TaskRun,
    status: Status,
    now: datetime,
    ready_reason: str,
    message: str,
    failure: RemoteFailure | None = None,
) -> Status:
    """A run that waits for its environment: PENDING, Succeeded=Unknown with a reason that
    says the environment's state (it is the REASON column of `kubectl get otr`)."""
    status = replace(status, phase=status.phase or Phase.PENDING.value)
    status = _ready(run, status, now, "False", ready_reason, message)
    reason = _WAITING_REASONS.get(ready_reason, "WaitingForEnvironment")
    return pending(run, status, now, reason, message, failure)


_WAITING_REASONS = {
    "Checking": "CheckingEnvironment",
    START_REFUSED: "CheckingEnvironment",
    "Creating": "EnvironmentCreating",
    "Starting": "EnvironmentStarting",
    "Stopped": "EnvironmentStopping",
}


def _fail(
    run: TaskRun,
    status: Status,
    now: datetime,
    reason: str,
    message: str,
    ready_reason: str = "Failed",
) -> Decision:
    status = _ready(run, status, now, "False", ready_reason, message)
    return Decision(
        finish(run, status, now, reason, message, ok=False),
        events=(Event("Warning", reason, message),),
    )


def _transient(obs: Observation) -> RemoteFailure | None:
    failure = obs.remote_failure
    return failure if failure is not None and failure.transient else None


def _get(
    status: Status,
    spec: Spec | None = None,
    execution: RemoteExecution | None = None,
) -> Action:
    """Read the environment; a task named by id alone tells it by its execution, or else
    by its task (GetTask, once per task)."""
    env_id = (
        status.environment_id
        or (spec.environment_id if spec else None)
        or (execution.environment_id if execution else "")
    )
    task_id = status.task_id or (spec.task_ref.id if spec and spec.task_ref else None) or ""
    return Action(ActionKind.GET_ENVIRONMENT, environment_id=env_id or "", task_id=task_id)


def _before_start(
    run: TaskRun,
    spec: Spec,
    env_spec: EnvironmentSpec,
    obs: Observation,
    now: datetime,
    cfg: Settings,
) -> Decision | GoAhead:
    status = run.status
    env = obs.environment
    if env is None:
        # Read it in this pass, before anything is created or started in it.
        msg = "checking the environment before starting the task"
        new = _waiting(run, status, now, "Checking", msg, _transient(obs))
        return Decision(
            new,
            action=_get(status, spec),
            requeue_after=remote_backoff(obs) if _transient(obs) else None,
        )
    status = replace(status, environment_id=env.id, environment_phase=env.phase)
    if env.up:
        if _ready_reason_now(status) != START_REFUSED:
            msg = f"environment {env.id} is running"
            status = _ready(run, status, now, "True", "Running", msg)
        # else: running, yet StartTask was refused in it a moment ago. It is started once
        # more; a second refusal in a running environment ends the run (start_refused).
        status = replace(status, environment_requested_at="")
        return GoAhead(replace(run, status=status))
    label = env.phase or "UNKNOWN"
    requested = parse_time(status.environment_requested_at)
    if env.failure_message and (requested is not None or env.phase != STOPPED):
        return _fail(
            run,
            status,
            now,
            "EnvironmentFailed",
            f"environment {env.id} failed: {env.failure_message}",
        )
    if env.phase in GONE_PHASES:
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
        status = replace(status, environment_requested_at=rfc3339(now))
    if now >= requested + cfg.environment_timeout:
        msg = (
            f"environment {env.id} did not reach RUNNING within "
            f"{int(cfg.environment_timeout.total_seconds())}s (it is {label})"
        )
        return _fail(run, status, now, "EnvironmentNotReady", msg, _ready_reason(env.phase))
    if env.phase == STOPPED:
        msg = f"starting environment {env.id} (it was stopped)"
        new = _waiting(run, status, now, "Starting", msg)
        return Decision(
            new,
            action=Action(ActionKind.START_ENVIRONMENT, environment_id=env.id),
            events=(Event("Normal", "EnvironmentStarting", msg),),
            wait_environment=env.id,
        )
    msg = f"waiting for environment {env.id} to be running (it is {label})"
    return Decision(
        _waiting(run, status, now, _ready_reason(env.phase), msg),
        requeue_after=cfg.environment_poll,
        wait_environment=env.id,
    )


def _ready_reason_now(status: Status) -> str:
    ready = status.condition(ENVIRONMENT_READY)
    return ready.reason if ready is not None else ""


def _ready_reason(phase: str) -> str:
    if phase == CREATING:
        return "Creating"
    if phase in (STARTING, *UP_PHASES):
        return "Starting"
    return "Stopped"


def _create(
    run: TaskRun,
    project: FromProject,
    obs: Observation,
    now: datetime,
    cfg: Settings,
) -> Decision:
    status = run.status
    transient = _transient(obs)
    if not status.environment_requested_at:
        # The claim goes out (with a resourceVersion precondition) before the call.
        new = replace(status, environment_requested_at=rfc3339(now))
        msg = f"creating an environment of project {project.project_id}"
        new = _waiting(run, new, now, "Creating", msg, transient)
        return Decision(new, action=Action(ActionKind.CREATE_ENVIRONMENT))
    # The outcome is unknown: exactly_once resolves it, as for a start. A person may name
    # the environment to use; the name is a request, honoured only for an environment
    # created for this very run (its name carries the TaskRun's uid) of the project the
    # spec names, as a read of it shows.
    seen = obs.environment
    outcome = exactly_once.resolve(
        exactly_once.Creation(
            words=_creation_words(project),
            claimed_at=parse_time(status.environment_requested_at) or now,
            settle=cfg.start_settle,
            stalled=stalled_message(status),
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
    events = tuple(Event(n.type, n.reason, n.message) for n in (outcome.event,) if n)
    step = exactly_once.Step
    if outcome.step is step.AWAIT_PERSON:
        return Decision(observed(status, run.generation))
    if outcome.step is step.ADOPT and outcome.chosen is not None:
        chosen = outcome.chosen
        new = replace(status, environment_id=chosen.id, environment_phase=chosen.phase)
        ready = _ready_reason(chosen.phase)
        return Decision(_waiting(run, new, now, ready, outcome.message), events=events)
    if outcome.step is step.CREATE_AGAIN:
        new = replace(status, environment_requested_at="")
        return Decision(_waiting(run, new, now, "Creating", outcome.message), events=events)
    if outcome.step is step.STALL:
        stalled = set_conditions(
            _ready(run, status, now, "False", "Creating", outcome.message),
            run.generation,
            now,
            succeeded=("Unknown", "EnvironmentOutcomeUnknown", outcome.message),
            stalled=("True", "EnvironmentOutcomeUnknown", outcome.message),
        )
        return Decision(stalled, events=events)
    action = None
    if outcome.step is step.LOOK:
        action = Action(ActionKind.FIND_ENVIRONMENTS)
    elif outcome.step is step.READ_NAMED:
        action = Action(
            ActionKind.GET_ENVIRONMENT, environment_id=outcome.name, reason=ADOPT_LOOKUP
        )
    shown = transient if outcome.trouble is exactly_once.Trouble.OUTAGE else None
    return Decision(
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


def _made_for(run: TaskRun, project: FromProject, env: RemoteEnvironment) -> bool:
    """Whether an environment was created for this very run: named after it (the name
    carries its uid) in the project its spec names."""
    return (
        bool(run.uid)
        and env.name.endswith(f"-{run.uid}")
        and (env.project_id == project.project_id)
    )


def _while_started(
    run: TaskRun,
    spec: Spec,
    env_spec: EnvironmentSpec,
    obs: Observation,
    now: datetime,
    cfg: Settings,
) -> Decision | GoAhead:
    status = run.status
    exec_id = status.task_execution_id
    if not exec_id:
        return GoAhead(run)  # a start whose outcome is being resolved: the start's business
    if _ready_reason_now(status) == START_REFUSED:
        # The start went through after all: the environment runs.
        msg = f"environment {status.environment_id} is running"
        status = _ready(run, status, now, "True", "Running", msg)
    execution = obs.execution if obs.execution and obs.execution.id == exec_id else None
    phase = execution.phase if execution and execution.phase else Phase.from_remote(status.phase)
    stopped_by_us = bool(status.stop_requested_at) and status.stop_reason != "EnvironmentStopped"
    if phase is Phase.SUCCEEDED or stopped_by_us:
        return GoAhead(replace(run, status=status))
    final = phase is not None and phase.final
    if not env_spec.look_first and not status.environment_checked_at:
        # Without spec.environment the keep-alive clock starts when the execution is first
        # followed (its environment was running when it started), and goes out with the
        # status write that records the execution: a run shorter than one period makes no
        # environment call at all. With it, the first look and signal come at once.
        status = replace(status, environment_checked_at=rfc3339(now))
    checked = parse_time(status.environment_checked_at)
    due_at = checked + cfg.keepalive if checked is not None else now
    due = now >= due_at
    env = obs.environment
    # An execution that ended other than succeeded may have ended with its environment: a
    # look names it as the reason. A run without spec.environment is not charged that
    # call; its execution says how it ended.
    wanted = due or (final and env_spec.look_first) or status.stop_reason == "EnvironmentStopped"
    if env is None and wanted and not obs.environment_looked:
        return Decision(
            observed(status, run.generation),
            action=_get(status, spec, execution),
            track=exec_id,
        )
    if env is None and due and obs.environment_looked:
        # The look was refused (a token without rights on environments, say): the run is
        # followed without it, and the next look comes a period later, not at once.
        status = replace(status, environment_checked_at=rfc3339(now))
        due_at = now + cfg.keepalive
    if env is not None:
        status = replace(status, environment_id=env.id, environment_phase=env.phase)
        if env.failure_message or env.phase in DOWN_PHASES:
            return _lost(run, status, env, phase, now)
        if due:
            status = replace(status, environment_checked_at=rfc3339(now))
            due_at = now + cfg.keepalive
            if env_spec.keep_alive and not final:
                return Decision(
                    status,
                    action=Action(ActionKind.MARK_ENVIRONMENT_ACTIVE, environment_id=env.id),
                    track=exec_id,
                )
    return GoAhead(replace(run, status=status), look_again_at=due_at)


def _lost(
    run: TaskRun,
    status: Status,
    env: RemoteEnvironment,
    phase: Phase | None,
    now: datetime,
) -> Decision:
    """The environment stopped or failed under a started execution."""
    failed = bool(env.failure_message)
    reason = "EnvironmentFailed" if failed else "EnvironmentStopped"
    what = f"failed: {env.failure_message}" if failed else f"is {(env.phase or 'gone').lower()}"
    exec_id = status.task_execution_id
    msg = f"environment {env.id} {what} while execution {exec_id} was running"
    status = _ready(run, status, now, "False", "Failed" if failed else "Stopped", msg)
    if phase is not None and phase.final:
        return _fail(run, status, now, reason, msg, "Failed" if failed else "Stopped")
    stop_at = parse_time(status.stop_requested_at)
    if stop_at is not None and now < stop_at + _STOP_GRACE:
        # Stopped already: wait (a little) for the execution to end, so the run's phase
        # says how it ended.
        return Decision(pending(run, status, now, reason, msg), track=exec_id, requeue_after=2.0)
    if not status.stop_requested_at:
        # Make sure it ends, then end the run with the environment's reason.
        new = replace(status, stop_requested_at=rfc3339(now), stop_reason="EnvironmentStopped")
        new = pending(run, new, now, reason, msg)
        return Decision(
            new,
            action=Action(ActionKind.STOP, execution_id=exec_id, reason="EnvironmentStopped"),
            track=exec_id,
        )
    return _fail(run, status, now, reason, msg, "Failed" if failed else "Stopped")


# How long a run whose environment was lost waits for its stopped execution to end.
_STOP_GRACE = timedelta(seconds=30)


def _cleanup_action(
    run: TaskRun, env_spec: EnvironmentSpec | None, obs: Observation
) -> Action | None:
    """What an environment created for this run still needs when the run is over."""
    if env_spec is None or env_spec.from_project is None or env_spec.cleanup is Cleanup.KEEP:
        return None
    if obs.environment_cleaned:
        return None
    status = run.status
    if not status.environment_id and not status.environment_requested_at:
        return None
    phase = status.environment_phase
    done = GONE_PHASES if env_spec.cleanup is Cleanup.DELETE else GONE_PHASES | {STOPPING, STOPPED}
    if status.environment_id and phase in done:
        return None
    return Action(
        ActionKind.CLEAN_UP_ENVIRONMENT,
        environment_id=status.environment_id,
        reason=env_spec.cleanup.value,
    )


def after_finish(run: TaskRun, spec: Spec, obs: Observation) -> Decision | None:
    """A run that is over: clean up the environment made for it, if it still needs it."""
    action = _cleanup_action(run, spec.environment, obs)
    if action is None or obs.connection.access is not Access.READY:
        return None
    return Decision(observed(run.status, run.generation), action=action)


def on_delete(run: TaskRun, spec: Spec, obs: Observation) -> Action | None:
    """A deleted TaskRun (deletionPolicy Stop): its environment goes as `cleanup` says."""
    return _cleanup_action(run, spec.environment, obs)


def apply_result(
    run: TaskRun,
    action: Action,
    result: Result,
    obs: Observation,
    now: datetime,
) -> tuple[TaskRun, Observation, tuple[Event, ...]]:
    status = run.status
    failure = result.failure
    kind = action.kind
    events: list[Event] = []
    obs = replace(obs, remote_failure=failure if failure and failure.transient else None)
    if kind is ActionKind.GET_ENVIRONMENT:
        obs = replace(obs, environment_looked=True)
    if kind is ActionKind.GET_ENVIRONMENT and action.reason == ADOPT_LOOKUP:
        # A person's choice that cannot be read is refused (by _create), never a failure
        # of the run; an outage is looked at again.
        return run, replace(obs, environment=result.environment), ()
    started = bool(status.task_execution_id)

    if kind is ActionKind.CLEAN_UP_ENVIRONMENT:
        obs = replace(obs, environment_cleaned=True)
        gone = failure is not None and failure.kind is FailureKind.NOT_FOUND
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
                    Event(
                        "Normal",
                        "EnvironmentDeleted" if deleting else "EnvironmentStopped",
                        f"{verb} environment {status.environment_id} created for this run",
                    )
                )
        elif failure.transient:
            obs = replace(obs, environment_cleaned=False)
        else:
            msg = f"could not clean up environment {action.environment_id}: {failure.message}"
            events.append(Event("Warning", "EnvironmentCleanupFailed", msg))
        return replace(run, status=status), obs, tuple(events)

    if failure is not None and failure.transient:
        if kind is ActionKind.CREATE_ENVIRONMENT:
            # Refused before it was sent, or 429: nothing was created, the claim is void.
            status = replace(status, environment_requested_at="")
        if not (status.finished or started):
            status = pending(run, status, now, "Waiting", failure.message, failure)
        # A started run keeps its conditions: its execution is still followed.
        return replace(run, status=status), obs, ()

    if failure is not None and started and failure.kind is not FailureKind.NOT_FOUND:
        # A refused look or signal during the run does not end it: the execution is still
        # followed, and the next period tries again.
        return replace(run, status=status), obs, ()

    if failure is not None:
        if kind is ActionKind.CREATE_ENVIRONMENT and (failure.kind is FailureKind.OUTCOME_UNKNOWN):
            msg = f"the outcome of CreateEnvironmentFromProject is unknown: {failure.message}"
            status = pending(run, status, now, "EnvironmentOutcomeUnknown", msg)
            events.append(Event("Warning", "EnvironmentOutcomeUnknown", msg))
            return replace(run, status=status), obs, tuple(events)
        if kind is ActionKind.MARK_ENVIRONMENT_ACTIVE:
            # A refused signal is looked at again on the next period, with the environment.
            return replace(run, status=status), obs, ()
        if kind is ActionKind.FIND_ENVIRONMENTS and failure.reason == "MethodNotServed":
            # remote.METHOD_NOT_SERVED: ListEnvironments would be refused again, so the run
            # waits for a person, who can look by the name the message gives. The claim
            # stays: nothing more is created.
            msg = failure.message
            status = set_conditions(
                _ready(run, status, now, "False", "Creating", msg),
                run.generation,
                now,
                succeeded=("Unknown", "EnvironmentOutcomeUnknown", msg),
                stalled=("True", "EnvironmentOutcomeUnknown", msg),
            )
            events.append(Event("Warning", "EnvironmentOutcomeUnknown", msg))
            return replace(run, status=status), obs, tuple(events)
        created = kind is ActionKind.CREATE_ENVIRONMENT
        reason = refusal_reason(
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
    if kind is ActionKind.GET_ENVIRONMENT and env is not None:
        obs = replace(obs, environment=env)
    elif kind is ActionKind.CREATE_ENVIRONMENT and env is not None:
        status = replace(status, environment_id=env.id, environment_phase=env.phase)
        obs = replace(obs, environment=env)
        events.append(
            Event("Normal", "EnvironmentCreated", f"created environment {env.id} for this run")
        )
    elif kind is ActionKind.FIND_ENVIRONMENTS:
        obs = replace(obs, environment_candidates=result.environments or ())
    elif kind is ActionKind.START_ENVIRONMENT:
        obs = replace(obs, environment=None)  # read it again to see it starting
    return replace(run, status=status), obs, tuple(events)


def start_refused(
    run: TaskRun, failure: RemoteFailure, obs: Observation, now: datetime
) -> tuple[TaskRun, Observation, tuple[Event, ...]]:
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
            status = finish(run, status, now, "InvalidTask", msg, ok=False)
            return replace(run, status=status), obs, (Event("Warning", "InvalidTask", msg),)
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
