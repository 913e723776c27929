"""The chaos verdict on hand-made records: it must catch each kind of broken guarantee,
and accept what a correct operator leaves behind (including a stall waiting for a person)."""

from __future__ import annotations

from typing import Any

from tools.chaos.verify import INLINE, REF_ID, SHARED, Planned, verify

SHARED_TASK = "11111111-1111-4111-8111-111111111111"
OWN_TASK = "22222222-2222-4222-8222-222222222222"


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
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": f"TASK_EXECUTION_PHASE_{phase}",
        "statusVersion": version,
    }
    if failure:
        status["failureMessage"] = failure
    return {
        "execution": {"id": id_, "metadata": {"taskId": task}, "status": status},
        "taskReference": reference,
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
