"""`apply_result`: how the outcome of each remote action is folded back into the
TaskRun's status and the observation the next decision sees. A few journeys chain
decide and apply_result through a lost or refused call, as the reconciler does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from ona_taskrun.rules.conditions import refusal_reason
from ona_taskrun.rules.model import (
    Action,
    ActionKind,
    Decision,
    FailureKind,
    Observation,
    Phase,
    RemoteEnvironment,
    RemoteFailure,
    Result,
    Settings,
    Status,
    TaskRun,
)
from ona_taskrun.rules.pipeline import decide
from ona_taskrun.rules.results import apply_result

from .builders import (
    EXEC,
    NOW,
    TASK,
    at,
    condition_table,
    events_table,
    execution,
    failure,
    finished,
    finished_conditions,
    inline_spec,
    pending,
    pending_conditions,
    ref_name_spec,
    taskrun,
)

ABSENT = "<absent>"
CFG = Settings()

CLAIMED: dict[str, Any] = {
    "observedGeneration": 1,
    "taskId": TASK,
    "startRequestedAt": at(0),
    "startAttempts": 1,
    "conditions": pending_conditions("Starting"),
}
RUNNING: dict[str, Any] = {
    "observedGeneration": 1,
    "taskId": TASK,
    "taskExecutionId": EXEC,
    "phase": "RUNNING",
    "statusVersion": "1",
    "startRequestedAt": at(-600),
    "startAttempts": 1,
    "startedAt": at(-590),
    "conditions": pending_conditions("Running"),
}
STOPPING = {**RUNNING, "stopRequestedAt": at(0), "stopReason": "Requested"}
SUCCEEDED: dict[str, Any] = {
    **RUNNING,
    "phase": "SUCCEEDED",
    "statusVersion": "5",
    "conditions": finished_conditions(True, "Succeeded", stalled=False),
}

START = Action(ActionKind.START, task_id=TASK)
STOP_REQUESTED = Action(ActionKind.STOP, execution_id=EXEC, reason="Requested")
STOP_DELETED = Action(ActionKind.STOP, execution_id=EXEC, reason="Deleted")
DELETE_TASK = Action(ActionKind.DELETE_TASK, task_id=TASK)


def refused(kind: FailureKind, retry_after: float | None = None) -> Result:
    return Result(failure=failure(kind, retry_after))


@dataclass(frozen=True)
class Expect:
    status: Mapping[str, Any] = field(default_factory=dict)
    conditions: Mapping[str, tuple[str, str]] | None = None
    messages: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # A subset of the returned Observation's attributes.
    obs: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[tuple[str, str]] = ()


def row(
    id_: str,
    run: TaskRun,
    action: Action,
    result: Result,
    expect: Expect,
    obs: Observation | None = None,
    marks: Any = (),
) -> Any:
    return pytest.param(run, action, result, obs or Observation(), expect, id=id_, marks=marks)


# StartTask in an environment that is not running, as the Ona client reports it.
NOT_RUNNING = RemoteFailure(
    FailureKind.INVALID_ARGUMENT,
    "StartTask: failed_precondition (HTTP 400): environment env-1 is not running",
    reason="FailedPrecondition",
)


def waiting_for_environment(ready: str) -> dict[str, Any]:
    return {**pending("CheckingEnvironment"), "EnvironmentReady": ("False", ready)}


def start_refused_as_not_running(id_: str, spec: Mapping[str, Any]) -> Any:
    """With or without spec.environment (and whatever whenStopped says: the look that
    follows decides), a start refused as not running voids its claim and looks."""
    return row(
        id_,
        taskrun(spec, CLAIMED),
        START,
        Result(failure=NOT_RUNNING),
        Expect(
            status={"startRequestedAt": ABSENT, "taskExecutionId": ABSENT, "startAttempts": 1},
            conditions=waiting_for_environment("Checking"),
            messages={"EnvironmentReady": ["is not running"]},
            obs={"environment": None, "remote_failure": None},
            events=[],
        ),
    )


def terminal_start(kind: FailureKind, reason: str, text: str) -> Any:
    return row(
        f"start-refused-{kind.name.lower()}-ends-as-{reason}",
        taskrun(inline_spec(), CLAIMED),
        START,
        refused(kind),
        Expect(
            status={"startRequestedAt": ABSENT, "taskExecutionId": ABSENT, "startAttempts": 1},
            conditions=finished("False", reason, stalled=True),
            messages={
                "Succeeded": [f"the API says {kind.value}", text],
                "Stalled": [f"the API says {kind.value}"],
            },
            obs={"remote_failure": None},
            events=[("Warning", reason)],
        ),
    )


def transient_start(kind: FailureKind) -> Any:
    return row(
        f"start-{kind.name.lower()}-voids-the-claim-and-says-remote-unreachable",
        taskrun(inline_spec(), CLAIMED),
        START,
        refused(kind, retry_after=3.0),
        Expect(
            status={"startRequestedAt": ABSENT, "taskExecutionId": ABSENT},
            conditions=pending("Waiting", ("False", kind.value)),
            messages={"RemoteReachable": [f"the API says {kind.value}"]},
            obs={"remote_failure": failure(kind, 3.0)},
        ),
    )


# A named connection's 401: its token may be rotating, so the run waits, never ends.
WAITED_401 = RemoteFailure(FailureKind.UNAUTHENTICATED, "the API says Unauthorized", wait=True)

ROWS = [
    row(
        "start-refused-401-through-a-named-connection-waits-instead-of-failing",
        taskrun(inline_spec(connectionRef={"name": "team"}), CLAIMED),
        START,
        Result(failure=WAITED_401),
        Expect(
            status={"startRequestedAt": ABSENT, "taskExecutionId": ABSENT},
            conditions=pending("Waiting", ("False", "Unauthorized")),
            messages={"RemoteReachable": ["the API says Unauthorized"]},
            obs={"remote_failure": WAITED_401},
        ),
    ),
    row(
        "create-task-refused-401-through-a-named-connection-waits",
        taskrun(inline_spec(connectionRef={"name": "team"}), None),
        Action(ActionKind.CREATE_TASK),
        Result(failure=WAITED_401),
        Expect(
            status={"taskId": ABSENT},
            conditions=pending("Waiting", ("False", "Unauthorized")),
            obs={"remote_failure": WAITED_401},
        ),
    ),
    row(
        "start-success-records-execution-and-its-status",
        taskrun(inline_spec(), CLAIMED),
        START,
        Result(execution=execution(phase=Phase.PENDING, version=1, created_at=at(0))),
        Expect(
            status={
                "taskExecutionId": EXEC,
                "phase": "PENDING",
                "statusVersion": "1",
                "createdAt": at(0),
                "startRequestedAt": at(0),
            },
            conditions=pending("Starting"),
            obs={"execution": execution(phase=Phase.PENDING, version=1, created_at=at(0))},
            events=[],  # outcomes get Events, not starts: a write each at scale
        ),
    ),
    row(
        "start-outcome-unknown-keeps-the-claim",
        taskrun(inline_spec(), CLAIMED),
        START,
        refused(FailureKind.OUTCOME_UNKNOWN),
        Expect(
            status={"startRequestedAt": at(0), "taskExecutionId": ABSENT, "startAttempts": 1},
            conditions=pending("StartOutcomeUnknown"),
            messages={"Succeeded": ["the API says OutcomeUnknown"]},
            obs={"remote_failure": None},
            events=[("Warning", "StartOutcomeUnknown")],
        ),
    ),
    terminal_start(FailureKind.NOT_FOUND, "TaskNotFound", f"task {TASK} was not found"),
    terminal_start(FailureKind.UNAUTHENTICATED, "Unauthorized", "StartTask was refused"),
    terminal_start(FailureKind.PERMISSION_DENIED, "Forbidden", "StartTask was refused"),
    terminal_start(FailureKind.INVALID_ARGUMENT, "InvalidTask", "StartTask was refused"),
    transient_start(FailureKind.RATE_LIMITED),
    transient_start(FailureKind.UNAVAILABLE),
    start_refused_as_not_running(
        "start-refused-not-running-without-spec-environment-looks-at-the-environment",
        {"taskRef": {"id": TASK}},
    ),
    start_refused_as_not_running(
        "start-refused-not-running-inline-without-spec-environment-looks-too",
        inline_spec(),
    ),
    start_refused_as_not_running(
        "start-refused-not-running-when-stopped-fail-looks-before-refusing",
        inline_spec(environment={"whenStopped": "Fail"}),
    ),
    row(
        "start-refused-not-running-in-an-environment-just-read-running-looks-once-more",
        taskrun(inline_spec(), CLAIMED),
        START,
        Result(failure=NOT_RUNNING),
        Expect(
            status={"startRequestedAt": ABSENT, "taskExecutionId": ABSENT},
            conditions=waiting_for_environment("StartRefused"),
            messages={"EnvironmentReady": ["although environment env-1 was running"]},
            obs={"environment": None},
        ),
        Observation(environment=RemoteEnvironment(id="env-1", phase="RUNNING")),
    ),
    row(
        "start-refused-not-running-twice-in-a-running-environment-ends-as-invalid-task",
        taskrun(
            inline_spec(),
            {
                **CLAIMED,
                "conditions": [
                    *CLAIMED["conditions"],
                    {
                        **CLAIMED["conditions"][0],
                        "type": "EnvironmentReady",
                        "status": "False",
                        "reason": "StartRefused",
                    },
                ],
            },
        ),
        START,
        Result(failure=NOT_RUNNING),
        Expect(
            status={"startRequestedAt": ABSENT, "taskExecutionId": ABSENT},
            conditions={
                **finished("False", "InvalidTask", stalled=True),
                "EnvironmentReady": ("False", "StartRefused"),
            },
            messages={"Succeeded": ["although environment env-1 is running", "is not running"]},
            events=[("Warning", "InvalidTask")],
        ),
        Observation(environment=RemoteEnvironment(id="env-1", phase="RUNNING")),
    ),
    row(
        "stop-not-found-counts-as-stopped",
        taskrun(inline_spec(), RUNNING, deleting=True),
        STOP_DELETED,
        refused(FailureKind.NOT_FOUND),
        Expect(status={"phase": "RUNNING"}, obs={"stopped": True, "remote_failure": None}),
    ),
    row(
        "stop-owned-executions-not-found-counts-as-stopped",
        taskrun(inline_spec(), CLAIMED, deleting=True),
        Action(ActionKind.STOP_OWNED_EXECUTIONS, task_id=TASK),
        refused(FailureKind.NOT_FOUND),
        Expect(obs={"stopped": True}),
    ),
    row(
        "stop-as-desired-phase-asks-posts-stopping",
        taskrun(inline_spec(desiredPhase="STOPPED"), STOPPING),
        STOP_REQUESTED,
        Result(),
        Expect(
            status={"stopRequestedAt": at(0), "stopReason": "Requested", "phase": "RUNNING"},
            obs={"stopped": True},
            events=[("Normal", "Stopping")],
        ),
    ),
    row(
        "stop-for-timeout-posts-stopping",
        taskrun(inline_spec(timeout="5m"), {**STOPPING, "stopReason": "TimedOut"}),
        Action(ActionKind.STOP, execution_id=EXEC, reason="TimedOut"),
        Result(),
        Expect(
            status={"stopReason": "TimedOut"},
            obs={"stopped": True},
            events=[("Normal", "Stopping")],
        ),
    ),
    row(
        "stop-for-deletion-is-quiet",
        taskrun(inline_spec(), RUNNING, deleting=True),
        STOP_DELETED,
        Result(),
        Expect(obs={"stopped": True}),
    ),
    row(
        "stop-rate-limited-forgets-the-stop-request-to-retry-it",
        taskrun(inline_spec(desiredPhase="STOPPED"), STOPPING),
        STOP_REQUESTED,
        refused(FailureKind.RATE_LIMITED),
        Expect(
            status={"stopRequestedAt": ABSENT, "stopReason": ABSENT, "phase": "RUNNING"},
            conditions=pending("Waiting", ("False", "RateLimited")),
            obs={"stopped": False, "remote_failure": failure(FailureKind.RATE_LIMITED)},
        ),
    ),
    row(
        "delete-task-not-found-counts-as-deleted",
        taskrun(inline_spec(), SUCCEEDED, deleting=True),
        DELETE_TASK,
        refused(FailureKind.NOT_FOUND),
        Expect(obs={"task_deleted": True}),
    ),
    row(
        "delete-task-success",
        taskrun(inline_spec(), SUCCEEDED, deleting=True),
        DELETE_TASK,
        Result(),
        Expect(obs={"task_deleted": True}),
    ),
    row(
        "delete-task-unavailable-keeps-a-succeeded-run-succeeded",
        taskrun(inline_spec(), SUCCEEDED, deleting=True),
        DELETE_TASK,
        refused(FailureKind.UNAVAILABLE),
        Expect(
            status={"phase": "SUCCEEDED"},
            conditions=finished("True", "Succeeded", stalled=False),
            obs={"task_deleted": False},
        ),
    ),
    row(
        "create-task-outcome-unknown-looks-the-task-up-again",
        taskrun(inline_spec(), None),
        Action(ActionKind.CREATE_TASK),
        refused(FailureKind.OUTCOME_UNKNOWN),
        Expect(status={"taskId": ABSENT}, obs={"owned_task_missing": False}, events=[]),
        Observation(owned_task_missing=True),
    ),
    row(
        "create-task-success-records-it",
        taskrun(inline_spec(), None),
        Action(ActionKind.CREATE_TASK),
        Result(task_id=TASK),
        Expect(status={"taskId": TASK}, events=[]),
        Observation(owned_task_missing=True),
    ),
    row(
        "create-task-invalid-argument-ends-as-invalid-task",
        taskrun(inline_spec(), None),
        Action(ActionKind.CREATE_TASK),
        refused(FailureKind.INVALID_ARGUMENT),
        Expect(
            status={"taskId": ABSENT},
            conditions=finished("False", "InvalidTask", stalled=True),
            messages={"Succeeded": ["the API says InvalidArgument"]},
            events=[("Warning", "InvalidTask")],
        ),
        Observation(owned_task_missing=True),
    ),
    row(
        "find-owned-task-found-records-it",
        taskrun(inline_spec(), None),
        Action(ActionKind.FIND_OWNED_TASK),
        Result(task_id=TASK),
        Expect(status={"taskId": TASK}, events=[]),
    ),
    row(
        "find-owned-task-missing-leads-to-create",
        taskrun(inline_spec(), None),
        Action(ActionKind.FIND_OWNED_TASK),
        Result(missing=True),
        Expect(status={"taskId": ABSENT}, obs={"owned_task_missing": True}),
    ),
    row(
        "resolve-task-ref-found-records-it",
        taskrun(ref_name_spec(), None),
        Action(ActionKind.RESOLVE_TASK_REF),
        Result(task_id="task-ref"),
        Expect(status={"taskId": "task-ref"}),
    ),
    row(
        "resolve-task-ref-missing-ends-as-task-not-found",
        taskrun(ref_name_spec(), None),
        Action(ActionKind.RESOLVE_TASK_REF),
        Result(missing=True),
        Expect(
            status={"taskId": ABSENT},
            conditions=finished("False", "TaskNotFound", stalled=True),
            messages={"Succeeded": ["'nightly'", "env-1"]},
            events=[("Warning", "TaskNotFound")],
        ),
    ),
    row(
        "resolve-task-ref-unauthenticated-ends-as-unauthorized",
        taskrun(ref_name_spec(), None),
        Action(ActionKind.RESOLVE_TASK_REF),
        refused(FailureKind.UNAUTHENTICATED),
        Expect(
            conditions=finished("False", "Unauthorized", stalled=True),
            messages={"Succeeded": ["the API says Unauthorized"]},
            events=[("Warning", "Unauthorized")],
        ),
    ),
    row(
        "find-executions-hands-candidates-to-the-next-decision",
        taskrun(inline_spec(), CLAIMED),
        Action(ActionKind.FIND_EXECUTIONS, task_id=TASK),
        Result(candidates=(execution(),)),
        Expect(status={"startRequestedAt": at(0)}, obs={"candidates": (execution(),)}),
    ),
    row(
        "find-executions-none-found-is-an-empty-answer-not-unknown",
        taskrun(inline_spec(), CLAIMED),
        Action(ActionKind.FIND_EXECUTIONS, task_id=TASK),
        Result(candidates=()),
        Expect(obs={"candidates": ()}),
    ),
    row(
        "find-executions-unavailable-keeps-the-claim",
        taskrun(inline_spec(), CLAIMED),
        Action(ActionKind.FIND_EXECUTIONS, task_id=TASK),
        refused(FailureKind.UNAVAILABLE),
        Expect(
            status={"startRequestedAt": at(0)},
            conditions=pending("Waiting", ("False", "Unavailable")),
            obs={"candidates": None},
        ),
    ),
]


@pytest.mark.parametrize(("run", "action", "result", "obs", "expect"), ROWS)
def test_apply_result(
    run: TaskRun, action: Action, result: Result, obs: Observation, expect: Expect
) -> None:
    new_run, new_obs, events = apply_result(run, action, result, obs, NOW)

    got = new_run.status.to_dict()
    assert {k: got.get(k, ABSENT) for k in expect.status} == dict(expect.status)
    if expect.conditions is not None:
        assert condition_table(new_run.status) == dict(expect.conditions)
    for type_, fragments in expect.messages.items():
        found = new_run.status.condition(type_)
        assert found is not None, type_
        for fragment in fragments:
            assert fragment in found.message, (type_, found.message)
    assert {k: getattr(new_obs, k) for k in expect.obs} == dict(expect.obs)
    assert events_table(events) == list(expect.events)
    # Nothing but the status changes: the spec, finalizer and deletion state are the edges'.
    assert replace(new_run, status=run.status) == run


# ------------------------------------------------------------------------ journeys


def step(run: TaskRun, decision: Decision) -> TaskRun:
    """The TaskRun as it reads back after the edge wrote the decision's status."""
    return replace(run, status=Status.from_dict(decision.status.to_dict()))


def test_lost_start_response_is_adopted_and_never_started_twice() -> None:
    run = taskrun(inline_spec(), {"observedGeneration": 1, "taskId": TASK})
    starts = 0

    first = decide(run, Observation(), NOW, CFG)
    assert first.action == Action(ActionKind.START, task_id=TASK)
    starts += 1
    run = step(run, first)
    run, obs, _ = apply_result(
        run, first.action, refused(FailureKind.OUTCOME_UNKNOWN), Observation(), NOW
    )

    # Within the settle time nothing is done; after it, the executions are listed.
    waiting = decide(run, obs, NOW + timedelta(seconds=5), CFG)
    assert waiting.action is None
    assert waiting.requeue_after == pytest.approx(11.0)
    later = NOW + timedelta(seconds=16)
    find = decide(run, obs, later, CFG)
    assert find.action == Action(ActionKind.FIND_EXECUTIONS, task_id=TASK)
    run = step(run, find)
    found = Result(candidates=(execution(created_at=at(1)),))
    run, obs, _ = apply_result(run, find.action, found, obs, later)

    adopted = decide(run, obs, later, CFG)
    assert adopted.action is None
    assert adopted.track == EXEC
    assert adopted.status.task_execution_id == EXEC
    assert adopted.status.phase == "RUNNING"
    starts += sum(
        1 for d in (waiting, find, adopted) if d.action and d.action.kind == ActionKind.START
    )
    assert starts == 1


def test_create_task_outcome_unknown_then_finds_the_task_by_reference() -> None:
    run = taskrun(inline_spec(), None)
    obs = Observation(owned_task_missing=True)
    create = decide(run, obs, NOW, CFG)
    assert create.action == Action(ActionKind.CREATE_TASK)

    run, obs, _ = apply_result(
        step(run, create), create.action, refused(FailureKind.OUTCOME_UNKNOWN), obs, NOW
    )
    again = decide(run, obs, NOW, CFG)
    assert again.action == Action(ActionKind.FIND_OWNED_TASK)


def test_refused_start_is_final_and_costs_no_more_calls() -> None:
    run = taskrun(inline_spec(), CLAIMED)
    run, obs, _ = apply_result(run, START, refused(FailureKind.NOT_FOUND), Observation(), NOW)
    decision = decide(step(run, Decision(run.status)), obs, NOW, CFG)

    assert decision.action is None
    assert decision.requeue_after is None
    assert condition_table(decision.status)["Succeeded"] == ("False", "TaskNotFound")


def test_find_executions_unauthorized_says_the_remote_refused() -> None:
    run = taskrun(inline_spec(), {**CLAIMED, "startRequestedAt": at(-20)})
    find = Action(ActionKind.FIND_EXECUTIONS, task_id=TASK)
    run, obs, _ = apply_result(run, find, refused(FailureKind.UNAUTHENTICATED), Observation(), NOW)
    decision = decide(run, obs, NOW, CFG)

    assert condition_table(decision.status)["RemoteReachable"] == ("False", "Unauthorized")


def test_refused_stop_stays_visible_in_the_conditions() -> None:
    run = taskrun(inline_spec(desiredPhase="STOPPED"), RUNNING, generation=2)
    stop = decide(run, Observation(), NOW, CFG)
    assert stop.action == STOP_REQUESTED
    run = step(run, stop)
    run, obs, _ = apply_result(
        run, STOP_REQUESTED, refused(FailureKind.PERMISSION_DENIED), Observation(), NOW
    )
    run = step(run, decide(run, obs, NOW, CFG))

    # The next reconcile, a resync later, has no fresh failure to report.
    later = decide(run, Observation(), NOW + timedelta(seconds=60), CFG)
    messages = [c.message for c in later.status.conditions]
    assert any("the API says Forbidden" in m for m in messages), messages


@pytest.mark.parametrize(
    ("kind", "start", "create_environment"),
    [
        (FailureKind.UNAUTHENTICATED, "Unauthorized", "Unauthorized"),
        (FailureKind.PERMISSION_DENIED, "Forbidden", "Forbidden"),
        (FailureKind.NOT_FOUND, "TaskNotFound", "ProjectNotFound"),
        (FailureKind.INVALID_ARGUMENT, "InvalidTask", "InvalidEnvironment"),
    ],
)
def test_one_refusal_map_names_why_a_start_or_a_creation_ends_the_run(
    kind: FailureKind, start: str, create_environment: str
) -> None:
    # Who may call reads the same for every call; what was missing or invalid is the call's.
    started, _, _ = apply_result(
        taskrun(inline_spec(), CLAIMED), START, refused(kind), Observation(), NOW
    )
    spec = {
        "task": {"name": "build", "command": "make test"},
        "environment": {"fromProject": {"projectId": "p-1"}},
    }
    create = Action(ActionKind.CREATE_ENVIRONMENT)
    created, _, _ = apply_result(
        taskrun(spec, {"environmentRequestedAt": at(0)}), create, refused(kind), Observation(), NOW
    )
    assert condition_table(started.status)["Succeeded"] == ("False", start)
    assert condition_table(created.status)["Succeeded"] == ("False", create_environment)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (FailureKind.UNAUTHENTICATED, "Unauthorized"),
        (FailureKind.PERMISSION_DENIED, "Forbidden"),
        (FailureKind.NOT_FOUND, "TaskNotFound"),
        (FailureKind.INVALID_ARGUMENT, "InvalidTask"),
        (FailureKind.RATE_LIMITED, None),
        (FailureKind.UNAVAILABLE, None),
        (FailureKind.OUTCOME_UNKNOWN, None),
    ],
)
def test_refusal_reason_is_none_for_what_is_no_refusal(
    kind: FailureKind, reason: str | None
) -> None:
    assert refusal_reason(kind, not_found="TaskNotFound", invalid="InvalidTask") == reason
