"""Sharing a connection's capacity: limits, the fair order, suspend, and the controller's
count of holders and waiting runs (`rules.capacity`, `controller.admission`)."""

from __future__ import annotations

from typing import Any

import pytest

from ona_taskrun.controller.admission import Admission, Place, place_of, place_of_body
from ona_taskrun.rules.capacity import (
    DEFAULT_REQUESTS_PER_SECOND,
    NO_LIMITS,
    InvalidLimits,
    Limits,
    Line,
    Waiter,
    fair_order,
    let_in,
    parse_limits,
    turn,
)
from ona_taskrun.rules.connection import ConnectionKey, InvalidConnection, parse_connection
from ona_taskrun.rules.model import ActionKind, Observation, Queued
from ona_taskrun.rules.pipeline import decide
from ona_taskrun.rules.spec import parse_spec
from tests.unit.builders import NOW, at, inline_spec, taskrun

POOL = ConnectionKey("OnaConnection", "team-a", "ona")


def w(namespace: str, name: str, second: int) -> Waiter:
    return Waiter(f"2026-01-01T00:00:{second:02d}Z", namespace, name)


# ------------------------------------------------------------------------ limits


def test_limits_are_read_with_a_default_rate() -> None:
    assert parse_limits(None, cluster=False) == NO_LIMITS
    assert parse_limits({"maxConcurrentRuns": 2}, cluster=False) == Limits(2, None, 100.0)
    both = {"maxConcurrentRuns": 10, "maxConcurrentRunsPerNamespace": 3, "requestsPerSecond": 5}
    assert parse_limits(both, cluster=True) == Limits(10, 3, 5.0)
    assert NO_LIMITS.requests_per_second == DEFAULT_REQUESTS_PER_SECOND
    assert not NO_LIMITS.limited


@pytest.mark.parametrize(
    ("raw", "cluster", "message"),
    [
        ("2", False, "spec.limits must be an object"),
        ({"maxConcurrentRuns": 0}, False, "maxConcurrentRuns 0 must be from 1 to 100000"),
        ({"maxConcurrentRuns": "2"}, False, "maxConcurrentRuns '2' is not a whole number"),
        ({"maxConcurrentRuns": True}, False, "maxConcurrentRuns True is not a whole number"),
        (
            {"maxConcurrentRunsPerNamespace": 2},
            False,
            "maxConcurrentRunsPerNamespace is for a ClusterOnaConnection",
        ),
        ({"requestsPerSecond": 0}, False, "requestsPerSecond 0 must be above 0"),
        ({"requestsPerSecond": float("nan")}, False, "requestsPerSecond nan is not a number"),
        ({"requestsPerSecond": 5000}, True, "at most 1000"),
    ],
)
def test_bad_limits_are_named(raw: Any, cluster: bool, message: str) -> None:
    with pytest.raises(InvalidLimits, match=message):
        parse_limits(raw, cluster=cluster)


def test_a_connection_with_bad_limits_is_invalid() -> None:
    body = {
        "kind": "OnaConnection",
        "metadata": {"namespace": "team-a", "name": "ona"},
        "spec": {"tokenSecretRef": {"name": "s", "key": "k"}, "limits": {"maxConcurrentRuns": -1}},
    }
    with pytest.raises(InvalidConnection, match="maxConcurrentRuns -1"):
        parse_connection(body, operator_namespace="ona-system")
    body["spec"]["limits"] = {"maxConcurrentRuns": 2}
    assert parse_connection(body, operator_namespace="ona-system").policy.limits.max_concurrent == 2


# ------------------------------------------------------------------------ order


def test_within_a_namespace_first_created_is_first() -> None:
    line = [w("a", "third", 3), w("a", "first", 1), w("a", "second", 2)]
    assert [x.name for x in fair_order(line, {})] == ["first", "second", "third"]


def test_a_backlog_does_not_starve_another_namespace() -> None:
    backlog = [w("a", f"a{i}", i) for i in range(50)]
    late = w("b", "b0", 59)  # created after all of them
    order = fair_order([*backlog, late], {"a": 2})
    assert order[0] == late  # a has 2 running: b's first run has the earlier turn
    order = fair_order([*backlog, late], {})
    assert order[:2] == [backlog[0], late]  # round-robin: one of each


def test_a_run_over_the_limit_waits_with_its_place() -> None:
    limits = Limits(max_concurrent=2)
    line = [w("a", "r3", 3), w("a", "r4", 4), w("a", "r5", 5)]
    assert turn(line[0], limits, {"a": 1}, line, "OnaConnection a/ona") is None
    queued = turn(line[1], limits, {"a": 1}, line, "OnaConnection a/ona")
    assert queued == Queued(
        1,
        "queued: OnaConnection a/ona allows 2 concurrent runs and 1 were running; it was 1 in line",
    )
    third = turn(line[2], limits, {"a": 1}, line, "OnaConnection a/ona")
    assert third is not None
    assert third.position == 2


def test_a_namespace_at_its_own_limit_is_passed_over() -> None:
    limits = Limits(max_concurrent=10, max_per_namespace=2)
    line = [w("a", "a3", 1), w("b", "b1", 2)]
    assert turn(line[1], limits, {"a": 2}, line, "ClusterOnaConnection shared") is None
    held = turn(line[0], limits, {"a": 2}, line, "ClusterOnaConnection shared")
    assert held is not None
    assert "2 concurrent runs per namespace" in held.message


def test_no_limits_hold_nothing_back() -> None:
    line = [w("a", f"r{i}", i) for i in range(5)]
    assert all(turn(x, NO_LIMITS, {"a": 1000}, line, "c") is None for x in line)


# ------------------------------------------------------------------------ the pipeline


def test_a_queued_run_waits_without_any_action_and_keeps_when_it_was_queued() -> None:
    queued = Observation(queued=Queued(3, "queued: 3rd"))
    decision = decide(taskrun(), queued, NOW)
    succeeded = decision.status.condition("Succeeded")
    assert decision.action is None
    assert succeeded is not None
    assert (succeeded.reason, succeeded.message) == (
        "Queued",
        "queued: 3rd",
    )
    assert decision.status.queued_at == at(0)
    again = decide(taskrun(status={"queuedAt": at(-60)}), queued, NOW)
    assert again.status.queued_at == at(-60)
    let_in = decide(taskrun(status={"queuedAt": at(-60)}), Observation(), NOW)
    assert let_in.action is not None
    assert let_in.action.kind is ActionKind.FIND_OWNED_TASK
    assert let_in.status.queued_at == at(-60)


def test_a_started_run_is_never_queued() -> None:
    started = taskrun(status={"attempt": 2, "taskId": "task-1"})  # waiting to retry
    decision = decide(started, Observation(queued=Queued(1, "queued")), NOW)
    succeeded = decision.status.condition("Succeeded")
    assert succeeded is None or succeeded.reason != "Queued"


def test_suspend_accepts_and_checks_but_starts_nothing() -> None:
    decision = decide(taskrun(inline_spec(suspend=True)), Observation(), NOW)
    succeeded = decision.status.condition("Succeeded")
    assert decision.action is None
    assert decision.requeue_after is None
    assert succeeded is not None
    assert (succeeded.status, succeeded.reason) == (
        "Unknown",
        "Suspended",
    )
    released = decide(taskrun(inline_spec(suspend=False)), Observation(), NOW)
    assert released.action is not None


def test_a_suspended_run_stopped_ends_with_nothing_started() -> None:
    stopped = taskrun(inline_spec(suspend=True, desiredPhase="STOPPED"))
    decision = decide(stopped, Observation(), NOW)
    succeeded = decision.status.condition("Succeeded")
    assert decision.action is None
    assert succeeded is not None
    assert (succeeded.status, succeeded.reason) == ("False", "Stopped")


def test_suspend_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match=r"spec.suspend 'yes' must be true or false"):
        parse_spec(inline_spec(suspend="yes"))


# ------------------------------------------------------------------------ admission


def body(name: str, second: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team-a",
            "name": name,
            "creationTimestamp": f"2026-01-01T00:00:{second:02d}Z",
        },
        "spec": {"connectionRef": {"kind": "OnaConnection", "name": "ona"}, **inline_spec()},
        "status": status,
    }


def test_places_read_from_the_object() -> None:
    assert place_of_body(body("a", 1)) is Place.WAITING
    assert place_of_body(body("a", 1, taskExecutionId="e")) is Place.HOLDING
    assert place_of_body(body("a", 1, attempt=1)) is Place.HOLDING
    done = {"conditions": [{"type": "Succeeded", "status": "True"}], "taskExecutionId": "e"}
    assert place_of_body(body("a", 1, **done)) is Place.NONE
    suspended = body("a", 1)
    suspended["spec"]["suspend"] = True
    assert place_of_body(suspended) is Place.NONE
    assert place_of(taskrun(inline_spec(suspend=True))) is Place.NONE
    assert place_of(taskrun(status={"startRequestedAt": at(-1)})) is Place.HOLDING


def test_one_free_slot_goes_to_one_run_and_a_freed_slot_wakes_the_next() -> None:
    woken: list[str] = []
    admission = Admission(wake=woken.append)
    limits = Limits(max_concurrent=1)
    for i in range(3):
        admission.note_body(f"team-a/r{i}", body(f"r{i}", i))
    assert admission.turn("team-a/r1", limits, "c") is not None  # r0 is first in line
    assert admission.turn("team-a/r0", limits, "c") is None  # let in: its slot is taken
    assert admission.turn("team-a/r0", limits, "c") is None  # and kept
    second = admission.turn("team-a/r1", limits, "c")
    assert second == Queued(
        1, "queued: c allows 1 concurrent runs and 1 were running; it was 1 in line"
    )
    admission.note_body("team-a/r0", body("r0", 0, taskExecutionId="e0"))  # started
    assert admission.queued() == {("team-a", POOL): 2}
    assert woken == []
    admission.note_body(  # r0 ends: its slot goes to r1, and only r1 is woken
        "team-a/r0",
        body("r0", 0, taskExecutionId="e0", conditions=[{"type": "Succeeded", "status": "True"}]),
    )
    assert woken == ["team-a/r1"]
    assert admission.turn("team-a/r1", limits, "c") is None
    admission.forget("team-a/r1")
    assert woken == ["team-a/r1", "team-a/r2"]
    admission.forget("team-a/r0")
    admission.forget("team-a/r2")
    assert len(admission) == 0
    assert admission.queued() == {}


def test_a_forged_claim_counts_only_until_the_verified_reconcile() -> None:
    admission = Admission(wake=lambda key: None)
    forged = body("forged", 0)
    forged["metadata"]["annotations"] = {"automation.ona.com/start-requested-at": at(0)}
    admission.note_body("team-a/forged", forged)
    admission.note_body("team-a/real", body("real", 1))
    limits = Limits(max_concurrent=1)
    assert admission.turn("team-a/real", limits, "c") is not None  # the hint holds a slot
    # Its reconcile parses it with the claim's signature checked: not claimed, waiting.
    admission.note_run("team-a/forged", taskrun(forged["spec"]), forged)
    assert admission.waiting("team-a/forged")
    assert admission.turn("team-a/forged", limits, "c") is None  # first created, first in
    assert admission.turn("team-a/real", limits, "c") is not None


def test_suspend_cannot_pause_or_hide_a_started_run() -> None:
    # An author setting spec.suspend on a running run neither stops following it nor frees
    # its slot for their next run.
    running = taskrun(
        inline_spec(suspend=True),
        {"taskId": "task-1", "taskExecutionId": "exec-1", "attempt": 1, "phase": "RUNNING"},
    )
    decision = decide(running, Observation(), NOW)
    succeeded = decision.status.condition("Succeeded")
    assert succeeded is None or succeeded.reason != "Suspended"
    assert place_of(running) is Place.HOLDING


def test_a_run_still_in_line_is_not_rewritten_at_each_look() -> None:
    first = decide(taskrun(), Observation(queued=Queued(5, "queued: 5th")), NOW)
    run = taskrun(status=first.status.to_dict())
    later = decide(run, Observation(queued=Queued(2, "queued: 2nd")), NOW)
    assert later.status == run.status  # nothing to write: its place when queued stays
    assert later.action is None
    assert later.requeue_after is not None


# ------------------------------------------------------------------------ the walk, checked


def _reference(
    limits: Limits, running: dict[str, int], waiting: list[Waiter]
) -> dict[Waiter, tuple[bool, bool, int, int]]:
    """The fair order's walk as the contract states it, the slow way: sort every waiting
    run by (namespace's running + runs ahead in its namespace, creation), then give the
    free slots to the first whose namespace is not at its own limit. Per run: whether it
    starts, whether its namespace is full, its place, its namespace's runs."""
    ahead: dict[str, int] = {}
    turns = []
    for waiter in sorted(waiting):
        turns.append((running.get(waiter.namespace, 0) + ahead.get(waiter.namespace, 0), waiter))
        ahead[waiter.namespace] = ahead.get(waiter.namespace, 0) + 1
    free = (
        float("inf")
        if limits.max_concurrent is None
        else limits.max_concurrent - sum(running.values())
    )
    taken = dict(running)
    position = 0
    places = {}
    for _, waiter in sorted(turns):
        count = taken.get(waiter.namespace, 0)
        full = limits.max_per_namespace is not None and count >= limits.max_per_namespace
        starts = not full and free > 0
        places[waiter] = (starts, full, position + 1, count)
        if full:
            continue
        if starts:
            free -= 1
            taken[waiter.namespace] = count + 1
        else:
            position += 1
    return places


def test_the_walk_agrees_with_the_contract_on_random_lines() -> None:
    # The walk merges the namespaces' lines only as far as it needs; every answer must be
    # the one the slow, whole sort gives.
    random = __import__("random").Random(20261207)
    cases = 0
    for _ in range(600):
        namespaces = [f"ns{i}" for i in range(random.randint(1, 4))]
        waiting = list(
            {
                w(random.choice(namespaces), f"r{i}", random.randint(0, 9))
                for i in range(random.randint(0, 14))
            }
        )
        running = {ns: random.randint(0, 4) for ns in namespaces if random.random() < 0.7}
        limits = Limits(
            random.choice([None, 1, 2, 3, 5, 8, 20]),
            random.choice([None, None, 1, 2, 3]),
        )
        if not limits.limited:
            continue
        expected = _reference(limits, running, waiting)
        starting = [x for x in sorted(expected, key=lambda x: expected[x][2]) if expected[x][0]]
        assert set(let_in(limits, running, waiting)) == set(starting)
        for waiter in waiting:
            starts, full, position, count = expected[waiter]
            queued = turn(waiter, limits, running, waiting, "c")
            cases += 1
            if starts:
                assert queued is None, (limits, running, waiting, waiter)
                continue
            assert queued is not None, (limits, running, waiting, waiter)
            assert queued.position == position, (limits, running, waiting, waiter)
            if full:
                assert f"and {count} of namespace {waiter.namespace}" in queued.message
            else:
                assert f"it was {position} in line" in queued.message
    assert cases > 2000


def test_the_order_of_let_in_is_the_fair_order() -> None:
    line = [w("a", f"a{i}", i) for i in range(5)] + [w("b", "b0", 9)]
    assert let_in(Limits(max_concurrent=3), {"a": 0}, line) == [line[0], line[5], line[1]]


def test_a_line_keeps_each_namespace_in_order_as_runs_join_and_leave() -> None:
    line = Line([w("a", "late", 5), w("a", "early", 1), w("b", "b", 3)])
    assert len(line) == 3
    assert "a/late" in line
    line.add(w("a", "middle", 3))
    assert [x.name for x in line.order({})] == ["early", "b", "middle", "late"]
    assert line.discard("a/middle") == w("a", "middle", 3)
    assert line.discard("a/middle") is None
    line.add(w("a", "early", 1))  # again: no double entry
    assert [x.name for x in line.order({"a": 1})] == ["b", "early", "late"]
    line.discard("b/b")
    assert [ns for ns, _ in line.lines()] == ["a"]
