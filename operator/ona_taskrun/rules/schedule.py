"""The pure rules of TaskRunSchedules: reading a schedule, which slot is due, what to do
about runs still active, which finished runs to prune, and the schedule's new status.

A slot is one time the cron expression names, in the schedule's time zone. Its TaskRun is
named after the schedule and the slot (`<schedule>-<minutes since 1970, UTC>`), so the
name is the idempotency key: however often a slot is looked at (a crash after the create,
a second replica), it can only ever create one TaskRun, and an AlreadyExists answer means
the work is done. Missed slots follow CronJob's rules: only the most recent missed slot
runs, and only within `startingDeadlineSeconds` when that is set.

No I/O happens here; the edge (`schedules.py`) lists the schedule's TaskRuns, calls
`decide`, performs the plan, and folds the create's outcome back in with `settle`.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .model import SUCCEEDED, Condition, Event, InvalidSpec, Status, parse_time, rfc3339
from .spec import parse_spec as parse_taskrun_spec

KIND, PLURAL = "TaskRunSchedule", "taskrunschedules"
API_VERSION = "automation.ona.com/v1alpha1"
# On every TaskRun a schedule creates: which schedule, and the slot it is for.
SCHEDULE_LABEL = "automation.ona.com/schedule"
SCHEDULED_AT_ANNOTATION = "automation.ona.com/scheduled-at"
READY, STALLED = "Ready", "Stalled"
MAX_NAME = 52  # so that `<name>-<minutes>` stays a valid label value (63) for years
MAX_MISSED = 100  # more missed slots than this since the last run: a Warning (as CronJob)
MAX_REQUEUE = 300.0  # look again at least this often, should the wall clock jump
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter's hashed (H) and random (R) fields: a random slot would defeat the name as
# idempotency key, and a hashed one depends on an id. Letters inside names (THU, MAR) pass.
_HASHED_OR_RANDOM = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")


class Concurrency(enum.StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class InvalidSchedule(ValueError):
    """A schedule the CRD let through but the operator cannot follow; the reason goes into
    the Ready condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Cron:
    """A checked cron expression in a time zone; slots are returned in UTC."""

    def __init__(self, expression: str, time_zone: str = "UTC") -> None:
        text = " ".join(expression.split())
        fields = MACROS.get(text.lower(), text)
        if len(fields.split()) != 5:
            raise InvalidSchedule(
                "InvalidSchedule",
                f"spec.schedule {expression!r} must have 5 fields (minute hour day-of-month "
                "month day-of-week) or be one of " + ", ".join(MACROS),
            )
        if _HASHED_OR_RANDOM.search(fields):
            raise InvalidSchedule(
                "InvalidSchedule",
                f"spec.schedule {expression!r}: hashed (H) and random (R) fields are not "
                "supported; name the minute and hour",
            )
        try:
            self.zone: tzinfo = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidSchedule(
                "InvalidTimeZone",
                f"spec.timeZone {time_zone!r} is not a known IANA time zone "
                "(e.g. UTC, Europe/Berlin, America/New_York)",
            ) from exc
        self.expression = fields
        self.text = expression
        self.time_zone = time_zone
        try:
            croniter(fields, datetime(2000, 1, 1, tzinfo=self.zone))
            self.next_after(datetime(2000, 1, 1, tzinfo=UTC))
        except CroniterError as exc:
            raise InvalidSchedule(
                "InvalidSchedule",
                f"spec.schedule {expression!r} is not a valid cron expression: {exc}",
            ) from exc

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment`."""
        it = croniter(self.expression, moment.astimezone(self.zone))
        found: datetime = it.get_next(datetime)
        return found.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last slot at or before `moment`."""
        it = croniter(self.expression, (moment + timedelta(microseconds=1)).astimezone(self.zone))
        found: datetime = it.get_prev(datetime)
        return found.astimezone(UTC)


@dataclass(frozen=True)
class ScheduleSpec:
    cron: Cron
    suspend: bool = False
    concurrency: Concurrency = Concurrency.ALLOW
    starting_deadline: int | None = None
    successful_limit: int = 3
    failed_limit: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    run_spec: Mapping[str, Any] = field(default_factory=dict)


def _count(
    raw: Mapping[str, Any], key: str, default: int | None, low: int, high: int
) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSchedule(
            "InvalidSpec", f"spec.{key} must be a whole number from {low} to {high}"
        )
    return value


def parse_spec(raw: Mapping[str, Any]) -> ScheduleSpec:
    """Read a schedule's spec; InvalidSchedule says what is wrong with it."""
    schedule = raw.get("schedule")
    if not isinstance(schedule, str) or not schedule.strip():
        raise InvalidSchedule("InvalidSchedule", "spec.schedule must be a cron expression")
    cron = Cron(schedule, str(raw.get("timeZone") or "UTC"))
    try:
        concurrency = Concurrency(raw.get("concurrencyPolicy") or "Allow")
    except ValueError:
        raise InvalidSchedule(
            "InvalidSpec", "spec.concurrencyPolicy must be Allow, Forbid or Replace"
        ) from None
    template = raw.get("taskRunTemplate")
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        raise InvalidSchedule("InvalidTemplate", "spec.taskRunTemplate.spec must be a TaskRun spec")
    try:
        parse_taskrun_spec(template["spec"])
    except InvalidSpec as exc:
        raise InvalidSchedule("InvalidTemplate", f"spec.taskRunTemplate.spec: {exc}") from None
    meta = template.get("metadata") or {}
    return ScheduleSpec(
        cron=cron,
        suspend=bool(raw.get("suspend", False)),
        concurrency=concurrency,
        starting_deadline=_count(raw, "startingDeadlineSeconds", None, 1, 31_622_400),
        successful_limit=_count(raw, "successfulRunsHistoryLimit", 3, 0, 100) or 0,
        failed_limit=_count(raw, "failedRunsHistoryLimit", 1, 0, 100) or 0,
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        run_spec=copy.deepcopy(dict(template["spec"])),
    )


# --------------------------------------------------------------------------- objects


class Outcome(enum.StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Run:
    """A TaskRun this schedule owns, as the schedule sees it."""

    name: str
    uid: str
    scheduled_at: datetime  # its slot (from the annotation; else its creation time)
    outcome: Outcome = Outcome.ACTIVE
    completed_at: datetime | None = None
    deleting: bool = False

    @property
    def active(self) -> bool:
        return self.outcome is Outcome.ACTIVE and not self.deleting


@dataclass(frozen=True)
class Schedule:
    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: ScheduleSpec | InvalidSchedule
    status: Mapping[str, Any] = field(default_factory=dict)


def parse_schedule(body: Mapping[str, Any]) -> Schedule:
    meta = body.get("metadata") or {}
    spec: ScheduleSpec | InvalidSchedule
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSchedule as exc:
        spec = exc
    return Schedule(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        created=parse_time(str(meta.get("creationTimestamp", ""))) or datetime.now(UTC),
        spec=spec,
        status=dict(body.get("status") or {}),
    )


def owner(body: Mapping[str, Any]) -> tuple[str, str]:
    """The name and uid of the TaskRunSchedule controlling this TaskRun, or empty."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("kind") == KIND and ref.get("controller") is True:
            return str(ref.get("name", "")), str(ref.get("uid", ""))
    return "", ""


def owner_uid(body: Mapping[str, Any]) -> str:
    return owner(body)[1]


def parse_run(body: Mapping[str, Any]) -> Run:
    meta = body.get("metadata") or {}
    status = Status.from_dict(body.get("status"))
    succeeded = status.condition(SUCCEEDED)
    outcome = Outcome.ACTIVE
    completed: datetime | None = None
    if succeeded is not None and succeeded.status in ("True", "False"):
        outcome = Outcome.SUCCEEDED if succeeded.status == "True" else Outcome.FAILED
        completed = parse_time(status.completed_at) or parse_time(succeeded.last_transition_time)
    annotations = meta.get("annotations") or {}
    created = parse_time(str(meta.get("creationTimestamp", ""))) or datetime.now(UTC)
    slot = parse_time(str(annotations.get(SCHEDULED_AT_ANNOTATION, ""))) or created
    return Run(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        scheduled_at=slot,
        outcome=outcome,
        completed_at=completed,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def run_name(schedule_name: str, slot: datetime) -> str:
    return f"{schedule_name}-{int(slot.timestamp()) // 60}"


def run_manifest(schedule: Schedule, spec: ScheduleSpec, slot: datetime) -> dict[str, Any]:
    """The TaskRun for one slot, owned (and garbage-collected) by its schedule."""
    return {
        "apiVersion": API_VERSION,
        "kind": "TaskRun",
        "metadata": {
            "name": run_name(schedule.name, slot),
            "namespace": schedule.namespace,
            "labels": {**spec.labels, SCHEDULE_LABEL: schedule.name},
            "annotations": {**spec.annotations, SCHEDULED_AT_ANNOTATION: rfc3339(slot)},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": schedule.name,
                    "uid": schedule.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(dict(spec.run_spec)),
    }


# --------------------------------------------------------------------------- slots


@dataclass(frozen=True)
class Due:
    slot: datetime | None  # the most recent slot not run yet, if any
    missed: int = 0  # slots in the window, up to MAX_MISSED + 1
    next: datetime | None = None  # the first slot after now

    @property
    def too_many(self) -> bool:
        return self.missed > MAX_MISSED


def due_slot(
    cron: Cron, last: datetime | None, created: datetime, now: datetime, deadline: int | None
) -> Due:
    """CronJob's rule: slots after the last scheduled one (or the schedule's creation),
    and no older than the starting deadline; the most recent of them is due."""
    earliest = last or created
    if deadline is not None:
        earliest = max(earliest, now - timedelta(seconds=deadline))
    following = cron.next_after(now)
    if earliest >= now:
        return Due(None, 0, following)
    latest = cron.latest_at_or_before(now)
    if latest <= earliest:
        return Due(None, 0, following)
    missed, moment = 0, earliest
    while missed <= MAX_MISSED:
        moment = cron.next_after(moment)
        if moment > now:
            break
        missed += 1
    return Due(latest, missed, following)


# --------------------------------------------------------------------------- deciding


@dataclass(frozen=True)
class Plan:
    """What the edge does, in this order: delete `replace`, create the run for `slot`,
    write the status (see `settle`), post the events, delete `prune`."""

    slot: datetime | None = None
    replace: tuple[Run, ...] = ()
    prune: tuple[Run, ...] = ()
    events: tuple[Event, ...] = ()
    active: tuple[Run, ...] = ()
    last_schedule: datetime | None = None
    last_successful: datetime | None = None
    next: datetime | None = None
    ready: Condition | None = None
    requeue_after: float | None = None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _prunable(runs: Sequence[Run], outcome: Outcome, limit: int) -> tuple[Run, ...]:
    done = [r for r in runs if r.outcome is outcome and not r.deleting]
    done.sort(key=lambda r: (r.scheduled_at, r.completed_at or r.scheduled_at), reverse=True)
    return tuple(done[limit:])


def decide(schedule: Schedule, runs: Sequence[Run], now: datetime) -> Plan:
    """From the schedule, the TaskRuns it owns and the time: the plan of this look."""
    status = schedule.status
    last = parse_time(str(status.get("lastScheduleTime") or ""))
    last_ok = parse_time(str(status.get("lastSuccessfulTime") or ""))
    for run in runs:
        if run.outcome is Outcome.SUCCEEDED and run.completed_at is not None:
            last_ok = max(last_ok, run.completed_at) if last_ok else run.completed_at
    active = tuple(sorted((r for r in runs if r.active), key=lambda r: r.scheduled_at))
    spec = schedule.spec
    base = Plan(active=active, last_schedule=last, last_successful=last_ok)
    if isinstance(spec, InvalidSchedule):
        return replace(base, ready=Condition(READY, "False", spec.reason, str(spec)))
    prune = _prunable(runs, Outcome.SUCCEEDED, spec.successful_limit) + _prunable(
        runs, Outcome.FAILED, spec.failed_limit
    )
    due = due_slot(spec.cron, last, schedule.created, now, spec.starting_deadline)
    plan = replace(
        base,
        prune=prune,
        next=due.next,
        requeue_after=_until(due.next, now),
        ready=_ready(spec),
    )
    events: list[Event] = []
    if due.too_many:
        events.append(
            Event(
                "Warning",
                "TooManyMissedTimes",
                f"more than {MAX_MISSED} slots were missed; only the most recent runs. "
                "Set spec.startingDeadlineSeconds to bound how late a run may start",
            )
        )
    if spec.suspend or due.slot is None:
        return replace(plan, events=tuple(events))
    slot = due.slot
    if (
        spec.starting_deadline is not None
        and slot + timedelta(seconds=spec.starting_deadline) < now
    ):
        events.append(
            Event("Warning", "MissedSchedule", f"missed the {_stamp(slot)} slot: too late")
        )
        return replace(plan, events=tuple(events))
    name = run_name(schedule.name, slot)
    if any(r.name == name for r in runs):
        # Created before (the status write after it was lost): record it, create nothing.
        return replace(plan, last_schedule=slot, events=tuple(events))
    if active and spec.concurrency is Concurrency.FORBID:
        names = ", ".join(r.name for r in active)
        events.append(
            Event(
                "Normal",
                "AlreadyActive",
                f"not starting the {_stamp(slot)} run: {names} still active "
                "(concurrencyPolicy Forbid)",
            )
        )
        return replace(plan, events=tuple(events))
    replaced = active if spec.concurrency is Concurrency.REPLACE else ()
    events += [
        Event(
            "Normal",
            "Replaced",
            f"deleted TaskRun {r.name}, still active, for the {_stamp(slot)} run "
            "(concurrencyPolicy Replace)",
        )
        for r in replaced
    ]
    return replace(
        plan,
        slot=slot,
        replace=replaced,
        active=tuple(r for r in active if r not in replaced),
        events=tuple(events),
    )


def _ready(spec: ScheduleSpec) -> Condition:
    if spec.suspend:
        return Condition(READY, "True", "Suspended", "spec.suspend is true: no new runs")
    return Condition(
        READY, "True", "Scheduled", f"runs at {spec.cron.text!r} ({spec.cron.time_zone})"
    )


def _until(moment: datetime | None, now: datetime) -> float:
    if moment is None:
        return MAX_REQUEUE
    # A little after the slot, so that the look that follows finds it due.
    return min(max((moment - now).total_seconds(), 0.0) + 0.1, MAX_REQUEUE)


# --------------------------------------------------------------------------- settling


class Created(enum.StrEnum):
    CREATED = "Created"  # the run for the slot was created now
    EXISTS = "Exists"  # AlreadyExists, and it is ours: created before
    TAKEN = "Taken"  # AlreadyExists, but not ours: the slot's name is taken
    INVALID = "Invalid"  # the API server refused the TaskRun (422): the template is wrong
    REFUSED = "Refused"  # another refusal (e.g. 403): try again later


@dataclass(frozen=True)
class CreateOutcome:
    kind: Created
    name: str = ""
    uid: str = ""
    message: str = ""


REFUSED_RETRY = 30.0


def settle(
    schedule: Schedule, plan: Plan, outcome: CreateOutcome | None, now: datetime
) -> tuple[dict[str, Any], tuple[Event, ...], float | None]:
    """The schedule's new status once the plan's create is known, the Events to post,
    and when to look again."""
    last, active, ready = plan.last_schedule, plan.active, plan.ready
    events = list(plan.events)
    requeue = plan.requeue_after
    if outcome is not None and plan.slot is not None:
        slot = plan.slot
        if outcome.kind in (Created.CREATED, Created.EXISTS):
            last = slot
            if outcome.uid:  # (no uid: created and deleted again since)
                active = (*active, Run(outcome.name, outcome.uid, slot))
            if outcome.kind is Created.CREATED:
                events.append(
                    Event("Normal", "Created", f"created TaskRun {outcome.name} for {_stamp(slot)}")
                )
        elif outcome.kind is Created.TAKEN:
            # Not ours: never touch it, and do not try this slot again.
            last = slot
            events.append(
                Event(
                    "Warning",
                    "NameTaken",
                    f"TaskRun {outcome.name} exists but does not belong to this schedule: "
                    f"the {_stamp(slot)} run was not created",
                )
            )
        else:
            reason = "InvalidTemplate" if outcome.kind is Created.INVALID else "CreateFailed"
            message = f"cannot create TaskRun {outcome.name}: {outcome.message}"
            ready = Condition(READY, "False", reason, message)
            events.append(Event("Warning", reason, message))
            if outcome.kind is Created.REFUSED:
                requeue = min(requeue or REFUSED_RETRY, REFUSED_RETRY)
    return (
        _status(schedule, last, plan.last_successful, plan.next, active, ready, now),
        tuple(events),
        requeue,
    )


def _status(
    schedule: Schedule,
    last: datetime | None,
    last_ok: datetime | None,
    following: datetime | None,
    active: Sequence[Run],
    ready: Condition | None,
    now: datetime,
) -> dict[str, Any]:
    old = schedule.status
    status: dict[str, Any] = {
        "observedGeneration": schedule.generation,
        "active": [{"name": r.name, "uid": r.uid} for r in active],
        "activeCount": len(active),
    }
    for key, value in (
        ("lastScheduleTime", last),
        ("lastSuccessfulTime", last_ok),
        ("nextScheduleTime", following),
    ):
        if value is not None:
            status[key] = rfc3339(value)
    conditions = [
        dict(c)
        for c in old.get("conditions") or ()
        if isinstance(c, Mapping) and c.get("type") not in (READY, STALLED)
    ]
    if ready is not None:
        stalled = (
            Condition(STALLED, "True", ready.reason, ready.message)
            if ready.status == "False"
            else Condition(STALLED, "False", ready.reason, "")
        )
        for cond in (ready, stalled):
            conditions.append(_stamped(old, cond, schedule.generation, now).to_dict())
    status["conditions"] = conditions
    return status


def _stamped(old: Mapping[str, Any], cond: Condition, generation: int, now: datetime) -> Condition:
    previous = next(
        (
            c
            for c in old.get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type") == cond.type
        ),
        None,
    )
    keep = previous is not None and previous.get("status") == cond.status
    stamp = str(previous.get("lastTransitionTime")) if keep and previous else rfc3339(now)
    return replace(cond, last_transition_time=stamp, observed_generation=generation)
