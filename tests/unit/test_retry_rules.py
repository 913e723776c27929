"""`spec.retries` and `spec.ttlSecondsAfterFinished` through `decide`: one row per
situation a retrying or finished TaskRun can be in, plus the back-off and spec rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from ona_taskrun.rules import retry
from ona_taskrun.rules.conditions import apply_execution
from ona_taskrun.rules.model import (
    ADOPT_ANNOTATION,
    SUCCEEDED,
    Access,
    Action,
    ActionKind,
    ConnectionView,
    FailureKind,
    InvalidSpec,
    Observation,
    Phase,
    RemoteExecution,
    RemoteFailure,
    Result,
    Settings,
    Status,
    TaskRun,
)
from ona_taskrun.rules.pipeline import decide
from ona_taskrun.rules.results import apply_result
from ona_taskrun.rules.spec import parse_spec

from .builders import (
    EXEC,
    NOW,
    TASK,
    at,
    cond,
    condition_table,
    events_table,
    execution,
    finished,
    finished_conditions,
    inline_spec,
    pending,
    pending_conditions,
    ref_id_spec,
    taskrun,
)

CFG = Settings()  # back-off base 10 s, start settle 15 s, clock skew 5 s

RUNNING_ATTEMPT_1: dict[str, Any] = {
    "observedGeneration": 1,
    "taskId": TASK,
    "taskExecutionId": EXEC,
    "phase": "RUNNING",
    "statusVersion": "3",
    "startedAt": at(-60),
    "startRequestedAt": at(-70),
    "startAttempts": 1,
    "attempt": 1,
    "conditions": pending_conditions("Running"),
}
FAILED_REMOTE = execution(
    phase=Phase.FAILED,
    version=4,
    started_at=at(-60),
    completed_at=at(-1),
    failure_message="exit code 2",
)
FIRST_ATTEMPT = {
    "executionId": EXEC,
    "phase": "FAILED",
    "failureMessage": "exit code 2",
    "startedAt": at(-60),
    "completedAt": at(-1),
}
# Attempt 1 failed; attempt 2 waits for its back-off, due in 8 s.
BACKING_OFF: dict[str, Any] = {
    "observedGeneration": 1,
    "taskId": TASK,
    "startAttempts": 1,
    "attempt": 2,
    "attempts": [FIRST_ATTEMPT],
    "nextAttemptAt": at(8),
    "conditions": pending_conditions("Retrying"),
}


def test_failed_attempt_with_retries_left_waits_then_retries() -> None:
    run = taskrun(inline_spec(retries=2), RUNNING_ATTEMPT_1)
    decision = decide(run, Observation(execution=FAILED_REMOTE), NOW, CFG)

    assert decision.action is None
    assert decision.track is None
    assert decision.requeue_after == 10.0
    status = decision.status.to_dict()
    assert status["attempt"] == 2
    assert status["attempts"] == [FIRST_ATTEMPT]
    assert status["nextAttemptAt"] == at(10)
    for gone in ("taskExecutionId", "phase", "statusVersion", "startRequestedAt", "startedAt"):
        assert gone not in status, gone
    assert status["startAttempts"] == 1
    assert condition_table(decision.status) == pending("Retrying")
    succeeded = decision.status.condition(SUCCEEDED)
    assert succeeded is not None
    assert "attempt 1 failed (exit code 2)" in succeeded.message
    assert "attempt 2 of 3" in succeeded.message
    assert events_table(decision.events) == [("Warning", "Retrying")]


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 10.0), (2, 20.0), (3, 40.0), (5, 160.0), (6, 300.0), (10, 300.0)],
)
def test_backoff_doubles_from_the_base_up_to_five_minutes(attempt: int, delay: float) -> None:
    assert retry.backoff(attempt, 10.0) == delay
    assert retry.backoff(attempt, 0.5) == min(0.5 * 2 ** (attempt - 1), 300.0)


def test_the_back_off_of_a_later_attempt_is_longer() -> None:
    third = {**RUNNING_ATTEMPT_1, "attempt": 3, "attempts": [FIRST_ATTEMPT, FIRST_ATTEMPT]}
    decision = decide(
        taskrun(inline_spec(retries=5), third), Observation(execution=FAILED_REMOTE), NOW, CFG
    )
    assert decision.status.attempt == 4
    assert decision.requeue_after == 40.0
    assert decision.status.next_attempt_at == at(40)


def test_a_fractional_back_off_is_rounded_up_never_cut_short() -> None:
    cfg = replace(CFG, retry_backoff_base=0.5)
    now = NOW + timedelta(milliseconds=700)
    run = taskrun(inline_spec(retries=1), RUNNING_ATTEMPT_1)
    decision = decide(run, Observation(execution=FAILED_REMOTE), now, cfg)
    # 0.7 s + 0.5 s = 1.2 s, kept in whole seconds as 2 s.
    assert decision.status.next_attempt_at == at(2)
    assert decision.requeue_after == pytest.approx(1.3)


@pytest.mark.parametrize(
    ("spec", "status", "remote", "reason", "message"),
    [
        pytest.param(
            inline_spec(retries=2),
            {**RUNNING_ATTEMPT_1, "attempt": 3, "attempts": [FIRST_ATTEMPT, FIRST_ATTEMPT]},
            FAILED_REMOTE,
            "Failed",
            "exit code 2 (attempt 3 of 3; no retries left)",
            id="retries-exhausted",
        ),
        pytest.param(
            inline_spec(),
            RUNNING_ATTEMPT_1,
            FAILED_REMOTE,
            "Failed",
            "exit code 2",
            id="no-retries",
        ),
        pytest.param(
            inline_spec(retries=3, timeout="1m"),
            {**RUNNING_ATTEMPT_1, "stopRequestedAt": at(-2), "stopReason": "TimedOut"},
            FAILED_REMOTE,
            "Failed",
            "exit code 2",
            id="failed-while-the-timeout-stopped-it",
        ),
        pytest.param(
            inline_spec(retries=3, timeout="1m"),
            {**RUNNING_ATTEMPT_1, "stopRequestedAt": at(-2), "stopReason": "TimedOut"},
            execution(phase=Phase.STOPPED, version=4),
            "TimedOut",
            "spec.timeout",
            id="timed-out",
        ),
        pytest.param(
            inline_spec(retries=3, desiredPhase="STOPPED"),
            {**RUNNING_ATTEMPT_1, "stopRequestedAt": at(-2), "stopReason": "Requested"},
            FAILED_REMOTE,
            "Failed",
            "exit code 2",
            id="failed-while-the-spec-stopped-it",
        ),
        pytest.param(
            inline_spec(retries=3),
            RUNNING_ATTEMPT_1,
            execution(phase=Phase.STOPPED, version=4),
            "Stopped",
            "stopped outside this TaskRun",
            id="stopped-outside",
        ),
    ],
)
def test_what_is_never_retried(
    spec: dict[str, Any],
    status: dict[str, Any],
    remote: RemoteExecution,
    reason: str,
    message: str,
) -> None:
    decision = decide(taskrun(spec, status), Observation(execution=remote), NOW, CFG)
    assert decision.action is None
    assert decision.status.finished
    succeeded = decision.status.condition(SUCCEEDED)
    assert succeeded is not None
    assert (succeeded.status, succeeded.reason) == ("False", reason)
    assert message in succeeded.message
    assert decision.status.attempt == status["attempt"]
    assert len(decision.status.attempts) == len(status.get("attempts", ()))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (FailureKind.NOT_FOUND, "TaskNotFound"),
        (FailureKind.UNAUTHENTICATED, "Unauthorized"),
        (FailureKind.PERMISSION_DENIED, "Forbidden"),
    ],
)
def test_a_refused_start_of_a_later_attempt_ends_the_run(kind: FailureKind, reason: str) -> None:
    run = taskrun(inline_spec(retries=3), {**BACKING_OFF, "nextAttemptAt": at(-1)})
    decision = decide(run, Observation(), NOW, CFG)
    assert decision.action == Action(ActionKind.START, task_id=TASK)
    claimed = replace(run, status=decision.status)
    refused = RemoteFailure(kind, "no")
    after, _, _ = apply_result(
        claimed, decision.action, Result(failure=refused), Observation(), NOW
    )
    assert after.status.finished
    assert condition_table(after.status)["Succeeded"] == ("False", reason)
    assert decide(after, Observation(), NOW + timedelta(hours=1), CFG).action is None


def test_not_permitted_during_back_off_ends_the_run_without_a_new_attempt() -> None:
    view = ConnectionView(Access.REFUSED, "NotPermitted", "policy refuses env-1")
    decision = decide(
        taskrun(inline_spec(retries=3), {**BACKING_OFF, "nextAttemptAt": at(-1)}),
        Observation(connection=view),
        NOW,
        CFG,
    )
    assert decision.action is None
    assert condition_table(decision.status)["Succeeded"] == ("False", "NotPermitted")


def test_back_off_not_over_waits_without_calling_anything() -> None:
    decision = decide(taskrun(inline_spec(retries=2), BACKING_OFF), Observation(), NOW, CFG)
    assert decision.action is None
    assert decision.requeue_after == 8.0
    assert condition_table(decision.status) == pending("Retrying")
    assert decision.status.start_requested_at == ""


def test_back_off_over_claims_the_next_attempt_and_starts_it() -> None:
    run = taskrun(inline_spec(retries=2), {**BACKING_OFF, "nextAttemptAt": at(-1)})
    decision = decide(run, Observation(), NOW, CFG)
    assert decision.action == Action(ActionKind.START, task_id=TASK)
    status = decision.status
    assert (status.start_requested_at, status.attempt, status.claim_attempt) == (at(0), 2, 2)
    assert status.start_attempts == 2
    assert status.next_attempt_at == ""
    assert [a["executionId"] for a in status.attempts] == [EXEC]


def test_the_first_claim_is_for_attempt_one() -> None:
    decision = decide(
        taskrun(ref_id_spec(), {"observedGeneration": 1, "taskId": "task-ref"}),
        Observation(),
        NOW,
        CFG,
    )
    assert decision.action == Action(ActionKind.START, task_id="task-ref")
    assert (decision.status.attempt, decision.status.claim_attempt) == (1, 1)


def test_stop_during_back_off_ends_stopped_with_no_new_attempt() -> None:
    run = taskrun(inline_spec(retries=2, desiredPhase="STOPPED"), BACKING_OFF, generation=2)
    decision = decide(run, Observation(), NOW, CFG)
    assert decision.action is None
    assert decision.status.phase == "STOPPED"
    assert decision.status.attempt == 2
    assert decision.status.next_attempt_at == ""
    assert condition_table(decision.status) == finished("False", "Stopped", stalled=False)
    succeeded = decision.status.condition(SUCCEEDED)
    assert succeeded is not None
    assert "while waiting to retry" in succeeded.message
    assert events_table(decision.events) == [("Normal", "Stopped")]


# A claim for attempt 2 made 20 s ago (past the settle) with no execution recorded.
CLAIMED_ATTEMPT_2: dict[str, Any] = {
    **BACKING_OFF,
    "nextAttemptAt": "",
    "startRequestedAt": at(-20),
    "startAttempts": 2,
    "conditions": pending_conditions("StartOutcomeUnknown"),
}


def claimed_attempt_2(spec: dict[str, Any], **annotations: str) -> TaskRun:
    run = taskrun(spec, CLAIMED_ATTEMPT_2, annotations=annotations)
    return replace(run, status=replace(run.status, claim_attempt=2))


def test_unknown_start_of_attempt_two_looks_for_its_execution() -> None:
    decision = decide(claimed_attempt_2(inline_spec(retries=2)), Observation(), NOW, CFG)
    assert decision.action == Action(ActionKind.FIND_EXECUTIONS, task_id=TASK)


@pytest.mark.parametrize(
    ("spec", "candidates", "adopted"),
    [
        pytest.param(
            inline_spec(retries=2),
            (
                execution(EXEC, Phase.FAILED, created_at=at(-90)),
                execution("exec-2", Phase.RUNNING, created_at=at(-19)),
            ),
            "exec-2",
            id="inline-skips-the-recorded-attempt",
        ),
        pytest.param(
            ref_id_spec(retries=2),
            (
                execution(EXEC, Phase.FAILED, created_at=at(-19), creator_id="me"),
                execution("exec-2", Phase.RUNNING, created_at=at(-19), creator_id="me"),
            ),
            "exec-2",
            id="recorded-attempt-never-adopted-even-if-recent",
        ),
        pytest.param(
            inline_spec(retries=2),
            (
                execution("exec-old", Phase.FAILED, created_at=at(-60)),
                execution("exec-2", Phase.RUNNING, created_at=at(-19)),
            ),
            "exec-2",
            id="inline-only-after-this-attempts-claim",
        ),
    ],
)
def test_unknown_start_of_a_later_attempt_adopts_only_its_own_execution(
    spec: dict[str, Any], candidates: tuple[RemoteExecution, ...], adopted: str
) -> None:
    obs = Observation(candidates=candidates, own_principal="me")
    decision = decide(claimed_attempt_2(spec), obs, NOW, CFG)
    assert decision.status.task_execution_id == adopted
    assert decision.track == adopted
    assert condition_table(decision.status)["Succeeded"] == ("Unknown", "Adopted")


def test_only_earlier_attempts_executions_found_means_start_again() -> None:
    obs = Observation(candidates=(execution(EXEC, Phase.FAILED, created_at=at(-19)),))
    decision = decide(claimed_attempt_2(inline_spec(retries=2)), obs, NOW, CFG)
    assert decision.status.task_execution_id == ""
    assert decision.status.start_requested_at == ""
    assert events_table(decision.events) == [("Normal", "Restarting")]
    again = decide(
        replace(claimed_attempt_2(inline_spec(retries=2)), status=decision.status),
        Observation(),
        NOW,
        CFG,
    )
    assert again.action == Action(ActionKind.START, task_id=TASK)
    assert again.status.attempt == 2


def test_adopt_annotation_naming_an_earlier_attempts_execution_is_ignored() -> None:
    run = claimed_attempt_2(inline_spec(retries=2), **{ADOPT_ANNOTATION: EXEC})
    decision = decide(run, Observation(), NOW, CFG)
    assert decision.status.task_execution_id == ""
    assert decision.action == Action(ActionKind.FIND_EXECUTIONS, task_id=TASK)


def test_a_claim_left_from_an_earlier_attempt_is_void() -> None:
    run = taskrun(inline_spec(retries=2), {**BACKING_OFF, "startRequestedAt": at(-30)})
    run = replace(run, status=replace(run.status, claim_attempt=1))
    decision = decide(run, Observation(), NOW, CFG)
    assert decision.action is None
    assert decision.status.start_requested_at == ""
    assert condition_table(decision.status)["Succeeded"] == ("Unknown", "Retrying")


def test_a_claim_already_made_for_the_next_attempt_survives_the_move_to_it() -> None:
    """If attempt 2's claim was written but the move to attempt 2 was not (it never is
    written later than the claim, but nothing may depend on it), the claim is kept and its
    outcome resolved: no second start for attempt 2."""
    run = taskrun(inline_spec(retries=2), {**RUNNING_ATTEMPT_1, "startRequestedAt": at(-20)})
    run = replace(run, status=replace(run.status, claim_attempt=2))
    moved = decide(run, Observation(execution=FAILED_REMOTE), NOW, CFG)
    assert moved.status.attempt == 2
    assert moved.status.start_requested_at == at(-20)
    nxt = decide(replace(run, status=moved.status), Observation(), NOW, CFG)
    assert nxt.action == Action(ActionKind.FIND_EXECUTIONS, task_id=TASK)


def test_every_attempt_starts_once_and_no_more_attempts_than_allowed() -> None:
    """A whole run with retries: 2, every execution failing, each claim read back and each
    decision repeated (as a restart would): exactly three STARTs, then Failed."""
    run = taskrun(inline_spec(retries=2), {"observedGeneration": 1, "taskId": TASK})
    now = NOW
    starts = 0
    for _ in range(40):
        decision = decide(run, Observation(), now, CFG)
        repeat = decide(replace(run, status=decision.status), Observation(), now, CFG)
        run = replace(run, status=decision.status)
        if decision.action is not None and decision.action.kind is ActionKind.START:
            # Decided again with its claim read back: never a second start.
            assert repeat.action is None or repeat.action.kind is not ActionKind.START
            starts += 1
            started = execution(f"exec-{starts}", Phase.RUNNING, version=1, created_at=at(0))
            run, _, _ = apply_result(
                run, decision.action, Result(execution=started), Observation(), now
            )
            failed = replace(started, phase=Phase.FAILED, status_version=2, status_version_text="2")
            run = replace(run, status=apply_execution(run.status, failed))
        if run.status.finished:
            break
        now += timedelta(seconds=decision.requeue_after or 1)
    assert starts == 3
    assert condition_table(run.status)["Succeeded"] == ("False", "Failed")
    assert run.status.attempt == 3
    assert [a["executionId"] for a in run.status.attempts] == ["exec-1", "exec-2"]
    assert run.status.task_execution_id == "exec-3"


# ------------------------------------------------------------------------ clean-up

SUCCEEDED_AT = {
    "observedGeneration": 1,
    "taskId": TASK,
    "taskExecutionId": EXEC,
    "phase": "SUCCEEDED",
    "completedAt": at(-100),
    "conditions": finished_conditions(True, "Succeeded", False),
}
# Ended before any execution (no completedAt): the time Succeeded became False counts.
NOT_PERMITTED_AT = {
    "observedGeneration": 1,
    "conditions": [
        cond("Succeeded", "False", "NotPermitted", when=at(-30)),
        cond("Reconciling", "False", "NotPermitted", when=at(-30)),
        cond("Stalled", "True", "NotPermitted", when=at(-30)),
    ],
}


@pytest.mark.parametrize(
    ("ttl", "status", "action", "requeue"),
    [
        pytest.param(60, SUCCEEDED_AT, ActionKind.DELETE_TASKRUN, None, id="expired"),
        pytest.param(0, SUCCEEDED_AT, ActionKind.DELETE_TASKRUN, None, id="zero"),
        pytest.param(300, SUCCEEDED_AT, None, 200.0, id="not-yet"),
        pytest.param(20, NOT_PERMITTED_AT, ActionKind.DELETE_TASKRUN, None, id="no-execution"),
        pytest.param(60, NOT_PERMITTED_AT, None, 30.0, id="no-execution-not-yet"),
    ],
)
def test_ttl_deletes_a_finished_taskrun_that_long_after_it_finished(
    ttl: int, status: dict[str, Any], action: ActionKind | None, requeue: float | None
) -> None:
    decision = decide(
        taskrun(inline_spec(ttlSecondsAfterFinished=ttl), status), Observation(), NOW, CFG
    )
    assert (decision.action.kind if decision.action else None) == action
    assert decision.requeue_after == requeue
    assert decision.status.to_dict() == Status.from_dict(status).to_dict()
    if action is not None:
        assert events_table(decision.events) == [("Normal", "Expired")]


def test_without_ttl_a_finished_taskrun_is_kept() -> None:
    decision = decide(taskrun(inline_spec(), SUCCEEDED_AT), Observation(), NOW, CFG)
    assert (decision.action, decision.requeue_after) == (None, None)


def test_a_deleted_taskrun_with_ttl_follows_its_deletion_policy() -> None:
    run = taskrun(inline_spec(ttlSecondsAfterFinished=0), SUCCEEDED_AT, deleting=True)
    decision = decide(run, Observation(), NOW, CFG)
    assert decision.action == Action(ActionKind.DELETE_TASK, task_id=TASK)


def test_a_running_taskrun_with_ttl_is_not_deleted() -> None:
    decision = decide(
        taskrun(inline_spec(ttlSecondsAfterFinished=0), RUNNING_ATTEMPT_1),
        Observation(),
        NOW,
        CFG,
    )
    assert decision.action is None or decision.action.kind is not ActionKind.DELETE_TASKRUN


# ------------------------------------------------------------------------ the spec


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"retries": 11}, "spec.retries 11 must be from 0 to 10"),
        ({"retries": -1}, "spec.retries -1 must be from 0 to 10"),
        ({"retries": "3"}, "spec.retries '3' is not a whole number"),
        ({"retries": True}, "spec.retries True is not a whole number"),
        ({"ttlSecondsAfterFinished": -5}, "spec.ttlSecondsAfterFinished -5 must be from 0"),
        ({"ttlSecondsAfterFinished": 1.5}, "spec.ttlSecondsAfterFinished 1.5 is not"),
    ],
)
def test_out_of_range_lifecycle_fields_are_invalid(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message.replace(".", r"\.")):
        parse_spec(inline_spec(**extra))


def test_lifecycle_fields_are_read() -> None:
    spec = parse_spec(inline_spec(retries=3, ttlSecondsAfterFinished=600))
    assert (spec.retries, spec.ttl_after_finished) == (3, timedelta(minutes=10))
    default = parse_spec(inline_spec())
    assert (default.retries, default.ttl_after_finished) == (0, None)
