"""`decide`, one row per situation a TaskRun can be in: the action it leads to, the
status and conditions a user reads with kubectl, what is tracked, when it is looked at
again, and the events posted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from ona_taskrun.rules.model import (
    ADOPT_ANNOTATION,
    ALLOW_RESTART_ANNOTATION,
    START_IN_FLIGHT_RECHECK,
    Access,
    Action,
    ActionKind,
    ConnectionView,
    FailureKind,
    Observation,
    Phase,
    RemoteExecution,
    RemoteStep,
    Settings,
    Status,
    TaskRun,
)
from ona_taskrun.rules.pipeline import decide

from .builders import (
    EXEC,
    NOW,
    TASK,
    at,
    cond,
    condition_table,
    events_table,
    execution,
    failure,
    finished,
    finished_conditions,
    inline_spec,
    pending,
    pending_conditions,
    ref_id_spec,
    ref_name_spec,
    taskrun,
)

ABSENT = "<absent>"
CFG = Settings()  # start settle 15 s, clock skew 5 s, resync 60 s


@dataclass(frozen=True)
class Expect:
    action: Action | None = None
    # A subset of status.to_dict(); ABSENT: the key must not be there.
    status: Mapping[str, Any] = field(default_factory=dict)
    # {type: (status, reason)} of all conditions; None: not checked in this row.
    conditions: Mapping[str, tuple[str, str]] | None = None
    # {condition type: text its message must hold}
    messages: Mapping[str, Sequence[str]] = field(default_factory=dict)
    track: str | None = None
    requeue: float | None = None
    events: Sequence[tuple[str, str]] = ()


def case(
    id_: str,
    run: TaskRun,
    expect: Expect,
    obs: Observation | None = None,
    *,
    marks: Any = (),
) -> Any:
    return pytest.param(run, obs or Observation(), expect, id=id_, marks=marks)


# ----------------------------------------------------------------------- statuses

TASK_KNOWN: dict[str, Any] = {
    "observedGeneration": 1,
    "taskId": TASK,
    "conditions": pending_conditions("Starting"),
}
# A start was claimed 20 s ago (past the 15 s settle) and no execution id was recorded.
CLAIMED: dict[str, Any] = {
    "observedGeneration": 1,
    "taskId": TASK,
    "startRequestedAt": at(-20),
    "startAttempts": 1,
    "conditions": pending_conditions("StartOutcomeUnknown"),
}
CLAIMED_RECENT = {**CLAIMED, "startRequestedAt": at(-5)}
STALLED_START = {
    **CLAIMED,
    "startRequestedAt": at(-120),
    "conditions": [
        cond("Succeeded", "Unknown", "StartOutcomeUnknown"),
        cond("Reconciling", "True", "StartOutcomeUnknown"),
        cond("Stalled", "True", "StartOutcomeUnknown", "cannot tell which execution"),
        cond("RemoteReachable", "True", "Reachable"),
    ],
}
RUNNING: dict[str, Any] = {
    "observedGeneration": 1,
    "taskId": TASK,
    "taskExecutionId": EXEC,
    "phase": "RUNNING",
    "statusVersion": "1",
    "startRequestedAt": at(-600),
    "startAttempts": 1,
    "createdAt": at(-600),
    "startedAt": at(-590),
    "conditions": pending_conditions("Running"),
}
STOP_REQUESTED = {**RUNNING, "stopRequestedAt": at(-30), "stopReason": "Requested"}
TIMEOUT_STOP_REQUESTED = {**RUNNING, "stopRequestedAt": at(-30), "stopReason": "TimedOut"}
SUCCEEDED: dict[str, Any] = {
    **RUNNING,
    "phase": "SUCCEEDED",
    "statusVersion": "5",
    "completedAt": at(-60),
    "conditions": finished_conditions(True, "Succeeded", stalled=False),
}

STARTING = Action(ActionKind.START, task_id=TASK)
STEPS = (
    RemoteStep(id="s1", phase="TASK_EXECUTION_PHASE_SUCCEEDED", label="checkout"),
    RemoteStep(id="s2", phase="TASK_EXECUTION_PHASE_RUNNING", label="make test"),
)


OWN = "svc-operator"  # the principal the operator's token acts as


def claim_candidates(*created_at: str, creator: str = OWN) -> tuple[RemoteExecution, ...]:
    return tuple(
        execution(f"exec-{i}", Phase.RUNNING, 1, created_at=when, creator_id=creator)
        for i, when in enumerate(created_at, start=1)
    )


REF_CLAIMED = {**CLAIMED, "taskId": "task-ref"}


SEVERAL_MESSAGE = (ADOPT_ANNOTATION, ALLOW_RESTART_ANNOTATION, "exec-1, exec-2")

# --------------------------------------------------------------------- the table

BEFORE_START = [
    case(
        "inline-task-not-yet-known-looks-up-owned-task",
        taskrun(inline_spec()),
        Expect(
            action=Action(ActionKind.FIND_OWNED_TASK),
            status={"taskId": ABSENT, "observedGeneration": 1, "phase": ABSENT},
            conditions=pending("CreatingTask"),
        ),
    ),
    case(
        "inline-owned-task-missing-creates-it",
        taskrun(inline_spec()),
        Expect(action=Action(ActionKind.CREATE_TASK), conditions=pending("CreatingTask")),
        Observation(owned_task_missing=True),
    ),
    case(
        "inline-task-lookup-rate-limited-waits-retry-after",
        taskrun(inline_spec()),
        Expect(
            action=Action(ActionKind.FIND_OWNED_TASK),
            conditions=pending("CreatingTask", ("False", "RateLimited")),
            messages={"RemoteReachable": ["the API says RateLimited"]},
            requeue=7.0,
        ),
        Observation(remote_failure=failure(FailureKind.RATE_LIMITED, retry_after=7.0)),
    ),
    case(
        "taskref-by-id-claims-the-start-with-the-task-id-in-one-write",
        taskrun(ref_id_spec()),
        Expect(
            action=Action(ActionKind.START, task_id="task-ref"),
            status={"taskId": "task-ref", "startRequestedAt": at(0), "startAttempts": 1},
            conditions=pending("Starting"),
        ),
    ),
    case(
        "taskref-by-reference-resolves-it",
        taskrun(ref_name_spec()),
        Expect(
            action=Action(ActionKind.RESOLVE_TASK_REF),
            status={"taskId": ABSENT},
            conditions=pending("ResolvingTask"),
        ),
    ),
    case(
        "task-known-not-started-starts-it",
        taskrun(inline_spec(), TASK_KNOWN),
        Expect(
            action=STARTING,
            status={"startRequestedAt": at(0), "startAttempts": 1, "phase": ABSENT},
            conditions=pending("Starting"),
        ),
    ),
    case(
        "taskref-by-id-known-starts-it",
        taskrun(ref_id_spec(), {"taskId": "task-ref"}),
        Expect(
            action=Action(ActionKind.START, task_id="task-ref"),
            status={"startRequestedAt": at(0), "startAttempts": 1},
            conditions=pending("Starting"),
        ),
    ),
    case(
        "start-again-after-no-execution-counts-the-attempt",
        taskrun(inline_spec(), {**TASK_KNOWN, "startAttempts": 1}),
        Expect(
            action=STARTING,
            status={"startRequestedAt": at(0), "startAttempts": 2},
            conditions=pending("Starting"),
        ),
    ),
]

CREATED_STOPPED = [
    case(
        "created-stopped-inline-never-starts",
        taskrun(inline_spec(desiredPhase="STOPPED")),
        Expect(
            status={"phase": "STOPPED", "taskId": ABSENT, "startRequestedAt": ABSENT},
            conditions=finished("False", "Stopped", stalled=False),
            events=[("Normal", "Stopped")],
        ),
    ),
    case(
        "created-stopped-taskref-with-task-known-never-starts",
        taskrun(ref_id_spec(desiredPhase="STOPPED"), {"taskId": "task-ref"}),
        Expect(
            status={"phase": "STOPPED", "startRequestedAt": ABSENT},
            conditions=finished("False", "Stopped", stalled=False),
            events=[("Normal", "Stopped")],
        ),
    ),
]

UNKNOWN_START = [
    case(
        "start-outcome-unknown-within-settle-waits",
        taskrun(inline_spec(), CLAIMED_RECENT),
        Expect(
            status={"startRequestedAt": at(-5), "taskExecutionId": ABSENT},
            conditions=pending("StartOutcomeUnknown"),
            requeue=11.0,
        ),
    ),
    case(
        "start-outcome-unknown-after-settle-looks-for-executions",
        taskrun(inline_spec(), CLAIMED),
        Expect(
            action=Action(ActionKind.FIND_EXECUTIONS, task_id=TASK),
            status={"startRequestedAt": at(-20)},
            conditions=pending("StartOutcomeUnknown"),
        ),
    ),
    case(
        "one-candidate-is-adopted-and-tracked",
        taskrun(inline_spec(), CLAIMED),
        Expect(
            status={
                "taskExecutionId": "exec-1",
                "phase": "RUNNING",
                "statusVersion": "1",
                "startRequestedAt": at(-20),
            },
            conditions=pending("Adopted"),
            track="exec-1",
            events=[("Normal", "Adopted")],
        ),
        Observation(candidates=claim_candidates(at(-19))),
    ),
    case(
        "one-candidate-claimed-by-another-taskrun-is-ignored-and-start-is-redone",
        taskrun(inline_spec(), CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": ABSENT, "startAttempts": 1},
            conditions=pending("Starting"),
            events=[("Normal", "Restarting")],
        ),
        Observation(candidates=claim_candidates(at(-19)), claimed_elsewhere=frozenset({"exec-1"})),
    ),
    case(
        "a-candidate-while-another-start-of-the-task-is-in-flight-waits",
        taskrun(ref_id_spec(), REF_CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": at(-20)},
            conditions=pending("StartOutcomeUnknown"),
            requeue=START_IN_FLIGHT_RECHECK,
        ),
        Observation(candidates=claim_candidates(at(-19)), starts_in_flight=1, own_principal=OWN),
    ),
    case(
        "several-candidates-while-another-start-is-in-flight-wait-rather-than-stall",
        taskrun(ref_id_spec(), REF_CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": at(-20)},
            conditions=pending("StartOutcomeUnknown"),
            requeue=START_IN_FLIGHT_RECHECK,
        ),
        Observation(
            candidates=claim_candidates(at(-19), at(-18)), starts_in_flight=2, own_principal=OWN
        ),
    ),
    case(
        "no-candidate-restarts-even-while-another-start-is-in-flight",
        taskrun(ref_id_spec(), REF_CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": ABSENT},
            conditions=pending("Starting"),
            events=[("Normal", "Restarting")],
        ),
        Observation(candidates=(), starts_in_flight=1, own_principal=OWN),
    ),
    case(
        "no-candidate-means-nothing-started-so-start-again",
        taskrun(inline_spec(), CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": ABSENT},
            conditions=pending("Starting"),
            events=[("Normal", "Restarting")],
        ),
        Observation(candidates=()),
    ),
    case(
        "several-candidates-stall-and-start-nothing",
        taskrun(inline_spec(), CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": at(-20)},
            conditions={
                "Succeeded": ("Unknown", "StartOutcomeUnknown"),
                "Reconciling": ("True", "StartOutcomeUnknown"),
                "Stalled": ("True", "StartOutcomeUnknown"),
                "RemoteReachable": ("True", "Reachable"),
            },
            messages={"Stalled": SEVERAL_MESSAGE, "Succeeded": SEVERAL_MESSAGE},
            events=[("Warning", "StartOutcomeUnknown")],
        ),
        Observation(candidates=claim_candidates(at(-19), at(-18))),
    ),
    case(
        "stalled-start-waits-for-a-person",
        taskrun(inline_spec(), STALLED_START),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": at(-120)},
            conditions={
                "Succeeded": ("Unknown", "StartOutcomeUnknown"),
                "Reconciling": ("True", "StartOutcomeUnknown"),
                "Stalled": ("True", "StartOutcomeUnknown"),
                "RemoteReachable": ("True", "Reachable"),
            },
        ),
    ),
    case(
        "stalled-inline-start-with-desired-phase-stopped-stops-every-owned-execution",
        taskrun(inline_spec(desiredPhase="STOPPED"), STALLED_START, generation=2),
        Expect(
            action=Action(ActionKind.STOP_OWNED_EXECUTIONS, task_id=TASK),
            status={"observedGeneration": 2, "taskExecutionId": ABSENT},
            conditions={
                "Succeeded": ("Unknown", "StartOutcomeUnknown"),
                "Reconciling": ("True", "StartOutcomeUnknown"),
                "Stalled": ("True", "StartOutcomeUnknown"),
                "RemoteReachable": ("True", "Reachable"),
            },
        ),
    ),
    case(
        "stalled-inline-start-stopped-after-owned-executions-stopped-ends-stopped-as-asked",
        taskrun(inline_spec(desiredPhase="STOPPED"), STALLED_START, generation=2),
        Expect(
            status={"observedGeneration": 2, "phase": "STOPPED", "startRequestedAt": ABSENT},
            conditions={
                "Succeeded": ("False", "Stopped"),
                "Reconciling": ("False", "Stopped"),
                "Stalled": ("False", "Stopped"),
                "RemoteReachable": ("True", "Reachable"),
            },
            events=[("Normal", "Stopped")],
        ),
        Observation(stopped=True),
    ),
    case(
        "stalled-taskref-start-with-desired-phase-stopped-ends-without-touching-others",
        taskrun(ref_id_spec(desiredPhase="STOPPED"), STALLED_START, generation=2),
        Expect(
            status={"phase": "STOPPED", "taskExecutionId": ABSENT},
            conditions={
                "Succeeded": ("False", "Stopped"),
                "Reconciling": ("False", "Stopped"),
                "Stalled": ("False", "Stopped"),
                "RemoteReachable": ("True", "Reachable"),
            },
            messages={"Succeeded": ["left alone"]},
            events=[("Normal", "Stopped")],
        ),
    ),
    case(
        "taskref-candidate-older-than-start-minus-skew-is-ignored",
        taskrun(ref_id_spec(), REF_CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": ABSENT},
            conditions=pending("Starting"),
            events=[("Normal", "Restarting")],
        ),
        # Started 20 s ago; 5 s of skew allowed: anything created before -25 s is not ours.
        Observation(candidates=claim_candidates(at(-26)), own_principal=OWN),
    ),
    case(
        "taskref-candidate-within-clock-skew-is-adopted-old-ones-ignored",
        taskrun(ref_id_spec(), REF_CLAIMED),
        Expect(
            status={"taskExecutionId": "exec-2"},
            conditions=pending("Adopted"),
            track="exec-2",
            events=[("Normal", "Adopted")],
        ),
        Observation(candidates=claim_candidates(at(-3600), at(-24)), own_principal=OWN),
    ),
    case(
        "taskref-candidate-started-by-someone-else-is-ignored",
        taskrun(ref_id_spec(), REF_CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": ABSENT},
            conditions=pending("Starting"),
            events=[("Normal", "Restarting")],
        ),
        Observation(candidates=claim_candidates(at(-19), creator="alice"), own_principal=OWN),
    ),
    case(
        "taskref-candidate-with-own-principal-unknown-waits-to-learn-it",
        taskrun(ref_id_spec(), REF_CLAIMED),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": at(-20)},
            conditions=pending("StartOutcomeUnknown"),
            requeue=5.0,
        ),
        Observation(candidates=claim_candidates(at(-19))),
    ),
    case(
        "taskref-candidate-with-own-principal-still-unknown-stalls",
        taskrun(ref_id_spec(), {**REF_CLAIMED, "startRequestedAt": at(-120)}),
        Expect(
            status={"taskExecutionId": ABSENT, "startRequestedAt": at(-120)},
            conditions={
                "Succeeded": ("Unknown", "StartOutcomeUnknown"),
                "Reconciling": ("True", "StartOutcomeUnknown"),
                "Stalled": ("True", "StartOutcomeUnknown"),
                "RemoteReachable": ("True", "Reachable"),
            },
            messages={"Stalled": ["exec-1", "principal", ADOPT_ANNOTATION]},
            events=[("Warning", "StartOutcomeUnknown")],
        ),
        Observation(candidates=claim_candidates(at(-119))),
    ),
    case(
        "inline-owned-task-candidate-is-ours-whatever-its-age",
        taskrun(inline_spec(), CLAIMED),
        Expect(
            status={"taskExecutionId": "exec-1"},
            conditions=pending("Adopted"),
            track="exec-1",
            events=[("Normal", "Adopted")],
        ),
        Observation(candidates=claim_candidates(at(-3600))),
    ),
    case(
        "adopt-annotation-first-looks-at-the-runs-own-executions",
        taskrun(inline_spec(), STALLED_START, annotations={ADOPT_ANNOTATION: " exec-2 "}),
        Expect(
            action=Action(ActionKind.FIND_EXECUTIONS, task_id=TASK),
            conditions=pending("StartOutcomeUnknown"),
        ),
    ),
    case(
        "adopt-annotation-adopts-the-named-execution-of-the-runs-own-task",
        taskrun(inline_spec(), STALLED_START, annotations={ADOPT_ANNOTATION: " exec-2 "}),
        Expect(
            status={"taskExecutionId": "exec-2", "phase": "RUNNING"},
            conditions=pending("Adopted"),
            track="exec-2",
            events=[("Normal", "Adopted")],
        ),
        Observation(candidates=claim_candidates(at(-119), at(-118))),
    ),
    case(
        "adopt-annotation-waits-for-the-settle-like-any-look",
        taskrun(inline_spec(), CLAIMED_RECENT, annotations={ADOPT_ANNOTATION: "exec-1"}),
        Expect(conditions=pending("StartOutcomeUnknown"), requeue=11.0),
        Observation(candidates=claim_candidates(at(-4))),
    ),
    case(
        "adopt-annotation-naming-another-taskruns-execution-is-refused",
        taskrun(inline_spec(), CLAIMED, annotations={ADOPT_ANNOTATION: "exec-1"}),
        Expect(
            status={"taskExecutionId": ABSENT},
            conditions={
                "Succeeded": ("Unknown", "StartOutcomeUnknown"),
                "Reconciling": ("True", "StartOutcomeUnknown"),
                "Stalled": ("True", "StartOutcomeUnknown"),
                "RemoteReachable": ("True", "Reachable"),
            },
            messages={"Stalled": ["was refused", "held by no other TaskRun"]},
            events=[("Warning", "AdoptionRefused")],
        ),
        Observation(candidates=claim_candidates(at(-19)), claimed_elsewhere=frozenset({"exec-1"})),
    ),
    case(
        "adopt-annotation-naming-an-execution-not-of-the-runs-task-is-refused",
        taskrun(inline_spec(), STALLED_START, annotations={ADOPT_ANNOTATION: "exec-99"}),
        Expect(
            status={"taskExecutionId": ABSENT},
            messages={"Stalled": ["was refused", "own task"]},
            events=[("Warning", "AdoptionRefused")],
        ),
        Observation(candidates=claim_candidates(at(-119))),
    ),
    case(
        "adopt-annotation-naming-another-principals-execution-is-refused",
        taskrun(
            ref_id_spec(),
            {**STALLED_START, "taskId": "task-ref"},
            annotations={ADOPT_ANNOTATION: "exec-1"},
        ),
        Expect(status={"taskExecutionId": ABSENT}, events=[("Warning", "AdoptionRefused")]),
        Observation(
            candidates=claim_candidates(at(-119), creator="someone-else"), own_principal=OWN
        ),
    ),
    case(
        "adopt-annotation-naming-an-execution-older-than-the-claim-is-refused",
        taskrun(
            ref_id_spec(),
            {**STALLED_START, "taskId": "task-ref"},
            annotations={ADOPT_ANNOTATION: "exec-1"},
        ),
        Expect(status={"taskExecutionId": ABSENT}, events=[("Warning", "AdoptionRefused")]),
        Observation(candidates=claim_candidates(at(-3600)), own_principal=OWN),
    ),
    case(
        "adopt-annotation-with-the-principal-unknown-is-refused",
        taskrun(
            ref_id_spec(),
            {**STALLED_START, "taskId": "task-ref", "startRequestedAt": at(-600)},
            annotations={ADOPT_ANNOTATION: "exec-1"},
        ),
        Expect(status={"taskExecutionId": ABSENT}, events=[("Warning", "AdoptionRefused")]),
        Observation(candidates=claim_candidates(at(-599))),
    ),
    case(
        "allow-new-start-after-a-stall-clears-the-claim",
        taskrun(inline_spec(), STALLED_START, annotations={ALLOW_RESTART_ANNOTATION: "true"}),
        Expect(
            status={"startRequestedAt": ABSENT, "taskExecutionId": ABSENT, "startAttempts": 1},
            conditions=pending("Starting"),
        ),
    ),
    case(
        "allow-new-start-without-a-stall-is-ignored",
        taskrun(inline_spec(), CLAIMED_RECENT, annotations={ALLOW_RESTART_ANNOTATION: "true"}),
        Expect(
            status={"startRequestedAt": at(-5)},
            conditions=pending("StartOutcomeUnknown"),
            requeue=11.0,
        ),
    ),
]

TRACKING = [
    case(
        "running-execution-is-mirrored-and-tracked",
        taskrun(inline_spec(), {**RUNNING, "phase": "PENDING", "startedAt": ""}),
        Expect(
            status={
                "phase": "RUNNING",
                "statusVersion": "2",
                "startedAt": at(-590),
                "logUrl": "https://logs.example/exec-1",
                "steps": [
                    {
                        "id": "s1",
                        "label": "checkout",
                        "phase": "SUCCEEDED",
                        "failureMessage": "",
                        "output": {},
                    },
                    {
                        "id": "s2",
                        "label": "make test",
                        "phase": "RUNNING",
                        "failureMessage": "",
                        "output": {},
                    },
                ],
            },
            conditions=pending("Running"),
            track=EXEC,
            requeue=CFG.resync_seconds,
        ),
        Observation(
            execution=execution(
                started_at=at(-590), steps=STEPS, log_url="https://logs.example/exec-1"
            )
        ),
    ),
    case(
        "older-remote-status-version-is-dropped-compared-as-integers",
        taskrun(inline_spec(), {**RUNNING, "statusVersion": "10"}),
        Expect(
            status={"phase": "RUNNING", "statusVersion": "10", "completedAt": ABSENT},
            conditions=pending("Running"),
            track=EXEC,
            requeue=CFG.resync_seconds,
        ),
        Observation(execution=execution(phase=Phase.SUCCEEDED, version=9)),
    ),
    case(
        "equal-remote-status-version-is-dropped",
        taskrun(inline_spec(), {**RUNNING, "statusVersion": "4"}),
        Expect(
            status={"phase": "RUNNING", "statusVersion": "4"},
            conditions=pending("Running"),
            track=EXEC,
            requeue=CFG.resync_seconds,
        ),
        Observation(execution=execution(phase=Phase.FAILED, version=4)),
    ),
    case(
        "newer-remote-status-version-applies-compared-as-integers",
        taskrun(inline_spec(), {**RUNNING, "statusVersion": "9"}),
        Expect(
            status={"phase": "SUCCEEDED", "statusVersion": "10", "completedAt": at(-1)},
            conditions=finished("True", "Succeeded", stalled=False),
            events=[("Normal", "Succeeded")],
        ),
        Observation(execution=execution(phase=Phase.SUCCEEDED, version=10, completed_at=at(-1))),
    ),
    case(
        "another-executions-status-is-not-mirrored",
        taskrun(inline_spec(), RUNNING),
        Expect(
            status={"phase": "RUNNING", "statusVersion": "1"},
            conditions=pending("Running"),
            track=EXEC,
            requeue=CFG.resync_seconds,
        ),
        Observation(execution=execution("exec-other", Phase.FAILED, 50)),
    ),
    case(
        "succeeded-ends-the-run-and-stops-tracking",
        taskrun(inline_spec(), RUNNING),
        Expect(
            status={"phase": "SUCCEEDED", "completedAt": at(-1)},
            conditions=finished("True", "Succeeded", stalled=False),
            track=None,
            events=[("Normal", "Succeeded")],
        ),
        Observation(execution=execution(phase=Phase.SUCCEEDED, version=3, completed_at=at(-1))),
    ),
    case(
        "failed-ends-the-run-stalled-with-the-failure-message",
        taskrun(inline_spec(), RUNNING),
        Expect(
            status={"phase": "FAILED", "failureMessage": "exit code 2"},
            conditions=finished("False", "Failed", stalled=True),
            messages={"Succeeded": ["exit code 2"], "Stalled": ["exit code 2"]},
            events=[("Warning", "Failed")],
        ),
        Observation(execution=execution(phase=Phase.FAILED, failure_message="exit code 2")),
    ),
    case(
        "stopped-as-desired-phase-asked-is-not-stalled",
        taskrun(inline_spec(desiredPhase="STOPPED"), STOP_REQUESTED),
        Expect(
            status={"phase": "STOPPED"},
            conditions=finished("False", "Stopped", stalled=False),
            events=[("Normal", "Stopped")],
        ),
        Observation(execution=execution(phase=Phase.STOPPED)),
    ),
    case(
        "stopped-remotely-without-the-spec-asking-is-stalled",
        taskrun(inline_spec(), RUNNING),
        Expect(
            status={"phase": "STOPPED"},
            conditions=finished("False", "Stopped", stalled=True),
            messages={"Stalled": ["outside this TaskRun"]},
            events=[("Normal", "Stopped")],
        ),
        Observation(execution=execution(phase=Phase.STOPPED)),
    ),
    case(
        "desired-phase-edited-to-stopped-while-running-stops-it",
        taskrun(inline_spec(desiredPhase="STOPPED"), RUNNING, generation=2),
        Expect(
            action=Action(ActionKind.STOP, execution_id=EXEC, reason="Requested"),
            status={
                "stopRequestedAt": at(0),
                "stopReason": "Requested",
                "phase": "RUNNING",
                "observedGeneration": 2,
            },
            conditions=pending("Running"),
            track=EXEC,
        ),
    ),
    case(
        "stop-already-requested-waits-for-the-remote",
        taskrun(inline_spec(desiredPhase="STOPPED"), STOP_REQUESTED),
        Expect(
            status={"stopRequestedAt": at(-30), "phase": "RUNNING"},
            conditions=pending("Running"),
            track=EXEC,
            # asked 30 s ago: looked at again when the stop may be asked again
            requeue=30.0,
        ),
    ),
    case(
        # The operator may have died between writing the stop and calling
        # StopTaskExecution: the stop is asked again, written first again.
        "stop-untaken-for-a-minute-is-asked-again",
        taskrun(
            inline_spec(desiredPhase="STOPPED"), {**STOP_REQUESTED, "stopRequestedAt": at(-61)}
        ),
        Expect(
            action=Action(ActionKind.STOP, execution_id=EXEC, reason="Requested"),
            status={"stopRequestedAt": at(0), "stopReason": "Requested", "phase": "RUNNING"},
            conditions=pending("Running"),
            track=EXEC,
        ),
    ),
    case(
        "timed-out-stop-untaken-is-asked-again-as-a-timeout",
        # desiredPhase edited to STOPPED since: the stop keeps its first reason
        taskrun(
            inline_spec(timeout="5m", desiredPhase="STOPPED"),
            {**TIMEOUT_STOP_REQUESTED, "stopRequestedAt": at(-120)},
        ),
        Expect(
            action=Action(ActionKind.STOP, execution_id=EXEC, reason="TimedOut"),
            status={"stopRequestedAt": at(0), "stopReason": "TimedOut"},
            conditions=pending("Running"),
            track=EXEC,
        ),
    ),
    case(
        "refused-stop-is-not-asked-again",
        taskrun(
            inline_spec(desiredPhase="STOPPED"),
            {
                **STOP_REQUESTED,
                "stopRequestedAt": at(-600),
                "conditions": [
                    cond("Succeeded", "Unknown", "StopRefused", "StopTaskExecution was refused"),
                    cond("Reconciling", "True", "StopRefused"),
                    cond("Stalled", "True", "permission_denied", "StopTaskExecution was refused"),
                    cond("RemoteReachable", "True", "Reachable"),
                ],
            },
        ),
        Expect(
            status={"stopRequestedAt": at(-600)},
            track=EXEC,
            requeue=CFG.resync_seconds,
        ),
    ),
    case(
        "timeout-exceeded-stops-it",
        taskrun(inline_spec(timeout="5m"), RUNNING),
        Expect(
            action=Action(ActionKind.STOP, execution_id=EXEC, reason="TimedOut"),
            status={"stopRequestedAt": at(0), "stopReason": "TimedOut"},
            conditions=pending("Running"),
            track=EXEC,
        ),
    ),
    case(
        "timeout-counts-from-creation-while-pending",
        taskrun(inline_spec(timeout="5m"), {**RUNNING, "phase": "PENDING", "startedAt": ""}),
        Expect(
            action=Action(ActionKind.STOP, execution_id=EXEC, reason="TimedOut"),
            status={"stopReason": "TimedOut"},
            conditions=pending("Pending"),
            track=EXEC,
        ),
    ),
    case(
        "timed-out-and-stopped-ends-as-timed-out",
        taskrun(inline_spec(timeout="5m"), TIMEOUT_STOP_REQUESTED),
        Expect(
            status={"phase": "STOPPED", "stopReason": "TimedOut"},
            conditions=finished("False", "TimedOut", stalled=True),
            events=[("Warning", "TimedOut")],
        ),
        Observation(execution=execution(phase=Phase.STOPPED)),
    ),
    case(
        "timeout-not-reached-looks-again-when-it-is",
        # Started 590 s ago with a 600 s timeout: 10 s remain.
        taskrun(inline_spec(timeout="10m"), RUNNING),
        Expect(
            status={"stopRequestedAt": ABSENT},
            conditions=pending("Running"),
            track=EXEC,
            requeue=10.0,
        ),
    ),
    case(
        "rate-limited-while-running-keeps-phase-and-says-why",
        taskrun(inline_spec(), RUNNING),
        Expect(
            status={"phase": "RUNNING", "statusVersion": "1"},
            conditions=pending("Running", ("False", "RateLimited")),
            messages={"RemoteReachable": ["the API says RateLimited", "last known status"]},
            track=EXEC,
            requeue=20.0,
        ),
        Observation(remote_failure=failure(FailureKind.RATE_LIMITED, retry_after=20.0)),
    ),
    case(
        "api-unavailable-while-running-keeps-phase-and-says-why",
        taskrun(inline_spec(), RUNNING),
        Expect(
            status={"phase": "RUNNING", "statusVersion": "1"},
            conditions=pending("Running", ("False", "Unavailable")),
            messages={"RemoteReachable": ["the API says Unavailable"]},
            track=EXEC,
            requeue=10.0,
        ),
        Observation(remote_failure=failure(FailureKind.UNAVAILABLE)),
    ),
    case(
        "token-refused-while-running-keeps-phase-and-says-why",
        taskrun(inline_spec(), RUNNING),
        Expect(
            status={"phase": "RUNNING", "statusVersion": "1"},
            conditions=pending("Running", ("False", "Unauthorized")),
            messages={"RemoteReachable": ["the API says Unauthorized"]},
            track=EXEC,
            requeue=10.0,
        ),
        Observation(remote_failure=failure(FailureKind.UNAUTHENTICATED)),
    ),
    case(
        "remote-reachable-again-clears-the-outage",
        taskrun(
            inline_spec(),
            {
                **RUNNING,
                "conditions": [
                    *pending_conditions("Running")[:3],
                    cond("RemoteReachable", "False", "Unavailable", "down"),
                ],
            },
        ),
        Expect(
            conditions=pending("Running"),
            track=EXEC,
            requeue=CFG.resync_seconds,
        ),
        Observation(execution=execution(version=2)),
    ),
    case(
        "invalid-spec-ends-the-run-with-the-reason",
        taskrun({"taskRef": {"environmentId": "env-1"}}),
        Expect(
            status={"taskId": ABSENT, "startRequestedAt": ABSENT},
            conditions=finished("False", "InvalidSpec", stalled=True),
            messages={"Succeeded": ["spec.taskRef needs either id"]},
            events=[("Warning", "InvalidSpec")],
        ),
    ),
    case(
        "invalid-timeout-ends-the-run-naming-the-text",
        taskrun(inline_spec(timeout="ten minutes")),
        Expect(
            conditions=finished("False", "InvalidSpec", stalled=True),
            messages={"Succeeded": ["'ten minutes'"]},
            events=[("Warning", "InvalidSpec")],
        ),
    ),
]

REMOVE = Action(ActionKind.REMOVE_FINALIZER)

DELETION = [
    case(
        "deleting-without-finalizer-does-nothing",
        taskrun(inline_spec(), RUNNING, deleting=True, finalizer=False),
        Expect(status={"phase": "RUNNING"}),
    ),
    case(
        "deleting-orphan-policy-leaves-remote-alone",
        taskrun(inline_spec(deletionPolicy="Orphan"), RUNNING, deleting=True),
        Expect(action=REMOVE),
    ),
    case(
        "deleting-running-with-stop-policy-stops-it",
        taskrun(inline_spec(), RUNNING, deleting=True),
        Expect(action=Action(ActionKind.STOP, execution_id=EXEC, reason="Deleted")),
    ),
    case(
        "deleting-pending-execution-stops-it",
        taskrun(inline_spec(), {**RUNNING, "phase": ""}, deleting=True),
        Expect(action=Action(ActionKind.STOP, execution_id=EXEC, reason="Deleted")),
    ),
    case(
        "deleting-after-stop-deletes-owned-task",
        taskrun(inline_spec(), RUNNING, deleting=True),
        Expect(action=Action(ActionKind.DELETE_TASK, task_id=TASK)),
        Observation(stopped=True),
    ),
    case(
        "deleting-finished-run-deletes-owned-task-without-stop",
        taskrun(inline_spec(), SUCCEEDED, deleting=True),
        Expect(action=Action(ActionKind.DELETE_TASK, task_id=TASK)),
    ),
    case(
        "deleting-after-task-deleted-removes-finalizer",
        taskrun(inline_spec(), SUCCEEDED, deleting=True),
        Expect(action=REMOVE),
        Observation(task_deleted=True),
    ),
    case(
        "deleting-taskref-run-stops-it",
        taskrun(ref_id_spec(), {**RUNNING, "taskId": "task-ref"}, deleting=True),
        Expect(action=Action(ActionKind.STOP, execution_id=EXEC, reason="Deleted")),
    ),
    case(
        "deleting-taskref-run-after-stop-keeps-the-task",
        taskrun(ref_id_spec(), {**RUNNING, "taskId": "task-ref"}, deleting=True),
        Expect(action=REMOVE),
        Observation(stopped=True),
    ),
    case(
        "deleting-finished-taskref-run-keeps-the-task",
        taskrun(ref_id_spec(), {**SUCCEEDED, "taskId": "task-ref"}, deleting=True),
        Expect(action=REMOVE),
    ),
    case(
        "deleting-with-start-in-flight-stops-owned-executions",
        taskrun(inline_spec(), CLAIMED_RECENT, deleting=True),
        Expect(action=Action(ActionKind.STOP_OWNED_EXECUTIONS, task_id=TASK)),
    ),
    case(
        "deleting-with-start-in-flight-after-stop-deletes-owned-task",
        taskrun(inline_spec(), CLAIMED_RECENT, deleting=True),
        Expect(action=Action(ActionKind.DELETE_TASK, task_id=TASK)),
        Observation(stopped=True),
    ),
    case(
        "deleting-before-any-task-removes-finalizer",
        taskrun(inline_spec(), None, deleting=True),
        Expect(action=REMOVE),
    ),
    case(
        "deleting-invalid-spec-removes-finalizer",
        taskrun({"taskRef": {}}, deleting=True),
        Expect(action=REMOVE),
    ),
]


def waiting(reason: str, message: str) -> ConnectionView:
    return ConnectionView(Access.WAITING, reason, message)


NO_CONNECTION = waiting("ConnectionNotFound", "OnaConnection team-a/ona does not exist")
REFUSED = ConnectionView(
    Access.REFUSED, "NotPermitted", "OnaConnection team-a/ona does not allow inline tasks"
)
WAIT = CFG.connection_wait

CONNECTION = [
    case(
        "connection-missing-before-start-waits-and-says-what-is-missing",
        taskrun(inline_spec(connectionRef={"name": "ona"}), None),
        Expect(
            conditions=pending("ConnectionNotFound", ("False", "ConnectionNotFound")),
            messages={
                "Succeeded": ["OnaConnection team-a/ona does not exist"],
                "RemoteReachable": ["OnaConnection team-a/ona does not exist"],
            },
            requeue=WAIT,
        ),
        Observation(connection=NO_CONNECTION),
    ),
    case(
        "secret-missing-after-task-created-waits-without-starting",
        taskrun(inline_spec(connectionRef={"name": "ona"}), TASK_KNOWN),
        Expect(
            status={"taskId": TASK, "startRequestedAt": ABSENT},
            conditions=pending("SecretNotFound", ("False", "SecretNotFound")),
            requeue=WAIT,
        ),
        Observation(connection=waiting("SecretNotFound", "Secret team-a/t does not exist")),
    ),
    case(
        "no-default-connection-waits",
        taskrun(ref_id_spec(), None),
        Expect(
            status={"taskId": ABSENT},
            conditions=pending("NoDefaultConnection", ("False", "NoDefaultConnection")),
            requeue=WAIT,
        ),
        Observation(connection=waiting("NoDefaultConnection", "name a connection")),
    ),
    case(
        "policy-refusal-before-start-ends-not-permitted-with-the-rule",
        taskrun(inline_spec(connectionRef={"name": "ona"}), None),
        Expect(
            status={"taskId": ABSENT, "startRequestedAt": ABSENT, "phase": ABSENT},
            conditions=finished("False", "NotPermitted", stalled=True),
            messages={"Succeeded": ["does not allow inline tasks"], "Stalled": ["inline"]},
            events=[("Warning", "NotPermitted")],
        ),
        Observation(connection=REFUSED),
    ),
    case(
        "policy-refusal-after-task-created-still-starts-nothing",
        taskrun(ref_id_spec(connectionRef={"name": "ona"}), {**TASK_KNOWN, "taskId": "task-ref"}),
        Expect(
            status={"startRequestedAt": ABSENT},
            conditions=finished("False", "NotPermitted", stalled=True),
            events=[("Warning", "NotPermitted")],
        ),
        Observation(connection=REFUSED),
    ),
    case(
        "created-stopped-ends-stopped-even-without-a-connection",
        taskrun(inline_spec(desiredPhase="STOPPED"), None),
        Expect(
            status={"phase": "STOPPED"},
            conditions=finished("False", "Stopped", stalled=False),
            events=[("Normal", "Stopped")],
        ),
        Observation(connection=NO_CONNECTION),
    ),
    case(
        "connection-gone-while-running-keeps-phase-and-says-why",
        taskrun(inline_spec(connectionRef={"name": "ona"}), RUNNING),
        Expect(
            status={"phase": "RUNNING", "taskExecutionId": EXEC, "stopRequestedAt": ABSENT},
            conditions=pending("Running", ("False", "ConnectionNotFound")),
            messages={"RemoteReachable": ["does not exist", "the last known status is kept"]},
            requeue=WAIT,
        ),
        Observation(
            connection=NO_CONNECTION, execution=execution(phase=Phase.SUCCEEDED, version=9)
        ),
    ),
    case(
        "connection-gone-while-start-unresolved-keeps-the-claim",
        taskrun(inline_spec(connectionRef={"name": "ona"}), CLAIMED),
        Expect(
            status={"startRequestedAt": at(-20), "taskExecutionId": ABSENT},
            conditions=pending("StartOutcomeUnknown", ("False", "ConnectionNotFound")),
            requeue=WAIT,
        ),
        Observation(connection=NO_CONNECTION),
    ),
    case(
        "a-claimed-run-the-policy-refuses-does-nothing-more-in-ona",
        taskrun(inline_spec(connectionRef={"name": "ona"}), CLAIMED_RECENT),
        Expect(
            conditions=finished("False", "NotPermitted", stalled=True),
            messages={"Succeeded": ["may have made was not stopped"]},
            events=[("Warning", "NotPermitted")],
        ),
        Observation(connection=REFUSED),
    ),
    case(
        "a-running-run-the-policy-refuses-is-not-followed-or-stopped",
        taskrun(inline_spec(connectionRef={"name": "ona"}), RUNNING),
        Expect(
            conditions=finished("False", "NotPermitted", stalled=True),
            messages={"Succeeded": [f"execution {EXEC} was not stopped"]},
            events=[("Warning", "NotPermitted")],
        ),
        Observation(connection=REFUSED, execution=execution(phase=Phase.RUNNING, version=9)),
    ),
    case(
        "deleting-a-run-the-policy-refuses-stops-nothing-and-says-what-was-left",
        taskrun(inline_spec(connectionRef={"name": "ona"}), RUNNING, deleting=True),
        Expect(action=REMOVE, events=[("Warning", "CleanupSkipped")]),
        Observation(connection=REFUSED),
    ),
    case(
        "finished-run-ignores-a-missing-connection",
        taskrun(inline_spec(connectionRef={"name": "ona"}), SUCCEEDED),
        Expect(
            status={"phase": "SUCCEEDED"}, conditions=finished("True", "Succeeded", stalled=False)
        ),
        Observation(connection=NO_CONNECTION),
    ),
    case(
        "deleting-with-connection-gone-removes-finalizer-and-says-what-was-left",
        taskrun(inline_spec(connectionRef={"name": "ona"}), RUNNING, deleting=True),
        Expect(action=REMOVE, events=[("Warning", "CleanupSkipped")]),
        Observation(connection=NO_CONNECTION),
    ),
    case(
        "deleting-orphan-with-connection-gone-removes-finalizer-quietly",
        taskrun(
            inline_spec(connectionRef={"name": "ona"}, deletionPolicy="Orphan"),
            RUNNING,
            deleting=True,
        ),
        Expect(action=REMOVE),
        Observation(connection=NO_CONNECTION),
    ),
    case(
        "bad-connection-ref-is-an-invalid-spec",
        taskrun(inline_spec(connectionRef={"name": "ona", "namespace": "other"}), None),
        Expect(
            conditions=finished("False", "InvalidSpec", stalled=True),
            messages={"Succeeded": ["spec.connectionRef has no namespace"]},
            events=[("Warning", "InvalidSpec")],
        ),
    ),
]


@pytest.mark.parametrize(
    ("run", "obs", "expect"),
    [*BEFORE_START, *CREATED_STOPPED, *UNKNOWN_START, *TRACKING, *DELETION, *CONNECTION],
)
def test_decide(run: TaskRun, obs: Observation, expect: Expect) -> None:
    decision = decide(run, obs, NOW, CFG)

    assert decision.action == expect.action
    got = decision.status.to_dict()
    assert {k: got.get(k, ABSENT) for k in expect.status} == dict(expect.status)
    if expect.conditions is not None:
        assert condition_table(decision.status) == dict(expect.conditions)
    for type_, fragments in expect.messages.items():
        found = decision.status.condition(type_)
        assert found is not None, type_
        for fragment in fragments:
            assert fragment in found.message, (type_, found.message)
    assert decision.track == expect.track
    assert decision.requeue_after == expect.requeue
    assert events_table(decision.events) == list(expect.events)
    if expect.conditions:
        # Every condition written in this pass speaks for the generation just seen.
        assert {c.observed_generation for c in decision.status.conditions} == {run.generation}
        assert decision.status.observed_generation == run.generation


FINISHED = [
    pytest.param(SUCCEEDED, id="succeeded"),
    pytest.param(
        {**RUNNING, "phase": "FAILED", "conditions": finished_conditions(False, "Failed", True)},
        id="failed",
    ),
    pytest.param(
        {
            **TIMEOUT_STOP_REQUESTED,
            "phase": "STOPPED",
            "conditions": finished_conditions(False, "TimedOut", True),
        },
        id="timed-out",
    ),
    pytest.param(
        {"taskId": TASK, "conditions": finished_conditions(False, "TaskNotFound", True)},
        id="task-not-found",
    ),
]


@pytest.mark.parametrize("status", FINISHED)
@pytest.mark.parametrize(
    "obs",
    [
        pytest.param(Observation(), id="no-news"),
        pytest.param(
            Observation(execution=execution(phase=Phase.RUNNING, version=99)), id="late-update"
        ),
        pytest.param(
            Observation(remote_failure=failure(FailureKind.UNAVAILABLE)), id="remote-down"
        ),
        pytest.param(Observation(candidates=claim_candidates(at(-5))), id="candidates"),
    ],
)
@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(inline_spec(), id="unchanged-spec"),
        pytest.param(inline_spec(desiredPhase="STOPPED"), id="desired-stopped-edited"),
    ],
)
def test_finished_taskrun_changes_only_observed_generation(
    status: dict[str, Any], obs: Observation, spec: dict[str, Any]
) -> None:
    run = taskrun(spec, status, generation=3)
    decision = decide(run, obs, NOW, CFG)

    assert decision.action is None
    assert decision.track is None
    assert decision.requeue_after is None
    assert decision.events == ()
    expected = Status.from_dict(status).to_dict()
    assert decision.status.to_dict() == {**expected, "observedGeneration": 3}


def test_taskref_by_id_starts_once_its_claim_is_read_back() -> None:
    first = decide(taskrun(ref_id_spec()), Observation(), NOW, CFG)
    again = taskrun(ref_id_spec(), first.status.to_dict())
    second = decide(again, Observation(), NOW + timedelta(seconds=1), CFG)

    assert first.action == Action(ActionKind.START, task_id="task-ref")
    # Read back before the start's outcome is recorded: an unknown outcome, never a second
    # start.
    assert second.action is None
    assert second.status.start_requested_at == at(0)


def test_stalled_start_resumes_after_allow_annotation_and_starts_once() -> None:
    """A person allows a new start: the claim is cleared, then exactly one START follows,
    and the annotation left in place does not allow a third."""
    annotations = {ALLOW_RESTART_ANNOTATION: "true"}
    cleared = decide(
        taskrun(inline_spec(), STALLED_START, annotations=annotations), Observation(), NOW, CFG
    )
    run = taskrun(inline_spec(), cleared.status.to_dict(), annotations=annotations)
    start = decide(run, Observation(), NOW, CFG)
    assert start.action == STARTING
    assert start.status.start_attempts == 2

    # The new start's outcome is unknown too: it waits rather than clearing its own claim.
    run = taskrun(inline_spec(), start.status.to_dict(), annotations=annotations)
    later = decide(run, Observation(), NOW + timedelta(seconds=3), CFG)
    assert later.action is None
    assert later.status.start_requested_at == at(0)
    assert later.requeue_after == pytest.approx(13.0)


def test_stop_asked_while_a_start_outcome_is_unknown_never_starts_again() -> None:
    """desiredPhase is set to STOPPED while a lost start is being looked for: when the API
    confirms nothing was started, the run ends as stopped instead of starting again."""
    spec = inline_spec(desiredPhase="STOPPED")
    found_none = decide(taskrun(spec, CLAIMED, generation=2), Observation(candidates=()), NOW, CFG)
    assert found_none.action is None
    assert found_none.status.start_requested_at == ""

    run = taskrun(spec, found_none.status.to_dict(), generation=2)
    final = decide(run, Observation(), NOW, CFG)
    assert final.action is None
    assert final.status.phase == "STOPPED"
    assert condition_table(final.status)["Succeeded"] == ("False", "Stopped")
    assert condition_table(final.status)["Stalled"] == ("False", "Stopped")


def test_delete_without_a_usable_connection_says_everything_it_left_behind() -> None:
    gone = Observation(connection=waiting("ConnectionNotFound", "OnaConnection a/b does not exist"))
    run = taskrun(inline_spec(connectionRef={"name": "b"}), RUNNING, deleting=True)
    decision = decide(run, gone, NOW, CFG)
    assert decision.action == REMOVE
    [event] = decision.events
    assert event.message == (
        f"execution {EXEC} was not stopped; Ona task {TASK} was not deleted on delete: "
        "OnaConnection a/b does not exist"
    )


def test_a_delete_that_cannot_clean_up_names_the_environment_left_behind() -> None:
    spec = inline_spec(
        connectionRef={"name": "ona"},
        environment={"fromProject": {"projectId": "p-1"}, "cleanup": "Delete"},
    )
    spec["task"].pop("environmentId", None)
    run = taskrun(spec, {**RUNNING, "environmentId": "env-9"}, deleting=True)
    decision = decide(run, Observation(connection=REFUSED), NOW, CFG)
    assert decision.action == REMOVE
    (event,) = decision.events
    assert event.reason == "CleanupSkipped"
    assert f"execution {EXEC} was not stopped" in event.message
    assert "environment env-9 was not deleted" in event.message
