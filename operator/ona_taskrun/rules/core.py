"""The pure core: from a TaskRun, what is known of its remote execution, and the time,
decide the TaskRun's new status and the one next thing to do.

No I/O happens here: no kopf, no httpx, no Kubernetes client. The edges (the reconciler)
parse objects into these types, call `decide`, write the status it returns (always with
an optimistic-concurrency precondition, before acting), perform the action, and fold the
action's result back in with `apply_result`. Every situation a user can be in is a row in
the table-driven tests of this module.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from . import backoff, exactly_once
from . import environment as environment_rules

FINALIZER = "automation.ona.com/taskrun"
# A person resolves an ambiguous start with one of these annotations (see README).
ADOPT_ANNOTATION = "automation.ona.com/adopt-execution"
ALLOW_RESTART_ANNOTATION = "automation.ona.com/allow-new-start"
# The start claim, written with the finalizer in one conditional metadata write before
# StartTask; status.startRequestedAt and status.startAttempts mirror it for users.
CLAIM_ANNOTATION = "automation.ona.com/start-requested-at"
ATTEMPTS_ANNOTATION = "automation.ona.com/start-attempts"
# The attempt (spec.retries) the start claim is for: a claim never carries over to the
# next attempt (see retry_core).
CLAIM_ATTEMPT_ANNOTATION = "automation.ona.com/start-attempt"
# How soon an adoption that waits for another TaskRun's start of the same task looks again.
START_IN_FLIGHT_RECHECK = 0.5


class Phase(enum.StrEnum):
    """The execution phase in the short form the TaskRun status uses."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def final(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.STOPPED)

    @classmethod
    def from_remote(cls, value: str) -> Phase | None:
        """`TASK_EXECUTION_PHASE_RUNNING` -> RUNNING; unknown or unspecified -> None."""
        short = value.removeprefix("TASK_EXECUTION_PHASE_")
        try:
            return cls(short)
        except ValueError:
            return None


class InvalidSpec(ValueError):
    """A TaskRun spec the schema let through but the operator cannot run."""


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class InlineTask:
    environment_id: str
    name: str
    command: str
    description: str = ""
    env: tuple[tuple[str, str], ...] = ()
    runs_on: Mapping[str, Any] | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskRef:
    id: str | None = None
    environment_id: str | None = None
    reference: str | None = None


CLUSTER_CONNECTION = "ClusterOnaConnection"
NAMESPACED_CONNECTION = "OnaConnection"


@dataclass(frozen=True)
class ConnectionRef:
    """`spec.connectionRef`: a connection in the TaskRun's namespace, or a cluster one."""

    name: str
    kind: str = NAMESPACED_CONNECTION

    @property
    def cluster(self) -> bool:
        return self.kind == CLUSTER_CONNECTION


@dataclass(frozen=True)
class Spec:
    task: InlineTask | None
    task_ref: TaskRef | None
    desired_stopped: bool = False
    orphan_on_delete: bool = False
    timeout: timedelta | None = None
    # None: the operator-level (default) connection.
    connection_ref: ConnectionRef | None = None
    # spec.retries and spec.ttlSecondsAfterFinished (see retry_core).
    retries: int = 0
    ttl_after_finished: timedelta | None = None
    # spec.environment; None: its defaults, at no call while the environment runs
    # (environment_rules.IMPLIED).
    environment: environment_rules.EnvironmentSpec | None = None

    @property
    def environment_id(self) -> str | None:
        if self.task is not None:
            return self.task.environment_id
        return self.task_ref.environment_id if self.task_ref else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


MAX_TIMEOUT = timedelta(hours=720)


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as `30m`, `1h30m` or `1.5s`."""
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise InvalidSpec(f"spec.timeout {text[:40]!r} is not a duration such as 30m or 1h30m")
    if total <= 0:
        raise InvalidSpec(f"spec.timeout {text!r} must be longer than zero")
    if not total <= MAX_TIMEOUT.total_seconds():
        # Also what the CRD says; checked here too for objects that predate that rule.
        raise InvalidSpec(f"spec.timeout {text[:40]!r} must be at most 720h (30 days)")
    return timedelta(seconds=total)


def parse_spec(spec: Mapping[str, Any]) -> Spec:
    """Read a TaskRun's spec; raise InvalidSpec with a precise message when unusable."""
    task_raw, ref_raw = spec.get("task"), spec.get("taskRef")
    if (task_raw is None) == (ref_raw is None):
        raise InvalidSpec("exactly one of spec.task and spec.taskRef must be set")
    env_spec = environment_rules.parse_environment(spec.get("environment"))
    from_project = env_spec is not None and env_spec.from_project is not None
    if from_project and not (isinstance(task_raw, Mapping) and not task_raw.get("environmentId")):
        raise InvalidSpec(
            "spec.environment.fromProject needs an inline spec.task without environmentId"
        )
    task: InlineTask | None = None
    ref: TaskRef | None = None
    if isinstance(task_raw, Mapping):
        needed = ("name", "command") if from_project else ("environmentId", "name", "command")
        missing = [k for k in needed if not task_raw.get(k)]
        if missing:
            raise InvalidSpec(f"spec.task needs {', '.join(missing)}")
        env = tuple(
            (str(item.get("name", "")), str(item.get("value", "")))
            for item in task_raw.get("env") or ()
        )
        task = InlineTask(
            environment_id=str(task_raw.get("environmentId") or ""),
            name=str(task_raw["name"]),
            command=str(task_raw["command"]),
            description=str(task_raw.get("description", "")),
            env=env,
            runs_on=task_raw.get("runsOn"),
            depends_on=tuple(str(d) for d in task_raw.get("dependsOn") or ()),
        )
    elif isinstance(ref_raw, Mapping):
        ref = TaskRef(
            id=ref_raw.get("id"),
            environment_id=ref_raw.get("environmentId"),
            reference=ref_raw.get("reference"),
        )
        if not ref.id and not (ref.environment_id and ref.reference):
            raise InvalidSpec("spec.taskRef needs either id, or both environmentId and reference")
    else:
        raise InvalidSpec("spec.task and spec.taskRef must be objects")
    timeout_raw = spec.get("timeout")
    retries, ttl = retry.parse_lifecycle(spec)
    return Spec(
        task=task,
        task_ref=ref,
        desired_stopped=spec.get("desiredPhase", "RUNNING") == "STOPPED",
        orphan_on_delete=spec.get("deletionPolicy", "Stop") == "Orphan",
        timeout=parse_duration(str(timeout_raw)) if timeout_raw else None,
        connection_ref=parse_connection_ref(spec.get("connectionRef")),
        retries=retries,
        ttl_after_finished=ttl,
        environment=env_spec,
    )


def parse_connection_ref(raw: Any) -> ConnectionRef | None:
    """Read `spec.connectionRef`; None when absent (the default connection)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise InvalidSpec("spec.connectionRef needs a name")
    kind = str(raw.get("kind") or NAMESPACED_CONNECTION)
    if kind not in (NAMESPACED_CONNECTION, CLUSTER_CONNECTION):
        raise InvalidSpec(
            f"spec.connectionRef.kind {kind!r} must be {NAMESPACED_CONNECTION} "
            f"or {CLUSTER_CONNECTION}"
        )
    if "namespace" in raw:
        raise InvalidSpec("spec.connectionRef has no namespace: a TaskRun uses its own")
    return ConnectionRef(name=str(raw["name"]), kind=kind)


def task_reference(uid: str) -> str:
    """The `metadata.reference` of the Ona task created for an inline TaskRun."""
    return f"k8s-taskrun-{uid}"


# ------------------------------------------------------------------------- remote


@dataclass(frozen=True)
class RemoteStep:
    id: str
    phase: str = ""
    label: str = ""
    failure_message: str = ""
    output: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteExecution:
    """What the core needs of an Ona task execution."""

    id: str
    task_id: str
    phase: Phase | None
    status_version: int
    status_version_text: str = "0"
    steps: tuple[RemoteStep, ...] = ()
    failure_message: str = ""
    log_url: str = ""
    created_at: str = ""
    started_at: str = ""
    completed_at: str = ""
    creator_id: str = ""
    environment_id: str = ""


class FailureKind(enum.StrEnum):
    UNAUTHENTICATED = "Unauthorized"
    PERMISSION_DENIED = "Forbidden"
    NOT_FOUND = "NotFound"
    INVALID_ARGUMENT = "InvalidArgument"
    RATE_LIMITED = "RateLimited"
    UNAVAILABLE = "Unavailable"
    OUTCOME_UNKNOWN = "OutcomeUnknown"

    @property
    def transient(self) -> bool:
        return self in (FailureKind.RATE_LIMITED, FailureKind.UNAVAILABLE)


@dataclass(frozen=True)
class RemoteFailure:
    kind: FailureKind
    message: str
    retry_after: float | None = None
    # The RemoteReachable reason when it is not the kind's (e.g. ConnectionNotFound).
    reason: str = ""
    # Waited out like an outage although its kind is final: a named connection's 401
    # (its token may be rotating) must not end runs.
    wait: bool = False

    @property
    def transient(self) -> bool:
        return self.wait or self.kind.transient

    @property
    def condition_reason(self) -> str:
        return self.reason or self.kind.value


# ------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""
    last_transition_time: str = ""
    observed_generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
            "observedGeneration": self.observed_generation,
        }


SUCCEEDED, RECONCILING, STALLED, REMOTE_REACHABLE = (
    "Succeeded",
    "Reconciling",
    "Stalled",
    "RemoteReachable",
)


_STATUS_KEYS = {
    "observedGeneration": "observed_generation",
    "taskId": "task_id",
    "taskExecutionId": "task_execution_id",
    "phase": "phase",
    "statusVersion": "status_version",
    "failureMessage": "failure_message",
    "logUrl": "log_url",
    "logTail": "log_tail",
    "createdAt": "created_at",
    "startedAt": "started_at",
    "completedAt": "completed_at",
    "startRequestedAt": "start_requested_at",
    "startAttempts": "start_attempts",
    "stopRequestedAt": "stop_requested_at",
    "stopReason": "stop_reason",
    "attempt": "attempt",
    "nextAttemptAt": "next_attempt_at",
    "environmentId": "environment_id",
    "environmentPhase": "environment_phase",
    "environmentRequestedAt": "environment_requested_at",
    "environmentCheckedAt": "environment_checked_at",
}


@dataclass(frozen=True)
class Status:
    """The TaskRun status, as the operator owns it."""

    observed_generation: int = 0
    task_id: str = ""
    task_execution_id: str = ""
    phase: str = ""
    status_version: str = ""
    steps: tuple[Mapping[str, Any], ...] = ()
    failure_message: str = ""
    log_url: str = ""
    created_at: str = ""
    started_at: str = ""
    completed_at: str = ""
    start_requested_at: str = ""
    start_attempts: int = 0
    stop_requested_at: str = ""
    stop_reason: str = ""
    # The end of the execution's log, written after the run ended (see logtail_core).
    log_tail: str = ""
    environment_id: str = ""
    environment_phase: str = ""
    # The environment claim (fromProject) or when waiting for it to run began.
    environment_requested_at: str = ""
    # When the environment was last looked at (and signalled active) during the run.
    environment_checked_at: str = ""
    conditions: tuple[Condition, ...] = ()
    # spec.retries: the current attempt (1-based; 0 before the first start), the attempts
    # that ended before it, and when the next one starts while waiting to retry.
    attempt: int = 0
    attempts: tuple[Mapping[str, Any], ...] = ()
    next_attempt_at: str = ""
    # The attempt the start claim is for (the claim annotation's; 0: the current one).
    claim_attempt: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> Status:
        raw = raw or {}
        values: dict[str, Any] = {}
        for key, attr in _STATUS_KEYS.items():
            if raw.get(key) not in (None, ""):
                values[attr] = raw[key]
        values["steps"] = tuple(raw.get("steps") or ())
        values["attempts"] = tuple(raw.get("attempts") or ())
        values["conditions"] = tuple(
            Condition(
                type=str(c.get("type", "")),
                status=str(c.get("status", "Unknown")),
                reason=str(c.get("reason", "")),
                message=str(c.get("message", "")),
                last_transition_time=str(c.get("lastTransitionTime", "")),
                observed_generation=int(c.get("observedGeneration") or 0),
            )
            for c in raw.get("conditions") or ()
            if isinstance(c, Mapping)
        )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attr in _STATUS_KEYS.items():
            value = getattr(self, attr)
            if value not in ("", 0) or key == "observedGeneration":
                out[key] = value
        if self.steps:
            out["steps"] = [dict(s) for s in self.steps]
        if self.attempts:
            out["attempts"] = [dict(a) for a in self.attempts]
        out["conditions"] = [c.to_dict() for c in self.conditions]
        return out

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def version(self) -> int:
        return int(self.status_version) if self.status_version.isdigit() else -1

    @property
    def finished(self) -> bool:
        cond = self.condition(SUCCEEDED)
        return cond is not None and cond.status in ("True", "False")


# ------------------------------------------------------------------------ actions


class ActionKind(enum.StrEnum):
    ADD_FINALIZER = "AddFinalizer"
    REMOVE_FINALIZER = "RemoveFinalizer"
    FIND_OWNED_TASK = "FindOwnedTask"
    CREATE_TASK = "CreateTask"
    RESOLVE_TASK_REF = "ResolveTaskRef"
    START = "StartTask"
    FIND_EXECUTIONS = "FindExecutions"
    STOP = "StopExecution"
    STOP_OWNED_EXECUTIONS = "StopOwnedExecutions"
    DELETE_TASK = "DeleteTask"
    # spec.ttlSecondsAfterFinished: delete the TaskRun itself (a Kubernetes call).
    DELETE_TASKRUN = "DeleteTaskRun"
    GET_ENVIRONMENT = "GetEnvironment"
    START_ENVIRONMENT = "StartEnvironment"
    CREATE_ENVIRONMENT = "CreateEnvironment"
    FIND_ENVIRONMENTS = "FindEnvironments"
    MARK_ENVIRONMENT_ACTIVE = "MarkEnvironmentActive"
    CLEAN_UP_ENVIRONMENT = "CleanUpEnvironment"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    task_id: str = ""
    execution_id: str = ""
    reason: str = ""
    environment_id: str = ""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the TaskRun."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: Status
    action: Action | None = None
    # Track the execution's remote status (None: stop tracking it).
    track: str | None = None
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()
    # An environment this run waits for: a change of it wakes the run before the requeue.
    wait_environment: str = ""


class Access(enum.StrEnum):
    """Whether this TaskRun's connection lets it go on."""

    READY = "Ready"  # its client can be used (and, before a start, the policy allows it)
    WAITING = "Waiting"  # missing or not ready yet: wait, never fail
    REFUSED = "Refused"  # the connection's policy refuses this run


@dataclass(frozen=True)
class ConnectionView:
    """What the edges found of the TaskRun's connection."""

    access: Access = Access.READY
    # Why it waits: the reason and message of Succeeded and RemoteReachable.
    reason: str = ""
    message: str = ""

    @property
    def failure(self) -> RemoteFailure:
        return RemoteFailure(FailureKind.UNAVAILABLE, self.message, reason=self.reason)


READY = ConnectionView()


@dataclass(frozen=True)
class Observation:
    """What the edges know beyond the object itself."""

    connection: ConnectionView = READY

    execution: RemoteExecution | None = None
    # The last failure talking to the remote for this TaskRun, while it lasts.
    remote_failure: RemoteFailure | None = None
    # Executions found for this TaskRun's task after an unknown start outcome.
    candidates: tuple[RemoteExecution, ...] | None = None
    # Execution ids already recorded by other TaskRuns: never adopt those.
    claimed_elsewhere: frozenset[str] = frozenset()
    # Other TaskRuns' StartTask calls of this TaskRun's task not answered yet: an
    # execution found now may be one of theirs.
    starts_in_flight: int = 0
    # The subject id the Ona API records as creator of what this operator starts.
    own_principal: str = ""
    # Outcomes of deletion-time clean-up already done in this pass.
    stopped: bool = False
    task_deleted: bool = False
    # Whether the owned task was looked up and found missing.
    owned_task_missing: bool = False
    # The run's environment as read in this pass.
    environment: environment_rules.RemoteEnvironment | None = None
    # Environments found by name after a creation whose outcome is unknown.
    environment_candidates: tuple[environment_rules.RemoteEnvironment, ...] | None = None
    environment_cleaned: bool = False
    # Whether GetEnvironment was tried in this pass (a refused read is not repeated in it).
    environment_looked: bool = False


@dataclass(frozen=True)
class Settings:
    # How long after a start with an unknown outcome to wait before looking for the
    # execution: longer than the StartTask timeout, so a request still in flight at
    # the server has landed.
    start_settle: timedelta = timedelta(seconds=15)
    # Tolerated clock difference between the operator and the Ona API.
    clock_skew: timedelta = timedelta(seconds=5)
    # How long an ambiguous start may wait to learn the operator's principal.
    principal_wait: timedelta = timedelta(seconds=60)
    # How often a running TaskRun without news is looked at again.
    resync_seconds: float = 60.0
    # How long a stop may go untaken (the execution still running) before it is asked
    # again: the operator may have died between writing the stop and calling
    # StopTaskExecution, which changes nothing when repeated.
    stop_resend: timedelta = timedelta(seconds=60)
    # How often a TaskRun waiting for its connection looks again (a connection that
    # becomes ready wakes its TaskRuns at once; this is the safety net).
    connection_wait: float = 30.0
    # spec.retries: the first back-off between attempts; it doubles, up to 5 minutes.
    retry_backoff_base: float = 10.0
    # How often a run waiting for its environment looks at it again.
    environment_poll: float = 5.0
    # How long a run waits for its environment to be running before it fails.
    environment_timeout: timedelta = timedelta(minutes=10)
    # How often a running execution's environment is signalled active (keepAlive) and
    # looked at: safely below the shortest idle timeout (30 minutes).
    keepalive: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class TaskRun:
    """What the core needs of a TaskRun object."""

    uid: str
    generation: int
    spec: Spec | InvalidSpec
    status: Status
    deleting: bool = False
    has_finalizer: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------- deciding


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _set_condition(
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


def _conditions(
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
    conds = _set_condition(
        status.conditions,
        Condition(SUCCEEDED, s_status, s_reason, s_message, observed_generation=generation),
        now,
    )
    conds = _set_condition(
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
    conds = _set_condition(
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
    conds = _set_condition(conds, reachable, now)
    return replace(status, conditions=conds, observed_generation=generation)


def _finish(
    run: TaskRun, status: Status, now: datetime, reason: str, message: str, *, ok: bool
) -> Status:
    """Conditions for a run that is over. Stalled when it ended other than asked."""
    spec = run.spec
    as_asked = ok or (reason == "Stopped" and isinstance(spec, Spec) and spec.desired_stopped)
    stalled = None if as_asked else ("True", reason, message)
    return _conditions(
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


def decide(run: TaskRun, obs: Observation, now: datetime, cfg: Settings = Settings()) -> Decision:
    """The one decision: new status, and the next action, for a TaskRun."""
    status = run.status
    if run.deleting:
        return _decide_deletion(run, obs)
    if not run.has_finalizer:
        # Before any remote side effect, so a delete can always clean up.
        return Decision(status=status, action=Action(ActionKind.ADD_FINALIZER))
    if isinstance(run.spec, InvalidSpec):
        if status.finished:
            return Decision(status=replace(status, observed_generation=run.generation))
        new = _finish(run, status, now, "InvalidSpec", str(run.spec), ok=False)
        return Decision(new, events=(Event("Warning", "InvalidSpec", str(run.spec)),))
    spec = run.spec

    refused = obs.connection.access is Access.REFUSED
    if status.finished and spec.environment is not None and not refused:
        cleanup = environment_rules.after_finish(run, spec, obs)
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
            _finish(run, new, now, "Stopped", msg, ok=False),
            events=(Event("Normal", "Stopped", msg),),
        )

    claimed = bool(status.task_execution_id or status.start_requested_at)
    view = obs.connection
    if view.access is not Access.READY and not claimed:
        if view.access is Access.REFUSED:
            # Before any Ona call that could create or start something.
            return Decision(
                _finish(run, status, now, "NotPermitted", view.message, ok=False),
                events=(Event("Warning", "NotPermitted", view.message),),
            )
        return Decision(
            _pending(run, status, now, view.reason, view.message, view.failure),
            requeue_after=cfg.connection_wait,
        )
    if view.access is Access.REFUSED:
        # Claimed or started, and the connection no longer serves the run (its namespace
        # or policy changed): nothing more is done in Ona for it, not even a stop.
        msg = f"{view.message}; {_left_behind(run, spec) or 'nothing was left in Ona'}"
        return Decision(
            _finish(run, status, now, "NotPermitted", msg, ok=False),
            events=(Event("Warning", "NotPermitted", msg),),
        )
    if view.access is Access.WAITING:
        # Started, but its connection is gone: keep the last status and say why.
        return Decision(_unfollowable(run, status, now, view), requeue_after=cfg.connection_wait)

    def rest(checked: TaskRun) -> Decision:
        return _decide_run(checked, spec, obs, now, cfg)

    # Every run goes through its environment's handling: spec.environment, or the defaults,
    # which cost no call while the environment runs.
    return environment_rules.decide(run, spec, environment_rules.of(spec), obs, now, cfg, rest)


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
        return _decide_task(run, spec, obs, now)

    if not status.task_execution_id:
        return _decide_start(run, spec, obs, now, cfg)

    return _decide_running(run, spec, obs, now, cfg)


def _pending(
    run: TaskRun,
    status: Status,
    now: datetime,
    reason: str,
    message: str,
    remote: RemoteFailure | None = None,
) -> Status:
    return _conditions(
        status, run.generation, now, succeeded=("Unknown", reason, message), remote=remote
    )


def _backoff(obs: Observation, default: float = 5.0) -> float:
    failure = obs.remote_failure
    return backoff.after(failure.retry_after if failure is not None else None, default)


def _unfollowable(run: TaskRun, status: Status, now: datetime, view: ConnectionView) -> Status:
    """A started run whose connection cannot be used: Succeeded and Stalled stay as they
    were; RemoteReachable says why the execution cannot be followed."""
    succeeded = status.condition(SUCCEEDED)
    stalled = status.condition(STALLED)
    return _conditions(
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


def _decide_task(run: TaskRun, spec: Spec, obs: Observation, now: datetime) -> Decision:
    status = run.status
    failure = obs.remote_failure if obs.remote_failure and obs.remote_failure.transient else None
    if spec.task_ref is not None:
        new = _pending(
            run, status, now, "ResolvingTask", "looking up the task by reference", failure
        )
        return Decision(
            new,
            action=Action(ActionKind.RESOLVE_TASK_REF),
            requeue_after=_backoff(obs) if failure else None,
        )
    new = _pending(run, status, now, "CreatingTask", "creating the Ona task", failure)
    kind = ActionKind.CREATE_TASK if obs.owned_task_missing else ActionKind.FIND_OWNED_TASK
    return Decision(new, action=Action(kind), requeue_after=_backoff(obs) if failure else None)


def _decide_start(
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
        new = _pending(run, new, now, "Starting", "starting the task execution", transient)
        return Decision(new, action=Action(ActionKind.START, task_id=status.task_id))

    # A start was under way and no execution id was recorded: the outcome is unknown, and
    # exactly_once resolves it. A person may name the execution to adopt; the name is a
    # request, honoured only for an execution the run's own look finds (_found_executions).
    if run.annotations.get(ALLOW_RESTART_ANNOTATION, "").lower() == "true" and _stalled(status):
        new = replace(status, start_requested_at="")
        return Decision(_pending(run, new, now, "Starting", "a new start was allowed"))
    requested = parse_time(status.start_requested_at) or now
    settle_at = exactly_once.settle_at(requested, cfg.start_settle)
    if now >= settle_at and _stalled(status) and spec.desired_stopped:
        return _stop_unresolved(run, spec, obs, now)
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
        return Decision(_observe(status, run.generation))  # only the generation is noted
    if outcome.step is step.ADOPT and outcome.chosen is not None:
        chosen = outcome.chosen
        new = apply_execution(replace(status, task_execution_id=chosen.id), chosen)
        return Decision(
            _pending(run, new, now, "Adopted", outcome.message), events=events, track=chosen.id
        )
    if outcome.step is step.CREATE_AGAIN:
        # The API confirms no execution exists: starting again cannot duplicate one.
        new = replace(status, start_requested_at="")
        return Decision(_pending(run, new, now, "Starting", outcome.message), events=events)
    if outcome.step is step.STALL:
        return Decision(_stall_start(run, status, now, outcome.message), events=events)
    look = Action(ActionKind.FIND_EXECUTIONS, task_id=status.task_id)
    return Decision(
        _pending(
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


def _stop_unresolved(run: TaskRun, spec: Spec, obs: Observation, now: datetime) -> Decision:
    """The user asked to stop a run whose start could not be resolved."""
    status = run.status
    if spec.task is not None and not obs.stopped:
        # Every execution of an owned task is this TaskRun's: stop them all.
        return Decision(
            _observe(status, run.generation),
            action=Action(ActionKind.STOP_OWNED_EXECUTIONS, task_id=status.task_id),
        )
    msg = "stopped as spec.desiredPhase asked before its start was resolved"
    if spec.task is None:
        msg += "; executions of the referenced task listed earlier were left alone"
    new = replace(status, phase=Phase.STOPPED.value, start_requested_at="")
    return Decision(
        _finish(run, new, now, "Stopped", msg, ok=False),
        events=(Event("Normal", "Stopped", msg),),
    )


def stalled_message(status: Status) -> str | None:
    """The Stalled message while the run waits for a person; None when it does not."""
    cond = status.condition(STALLED)
    return cond.message if cond is not None and cond.status == "True" else None


def _observe(status: Status, generation: int) -> Status:
    conditions = tuple(replace(c, observed_generation=generation) for c in status.conditions)
    return replace(status, observed_generation=generation, conditions=conditions)


def _stalled(status: Status) -> bool:
    cond = status.condition(STALLED)
    return cond is not None and cond.status == "True"


def _stall_start(run: TaskRun, status: Status, now: datetime, msg: str) -> Status:
    return _conditions(
        status,
        run.generation,
        now,
        succeeded=("Unknown", "StartOutcomeUnknown", msg),
        stalled=("True", "StartOutcomeUnknown", msg),
    )


def _decide_running(
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
            new = _finish(run, status, now, "Succeeded", "the task execution succeeded", ok=True)
            events.append(Event("Normal", "Succeeded", f"execution {exec_id} succeeded"))
        elif phase is Phase.FAILED:
            again = retry.retry_after_failure(run, spec, status, now, cfg)
            if again is not None:
                return again
            msg = retry.failed_message(spec, status)
            new = _finish(run, status, now, "Failed", msg, ok=False)
            events.append(Event("Warning", "Failed", f"execution {exec_id} failed: {msg}"))
        elif status.stop_reason == "TimedOut":
            msg = "the execution ran longer than spec.timeout and was stopped"
            new = _finish(run, status, now, "TimedOut", msg, ok=False)
            events.append(Event("Warning", "TimedOut", f"execution {exec_id}: {msg}"))
        else:
            msg = (
                "stopped as spec.desiredPhase asked"
                if spec.desired_stopped
                else "the execution was stopped outside this TaskRun"
            )
            new = _finish(run, status, now, "Stopped", msg, ok=False)
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
        new = _conditions(
            status,
            run.generation,
            now,
            succeeded=("Unknown", "StopRefused", refused.message),
            stalled=("True", refused.reason, refused.message),
            remote=failure,
        )
    else:
        new = _pending(run, status, now, label, message, failure)

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
        requeue = min(requeue, _backoff(obs, 10.0))
    return Decision(new, track=exec_id, requeue_after=requeue)


def _decide_deletion(run: TaskRun, obs: Observation) -> Decision:
    status = run.status
    remove = Decision(status=status, action=Action(ActionKind.REMOVE_FINALIZER), track=None)
    if not run.has_finalizer:
        return Decision(status=status, track=None)
    spec = run.spec
    if not isinstance(spec, Spec) or spec.orphan_on_delete:
        return remove
    cleanup = _deletion_cleanup(run, spec, obs) or environment_rules.on_delete(run, spec, obs)
    if cleanup is None:
        return remove
    if obs.connection.access is not Access.READY:
        # Deletion never hangs on a connection that is gone or no longer serves the run:
        # say what was left behind.
        msg = f"{_left_behind(run, spec)} on delete: {obs.connection.message}"
        return replace(remove, events=(Event("Warning", "CleanupSkipped", msg),))
    return Decision(status, action=cleanup)


def _left_behind(run: TaskRun, spec: Spec) -> str:
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
    gone = (environment_rules.DELETED, environment_rules.DELETING)
    if cleanup is not None and cleanup is not environment_rules.Cleanup.KEEP:
        made = status.environment_id or (
            "an environment its unresolved creation may have made"
            if status.environment_requested_at
            else ""
        )
        if made and status.environment_phase not in gone:
            verb = "deleted" if cleanup is environment_rules.Cleanup.DELETE else "stopped"
            parts.append(f"environment {made} was not {verb}")
    return "; ".join(parts)


def _deletion_cleanup(run: TaskRun, spec: Spec, obs: Observation) -> Action | None:
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


# ------------------------------------------------------------------ action results


@dataclass(frozen=True)
class Result:
    """The outcome of an action, folded back into the status by `apply_result`."""

    task_id: str = ""
    execution: RemoteExecution | None = None
    candidates: tuple[RemoteExecution, ...] | None = None
    failure: RemoteFailure | None = None
    missing: bool = False
    environment: environment_rules.RemoteEnvironment | None = None
    environments: tuple[environment_rules.RemoteEnvironment, ...] | None = None


# Who may call is the same for every call; what was not found or invalid is the call's.
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


def apply_result(
    run: TaskRun, action: Action, result: Result, obs: Observation, now: datetime
) -> tuple[TaskRun, Observation, tuple[Event, ...]]:
    """Fold an action's outcome into the TaskRun and the observation."""
    if action.kind in environment_rules.ACTIONS:
        return environment_rules.apply_result(run, action, result, obs, now)
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
        return environment_rules.start_refused(run, failure, obs, now)
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
            status = _pending(run, status, now, "StartOutcomeUnknown", msg)
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
            status = _finish(run, status, now, terminal, msg, ok=False)
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
            status = _conditions(
                status,
                run.generation,
                now,
                succeeded=("Unknown", "StopRefused", msg),
                stalled=("True", failure.kind.value, msg),
            )
            events.append(Event("Warning", "StopRefused", msg))
        elif kind is ActionKind.FIND_EXECUTIONS:
            msg = f"cannot look for the execution of an unknown start: {failure.message}"
            status = _pending(run, status, now, "StartOutcomeUnknown", msg, failure)
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
            status = _pending(run, status, now, "Waiting", failure.message, failure)
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
                status = _finish(run, status, now, "TaskNotFound", msg, ok=False)
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


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status `old` into `new` (None deletes a key)."""
    patch: dict[str, Any] = {key: value for key, value in new.items() if old.get(key) != value}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


# The rules of spec.retries and spec.ttlSecondsAfterFinished build on this module's types.
from . import retry  # noqa: E402
