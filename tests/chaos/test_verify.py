"""The chaos verdict on hand-made records: it must catch each kind of broken guarantee,
and accept what a correct operator leaves behind (including a stall waiting for a person)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tools.chaos.plan import SCHEDULE, TEAM_CONNECTION
from tools.chaos.run import scheduled_runs
from tools.chaos.verify import (
    INLINE,
    REF_ID,
    SHARED,
    Planned,
    Verdict,
    judge_limit,
    judge_schedule,
    verify,
)

SHARED_TASK = "11111111-1111-4111-8111-111111111111"
OWN_TASK = "22222222-2222-4222-8222-222222222222"
TEAM_TASK = "33333333-3333-4333-8333-333333333333"
DEFAULT_SUBJECT = "aaaaaaaa-0000-4000-8000-000000000001"
TEAM_SUBJECT = "bbbbbbbb-0000-4000-8000-000000000002"
SUBJECTS = {"": DEFAULT_SUBJECT, "team": TEAM_SUBJECT}


def _cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def taskrun(
    name: str,
    *,
    uid: str = "",
    execution: str = "",
    phase: str = "",
    version: str = "",
    failure: str = "",
    succeeded: tuple[str, str] = ("True", "Succeeded"),
    stalled: bool = False,
) -> dict[str, Any]:
    conditions = [_cond("Succeeded", *succeeded)]
    if stalled:
        conditions = [
            _cond("Succeeded", "Unknown", "StartOutcomeUnknown"),
            _cond("Stalled", "True", "StartOutcomeUnknown", "cannot tell which execution"),
        ]
    status: dict[str, Any] = {"conditions": conditions}
    for key, value in (
        ("taskExecutionId", execution),
        ("phase", phase),
        ("statusVersion", version),
        ("failureMessage", failure),
    ):
        if value:
            status[key] = value
    return {"metadata": {"name": name, "uid": uid or f"uid-{name}"}, "status": status}


def execution(
    id_: str,
    task: str,
    *,
    reference: str = "",
    phase: str = "SUCCEEDED",
    version: str = "10",
    failure: str = "",
    creator: str = DEFAULT_SUBJECT,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": f"TASK_EXECUTION_PHASE_{phase}",
        "statusVersion": version,
    }
    if failure:
        status["failureMessage"] = failure
    metadata = {"taskId": task, "creator": {"id": creator}}
    return {
        "execution": {"id": id_, "metadata": metadata, "status": status},
        "taskReference": reference,
    }


def task(id_: str, reference: str, creator: str) -> dict[str, Any]:
    return {"id": id_, "metadata": {"reference": reference, "creator": {"id": creator}}}


_seq = iter(range(1, 1_000_000))


def call(
    method: str, subject: str | None, request: str = "", result: str = "", fault: str = ""
) -> dict[str, Any]:
    return {
        "seq": next(_seq),
        "method": method,
        "subjectId": subject,
        "requestId": request or None,
        "resultId": result or None,
        "fault": fault or None,
    }


def test_a_clean_run_passes() -> None:
    planned = [
        Planned("a", INLINE),
        Planned("b", REF_ID, OWN_TASK),
        Planned("s1", SHARED, SHARED_TASK),
        Planned("s2", SHARED, SHARED_TASK),
        Planned("never", INLINE, created_stopped=True),
    ]
    runs = [
        taskrun(
            "a",
            execution="e-a",
            phase="FAILED",
            version="11",
            failure="boom",
            succeeded=("False", "Failed"),
        ),
        taskrun("b", execution="e-b", phase="SUCCEEDED", version="10"),
        taskrun("s1", execution="e-s1", phase="SUCCEEDED", version="10"),
        taskrun("s2", stalled=True),
        taskrun("never", phase="STOPPED", succeeded=("False", "Stopped")),
    ]
    executions = [
        execution(
            "e-a",
            "task-a",
            reference="k8s-taskrun-uid-a",
            phase="FAILED",
            version="11",
            failure="boom",
        ),
        execution("e-b", OWN_TASK),
        execution("e-s1", SHARED_TASK),
        execution("e-s2", SHARED_TASK),  # the stalled one's own start, not yet adopted
    ]
    verdict = verify(planned, runs, executions)
    assert verdict.ok, verdict.to_json()
    assert len(verdict.stalled) == 1
    assert verdict.shared_unrecorded == 1
    assert verdict.outcomes["Stalled/StartOutcomeUnknown"] == 1


def test_two_executions_for_one_taskrun_are_a_duplicate() -> None:
    planned = [Planned("a", INLINE)]
    runs = [taskrun("a", execution="e1", phase="SUCCEEDED", version="10")]
    executions = [
        execution("e1", "t", reference="k8s-taskrun-uid-a"),
        execution("e2", "t", reference="k8s-taskrun-uid-a"),
    ]
    verdict = verify(planned, runs, executions)
    assert [f.taskrun for f in verdict.duplicates] == ["a"]
    assert not verdict.ok


def test_an_unowned_execution_of_the_shared_task_is_a_duplicate() -> None:
    planned = [Planned("s1", SHARED, SHARED_TASK)]
    runs = [taskrun("s1", execution="e1", phase="SUCCEEDED", version="10")]
    executions = [execution("e1", SHARED_TASK), execution("e2", SHARED_TASK)]
    verdict = verify(planned, runs, executions)
    assert len(verdict.duplicates) == 1
    assert "e2" in verdict.duplicates[0].detail


def test_one_execution_recorded_by_two_taskruns_is_caught() -> None:
    planned = [Planned("s1", SHARED, SHARED_TASK), Planned("s2", SHARED, SHARED_TASK)]
    runs = [
        taskrun("s1", execution="e1", phase="SUCCEEDED", version="10"),
        taskrun("s2", execution="e1", phase="SUCCEEDED", version="10"),
    ]
    executions = [execution("e1", SHARED_TASK), execution("e2", SHARED_TASK)]
    verdict = verify(planned, runs, executions)
    assert any("e1" in f.detail for f in verdict.duplicates)
    assert any("e2" in f.detail for f in verdict.duplicates)


def test_an_execution_of_a_created_stopped_taskrun_is_a_duplicate() -> None:
    planned = [Planned("never", INLINE, created_stopped=True)]
    runs = [taskrun("never", phase="STOPPED", succeeded=("False", "Stopped"))]
    executions = [execution("e1", "t", reference="k8s-taskrun-uid-never")]
    assert len(verify(planned, runs, executions).duplicates) == 1


def test_an_ended_execution_with_a_running_taskrun_is_lost() -> None:
    planned = [Planned("a", REF_ID, OWN_TASK)]
    runs = [
        taskrun("a", execution="e1", phase="RUNNING", version="9", succeeded=("Unknown", "Running"))
    ]
    verdict = verify(planned, runs, [execution("e1", OWN_TASK, phase="SUCCEEDED")])
    assert [f.taskrun for f in verdict.lost] == ["a"]
    assert [f.taskrun for f in verdict.not_converged] == ["a"]


def test_an_unrecorded_execution_is_lost_unless_stalled() -> None:
    planned = [Planned("a", REF_ID, OWN_TASK)]
    running = taskrun("a", succeeded=("Unknown", "Starting"))
    verdict = verify(planned, [running], [execution("e1", OWN_TASK)])
    assert "did not record it" in verdict.lost[0].detail


def test_a_taskrun_that_never_started_is_lost() -> None:
    planned = [Planned("a", INLINE)]
    verdict = verify(planned, [taskrun("a", succeeded=("Unknown", "Starting"))], [])
    assert verdict.lost[0].detail == "never got an execution"


def test_stop_before_start_is_not_lost() -> None:
    planned = [Planned("a", INLINE, stop_edit=True)]
    runs = [taskrun("a", phase="STOPPED", succeeded=("False", "Stopped"))]
    assert verify(planned, runs, []).ok


def test_stale_version_and_failure_message_are_mismatches() -> None:
    planned = [Planned("a", REF_ID, OWN_TASK)]
    runs = [
        taskrun(
            "a",
            execution="e1",
            phase="FAILED",
            version="10",
            failure="old",
            succeeded=("False", "Failed"),
        )
    ]
    executions = [execution("e1", OWN_TASK, phase="FAILED", version="11", failure="boom")]
    verdict = verify(planned, runs, executions)
    assert len(verdict.mismatches) == 2
    assert not verdict.lost


def test_final_taskrun_with_a_still_running_execution_is_a_mismatch() -> None:
    planned = [Planned("a", REF_ID, OWN_TASK)]
    runs = [taskrun("a", execution="e1", phase="STOPPED", succeeded=("False", "TimedOut"))]
    verdict = verify(planned, runs, [execution("e1", OWN_TASK, phase="RUNNING")])
    assert "still RUNNING" in verdict.mismatches[0].detail


# ------------------------------------------------------------------ two connections


def _two_connections() -> tuple[list[Planned], list[dict[str, Any]], list[dict[str, Any]]]:
    """A correct run with both connections: planned, TaskRuns, executions."""
    planned = [
        Planned("d-inline", INLINE),
        Planned("t-inline", INLINE, connection="team"),
        Planned("d-ref", REF_ID, OWN_TASK),
        Planned("t-ref", REF_ID, TEAM_TASK, connection="team"),
        Planned("d-shared", SHARED, SHARED_TASK),
        Planned("t-shared", SHARED, SHARED_TASK, connection="team"),
        Planned("t-shared-stalled", SHARED, SHARED_TASK, connection="team"),
    ]
    runs = [
        taskrun("d-inline", execution="e-di", phase="SUCCEEDED", version="10"),
        taskrun("t-inline", execution="e-ti", phase="SUCCEEDED", version="10"),
        taskrun("d-ref", execution="e-dr", phase="SUCCEEDED", version="10"),
        taskrun("t-ref", execution="e-tr", phase="SUCCEEDED", version="10"),
        taskrun("d-shared", execution="e-ds", phase="SUCCEEDED", version="10"),
        taskrun("t-shared", execution="e-ts", phase="SUCCEEDED", version="10"),
        taskrun("t-shared-stalled", stalled=True),
    ]
    executions = [
        execution("e-di", "task-di", reference="k8s-taskrun-uid-d-inline"),
        execution("e-ti", "task-ti", reference="k8s-taskrun-uid-t-inline", creator=TEAM_SUBJECT),
        execution("e-dr", OWN_TASK),
        execution("e-tr", TEAM_TASK, creator=TEAM_SUBJECT),
        execution("e-ds", SHARED_TASK),
        execution("e-ts", SHARED_TASK, creator=TEAM_SUBJECT),
        # The stalled team TaskRun's own start, which it cannot tell apart.
        execution("e-ts2", SHARED_TASK, creator=TEAM_SUBJECT),
    ]
    return planned, runs, executions


TASKS = [
    task("task-di", "k8s-taskrun-uid-d-inline", DEFAULT_SUBJECT),
    task("task-ti", "k8s-taskrun-uid-t-inline", TEAM_SUBJECT),
]


def _good_calls() -> list[dict[str, Any]]:
    return [
        call("CreateTask", DEFAULT_SUBJECT, result="task-di"),
        call("CreateTask", TEAM_SUBJECT, result="task-ti"),
        call("StartTask", DEFAULT_SUBJECT, "task-di", "e-di"),
        call("StartTask", TEAM_SUBJECT, "task-ti", "e-ti"),
        call("GetTask", TEAM_SUBJECT, TEAM_TASK),  # the environment policy's read
        call("StartTask", None, TEAM_TASK, fault="503"),  # refused before authentication
        call("StartTask", TEAM_SUBJECT, TEAM_TASK, "e-tr"),
        call("StartTask", DEFAULT_SUBJECT, OWN_TASK, "e-dr"),
        call("StartTask", DEFAULT_SUBJECT, SHARED_TASK, "e-ds"),
        call("StartTask", TEAM_SUBJECT, SHARED_TASK, "e-ts"),
        call("StartTask", TEAM_SUBJECT, SHARED_TASK, "e-ts2"),
        call("StartTask", DEFAULT_SUBJECT, SHARED_TASK),  # failed: no execution to judge
        call("GetTaskExecution", TEAM_SUBJECT, "e-ti"),
        call("StopTaskExecution", TEAM_SUBJECT, "e-tr"),
        call("DeleteTask", TEAM_SUBJECT, "task-ti"),
        call("ListTaskExecutions", DEFAULT_SUBJECT),  # a batched read names no one TaskRun
        call("WatchEvents", TEAM_SUBJECT, "6c1f0f5e-7a0b-4d1e-9a1e-0c4a1b2c3d01"),
    ]


def test_two_connections_each_used_by_its_own_taskruns_pass() -> None:
    planned, runs, executions = _two_connections()
    verdict = verify(planned, runs, executions, subjects=SUBJECTS, calls=_good_calls(), tasks=TASKS)
    assert verdict.ok, verdict.to_json()
    assert verdict.wrong_connection == []
    # e-ts2's StartTask is not judged as a call: no TaskRun recorded it (its creator is).
    assert verdict.connection_checked == {"executions": 7, "inline_tasks": 2, "calls": 12}
    assert verdict.to_json()["wrong_connection_calls"] == 0


def test_without_subjects_nobody_is_judged_on_connections() -> None:
    planned, runs, executions = _two_connections()
    calls = [call("StartTask", TEAM_SUBJECT, OWN_TASK, "e-dr")]
    verdict = verify(planned, runs, executions, calls=calls, tasks=TASKS)
    assert verdict.ok
    assert verdict.connection_checked == {}


def _judged(
    executions: list[dict[str, Any]] | None = None,
    calls: list[dict[str, Any]] | None = None,
    tasks: list[dict[str, Any]] | None = None,
) -> Any:
    planned, runs, good = _two_connections()
    return verify(
        planned,
        runs,
        good if executions is None else executions,
        subjects=SUBJECTS,
        calls=_good_calls() + (calls or []),
        tasks=TASKS if tasks is None else tasks,
    )


def _with(executions: list[dict[str, Any]], id_: str, **changes: Any) -> list[dict[str, Any]]:
    out = []
    for item in executions:
        if item["execution"]["id"] == id_:
            metadata = item["execution"]["metadata"]
            item = execution(
                id_,
                metadata["taskId"],
                reference=item["taskReference"],
                **changes,
            )
        out.append(item)
    return out


def test_an_execution_of_a_team_taskrun_made_with_the_default_token_fails() -> None:
    _, _, good = _two_connections()
    verdict = _judged(executions=_with(good, "e-tr", creator=DEFAULT_SUBJECT))
    assert not verdict.ok
    assert [f.taskrun for f in verdict.wrong_connection] == ["t-ref"]
    assert "execution e-tr" in verdict.wrong_connection[0].detail
    assert "the default connection" in verdict.wrong_connection[0].detail
    assert verdict.duplicates == []
    assert verdict.lost == []
    assert verdict.mismatches == []


def test_an_execution_of_a_default_taskrun_made_with_the_team_token_fails() -> None:
    _, _, good = _two_connections()
    verdict = _judged(executions=_with(good, "e-di", creator=TEAM_SUBJECT))
    assert [f.taskrun for f in verdict.wrong_connection] == ["d-inline"]
    assert "made as team" in verdict.wrong_connection[0].detail
    assert "uses the default connection" in verdict.wrong_connection[0].detail


def test_an_execution_made_by_an_unknown_subject_fails() -> None:
    _, _, good = _two_connections()
    stranger = "cccccccc-0000-4000-8000-000000000003"
    verdict = _judged(executions=_with(good, "e-ds", creator=stranger))
    assert [f.taskrun for f in verdict.wrong_connection] == ["d-shared"]
    assert f"unknown subject {stranger}" in verdict.wrong_connection[0].detail


@pytest.mark.parametrize(
    ("method", "subject", "request_id", "result_id", "taskrun"),
    [
        # A start of the team's task with the default token, even one that failed.
        ("StartTask", DEFAULT_SUBJECT, TEAM_TASK, "", "t-ref"),
        ("StartTask", TEAM_SUBJECT, "task-di", "", "d-inline"),
        # The shared task belongs to no one TaskRun: judged by the execution it made.
        ("StartTask", DEFAULT_SUBJECT, SHARED_TASK, "e-ts", "t-shared"),
        ("CreateTask", DEFAULT_SUBJECT, "", "task-ti", "t-inline"),
        ("GetTask", DEFAULT_SUBJECT, TEAM_TASK, "", "t-ref"),
        ("DeleteTask", TEAM_SUBJECT, "task-di", "", "d-inline"),
        ("GetTaskExecution", DEFAULT_SUBJECT, "e-ti", "", "t-inline"),
        ("StopTaskExecution", TEAM_SUBJECT, "e-dr", "", "d-ref"),
        ("StopTaskExecution", DEFAULT_SUBJECT, "e-ts", "", "t-shared"),
    ],
)
def test_a_call_about_a_taskrun_made_with_another_token_fails(
    method: str, subject: str, request_id: str, result_id: str, taskrun: str
) -> None:
    verdict = _judged(calls=[call(method, subject, request_id, result_id)])
    assert not verdict.ok
    assert [f.taskrun for f in verdict.wrong_connection] == [taskrun]
    assert verdict.wrong_connection[0].detail.startswith(method)
    assert verdict.to_json()["wrong_connection_calls"] == 1


def test_every_wrong_call_counts() -> None:
    wrong = [call("GetTaskExecution", DEFAULT_SUBJECT, "e-tr") for _ in range(3)]
    verdict = _judged(calls=wrong)
    assert len(verdict.wrong_connection) == 3


def test_an_inline_task_created_with_the_wrong_token_fails() -> None:
    tasks = [TASKS[0], task("task-ti", "k8s-taskrun-uid-t-inline", DEFAULT_SUBJECT)]
    verdict = _judged(tasks=tasks)
    assert [f.taskrun for f in verdict.wrong_connection] == ["t-inline"]
    assert "inline task task-ti" in verdict.wrong_connection[0].detail


def test_an_unrecorded_shared_execution_made_with_the_wrong_token_fails() -> None:
    # The stalled TaskRun uses the team connection, so the execution it cannot tell apart
    # must be the team's; one made with the default token belongs to nobody.
    _, _, good = _two_connections()
    verdict = _judged(executions=_with(good, "e-ts2", creator=DEFAULT_SUBJECT))
    assert not verdict.ok
    assert not verdict.duplicates  # one unrecorded execution for one stalled TaskRun
    assert [f.taskrun for f in verdict.wrong_connection] == ["(shared task)"]
    assert "e-ts2" in verdict.wrong_connection[0].detail


def test_an_excess_shared_execution_is_a_duplicate_not_also_a_wrong_connection() -> None:
    _, _, good = _two_connections()
    extra = execution("e-extra", SHARED_TASK, creator=DEFAULT_SUBJECT)
    verdict = _judged(executions=[*good, extra])
    assert len(verdict.duplicates) == 1
    assert verdict.wrong_connection == []


def test_a_connection_without_a_subject_is_a_harness_error() -> None:
    planned, runs, executions = _two_connections()
    with pytest.raises(ValueError, match="team"):
        verify(planned, runs, executions, subjects={"": DEFAULT_SUBJECT})


# --------------------------------------------------------------------- spec.retries


def retrying(
    name: str, past: list[str], current: str, phase: str, attempt: int, **kw: Any
) -> dict[str, Any]:
    body = taskrun(name, execution=current, phase=phase, version="10", **kw)
    body["status"]["attempt"] = attempt
    if past:
        body["status"]["attempts"] = [{"executionId": e, "phase": "FAILED"} for e in past]
    return body


def own(id_: str, name: str, phase: str = "SUCCEEDED") -> dict[str, Any]:
    return execution(id_, f"t-{name}", reference=f"k8s-taskrun-uid-{name}", phase=phase)


def test_one_execution_per_attempt_with_the_planned_end_passes() -> None:
    planned = [
        Planned("r", INLINE, retries=2, fail_first=2),
        Planned("x", INLINE, retries=1, fail_first=2),
    ]
    runs = [
        retrying("r", ["r1", "r2"], "r3", "SUCCEEDED", 3),
        retrying("x", ["x1"], "x2", "FAILED", 2, succeeded=("False", "Failed")),
    ]
    executions = [
        own("r1", "r", "FAILED"),
        own("r2", "r", "FAILED"),
        own("r3", "r"),
        own("x1", "x", "FAILED"),
        own("x2", "x", "FAILED"),
    ]
    verdict = verify(planned, runs, executions)
    assert verdict.ok, verdict.to_json()
    assert (verdict.retrying_taskruns, verdict.retry_attempts) == (2, 5)


def test_a_second_execution_in_one_attempt_is_a_duplicate() -> None:
    planned = [Planned("r", INLINE, retries=2, fail_first=1)]
    runs = [retrying("r", ["r1"], "r2", "SUCCEEDED", 2)]
    executions = [own("r1", "r", "FAILED"), own("r1b", "r", "FAILED"), own("r2", "r")]
    verdict = verify(planned, runs, executions)
    assert [f.detail for f in verdict.duplicates] == [
        "executions no attempt recorded (a second start in one attempt): r1b"
    ]
    assert not verdict.ok


def test_more_attempts_than_allowed_are_caught() -> None:
    planned = [Planned("r", INLINE, retries=1, fail_first=5)]
    runs = [
        retrying("r", ["r1", "r2"], "r3", "FAILED", 3, succeeded=("False", "Failed")),
    ]
    executions = [own("r1", "r", "FAILED"), own("r2", "r", "FAILED"), own("r3", "r", "FAILED")]
    verdict = verify(planned, runs, executions)
    assert [f.taskrun for f in verdict.excess_attempts] == ["r"]
    assert (
        "3 executions in 3 attempts; spec.retries 1 allows 2" in verdict.excess_attempts[0].detail
    )
    assert not verdict.ok
    assert verdict.to_json()["excess_attempts"] == 1


def test_an_attempt_retried_after_success_and_a_wrong_end_are_mismatches() -> None:
    planned = [Planned("r", INLINE, retries=2, fail_first=1)]
    # Attempt 1 is recorded as retried while it succeeded remotely; the run then ends at
    # attempt 3 although only one execution was meant to fail.
    runs = [retrying("r", ["r1", "r2"], "r3", "SUCCEEDED", 3)]
    executions = [own("r1", "r"), own("r2", "r", "FAILED"), own("r3", "r")]
    verdict = verify(planned, runs, executions)
    details = [f.detail for f in verdict.mismatches]
    assert "attempt 1 (r1) was retried, yet it is SUCCEEDED remotely" in details
    assert any("means SUCCEEDED at attempt 2" in d for d in details)


def test_a_stalled_attempt_may_own_the_execution_it_could_not_tell_apart() -> None:
    planned = [Planned("r", INLINE, retries=2, fail_first=1)]
    runs = [retrying("r", ["r1"], "", "", 2, stalled=True)]
    executions = [own("r1", "r", "FAILED"), own("r2", "r", "RUNNING")]
    verdict = verify(planned, runs, executions)
    assert verdict.ok, verdict.to_json()
    assert len(verdict.stalled) == 1


PROJECT = "cccccccc-0000-4000-8000-000000000003"


def environment(id_: str, name: str, phase: str = "DELETED") -> dict[str, Any]:
    return {
        "environment": {
            "id": id_,
            "metadata": {"name": name, "projectId": PROJECT},
            "status": {"phase": f"ENVIRONMENT_PHASE_{phase}"},
        }
    }


def _env_verdict(
    envs: list[dict[str, Any]], *, final: bool = True
) -> tuple[int, list[str], list[str]]:
    planned = [Planned("p", INLINE, from_project=True), Planned("plain", INLINE)]
    succeeded = ("True", "Succeeded") if final else ("Unknown", "Running")
    runs = [
        taskrun("p", execution="e1", phase="SUCCEEDED", version="10", succeeded=succeeded),
        taskrun("plain", execution="e2", phase="SUCCEEDED", version="10"),
    ]
    remote = [
        execution("e1", "t1", reference="k8s-taskrun-uid-p"),
        execution("e2", "t2", reference="k8s-taskrun-uid-plain"),
    ]
    verdict = verify(planned, runs, remote, environments=envs)
    return (
        verdict.environments_checked,
        [f.detail for f in verdict.environment_duplicates],
        [f.detail for f in verdict.environment_leaks],
    )


def test_one_environment_per_from_project_run_deleted_after_it_is_clean() -> None:
    assert _env_verdict([environment("env-1", "p-uid-p")]) == (1, [], [])


def test_two_environments_for_one_run_are_duplicates() -> None:
    _, duplicates, _ = _env_verdict(
        [environment("env-1", "p-uid-p"), environment("env-2", "p-uid-p")]
    )
    assert duplicates == ["environments env-1, env-2"]


def test_an_environment_left_after_its_run_ended_is_a_leak() -> None:
    _, _, leaks = _env_verdict([environment("env-1", "p-uid-p", "RUNNING")])
    assert leaks == ["environment env-1 is ENVIRONMENT_PHASE_RUNNING"]
    # While the run is not over, its environment is rightly there.
    assert _env_verdict([environment("env-1", "p-uid-p", "RUNNING")], final=False)[2] == []


def test_an_environment_of_the_project_nobody_owns_is_a_duplicate() -> None:
    _, duplicates, _ = _env_verdict(
        [environment("env-1", "p-uid-p"), environment("stray", "someone-else")]
    )
    assert duplicates == ["environment stray belongs to no TaskRun"]


# ---------------------------------------------------------------- the schedule's slots

CREATED = datetime(2026, 11, 30, 12, 0, 20, tzinfo=UTC)
SUSPENDED = datetime(2026, 11, 30, 12, 3, 30, tzinfo=UTC)


def slot_name(hour: int, minute: int) -> str:
    at = datetime(2026, 11, 30, hour, minute, tzinfo=UTC)
    return f"every-{int(at.timestamp()) // 60}"


def judged(names: list[str], suspended: datetime = SUSPENDED) -> Verdict:
    verdict = Verdict()
    judge_schedule(verdict, "every", CREATED, suspended, names)
    return verdict


def test_one_run_for_every_slot_while_on_passes() -> None:
    verdict = judged([slot_name(12, 1), slot_name(12, 2), slot_name(12, 3)])
    assert verdict.ok
    assert (verdict.schedule_slots, verdict.scheduled_runs) == (3, 3)


def test_a_slot_without_its_run_is_missed() -> None:
    verdict = judged([slot_name(12, 1), slot_name(12, 3)])
    assert not verdict.ok
    assert [f.taskrun for f in verdict.schedule_missed] == [slot_name(12, 2)]
    assert "12:02:00 slot" in verdict.schedule_missed[0].detail


def test_runs_before_creation_or_after_suspension_are_unexpected() -> None:
    early, late = slot_name(12, 0), slot_name(12, 5)  # 12:00 is before 12:00:20
    verdict = judged([early, slot_name(12, 1), slot_name(12, 2), slot_name(12, 3), late])
    assert [f.taskrun for f in verdict.schedule_unexpected] == sorted([early, late])
    assert verdict.schedule_missed == []
    assert not verdict.ok


def test_a_slot_at_the_moment_of_suspension_may_go_either_way() -> None:
    at_suspension = datetime(2026, 11, 30, 12, 3, 2, tzinfo=UTC)
    without = judged([slot_name(12, 1), slot_name(12, 2)], suspended=at_suspension)
    with_it = judged([slot_name(12, 1), slot_name(12, 2), slot_name(12, 3)], at_suspension)
    assert without.ok
    assert with_it.ok
    assert without.schedule_slots == 2


def test_only_the_schedule_s_own_taskruns_are_taken_as_scheduled() -> None:
    items = [
        {"metadata": {"name": "a", "labels": {"automation.ona.com/schedule": SCHEDULE}}},
        {"metadata": {"name": "b", "labels": {"automation.ona.com/schedule": "another"}}},
        {"metadata": {"name": "c", "labels": None}},
        {"metadata": {"name": "d"}},
    ]
    assert scheduled_runs(items) == [Planned("a", INLINE, connection=TEAM_CONNECTION)]


def _made(execution_id: str, subject: str, created: str, completed: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"creator": {"id": subject}, "createdAt": created}
    if completed is not None:
        meta["completedAt"] = completed
    return {"execution": {"id": execution_id, "metadata": meta}}


def test_a_connections_limit_is_judged_from_the_executions() -> None:
    t = "2026-01-01T00:00:{:02d}.000Z".format
    kept = [
        _made("a", "team", t(0), t(10)),
        _made("b", "team", t(1), t(5)),
        _made("c", "team", t(5), t(9)),  # starts as b ends: still two at once
        _made("x", "other", t(2), t(8)),  # another connection's: not counted
    ]
    verdict = Verdict()
    judge_limit(verdict, kept, "team", 2, "OnaConnection team")
    assert verdict.limit_most_at_once == 2
    assert verdict.ok
    broken = [*kept, _made("d", "team", t(6), None)]  # still running: counts to the end
    verdict = Verdict()
    judge_limit(verdict, broken, "team", 2, "OnaConnection team")
    assert verdict.limit_most_at_once == 3
    assert not verdict.ok
    assert "execution d" in verdict.limit_exceeded[0].detail
