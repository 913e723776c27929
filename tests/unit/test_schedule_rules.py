"""The pure core of TaskRunSchedules, on a fixed clock: reading a schedule, which slot is
due (CronJob's rules for missed slots), what concurrencyPolicy does with active runs,
which finished runs are pruned, and the status and Events that follow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ona_taskrun.rules.schedule import (
    SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
    Created,
    CreateOutcome,
    Cron,
    InvalidSchedule,
    Outcome,
    Run,
    Schedule,
    decide,
    due_slot,
    owner_uid,
    parse_run,
    parse_schedule,
    parse_spec,
    run_manifest,
    run_name,
    settle,
)

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)  # 30 s after the 12:00 slot
CREATED = datetime(2026, 3, 10, 9, 0, 10, tzinfo=UTC)
ENV = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"
TEMPLATE = {"spec": {"task": {"environmentId": ENV, "name": "report", "command": "make"}}}


def at(hh: int, mm: int, ss: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hh, mm, ss, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def body(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    created: datetime = CREATED,
) -> dict[str, Any]:
    return {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRunSchedule",
        "metadata": {
            "name": "nightly",
            "namespace": "team-a",
            "uid": "sched-uid",
            "generation": 2,
            "creationTimestamp": stamp(created),
        },
        "spec": {"schedule": "* * * * *", "taskRunTemplate": TEMPLATE, **(spec or {})},
        "status": status or {},
    }


def schedule(**kwargs: Any) -> Schedule:
    return parse_schedule(body(**kwargs))


def run(
    minute: datetime,
    outcome: Outcome = Outcome.ACTIVE,
    *,
    deleting: bool = False,
    completed: datetime | None = None,
) -> Run:
    if outcome is not Outcome.ACTIVE and completed is None:
        completed = minute + timedelta(seconds=20)
    return Run(
        run_name("nightly", minute), f"uid-{minute:%H%M}", minute, outcome, completed, deleting
    )


# ------------------------------------------------------------------ reading a schedule


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        ("* * * * *", "UTC", at(12, 0, 30), at(12, 1)),
        ("*/15 * * * *", "UTC", at(12, 0), at(12, 15)),  # strictly after
        ("@hourly", "UTC", at(12, 0, 30), at(13, 0)),
        ("@daily", "UTC", at(12, 0), at(0, 0, day=11)),
        ("0 2 * * *", "Europe/Berlin", at(12, 0), at(1, 0, day=11)),  # 02:00 CET = 01:00 UTC
        ("0 9 * * MON-FRI", "UTC", at(12, 0, day=13), at(9, 0, day=16)),  # Fri -> Mon
        ("0 0 L * *", "UTC", at(12, 0), at(0, 0, day=31)),  # last day of the month
        ("0  2\t* * *", "UTC", at(12, 0), at(2, 0, day=11)),  # any whitespace between fields
    ],
)
def test_next_slot(expression: str, zone: str, after: datetime, expected: datetime) -> None:
    assert Cron(expression, zone).next_after(after) == expected


def test_latest_slot_at_or_before_counts_the_exact_minute() -> None:
    cron = Cron("*/5 * * * *")
    assert cron.latest_at_or_before(at(12, 5)) == at(12, 5)
    assert cron.latest_at_or_before(at(12, 4, 59)) == at(12, 0)


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"schedule": "* * * *"}, "InvalidSchedule", "5 fields"),
        ({"schedule": "0 * * * * *"}, "InvalidSchedule", "5 fields"),  # no seconds field
        ({"schedule": "61 * * * *"}, "InvalidSchedule", "not a valid cron expression"),
        ({"schedule": "*/0 * * * *"}, "InvalidSchedule", "not a valid cron expression"),
        ({"schedule": "0 0 30 2 *"}, "InvalidSchedule", "not a valid cron expression"),
        ({"schedule": "H * * * *"}, "InvalidSchedule", "hashed (H) and random (R)"),
        ({"schedule": "R 2 * * *"}, "InvalidSchedule", "hashed (H) and random (R)"),
        ({"schedule": "@reboot"}, "InvalidSchedule", "5 fields"),
        ({"timeZone": "Mars/Olympus"}, "InvalidTimeZone", "not a known IANA time zone"),
        ({"timeZone": "../etc/passwd"}, "InvalidTimeZone", "not a known IANA time zone"),
        ({"concurrencyPolicy": "Sometimes"}, "InvalidSpec", "Allow, Forbid or Replace"),
        ({"startingDeadlineSeconds": -5}, "InvalidSpec", "startingDeadlineSeconds"),
        ({"successfulRunsHistoryLimit": 1000}, "InvalidSpec", "successfulRunsHistoryLimit"),
        ({"taskRunTemplate": {"spec": {}}}, "InvalidTemplate", "taskRunTemplate.spec"),
    ],
)
def test_a_schedule_the_operator_cannot_follow_says_why(
    spec: dict[str, Any], reason: str, words: str
) -> None:
    raw = {"schedule": "* * * * *", "taskRunTemplate": TEMPLATE, **spec}
    with pytest.raises(InvalidSchedule) as caught:
        parse_spec(raw)
    assert caught.value.reason == reason
    assert words in str(caught.value)


def test_names_of_days_and_months_are_not_taken_for_hashed_fields() -> None:
    parsed = parse_spec(
        {"schedule": "0 3 * MAR,APR THU,FRI", "timeZone": "UTC", "taskRunTemplate": TEMPLATE}
    )
    assert parsed.cron.next_after(at(12, 0)) == at(3, 0, day=12)  # Thursday 12 March


def test_defaults_follow_cronjob() -> None:
    parsed = parse_spec({"schedule": "0 2 * * *", "taskRunTemplate": TEMPLATE})
    assert parsed.cron.time_zone == "UTC"
    assert (parsed.suspend, parsed.concurrency.value, parsed.starting_deadline) == (
        False,
        "Allow",
        None,
    )
    assert (parsed.successful_limit, parsed.failed_limit) == (3, 1)


# ------------------------------------------------------------------ the slot's TaskRun


def test_the_run_is_named_after_the_schedule_and_the_slot_and_owned_by_it() -> None:
    sched = parse_schedule(
        body(
            spec={
                "taskRunTemplate": {
                    "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
                    **TEMPLATE,
                }
            }
        )
    )
    assert not isinstance(sched.spec, InvalidSchedule)
    manifest = run_manifest(sched, sched.spec, at(12, 0))
    meta = manifest["metadata"]
    assert meta["name"] == f"nightly-{int(at(12, 0).timestamp()) // 60}"
    assert meta["labels"] == {"team": "a", SCHEDULE_LABEL: "nightly"}
    assert meta["annotations"] == {"note": "x", SCHEDULED_AT_ANNOTATION: "2026-03-10T12:00:00Z"}
    (owner,) = meta["ownerReferences"]
    assert owner["uid"] == "sched-uid"
    assert owner["controller"] is True
    assert manifest["spec"] == TEMPLATE["spec"]
    assert owner_uid(manifest) == "sched-uid"
    parsed = parse_run({**manifest, "metadata": {**meta, "uid": "r1"}})
    assert (parsed.scheduled_at, parsed.outcome) == (at(12, 0), Outcome.ACTIVE)


@pytest.mark.parametrize(
    ("condition", "outcome"),
    [
        (None, Outcome.ACTIVE),
        ({"type": "Succeeded", "status": "Unknown", "reason": "Running"}, Outcome.ACTIVE),
        ({"type": "Succeeded", "status": "True", "reason": "Succeeded"}, Outcome.SUCCEEDED),
        ({"type": "Succeeded", "status": "False", "reason": "TimedOut"}, Outcome.FAILED),
        ({"type": "Succeeded", "status": "False", "reason": "Stopped"}, Outcome.FAILED),
    ],
)
def test_a_runs_outcome_is_its_succeeded_condition(
    condition: dict[str, str] | None, outcome: Outcome
) -> None:
    status = {"conditions": [condition]} if condition else {}
    meta = {"name": "x", "uid": "u", "creationTimestamp": "2026-03-10T12:00:01Z"}
    assert parse_run({"metadata": meta, "status": status}).outcome is outcome


# ------------------------------------------------------------------ which slot is due


@pytest.mark.parametrize(
    ("case", "last", "now", "deadline", "slot", "missed"),
    [
        ("just created, before its first slot", None, at(9, 0, 50), None, None, 0),
        ("first slot reached", None, at(9, 1, 0), None, at(9, 1), 1),
        ("slot already run", at(12, 0), NOW, None, None, 0),
        ("one slot passed", at(11, 59), NOW, None, at(12, 0), 1),
        # Down for 10 minutes: only the most recent missed slot runs.
        ("downtime", at(11, 50), NOW, None, at(12, 0), 10),
        ("downtime, inside the deadline", at(11, 50), NOW, 60, at(12, 0), 1),
        ("downtime, past the deadline", at(11, 50), at(12, 1, 59, day=10), 30, None, 0),
        # Created at 09:00:10 and never run: over 100 missed slots (a Warning).
        ("too many missed", None, NOW, None, at(12, 0), 101),
    ],
)
def test_due_slot_follows_cronjob(
    case: str,
    last: datetime | None,
    now: datetime,
    deadline: int | None,
    slot: datetime | None,
    missed: int,
) -> None:
    due = due_slot(Cron("* * * * *"), last, at(9, 0, 10), now, deadline)
    assert (due.slot, due.missed) == (slot, missed), case
    assert due.next is not None
    assert due.next > now


# ------------------------------------------------------------------ deciding


def test_a_due_slot_creates_its_run_and_records_it() -> None:
    sched = schedule(status={"lastScheduleTime": stamp(at(11, 59))})
    plan = decide(sched, [run(at(11, 59), Outcome.SUCCEEDED)], NOW)
    assert plan.slot == at(12, 0)
    assert plan.replace == ()
    assert plan.requeue_after == pytest.approx(30.1)  # a little after 12:01
    name = run_name("nightly", at(12, 0))
    status, events, again = settle(sched, plan, CreateOutcome(Created.CREATED, name, "u"), NOW)
    assert status["lastScheduleTime"] == "2026-03-10T12:00:00Z"
    assert status["nextScheduleTime"] == "2026-03-10T12:01:00Z"
    assert status["lastSuccessfulTime"] == "2026-03-10T11:59:20Z"
    assert status["active"] == [{"name": name, "uid": "u"}]
    assert status["activeCount"] == 1
    assert [e.reason for e in events] == ["Created"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Scheduled",
        2,
    )
    assert again == plan.requeue_after


def test_a_run_created_before_a_lost_status_write_is_recorded_not_created_again() -> None:
    sched = schedule(status={"lastScheduleTime": stamp(at(11, 59))})
    plan = decide(sched, [run(at(12, 0))], NOW)
    assert plan.slot is None
    assert plan.last_schedule == at(12, 0)
    status, _, _ = settle(sched, plan, None, NOW)
    assert status["lastScheduleTime"] == "2026-03-10T12:00:00Z"
    assert status["activeCount"] == 1


@pytest.mark.parametrize(
    ("found", "active", "last"),
    [
        # AlreadyExists and ours: the slot was served by an earlier look or replica.
        (CreateOutcome(Created.EXISTS, "nightly-x", "u2"), 1, "2026-03-10T12:00:00Z"),
        # Created and deleted since: served too, nothing active.
        (CreateOutcome(Created.EXISTS, "nightly-x", ""), 0, "2026-03-10T12:00:00Z"),
    ],
)
def test_already_exists_means_done(found: CreateOutcome, active: int, last: str) -> None:
    sched = schedule(status={"lastScheduleTime": stamp(at(11, 59))})
    plan = decide(sched, [], NOW)
    status, events, _ = settle(sched, plan, found, NOW)
    assert (status["activeCount"], status["lastScheduleTime"]) == (active, last)
    assert events == ()


def test_a_name_taken_by_someone_else_is_left_alone_and_said() -> None:
    sched = schedule(status={"lastScheduleTime": stamp(at(11, 59))})
    plan = decide(sched, [], NOW)
    status, events, _ = settle(sched, plan, CreateOutcome(Created.TAKEN, "nightly-x", "v"), NOW)
    assert status["activeCount"] == 0
    assert status["lastScheduleTime"] == "2026-03-10T12:00:00Z"
    assert [(e.type, e.reason) for e in events] == [("Warning", "NameTaken")]


@pytest.mark.parametrize(
    ("kind", "reason", "retry"),
    [(Created.INVALID, "InvalidTemplate", 30.1), (Created.REFUSED, "CreateFailed", 30.0)],
)
def test_a_refused_create_says_why_and_keeps_the_slot(
    kind: Created, reason: str, retry: float
) -> None:
    sched = schedule(status={"lastScheduleTime": stamp(at(11, 59))})
    plan = decide(sched, [], NOW)
    outcome = CreateOutcome(kind, "nightly-x", message="spec.task.name: Required value")
    status, events, again = settle(sched, plan, outcome, NOW)
    assert status["lastScheduleTime"] == "2026-03-10T11:59:00Z"  # not served
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert "spec.task.name: Required value" in ready["message"]
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert [e.reason for e in events] == [reason]
    assert again == pytest.approx(retry)


@pytest.mark.parametrize(
    ("policy", "creates", "replaced", "event"),
    [
        ("Allow", True, (), None),
        ("Forbid", False, (), "AlreadyActive"),
        ("Replace", True, ("uid-1159",), "Replaced"),
    ],
)
def test_concurrency_policy_with_a_run_still_active(
    policy: str, creates: bool, replaced: tuple[str, ...], event: str | None
) -> None:
    sched = schedule(
        spec={"concurrencyPolicy": policy}, status={"lastScheduleTime": stamp(at(11, 59))}
    )
    plan = decide(sched, [run(at(11, 59))], NOW)
    assert (plan.slot is not None) == creates
    assert tuple(r.uid for r in plan.replace) == replaced
    assert [e.reason for e in plan.events] == ([event] if event else [])
    created = CreateOutcome(Created.CREATED, run_name("nightly", at(12, 0)), "new")
    status, _, _ = settle(sched, plan, created if creates else None, NOW)
    expected = {"Allow": ["uid-1159", "new"], "Forbid": ["uid-1159"], "Replace": ["new"]}
    assert [a["uid"] for a in status["active"]] == expected[policy]
    if policy == "Forbid":  # the slot stays due: CronJob may start it late (deadline)
        assert status["lastScheduleTime"] == "2026-03-10T11:59:00Z"


def test_forbid_does_not_count_a_run_being_deleted_or_finished() -> None:
    sched = schedule(
        spec={"concurrencyPolicy": "Forbid"}, status={"lastScheduleTime": stamp(at(11, 58))}
    )
    runs = [run(at(11, 58), Outcome.FAILED), run(at(11, 59), deleting=True)]
    assert decide(sched, runs, NOW).slot == at(12, 0)


def test_suspended_creates_nothing_but_keeps_its_books() -> None:
    sched = schedule(spec={"suspend": True}, status={"lastScheduleTime": stamp(at(11, 0))})
    plan = decide(sched, [run(at(11, 0), Outcome.SUCCEEDED)], NOW)
    assert plan.slot is None
    status, _, _ = settle(sched, plan, None, NOW)
    assert status["lastSuccessfulTime"] == "2026-03-10T11:00:20Z"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Suspended")


def test_resumed_after_a_suspension_runs_only_the_most_recent_slot() -> None:
    sched = schedule(status={"lastScheduleTime": stamp(at(11, 0))})
    plan = decide(sched, [], NOW)
    assert plan.slot == at(12, 0)


def test_too_many_missed_slots_warn_and_still_run_the_latest() -> None:
    plan = decide(schedule(created=at(9, 0, 10)), [], NOW)
    assert plan.slot == at(12, 0)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "TooManyMissedTimes")]


def test_an_invalid_schedule_creates_nothing_and_stalls() -> None:
    sched = schedule(spec={"timeZone": "Nowhere/Special"})
    plan = decide(sched, [run(at(11, 59))], NOW)
    assert plan.slot is None
    assert plan.requeue_after is None
    status, _, _ = settle(sched, plan, None, NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (
        "False",
        "InvalidTimeZone",
    )
    assert conditions["Stalled"]["status"] == "True"
    assert status["activeCount"] == 1  # its runs are still accounted for


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    old = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Scheduled", "lastTransitionTime": "T0"},
            {"type": "Other", "status": "True", "reason": "Kept"},
        ]
    }
    sched = schedule(status={**old, "lastScheduleTime": stamp(at(12, 0))})
    status, _, _ = settle(sched, decide(sched, [], NOW), None, NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["lastTransitionTime"] == "T0"
    assert conditions["Stalled"]["lastTransitionTime"] == "2026-03-10T12:00:30Z"
    assert conditions["Other"]["reason"] == "Kept"


# ------------------------------------------------------------------ history


def test_history_keeps_the_newest_finished_runs_within_the_limits() -> None:
    sched = schedule(
        spec={"successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 1},
        status={"lastScheduleTime": stamp(at(12, 0))},
    )
    runs = [
        run(at(11, 55), Outcome.SUCCEEDED),
        run(at(11, 56), Outcome.FAILED),
        run(at(11, 57), Outcome.SUCCEEDED),
        run(at(11, 58), Outcome.FAILED),
        run(at(11, 59), Outcome.SUCCEEDED),
        run(at(11, 54), Outcome.SUCCEEDED, deleting=True),  # on its way already
        run(at(12, 0)),  # active: never pruned
    ]
    plan = decide(sched, runs, NOW)
    assert sorted(r.uid for r in plan.prune) == ["uid-1155", "uid-1156"]


def test_a_limit_of_zero_prunes_every_finished_run() -> None:
    sched = schedule(
        spec={"successfulRunsHistoryLimit": 0}, status={"lastScheduleTime": stamp(at(12, 0))}
    )
    plan = decide(sched, [run(at(12, 0), Outcome.SUCCEEDED)], NOW)
    assert [r.uid for r in plan.prune] == ["uid-1200"]


def test_last_successful_time_survives_pruning() -> None:
    sched = schedule(
        status={"lastScheduleTime": stamp(at(12, 0)), "lastSuccessfulTime": "2026-03-10T11:30:00Z"}
    )
    status, _, _ = settle(sched, decide(sched, [], NOW), None, NOW)
    assert status["lastSuccessfulTime"] == "2026-03-10T11:30:00Z"


# ------------------------------------------------------------------ time zones


def test_slots_are_wall_clock_times_in_the_time_zone() -> None:
    sched = schedule(
        spec={"schedule": "30 12 * * *", "timeZone": "America/New_York"},
        status={"lastScheduleTime": stamp(at(16, 30, day=9))},
    )
    # 12:30 in New York on 10 March 2026 (EDT, UTC-4) is 16:30 UTC.
    assert decide(sched, [], at(16, 29)).slot is None
    assert decide(sched, [], at(16, 30)).slot == at(16, 30)
