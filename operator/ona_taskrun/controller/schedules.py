"""TaskRunSchedules at the edge: watch events in, one look per schedule out.

A look lists the schedule's TaskRuns (by label, kept only if the schedule controls them),
asks `schedule_rules.decide` what to do, deletes what a Replace displaces, creates the
slot's TaskRun (409 AlreadyExists: done already, the name is the idempotency key), writes
the status with a resourceVersion precondition, posts Events, and prunes history. Looks
run in the reconciler's work queue, so a standby replica makes none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..clients.kube import PLURAL, SCHEDULES, Conflict, Gone, KubeClient, KubeError
from ..observability import logs
from ..rules import schedule as schedule_rules
from ..rules.conditions import status_patch
from ..rules.model import Event
from ..rules.schedule import Created, CreateOutcome, Schedule
from .checkpoints import AFTER_SCHEDULE_CREATE, NO_CHECKPOINTS, Checkpoints

log = logging.getLogger(__name__)
KEY_PREFIX = f"{schedule_rules.KIND}:"
# How many Events of one kind a schedule repeats: a Forbid skip is seen at every look
# until the active run ends, but said once per slot.
_SAID_LIMIT = 32


def key_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{KEY_PREFIX}{meta.get('namespace')}/{meta.get('name')}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Schedules:
    """The TaskRunSchedules this operator watches and the TaskRuns they own."""

    def __init__(
        self,
        enqueue: Callable[[str], None],
        *,
        clock: Callable[[], datetime] = _utcnow,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
    ) -> None:
        self.kube: KubeClient | None = None
        self._enqueue = enqueue
        self._clock = clock
        self._checkpoints = checkpoints
        self._bodies: dict[str, dict[str, Any]] = {}
        # uid of an owned TaskRun -> (its schedule's key, what the schedule cares about):
        # a TaskRun's progress writes wake its schedule only when that changes.
        self._runs: dict[str, tuple[str, tuple[str, bool]]] = {}
        self._said: dict[str, list[tuple[str, str]]] = {}
        self._posting: set[asyncio.Task[None]] = set()  # Events on their way

    # ------------------------------------------------------------------ intake

    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event of a TaskRunSchedule."""
        key = key_of(body)
        if event_type == "DELETED":
            self._bodies.pop(key, None)
            self._said.pop(key, None)
            return
        old = self._bodies.get(key)
        if old is not None and _rv(old) >= _rv(body) > 0:
            return
        self._bodies[key] = dict(body)
        # A status-only change (most often our own write) needs no new look.
        if old is None or _generation(old) != _generation(body) or _uid(old) != _uid(body):
            self._enqueue(key)

    async def stop(self) -> None:
        """Let the Events on their way finish."""
        await asyncio.gather(*self._posting, return_exceptions=True)

    def observe_taskrun(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event of a TaskRun: wake its schedule when it appears, ends, is being
        deleted or is gone."""
        uid = str((body.get("metadata") or {}).get("uid", ""))
        if event_type == "DELETED":
            known = self._runs.pop(uid, None)
            if known is not None:
                self._enqueue(known[0])
            return
        name, owner_uid = schedule_rules.owner(body)
        if not owner_uid:
            return
        run = schedule_rules.parse_run(body)
        key = f"{KEY_PREFIX}{(body.get('metadata') or {}).get('namespace')}/{name}"
        state = (run.outcome.value, run.deleting)
        if self._runs.get(uid) != (key, state):
            self._runs[uid] = (key, state)
            self._enqueue(key)

    # ------------------------------------------------------------------ a look

    async def reconcile(self, key: str) -> float | None:
        """Look at one schedule; returns when to look again."""
        body = self._bodies.get(key)
        if body is None or self.kube is None:
            return None
        schedule = schedule_rules.parse_schedule(body)
        runs = await self._owned_runs(schedule)
        now = self._clock()
        plan = schedule_rules.decide(schedule, runs, now)
        for run in plan.replace:
            await self._delete(schedule, run)
        outcome = None
        if plan.slot is not None and isinstance(schedule.spec, schedule_rules.ScheduleSpec):
            outcome = await self._create(schedule, schedule.spec, plan.slot)
            self._checkpoints.reached(AFTER_SCHEDULE_CREATE)
        status, events, again = schedule_rules.settle(schedule, plan, outcome, now)
        if not await self._write_status(key, body, status):
            return 1.0  # the schedule changed meanwhile: its newer version is coming
        self._post(key, body, events)
        for run in plan.prune:
            if await self._delete(schedule, run):
                self._post(
                    key,
                    body,
                    (
                        Event(
                            "Normal",
                            "Pruned",
                            f"deleted finished TaskRun {run.name} beyond the history limit",
                        ),
                    ),
                )
        return again

    async def _owned_runs(self, schedule: Schedule) -> list[schedule_rules.Run]:
        assert self.kube is not None
        bodies = await self.kube.list_objects(
            PLURAL,
            schedule.namespace,
            label_selector=f"{schedule_rules.SCHEDULE_LABEL}={schedule.name}",
        )
        # A label anyone can set; only what this schedule controls counts.
        return [
            schedule_rules.parse_run(b)
            for b in bodies
            if schedule_rules.owner_uid(b) == schedule.uid and schedule.uid
        ]

    async def _create(
        self, schedule: Schedule, spec: schedule_rules.ScheduleSpec, slot: datetime
    ) -> CreateOutcome:
        assert self.kube is not None
        manifest = schedule_rules.run_manifest(schedule, spec, slot)
        name = manifest["metadata"]["name"]
        try:
            created = await self.kube.create_object(PLURAL, schedule.namespace, manifest)
        except Conflict:
            # AlreadyExists: created by an earlier look whose status write was lost, or by
            # another replica. The name says it is this slot's; the owner says whose.
            try:
                found = await self.kube.get_taskrun(schedule.namespace, name)
            except Gone:
                # Created and deleted since (a Replace, a person): the slot was served.
                return CreateOutcome(Created.EXISTS, name, "")
            uid = str(found["metadata"].get("uid", ""))
            mine = schedule_rules.owner_uid(found) == schedule.uid
            return CreateOutcome(Created.EXISTS if mine else Created.TAKEN, name, uid)
        except KubeError as exc:
            if exc.status == 422 or exc.status == 400:
                return CreateOutcome(Created.INVALID, name, message=_message(exc))
            if exc.status == 403:
                return CreateOutcome(Created.REFUSED, name, message=_message(exc))
            raise
        log.info("%s/%s: created TaskRun %s", schedule.namespace, schedule.name, name)
        return CreateOutcome(Created.CREATED, name, str(created["metadata"].get("uid", "")))

    async def _delete(self, schedule: Schedule, run: schedule_rules.Run) -> bool:
        assert self.kube is not None
        try:
            await self.kube.delete_object(PLURAL, schedule.namespace, run.name, run.uid)
        except (Gone, Conflict):
            return False  # gone already, or a new object of that name: not ours to delete
        return True

    async def _write_status(
        self, key: str, body: dict[str, Any], status: Mapping[str, Any]
    ) -> bool:
        assert self.kube is not None
        patch = status_patch(body.get("status") or {}, status)
        if not patch:
            return True
        meta = body["metadata"]
        try:
            updated = await self.kube.patch_status(
                meta["namespace"],
                meta["name"],
                patch,
                str(meta.get("resourceVersion", "")),
                plural=SCHEDULES,
            )
        except Conflict:
            return False
        except Gone:
            return True
        updated.setdefault("kind", schedule_rules.KIND)
        updated.setdefault("apiVersion", schedule_rules.API_VERSION)
        if key in self._bodies:
            self._bodies[key] = updated
        return True

    def _post(self, key: str, body: Mapping[str, Any], events: tuple[Event, ...]) -> None:
        if self.kube is None:
            return
        said = self._said.setdefault(key, [])
        for event in events:
            if (event.reason, event.message) in said:
                continue
            said.append((event.reason, event.message))
            del said[:-_SAID_LIMIT]
            log.info("%s: %s: %s", key, event.reason, event.message)
            task = asyncio.get_running_loop().create_task(
                # A schedule's Event may quote an API answer: no token goes out in it.
                self.kube.post_event(body, event.type, event.reason, logs.scrub(event.message))
            )
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)


def _message(exc: KubeError) -> str:
    return str(exc).removeprefix(f"Kubernetes API answered {exc.status}: ")


def _rv(body: Mapping[str, Any]) -> int:
    raw = (body.get("metadata") or {}).get("resourceVersion", "")
    return int(raw) if str(raw).isdigit() else 0


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid", ""))


def _generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)
