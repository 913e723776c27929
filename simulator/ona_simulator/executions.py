"""One task execution: its plan, its state machine and the snapshots of every status it had.

An execution never runs code of its own. It knows when its next transition is due
(`due()`), and the store's single ticker calls `advance()` once that time has come. Every
status change is a commit: `statusVersion` grows by one and the full execution, as the
wire shows it, is kept so an older status can be replayed later.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ona_simulator.commands import RunPlan
from ona_simulator.logs import ExecutionLog
from ona_simulator.wire import (
    FAILED,
    FINAL_PHASES,
    JSON,
    PENDING,
    PRINCIPAL_USER,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    ConnectError,
    new_id,
    rfc3339,
)

# Versions start just below a digit-count boundary so an ordinary run goes "8", "9", "10":
# a client comparing statusVersion as text instead of as an integer goes wrong at once.
FIRST_STATUS_VERSION: Final = 8
STARTED_BY: Final = "manual"


@dataclass
class StepState:
    phase: str
    failure_message: str = ""
    output: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedStep:
    id: str
    label: str
    depends_on: tuple[str, ...]


class Execution:
    """A task execution and its deterministic lifecycle."""

    def __init__(
        self,
        *,
        seq: int,
        task_id: str,
        task_reference: str,
        task_name: str,
        task_spec: JSON,
        environment_id: str,
        creator_id: str,
        plan: RunPlan,
        log_base_url: str,
        now_mono: float,
        now_wall: datetime,
    ) -> None:
        self.id = new_id()
        self.seq = seq
        self.task_id = task_id
        self.task_reference = task_reference
        self.environment_id = environment_id
        self.creator_id = creator_id
        self.plan = plan
        self.created_at = now_wall
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.desired_phase = RUNNING
        self.phase = PENDING
        self.failure_message = ""
        self.log_url = ""
        self._log_base_url = log_base_url
        self.groups = self._plan_groups(plan, task_name)
        self.steps: dict[str, StepState] = {}
        self.version = FIRST_STATUS_VERSION - 1
        self.history: dict[int, JSON] = {}
        self.replayed_version: int | None = None
        self.created_mono = now_mono
        self.running_since: float | None = None
        self.next_group = 0
        self.automatic = True
        self.stop_at: float | None = None
        self.log = ExecutionLog()
        self._plan_json = self._build_plan_json(task_id, task_spec)
        self._commit(now_wall, "created, pending")

    @staticmethod
    def _plan_groups(plan: RunPlan, task_name: str) -> list[list[PlannedStep]]:
        groups: list[list[PlannedStep]] = []
        previous: tuple[str, ...] = ()
        for group_index in range(plan.groups):
            group = []
            for step_index in range(plan.parallel):
                label = task_name or "task"
                if plan.groups > 1:
                    label += f" (step {group_index + 1}/{plan.groups})"
                if plan.parallel > 1:
                    label += f" [{step_index + 1}/{plan.parallel}]"
                group.append(PlannedStep(id=new_id(), label=label, depends_on=previous))
            previous = tuple(step.id for step in group)
            groups.append(group)
        return groups

    def _build_plan_json(self, task_id: str, task_spec: JSON) -> list[JSON]:
        plan = []
        for group in self.groups:
            steps = []
            for step in group:
                item: JSON = {"id": step.id, "label": step.label}
                if step.depends_on:
                    item["dependsOn"] = list(step.depends_on)
                item["task"] = {"id": task_id, "spec": task_spec}
                steps.append(item)
            plan.append({"steps": steps})
        return plan

    # --- reading -------------------------------------------------------------------------

    @property
    def is_final(self) -> bool:
        return self.phase in FINAL_PHASES

    def view(self) -> JSON:
        """What clients read: the replayed snapshot if one is set, else the current one."""
        if self.replayed_version is not None:
            return self.history[self.replayed_version]
        return self.history[self.version]

    def served_phase(self) -> str:
        phase: str = self.view()["status"]["phase"]
        return phase

    def to_json(self) -> JSON:
        metadata: JSON = {
            "createdAt": rfc3339(self.created_at),
            "creator": {"id": self.creator_id, "principal": PRINCIPAL_USER},
            "environmentId": self.environment_id,
            "startedBy": STARTED_BY,
            "taskId": self.task_id,
        }
        if self.started_at is not None:
            metadata["startedAt"] = rfc3339(self.started_at)
        if self.completed_at is not None:
            metadata["completedAt"] = rfc3339(self.completed_at)
        status: JSON = {"phase": self.phase, "statusVersion": str(self.version)}
        if self.steps:
            status["steps"] = [_step_json(step_id, state) for step_id, state in self.steps.items()]
        if self.failure_message:
            status["failureMessage"] = self.failure_message
        if self.log_url:
            status["logUrl"] = self.log_url
        return {
            "id": self.id,
            "metadata": metadata,
            "spec": {"desiredPhase": self.desired_phase, "plan": self._plan_json},
            "status": status,
        }

    def debug_json(self) -> JSON:
        """The control API's view: the wire form plus what the simulator knows besides."""
        return {
            "execution": self.to_json(),
            "served": self.view(),
            "taskReference": self.task_reference,
            "statusVersions": [str(version) for version in self.history],
            "replayedVersion": None
            if self.replayed_version is None
            else str(self.replayed_version),
            "automatic": self.automatic,
            "stopRequested": self.desired_phase == STOPPED,
            "plan": {
                "pendingSeconds": _finite_or_none(self.plan.pending_s),
                "durationSeconds": _finite_or_none(self.plan.duration_s),
                "steps": self.plan.groups,
                "parallel": self.plan.parallel,
                "failureMessage": self.plan.failure_message,
                "outputs": self.plan.outputs,
                "stopDelaySeconds": self.plan.stop_delay_s,
            },
        }

    # --- scheduling ----------------------------------------------------------------------

    def due(self) -> float | None:
        """Monotonic time of the next automatic transition, or None if nothing is planned."""
        if self.is_final:
            return None
        candidates: list[float] = []
        if self.stop_at is not None:
            candidates.append(self.stop_at)
        if self.automatic:
            if self.phase == PENDING:
                candidates.append(self.created_mono + self.plan.pending_s)
            elif self.phase == RUNNING and self.running_since is not None:
                group_end = self.running_since + (self.next_group + 1) * (
                    self.plan.group_duration_s
                )
                candidates.append(group_end)
        finite = [moment for moment in candidates if not math.isinf(moment)]
        return min(finite) if finite else None

    def advance(self, now_mono: float, now_wall: datetime) -> int:
        """Apply every transition due by `now_mono`; return how many status changes happened."""
        commits = 0
        while True:
            due = self.due()
            if due is None or due > now_mono:
                return commits
            if self.stop_at is not None and due >= self.stop_at:
                self._finish(STOPPED, now_wall, "stopped on request")
                commits += 1
            elif self.phase == PENDING:
                self._start_running(due, now_wall)
                commits += 1
            else:
                commits += self._complete_group(now_wall)

    def _start_running(self, since: float, now_wall: datetime) -> None:
        self.phase = RUNNING
        self.running_since = since
        self.started_at = now_wall
        self.log_url = f"{self._log_base_url}/{self.id}"
        self._start_group(self.next_group)
        self._commit(now_wall, "running")

    def _start_group(self, index: int) -> None:
        if index < len(self.groups):
            for step in self.groups[index]:
                self.steps.setdefault(step.id, StepState(phase=RUNNING))

    def _complete_group(self, now_wall: datetime) -> int:
        index = self.next_group
        group = self.groups[index]
        if self.plan.fails and index == self.plan.fail_group:
            failing, *others = group
            for step in others:
                self.steps[step.id].phase = SUCCEEDED
            state = self.steps[failing.id]
            state.phase = FAILED
            state.failure_message = self.plan.failure_message
            state.output.update(self.plan.outputs)
            # The real service reports the failure message before the aggregate phase turns
            # FAILED ("non-empty means failed or about to"): two commits, two versions.
            self.failure_message = self.plan.failure_message
            self._commit(now_wall, f"step {failing.label!r} failed")
            self._finish(FAILED, now_wall, "failed")
            return 2
        for step in group:
            self.steps[step.id].phase = SUCCEEDED
        if index == self.plan.last_group:
            self.steps[group[-1].id].output.update(self.plan.outputs)
            self._finish(SUCCEEDED, now_wall, "succeeded")
            return 1
        self.next_group += 1
        self._start_group(self.next_group)
        self._commit(now_wall, f"step group {index + 1} succeeded")
        return 1

    def _finish(self, phase: str, now_wall: datetime, note: str) -> None:
        for state in self.steps.values():
            if state.phase in (PENDING, RUNNING):
                state.phase = phase
                if phase == FAILED and not state.failure_message:
                    state.failure_message = self.failure_message
        self.phase = phase
        self.completed_at = now_wall
        self.stop_at = None
        self._commit(now_wall, note)

    def _commit(self, now_wall: datetime, note: str) -> None:
        self.version += 1
        self.replayed_version = None
        self.history[self.version] = self.to_json()
        self.log.commit(self, time.monotonic())

    # --- requests from clients and the control API ----------------------------------------

    def request_stop(self, now_mono: float) -> bool:
        """StopTaskExecution: ask for STOPPED; True if the spec changed (not already ended)."""
        if self.is_final or self.desired_phase == STOPPED:
            return False
        self.desired_phase = STOPPED
        self.stop_at = now_mono + self.plan.stop_delay_s
        # A spec change is not a status change: the current snapshot is refreshed in place.
        self.history[self.version] = self.to_json()
        return True

    def force_phase(self, phase: str, failure_message: str, now_wall: datetime) -> None:
        """Set `phase` now; from then on only the control API or a stop move the execution."""
        self.automatic = False
        if failure_message:
            self.failure_message = failure_message
        if phase in FINAL_PHASES:
            if phase == FAILED and not self.failure_message:
                self.failure_message = "task failed"
            if phase == FAILED:
                for state in self.steps.values():
                    if state.phase in (PENDING, RUNNING):
                        state.failure_message = self.failure_message
            self._finish(phase, now_wall, "set by the control API")
            return
        self.completed_at = None
        if phase == RUNNING:
            if self.started_at is None:
                self.started_at = now_wall
            self.log_url = self.log_url or f"{self._log_base_url}/{self.id}"
            if not self.steps:
                self._start_group(self.next_group)
        self.phase = phase
        self._commit(now_wall, "set by the control API")

    def replay(self, version: int) -> None:
        if version not in self.history:
            known = ", ".join(str(v) for v in self.history)
            raise ConnectError(
                "not_found",
                f"execution {self.id} has no status version {version} (known: {known})",
            )
        self.replayed_version = None if version == self.version else version

    def clear_replay(self) -> None:
        self.replayed_version = None


def _step_json(step_id: str, state: StepState) -> JSON:
    item: dict[str, Any] = {"id": step_id, "phase": state.phase}
    if state.failure_message:
        item["failureMessage"] = state.failure_message
    if state.output:
        item["output"] = dict(state.output)
    return item


def _finite_or_none(value: float) -> float | None:
    return None if math.isinf(value) else value
