"""The words of a TaskRun: its spec, status, conditions, the remote execution and
environment as the rules see them, the actions the rules ask for and their results.

Types and constants only; every other module of the rules speaks in these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FINALIZER = "automation.ona.com/taskrun"


# A person resolves an ambiguous start with one of these annotations (see
# docs/taskruns.md, "When a start's outcome is unknown").
ADOPT_ANNOTATION = "automation.ona.com/adopt-execution"


ALLOW_RESTART_ANNOTATION = "automation.ona.com/allow-new-start"


# The start claim, written with the finalizer in one conditional metadata write before
# StartTask; status.startRequestedAt and status.startAttempts mirror it for users.
CLAIM_ANNOTATION = "automation.ona.com/start-requested-at"


ATTEMPTS_ANNOTATION = "automation.ona.com/start-attempts"


# The attempt (spec.retries) the start claim is for: a claim never carries over to the
# next attempt (see rules.retry).
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
    # spec.retries and spec.ttlSecondsAfterFinished (see rules.retry).
    retries: int = 0
    ttl_after_finished: timedelta | None = None
    # spec.environment; None: its defaults, at no call while the environment runs
    # (IMPLIED).
    environment: EnvironmentSpec | None = None
    # spec.suspend: accepted and checked, not started until it is false.
    suspend: bool = False

    @property
    def environment_id(self) -> str | None:
        if self.task is not None:
            return self.task.environment_id
        return self.task_ref.environment_id if self.task_ref else None


@dataclass(frozen=True)
class RemoteStep:
    id: str
    phase: str = ""
    label: str = ""
    failure_message: str = ""
    output: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteExecution:
    """What the rules need of an Ona task execution."""

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
    "queuedAt": "queued_at",
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
    # The end of the execution's log, written after the run ended (see rules.logtail).
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
    # When its connection's limits first held the run back (reason Queued); kept after
    # the start, so the wait in line can be told.
    queued_at: str = ""
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


class ActionKind(enum.StrEnum):
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
class Queued:
    """A run its connection's limits hold back: its place in line and why it waits."""

    position: int
    message: str


@dataclass(frozen=True)
class Observation:
    """What the edges know beyond the object itself."""

    connection: ConnectionView = READY
    # Held back by its connection's limits (rules.capacity); None: it may start.
    queued: Queued | None = None

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
    environment: RemoteEnvironment | None = None
    # Environments found by name after a creation whose outcome is unknown.
    environment_candidates: tuple[RemoteEnvironment, ...] | None = None
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
    # How often a queued run looks at its place again, should no freed slot wake it.
    queue_recheck: float = 30.0


@dataclass(frozen=True)
class TaskRun:
    """What the rules need of a TaskRun object."""

    uid: str
    generation: int
    spec: Spec | InvalidSpec
    status: Status
    deleting: bool = False
    has_finalizer: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Result:
    """The outcome of an action, folded back into the status by `apply_result`."""

    task_id: str = ""
    execution: RemoteExecution | None = None
    candidates: tuple[RemoteExecution, ...] | None = None
    failure: RemoteFailure | None = None
    missing: bool = False
    environment: RemoteEnvironment | None = None
    environments: tuple[RemoteEnvironment, ...] | None = None


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
UP_PHASES = frozenset({RUNNING, UPDATING})  # UPDATING is still running


GONE_PHASES = frozenset({DELETING, DELETED})


# An execution cannot be running in these; a phase this operator does not know is not
# taken for one of them.
DOWN_PHASES = frozenset({STOPPING, STOPPED, DELETING, DELETED})


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
        return self.phase in UP_PHASES and not self.failure_message


# The environment's actions: `results.apply_result` hands their outcomes to
# `environment.apply_result`, and the controller performs them in `environment_actions`.
ENVIRONMENT_ACTIONS = frozenset(
    {
        ActionKind.GET_ENVIRONMENT,
        ActionKind.START_ENVIRONMENT,
        ActionKind.CREATE_ENVIRONMENT,
        ActionKind.FIND_ENVIRONMENTS,
        ActionKind.MARK_ENVIRONMENT_ACTIVE,
        ActionKind.CLEAN_UP_ENVIRONMENT,
    }
)
