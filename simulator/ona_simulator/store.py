"""Tasks and executions, their listing order, and the single ticker that moves executions on.

All state lives in one event loop, so no locks are needed. Executions are not driven by
one timer each: a heap keyed by each execution's next transition time feeds one ticker
task, which wakes when the earliest transition is due (or when an earlier one appears).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from ona_simulator.commands import RunPlan, parse_command
from ona_simulator.environments import Environments
from ona_simulator.events import EventBus
from ona_simulator.executions import Execution
from ona_simulator.ticker import Ticker
from ona_simulator.wire import (
    JSON,
    OP_CREATE,
    OP_DELETE,
    OP_UPDATE,
    OP_UPDATE_STATUS,
    PRINCIPAL_USER,
    RESOURCE_TYPE_TASK,
    RESOURCE_TYPE_TASK_EXECUTION,
    ConnectError,
    invalid,
    rfc3339,
    utcnow,
)

T = TypeVar("T", "Task", Execution)


@dataclass
class Task:
    id: str
    seq: int
    environment_id: str
    reference: str
    name: str
    description: str
    creator_id: str
    created_at: datetime
    depends_on: list[str]
    triggered_by: list[JSON]
    spec: JSON
    plan: RunPlan = field(default_factory=RunPlan)
    started: int = 0  # executions started so far (sim:fail_first counts them)

    def to_json(self) -> JSON:
        metadata: JSON = {
            "createdAt": rfc3339(self.created_at),
            "creator": {"id": self.creator_id, "principal": PRINCIPAL_USER},
        }
        for key, value in (
            ("reference", self.reference),
            ("name", self.name),
            ("description", self.description),
        ):
            if value:
                metadata[key] = value
        if self.triggered_by:
            metadata["triggeredBy"] = self.triggered_by
        task: JSON = {"id": self.id, "environmentId": self.environment_id}
        if self.depends_on:
            task["dependsOn"] = self.depends_on
        task["metadata"] = metadata
        task["spec"] = self.spec
        return task


@dataclass(frozen=True)
class Page:
    items: list[JSON]
    next_token: str


def encode_page_token(kind: str, after_seq: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{after_seq}".encode()).decode().rstrip("=")


def decode_page_token(kind: str, token: str) -> int:
    """The seq of the last item already returned; 0 for the first page."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
        token_kind, _, number = text.partition(":")
        if token_kind != kind or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid(f"pagination.token: {token!r} is not a page token of this list") from exc


class Store:
    def __init__(self, *, log_base_url: Callable[[], str]) -> None:
        self.events = EventBus()
        self._log_base_url = log_base_url
        self._seq = itertools.count(1)
        self.tasks: dict[str, Task] = {}
        self.executions: dict[str, Execution] = {}
        # Both lists stay sorted by seq (creation order): the stable order of every list call.
        self._task_order: list[Task] = []
        self._execution_order: list[Execution] = []
        self._ticker = Ticker(self._advance)
        self.transitions = 0
        self.environments = Environments(
            self.events, seq=lambda: next(self._seq), on_stopping=self._environment_stopping
        )

    # --- ticker --------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker.start()
        self.environments.run()

    async def stop(self) -> None:
        await self.environments.halt()
        await self._ticker.stop()

    def _schedule(self, execution: Execution) -> None:
        self._ticker.schedule(execution.due(), execution.seq, execution.id)

    def tick(self, now_mono: float) -> None:
        """Advance every execution whose next transition is due by `now_mono`."""
        self._ticker.tick(now_mono)

    def _advance(self, execution_id: str, due: float, now_mono: float) -> None:
        execution = self.executions.get(execution_id)
        # Entries go stale when a stop or the control API moves the schedule: skip them.
        if execution is None or execution.due() != due:
            return
        commits = execution.advance(now_mono, utcnow())
        self.transitions += commits
        for _ in range(commits):
            self._publish_status(execution)
        self._schedule(execution)

    # --- tasks ---------------------------------------------------------------------------

    def create_task(
        self,
        *,
        task_id: str,
        environment_id: str,
        reference: str,
        name: str,
        description: str,
        creator_id: str,
        depends_on: list[str],
        triggered_by: list[JSON],
        spec: JSON,
    ) -> Task:
        if task_id in self.tasks:
            raise ConnectError("already_exists", f"task {task_id} already exists")
        if reference:
            for other in self._task_order:
                if other.environment_id == environment_id and other.reference == reference:
                    raise ConnectError(
                        "already_exists",
                        f"a task with reference {reference!r} already exists in environment "
                        f"{environment_id}",
                    )
        plan = parse_command(str(spec.get("command", "")))
        task = Task(
            id=task_id,
            seq=next(self._seq),
            environment_id=environment_id,
            reference=reference,
            name=name,
            description=description,
            creator_id=creator_id,
            created_at=utcnow(),
            depends_on=depends_on,
            triggered_by=triggered_by,
            spec=spec,
            plan=plan,
        )
        self.environments.ensure_implicit(environment_id, creator_id)
        self.tasks[task.id] = task
        self._task_order.append(task)
        self.events.publish(environment_id, OP_CREATE, RESOURCE_TYPE_TASK, task.id)
        return task

    def get_task(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise ConnectError("not_found", f"task {task_id} not found")
        return task

    def delete_task(self, task_id: str) -> None:
        task = self.get_task(task_id)
        del self.tasks[task_id]
        self._task_order.remove(task)
        self.events.publish(task.environment_id, OP_DELETE, RESOURCE_TYPE_TASK, task.id)

    def list_tasks(
        self,
        *,
        environment_ids: Sequence[str],
        references: Sequence[str],
        task_ids: Sequence[str],
        token: str,
        page_size: int,
    ) -> Page:
        envs, refs, ids = set(environment_ids), set(references), set(task_ids)

        def keep(task: Task) -> bool:
            return (
                (not envs or task.environment_id in envs)
                and (not refs or task.reference in refs)
                and (not ids or task.id in ids)
            )

        return _page(self._task_order, "tasks", token, page_size, keep, Task.to_json)

    # --- executions ----------------------------------------------------------------------

    def start_execution(self, task_id: str, creator_id: str) -> Execution:
        task = self.tasks.get(task_id)
        if task is None:
            raise ConnectError("not_found", f"task {task_id} not found")
        self.environments.require_up(task.environment_id)
        execution = Execution(
            seq=next(self._seq),
            task_id=task.id,
            task_reference=task.reference,
            task_name=task.name,
            task_spec=task.spec,
            environment_id=task.environment_id,
            creator_id=creator_id,
            plan=task.plan.for_execution(task.started),
            log_base_url=self._log_base_url(),
            now_mono=time.monotonic(),
            now_wall=utcnow(),
        )
        task.started += 1
        self.executions[execution.id] = execution
        self._execution_order.append(execution)
        self.events.publish(
            execution.environment_id, OP_CREATE, RESOURCE_TYPE_TASK_EXECUTION, execution.id
        )
        self._schedule(execution)
        return execution

    def get_execution(self, execution_id: str) -> Execution:
        execution = self.executions.get(execution_id)
        if execution is None:
            raise ConnectError("not_found", f"task execution {execution_id} not found")
        return execution

    def list_executions(
        self,
        *,
        task_ids: Sequence[str],
        task_references: Sequence[str],
        environment_ids: Sequence[str],
        phases: Sequence[str],
        token: str,
        page_size: int,
    ) -> Page:
        ids, refs = set(task_ids), set(task_references)
        envs, wanted_phases = set(environment_ids), set(phases)

        def keep(execution: Execution) -> bool:
            return (
                (not ids or execution.task_id in ids)
                and (not refs or execution.task_reference in refs)
                and (not envs or execution.environment_id in envs)
                and (not wanted_phases or execution.served_phase() in wanted_phases)
            )

        return _page(self._execution_order, "executions", token, page_size, keep, Execution.view)

    def stop_execution(self, execution_id: str) -> None:
        execution = self.get_execution(execution_id)
        if execution.request_stop(time.monotonic()):
            self.events.publish(
                execution.environment_id, OP_UPDATE, RESOURCE_TYPE_TASK_EXECUTION, execution.id
            )
            self._schedule(execution)

    def _environment_stopping(self, environment_id: str) -> None:
        """An environment stops: the executions running in it are stopped with it."""
        for execution in list(self.live_executions()):
            if execution.environment_id == environment_id:
                self.stop_execution(execution.id)

    def force_phase(self, execution_id: str, phase: str, failure_message: str) -> Execution:
        execution = self.get_execution(execution_id)
        execution.force_phase(phase, failure_message, utcnow())
        self._publish_status(execution)
        self._schedule(execution)
        return execution

    def replay(self, execution_id: str, version: int | None) -> Execution:
        execution = self.get_execution(execution_id)
        if version is None:
            execution.clear_replay()
        else:
            execution.replay(version)
        self._publish_status(execution)
        return execution

    def _publish_status(self, execution: Execution) -> None:
        self.events.publish(
            execution.environment_id,
            OP_UPDATE_STATUS,
            RESOURCE_TYPE_TASK_EXECUTION,
            execution.id,
        )

    # --- whole store ---------------------------------------------------------------------

    def reset(self) -> None:
        self.events.close_all("the simulator was reset")
        self.tasks.clear()
        self.executions.clear()
        self._task_order.clear()
        self._execution_order.clear()
        self._ticker.clear()
        self.environments.reset()

    def live_executions(self) -> Iterable[Execution]:
        return (execution for execution in self._execution_order if not execution.is_final)

    def all_executions(self) -> list[Execution]:
        return list(self._execution_order)

    def all_tasks(self) -> list[Task]:
        return list(self._task_order)


def _page(
    ordered: Sequence[T],
    kind: str,
    token: str,
    page_size: int,
    keep: Callable[[T], bool],
    render: Callable[[T], JSON],
) -> Page:
    after = decode_page_token(kind, token)
    start = bisect.bisect_right(ordered, after, key=lambda item: item.seq)
    items: list[JSON] = []
    last_seq = 0
    for index in range(start, len(ordered)):
        item = ordered[index]
        if not keep(item):
            continue
        if len(items) == page_size:
            # One more match exists beyond this page, so a next page is worth asking for.
            return Page(items=items, next_token=encode_page_token(kind, last_seq))
        items.append(render(item))
        last_seq = item.seq
    return Page(items=items, next_token="")
