"""Environments and projects: phases, delays, the idle timeout and activity signals.

An environment moves through `ENVIRONMENT_PHASE_*` on a schedule of its own: CREATING and
STARTING take the project's delays, RUNNING lasts until it is stopped, deleted, or idle for
its idle timeout (only `MarkEnvironmentActive` and a start count as activity, never a task
execution running in it), STOPPING and DELETING take their own delays. Every phase change
is one `statusVersion` and one watch event (`RESOURCE_TYPE_ENVIRONMENT`). One ticker task
drives all environments from a heap of due times, as the store does for executions.

An environment the simulator has never been told about but a task names is "implicit":
RUNNING, with no idle timeout, so that tests written before environments existed behave
as they did.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from ona_simulator.events import EventBus
from ona_simulator.ticker import Ticker
from ona_simulator.wire import (
    JSON,
    OP_CREATE,
    OP_DELETE,
    OP_UPDATE,
    OP_UPDATE_STATUS,
    PRINCIPAL_USER,
    ConnectError,
    invalid,
    rfc3339,
    utcnow,
)

PREFIX: Final = "ENVIRONMENT_PHASE_"
CREATING: Final = "ENVIRONMENT_PHASE_CREATING"
STARTING: Final = "ENVIRONMENT_PHASE_STARTING"
RUNNING: Final = "ENVIRONMENT_PHASE_RUNNING"
UPDATING: Final = "ENVIRONMENT_PHASE_UPDATING"
STOPPING: Final = "ENVIRONMENT_PHASE_STOPPING"
STOPPED: Final = "ENVIRONMENT_PHASE_STOPPED"
DELETING: Final = "ENVIRONMENT_PHASE_DELETING"
DELETED: Final = "ENVIRONMENT_PHASE_DELETED"
# Declaration order is the enum number (protobuf-JSON accepts numbers on input).
PHASES: Final = (
    "ENVIRONMENT_PHASE_UNSPECIFIED",
    CREATING,
    STARTING,
    RUNNING,
    UPDATING,
    STOPPING,
    STOPPED,
    DELETING,
    DELETED,
)
# Phases in which a task may be started: UPDATING is still running.
UP: Final = frozenset({RUNNING, UPDATING})
RESOURCE_TYPE_ENVIRONMENT: Final = "RESOURCE_TYPE_ENVIRONMENT"
DEFAULT_IDLE_TIMEOUT_S: Final = 1800.0


def parse_env_phase(value: object, where: str) -> str:
    """An environment phase by full name, short name or enum number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(PHASES):
        return PHASES[value]
    if isinstance(value, str):
        name = value if value.startswith(PREFIX) else PREFIX + value.upper()
        if name in PHASES[1:]:
            return name
    raise invalid(f"{where}: {value!r} is not an environment phase")


def parse_seconds(value: object, where: str) -> float:
    """A duration as seconds (a number) or text such as `3s`, `500ms`, `2m`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        units = (("ms", 0.001), ("s", 1.0), ("m", 60.0))
        factor = 1.0
        for suffix, unit in units:
            if text.endswith(suffix):
                text, factor = text[: -len(suffix)], unit
                break
        try:
            seconds = float(text) * factor
        except ValueError:
            raise invalid(f"{where}: {value!r} is not a duration such as 3s or 500ms") from None
    else:
        raise invalid(f"{where}: expected a duration, got {value!r}")
    if seconds < 0 or seconds != seconds:
        raise invalid(f"{where}: {value!r} must not be negative")
    return seconds


@dataclass
class Timing:
    """How long an environment takes for each move, and when it idles out."""

    create_delay: float = 1.0
    start_delay: float = 1.0
    stop_delay: float = 0.3
    delete_delay: float = 0.3
    # None: never stops for idleness.
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT_S
    # Non-empty: every start of it fails with this message (it ends STOPPED).
    fail_start: str = ""

    @classmethod
    def from_json(cls, body: JSON, base: Timing | None = None) -> Timing:
        timing = Timing(**vars(base)) if base is not None else Timing()
        for key, attr in (
            ("createDelay", "create_delay"),
            ("startDelay", "start_delay"),
            ("stopDelay", "stop_delay"),
            ("deleteDelay", "delete_delay"),
        ):
            if body.get(key) is not None:
                setattr(timing, attr, parse_seconds(body[key], key))
        if "idleTimeout" in body:
            raw = body["idleTimeout"]
            timing.idle_timeout = (
                None if raw in (None, "", "inf") else parse_seconds(raw, "idleTimeout")
            )
            if timing.idle_timeout is not None and timing.idle_timeout <= 0:
                raise invalid("idleTimeout: must be longer than zero")
        if body.get("failOnStart") is not None:
            if not isinstance(body["failOnStart"], str):
                raise invalid("failOnStart: expected a string")
            timing.fail_start = body["failOnStart"]
        return timing

    def to_json(self) -> JSON:
        return {
            "createDelay": self.create_delay,
            "startDelay": self.start_delay,
            "stopDelay": self.stop_delay,
            "deleteDelay": self.delete_delay,
            "idleTimeout": self.idle_timeout,
            "failOnStart": self.fail_start,
        }


@dataclass
class Project:
    id: str
    name: str
    timing: Timing

    def to_json(self) -> JSON:
        return {"id": self.id, "name": self.name, **self.timing.to_json()}


@dataclass
class Environment:
    id: str
    seq: int
    name: str
    project_id: str
    creator_id: str
    created_at: datetime
    timing: Timing
    spec: JSON = field(default_factory=dict)
    phase: str = CREATING
    desired_phase: str = RUNNING
    failure_message: list[str] = field(default_factory=list)
    version: int = 1
    implicit: bool = False
    last_activity: float = 0.0  # monotonic
    last_activity_wall: datetime | None = None
    last_started_at: datetime | None = None
    activity_signals: int = 0
    stopped_for_idleness: int = 0
    # The next scheduled phase and when (monotonic); None: nothing scheduled.
    next_phase: str | None = None
    next_at: float | None = None
    start_after_stop: bool = False
    history: list[str] = field(default_factory=list)

    def view(self) -> JSON:
        metadata: JSON = {
            "createdAt": rfc3339(self.created_at),
            "creator": {"id": self.creator_id, "principal": PRINCIPAL_USER},
        }
        if self.name:
            metadata["name"] = self.name
        if self.project_id:
            metadata["projectId"] = self.project_id
        if self.last_started_at is not None:
            metadata["lastStartedAt"] = rfc3339(self.last_started_at)
        status: JSON = {"phase": self.phase, "statusVersion": str(self.version)}
        if self.failure_message:
            status["failureMessage"] = list(self.failure_message)
        if self.last_activity_wall is not None:
            status["activitySignal"] = {
                "source": "simulator",
                "timestamp": rfc3339(self.last_activity_wall),
            }
        return {
            "id": self.id,
            "metadata": metadata,
            "spec": {**self.spec, "desiredPhase": self.desired_phase},
            "status": status,
        }

    def debug_json(self) -> JSON:
        return {
            "environment": self.view(),
            "implicit": self.implicit,
            "activitySignals": self.activity_signals,
            "stoppedForIdleness": self.stopped_for_idleness,
            "timing": self.timing.to_json(),
            "history": list(self.history),
        }

    def due(self) -> float | None:
        """When this environment next moves on its own (a scheduled phase or idleness)."""
        if self.next_at is not None:
            return self.next_at
        if self.phase in UP and self.timing.idle_timeout is not None:
            return self.last_activity + self.timing.idle_timeout
        return None


class Environments:
    """All environments and projects, and the ticker that moves environments on."""

    def __init__(
        self,
        events: EventBus,
        seq: Callable[[], int] | None = None,
        on_stopping: Callable[[str], None] | None = None,
    ) -> None:
        self.events = events
        counter = itertools.count(1)
        self._seq = seq or (lambda: next(counter))
        self._on_stopping = on_stopping
        self.environments: dict[str, Environment] = {}
        self.projects: dict[str, Project] = {}
        self._order: list[Environment] = []
        self._ticker = Ticker(self._advance)
        self.default_timing = Timing()

    # --- ticker --------------------------------------------------------------------------

    def run(self) -> None:
        self._ticker.start()

    async def halt(self) -> None:
        await self._ticker.stop()

    def _schedule(self, env: Environment) -> None:
        self._ticker.schedule(env.due(), env.seq, env.id)

    def tick(self, now: float) -> None:
        self._ticker.tick(now)

    def _advance(self, env_id: str, due: float, now: float) -> None:
        env = self.environments.get(env_id)
        if env is None or env.due() != due:
            return  # stale: the schedule moved
        if env.next_phase is not None:
            phase, env.next_phase, env.next_at = env.next_phase, None, None
            self._arrive(env, phase, now)
        else:
            env.stopped_for_idleness += 1
            self._begin_stop(env, now, "idle timeout")
        self._schedule(env)

    # --- moves ---------------------------------------------------------------------------

    def _set_phase(self, env: Environment, phase: str, note: str) -> None:
        env.phase = phase
        env.version += 1
        env.history.append(f"{rfc3339(utcnow())} {phase.removeprefix(PREFIX)}: {note}")
        operation = OP_DELETE if phase == DELETED else OP_UPDATE_STATUS
        self._publish(env, operation)

    def _publish(self, env: Environment, operation: str) -> None:
        # Environment changes reach its own watchers and the organization scope.
        self.events.publish(env.id, operation, RESOURCE_TYPE_ENVIRONMENT, env.id)
        self.events.publish("", operation, RESOURCE_TYPE_ENVIRONMENT, env.id)

    def _arrive(self, env: Environment, phase: str, now: float) -> None:
        """A scheduled move has come due."""
        if phase == STARTING:
            self._set_phase(env, STARTING, "created")
            env.next_phase, env.next_at = RUNNING, now + env.timing.start_delay
        elif phase == RUNNING:
            if env.timing.fail_start:
                env.failure_message = [env.timing.fail_start]
                self._begin_stop(env, now, f"failed to start: {env.timing.fail_start}")
                return
            env.last_activity, env.last_activity_wall = now, utcnow()
            env.last_started_at = utcnow()
            self._set_phase(env, RUNNING, "started")
        elif phase == STOPPED:
            self._set_phase(env, STOPPED, "stopped")
            if env.start_after_stop:
                env.start_after_stop = False
                self._begin_start(env, now)
        elif phase == DELETED:
            self._set_phase(env, DELETED, "deleted")

    def _begin_start(self, env: Environment, now: float) -> None:
        env.failure_message = []
        env.desired_phase = RUNNING
        self._set_phase(env, STARTING, "start requested")
        env.next_phase, env.next_at = RUNNING, now + env.timing.start_delay

    def _begin_stop(self, env: Environment, now: float, note: str) -> None:
        env.desired_phase = STOPPED
        self._set_phase(env, STOPPING, note)
        env.next_phase, env.next_at = STOPPED, now + env.timing.stop_delay
        if self._on_stopping is not None:
            self._on_stopping(env.id)

    # --- the API's view ------------------------------------------------------------------

    def get(self, env_id: str) -> Environment:
        env = self.environments.get(env_id)
        if env is None:
            raise ConnectError("not_found", f"environment {env_id} not found")
        return env

    def add(
        self,
        *,
        env_id: str,
        name: str,
        project_id: str,
        creator_id: str,
        timing: Timing,
        spec: JSON | None = None,
        phase: str = CREATING,
        implicit: bool = False,
    ) -> Environment:
        if env_id in self.environments:
            raise ConnectError("already_exists", f"environment {env_id} already exists")
        now = time.monotonic()
        env = Environment(
            id=env_id,
            seq=self._seq(),
            name=name,
            project_id=project_id,
            creator_id=creator_id,
            created_at=utcnow(),
            timing=timing,
            spec=dict(spec or {}),
            phase=phase,
            implicit=implicit,
            last_activity=now,
            desired_phase=STOPPED if phase == STOPPED else RUNNING,
        )
        env.history.append(f"{rfc3339(env.created_at)} {phase.removeprefix(PREFIX)}: added")
        if phase == CREATING:
            env.next_phase, env.next_at = STARTING, now + timing.create_delay
        elif phase in UP:
            env.last_started_at, env.last_activity_wall = env.created_at, env.created_at
        self.environments[env.id] = env
        self._order.append(env)
        if not implicit:
            self._publish(env, OP_CREATE)
        self._schedule(env)
        return env

    def ensure_implicit(self, env_id: str, creator_id: str) -> None:
        """A task names an environment never seen: it exists, running, and never idles."""
        if env_id and env_id not in self.environments:
            timing = Timing(**vars(self.default_timing))
            timing.idle_timeout = None
            self.add(
                env_id=env_id,
                name="",
                project_id="",
                creator_id=creator_id,
                timing=timing,
                phase=RUNNING,
                implicit=True,
            )

    def require_up(self, env_id: str) -> None:
        """StartTask's check: a task starts only in a running environment."""
        env = self.environments.get(env_id)
        if env is None or env.phase in UP:
            return
        raise ConnectError(
            "failed_precondition",
            f"environment {env_id} is not running (phase {env.phase}); start it first",
        )

    def start_environment(self, env_id: str) -> None:
        env = self.get(env_id)
        now = time.monotonic()
        if env.phase in (DELETING, DELETED):
            raise ConnectError("failed_precondition", f"environment {env_id} is being deleted")
        if env.phase == STOPPED:
            self._begin_start(env, now)
        elif env.phase == STOPPING:
            env.start_after_stop = True
        elif env.phase in UP:
            # A start counts as activity.
            env.last_activity, env.last_activity_wall = now, utcnow()
        self._schedule(env)

    def stop_environment(self, env_id: str) -> None:
        env = self.get(env_id)
        env.start_after_stop = False
        if env.phase in (CREATING, STARTING, RUNNING, UPDATING):
            self._begin_stop(env, time.monotonic(), "stop requested")
            self._schedule(env)

    def delete_environment(self, env_id: str, force: bool) -> None:
        env = self.get(env_id)
        if env.phase in (DELETING, DELETED):
            return
        now = time.monotonic()
        if env.phase not in (STOPPED,) and self._on_stopping is not None:
            self._on_stopping(env.id)
        env.desired_phase = DELETED
        env.start_after_stop = False
        self._set_phase(env, DELETING, "force delete requested" if force else "delete requested")
        env.next_phase = DELETED
        env.next_at = now + (0.0 if force else env.timing.delete_delay)
        self._schedule(env)

    def mark_active(self, env_id: str) -> bool:
        """An activity signal: resets the idle timer of a running environment."""
        env = self.get(env_id)
        if env.phase in (DELETING, DELETED):
            raise ConnectError("failed_precondition", f"environment {env_id} is being deleted")
        if env.phase not in UP:
            return False
        env.activity_signals += 1
        env.last_activity, env.last_activity_wall = time.monotonic(), utcnow()
        self._schedule(env)
        return True

    def force_phase(self, env_id: str, phase: str, failure_message: str) -> Environment:
        """The control API: put an environment in a phase now (stopping stops executions)."""
        env = self.get(env_id)
        now = time.monotonic()
        env.next_phase, env.next_at = None, None
        if failure_message:
            env.failure_message = [failure_message]
        stops = phase in (STOPPING, STOPPED) and env.phase not in (STOPPING, STOPPED)
        if stops and self._on_stopping is not None:
            self._on_stopping(env.id)
        if phase in UP:
            env.last_activity, env.last_activity_wall = now, utcnow()
        env.desired_phase = {STOPPING: STOPPED, DELETING: DELETED}.get(phase, phase)
        self._set_phase(env, phase, "set by the control API")
        if phase == STOPPING:
            env.next_phase, env.next_at = STOPPED, now + env.timing.stop_delay
        self._schedule(env)
        return env

    def update_spec(self, env: Environment) -> None:
        self._publish(env, OP_UPDATE)

    def select(
        self,
        *,
        project_ids: Sequence[str],
        creator_ids: Sequence[str],
        phases: Sequence[str],
    ) -> list[Environment]:
        projects, creators, wanted = set(project_ids), set(creator_ids), set(phases)

        def keep(env: Environment) -> bool:
            if env.implicit:
                return False
            if wanted:
                if env.phase not in wanted:
                    return False
            elif env.phase == DELETED:
                return False  # deleted environments are listed only when asked for
            return (not projects or env.project_id in projects) and (
                not creators or env.creator_id in creators
            )

        return [env for env in self._order if keep(env)]

    def all(self) -> list[Environment]:
        return list(self._order)

    def reset(self) -> None:
        self.environments.clear()
        self.projects.clear()
        self._order.clear()
        self._ticker.clear()
