"""`spec.environment` decisions, one row per situation: what `decide` does for a run
whose environment is stopped, starting, failed, created for it, lost mid-run or due for
an activity signal, and how `apply_result` folds environment calls back in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from ona_taskrun.rules import environment
from ona_taskrun.rules.model import (
    ADOPT_ENVIRONMENT_ANNOTATION,
    ENVIRONMENT_ACTIONS,
    ENVIRONMENT_READY,
    START_REFUSED,
    Action,
    ActionKind,
    Event,
    FailureKind,
    FromProject,
    InvalidSpec,
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
from ona_taskrun.rules.spec import parse_environment, parse_spec

from .builders import EXEC, NOW, TASK, UID, at, cond, execution, failure, inline_spec, taskrun

CFG = Settings(
    environment_poll=2.0,
    environment_timeout=timedelta(seconds=120),
    keepalive=timedelta(seconds=30),
)
ENV = "env-1"
PROJECT = "0d6c2b55-7777-4888-9999-aaaabbbbcccc"


def env(phase: str, failure_message: str = "", id_: str = ENV) -> RemoteEnvironment:
    return RemoteEnvironment(id=id_, phase=phase, failure_message=failure_message)


def mine(id_: str) -> RemoteEnvironment:
    """An environment the operator created for the builders' TaskRun."""
    return RemoteEnvironment(
        id=id_,
        phase="RUNNING",
        name=environment.environment_name("run", UID),
        project_id=PROJECT,
    )


def with_env(**environment: Any) -> dict[str, Any]:
    return inline_spec(environment=environment)


def project_spec(**extra: Any) -> dict[str, Any]:
    task = {"name": "build", "command": "make test"}
    return {"task": task, "environment": {"fromProject": {"projectId": PROJECT}, **extra}}


def started(**status: Any) -> dict[str, Any]:
    return {
        "taskId": TASK,
        "taskExecutionId": EXEC,
        "phase": "RUNNING",
        "statusVersion": "2",
        "environmentId": ENV,
        "conditions": [cond("Succeeded", "Unknown", "Running")],
        **status,
    }


def refused_ready(reason: str = "Checking") -> list[dict[str, Any]]:
    """The conditions of a run whose StartTask was refused: it waits for its environment."""
    return [
        cond("Succeeded", "Unknown", "CheckingEnvironment"),
        cond(ENVIRONMENT_READY, "False", reason),
    ]


def waiting_plain(ready: str = "Checking", **status: Any) -> dict[str, Any]:
    """A run whose first StartTask was refused with failed_precondition: the claim is
    void, the count of StartTask calls kept."""
    return {
        "taskId": TASK,
        "startAttempts": 1,
        "attempt": 1,
        "conditions": refused_ready(ready),
        **status,
    }


def plain_started(**status: Any) -> dict[str, Any]:
    """A run without spec.environment whose execution runs (never looked at its
    environment)."""
    return {
        "taskId": TASK,
        "taskExecutionId": EXEC,
        "phase": "RUNNING",
        "statusVersion": "2",
        "startRequestedAt": at(-40),
        "startAttempts": 1,
        "conditions": [cond("Succeeded", "Unknown", "Running")],
        **status,
    }


@dataclass(frozen=True)
class Row:
    id: str
    run: TaskRun
    obs: Observation = field(default_factory=Observation)
    action: Action | None = None
    status: Mapping[str, Any] = field(default_factory=dict)
    succeeded: tuple[str, str] | None = None
    ready: tuple[str, str] | None = None
    requeue: float | None = None
    events: tuple[str, ...] = ()


ROWS = [
    Row(
        "not read yet: read it before anything is created",
        taskrun(with_env()),
        action=Action(ActionKind.GET_ENVIRONMENT, environment_id="env-1"),
        status={"phase": "PENDING"},
        succeeded=("Unknown", "CheckingEnvironment"),
        ready=("False", "Checking"),
    ),
    Row(
        "taskRef by id: the environment is found through the task",
        taskrun({"taskRef": {"id": "task-ref"}, "environment": {}}),
        action=Action(ActionKind.GET_ENVIRONMENT, task_id="task-ref"),
    ),
    Row(
        "running: the ordinary path goes on (the task is looked up)",
        taskrun(with_env()),
        Observation(environment=env("RUNNING")),
        action=Action(ActionKind.FIND_OWNED_TASK),
        status={"environmentId": ENV, "environmentPhase": "RUNNING"},
        ready=("True", "Running"),
    ),
    Row(
        "updating counts as running: the task starts",
        taskrun(with_env(), {"taskId": TASK}),
        Observation(environment=env("UPDATING")),
        action=Action(ActionKind.START, task_id=TASK),
        ready=("True", "Running"),
    ),
    Row(
        "stopped, whenStopped Start: StartEnvironment, the wait begins",
        taskrun(with_env()),
        Observation(environment=env("STOPPED")),
        action=Action(ActionKind.START_ENVIRONMENT, environment_id=ENV),
        status={"environmentPhase": "STOPPED", "environmentRequestedAt": at(0), "phase": "PENDING"},
        succeeded=("Unknown", "EnvironmentStarting"),
        ready=("False", "Starting"),
        events=("EnvironmentStarting",),
    ),
    Row(
        "stopped, whenStopped Fail: the run ends at once",
        taskrun(with_env(whenStopped="Fail")),
        Observation(environment=env("STOPPED")),
        succeeded=("False", "EnvironmentNotRunning"),
        ready=("False", "Stopped"),
        events=("EnvironmentNotRunning",),
    ),
    Row(
        "starting, whenStopped Fail: not running is not running",
        taskrun(with_env(whenStopped="Fail")),
        Observation(environment=env("STARTING")),
        succeeded=("False", "EnvironmentNotRunning"),
        ready=("False", "Starting"),
        events=("EnvironmentNotRunning",),
    ),
    Row(
        "starting: wait and look again after the poll interval",
        taskrun(with_env(), {"environmentRequestedAt": at(-10)}),
        Observation(environment=env("STARTING")),
        status={"environmentPhase": "STARTING", "environmentRequestedAt": at(-10)},
        ready=("False", "Starting"),
        requeue=2.0,
    ),
    Row(
        "stopping: wait until it is stopped before starting it",
        taskrun(with_env()),
        Observation(environment=env("STOPPING")),
        succeeded=("Unknown", "EnvironmentStopping"),
        ready=("False", "Stopped"),
        requeue=2.0,
    ),
    Row(
        "still not running after the timeout: the run ends",
        taskrun(with_env(), {"environmentRequestedAt": at(-121)}),
        Observation(environment=env("STARTING")),
        succeeded=("False", "EnvironmentNotReady"),
        events=("EnvironmentNotReady",),
    ),
    Row(
        "failed while we started it: the run ends with its message",
        taskrun(with_env(), {"environmentRequestedAt": at(-5)}),
        Observation(environment=env("STOPPED", "image pull failed")),
        succeeded=("False", "EnvironmentFailed"),
        ready=("False", "Failed"),
        events=("EnvironmentFailed",),
    ),
    Row(
        "an old failure of a stopped environment: a new start may clear it",
        taskrun(with_env()),
        Observation(environment=env("STOPPED", "yesterday's failure")),
        action=Action(ActionKind.START_ENVIRONMENT, environment_id=ENV),
        events=("EnvironmentStarting",),
    ),
    Row(
        "deleted: the task cannot run in it",
        taskrun(with_env()),
        Observation(environment=env("DELETED")),
        succeeded=("False", "EnvironmentDeleted"),
        events=("EnvironmentDeleted",),
    ),
    # ---- fromProject: exactly one environment per run
    Row(
        "fromProject: claim, then create",
        taskrun(project_spec()),
        action=Action(ActionKind.CREATE_ENVIRONMENT),
        status={"environmentRequestedAt": at(0), "phase": "PENDING"},
        succeeded=("Unknown", "EnvironmentCreating"),
        ready=("False", "Creating"),
    ),
    Row(
        "fromProject claimed, no id, settling: wait before looking",
        taskrun(project_spec(), {"environmentRequestedAt": at(-3)}),
        ready=("False", "Creating"),
        requeue=13.0,  # 15 s from the end of the claim's second
    ),
    Row(
        "fromProject claimed, no id, settled: look for it by name",
        taskrun(project_spec(), {"environmentRequestedAt": at(-30)}),
        action=Action(ActionKind.FIND_ENVIRONMENTS),
    ),
    Row(
        "one found: adopted",
        taskrun(project_spec(), {"environmentRequestedAt": at(-30)}),
        Observation(environment_candidates=(env("CREATING", id_="env-9"),)),
        status={"environmentId": "env-9"},
        ready=("False", "Creating"),
        events=("EnvironmentAdopted",),
    ),
    Row(
        "none found (confirmed): the claim is cleared to create again",
        taskrun(project_spec(), {"environmentRequestedAt": at(-30)}),
        Observation(environment_candidates=()),
        status={"environmentRequestedAt": "<absent>"},
        events=("EnvironmentRecreating",),
    ),
    Row(
        "two found: nothing more is created, a person decides",
        taskrun(project_spec(), {"environmentRequestedAt": at(-30)}),
        Observation(environment_candidates=(env("RUNNING", id_="a"), env("RUNNING", id_="b"))),
        succeeded=("Unknown", "EnvironmentOutcomeUnknown"),
        events=("EnvironmentOutcomeUnknown",),
    ),
    Row(
        "annotated: the named environment is read first",
        taskrun(
            project_spec(),
            {"environmentRequestedAt": at(-30)},
            annotations={ADOPT_ENVIRONMENT_ANNOTATION: "b"},
        ),
        action=Action(
            ActionKind.GET_ENVIRONMENT, environment_id="b", reason=environment.ADOPT_LOOKUP
        ),
        status={"environmentId": "<absent>"},
    ),
    Row(
        "annotated with one made for this run: it is adopted",
        taskrun(
            project_spec(),
            {"environmentRequestedAt": at(-30)},
            annotations={ADOPT_ENVIRONMENT_ANNOTATION: "b"},
        ),
        Observation(environment=mine("b"), environment_looked=True),
        status={"environmentId": "b"},
        events=("EnvironmentAdopted",),
    ),
    Row(
        "annotated with another run's environment: refused, nothing adopted",
        taskrun(
            project_spec(),
            {"environmentRequestedAt": at(-30)},
            annotations={ADOPT_ENVIRONMENT_ANNOTATION: "b"},
        ),
        Observation(
            environment=replace(mine("b"), name="someone-elses-run-1234"), environment_looked=True
        ),
        status={"environmentId": "<absent>"},
        succeeded=("Unknown", "EnvironmentOutcomeUnknown"),
        events=("EnvironmentAdoptionRefused",),
    ),
    Row(
        "annotated with this run's name in another project: refused",
        taskrun(
            project_spec(),
            {"environmentRequestedAt": at(-30)},
            annotations={ADOPT_ENVIRONMENT_ANNOTATION: "b"},
        ),
        Observation(environment=replace(mine("b"), project_id="other"), environment_looked=True),
        status={"environmentId": "<absent>"},
        events=("EnvironmentAdoptionRefused",),
    ),
    Row(
        "annotated with an environment that cannot be read: refused",
        taskrun(
            project_spec(),
            {"environmentRequestedAt": at(-30)},
            annotations={ADOPT_ENVIRONMENT_ANNOTATION: "b"},
        ),
        Observation(environment_looked=True),
        status={"environmentId": "<absent>"},
        events=("EnvironmentAdoptionRefused",),
    ),
    Row(
        "fromProject created: the inline task is looked up in it",
        taskrun(project_spec(), {"environmentId": ENV, "environmentRequestedAt": at(-5)}),
        Observation(environment=env("RUNNING")),
        action=Action(ActionKind.FIND_OWNED_TASK),
        status={"environmentRequestedAt": "<absent>"},
        ready=("True", "Running"),
    ),
    # ---- while the execution runs
    Row(
        "running, first look: read the environment",
        taskrun(with_env(), started()),
        action=Action(ActionKind.GET_ENVIRONMENT, environment_id=ENV, task_id=TASK),
    ),
    Row(
        "running, due, keepAlive: signal activity",
        taskrun(with_env(), started(environmentCheckedAt=at(-31))),
        Observation(environment=env("RUNNING"), execution=execution()),
        action=Action(ActionKind.MARK_ENVIRONMENT_ACTIVE, environment_id=ENV),
        status={"environmentCheckedAt": at(0)},
    ),
    Row(
        "running, due, keepAlive false: looked at but not signalled",
        taskrun(with_env(keepAlive=False), started(environmentCheckedAt=at(-31))),
        Observation(environment=env("RUNNING"), execution=execution()),
        status={"environmentCheckedAt": at(0)},
        requeue=30.0,
    ),
    Row(
        "running, not due: no call, looked at again when due",
        taskrun(with_env(), started(environmentCheckedAt=at(-10))),
        Observation(execution=execution()),
        requeue=20.0,
    ),
    Row(
        "environment stopped under a running execution: stop it, say why",
        taskrun(with_env(), started(environmentCheckedAt=at(-31))),
        Observation(environment=env("STOPPED"), execution=execution()),
        action=Action(ActionKind.STOP, execution_id=EXEC, reason="EnvironmentStopped"),
        succeeded=("Unknown", "EnvironmentStopped"),
        ready=("False", "Stopped"),
    ),
    Row(
        "a phase this operator does not know, mid-run: nothing is stopped",
        taskrun(with_env(), started(environmentCheckedAt=at(-31))),
        Observation(environment=env(""), execution=execution()),
        action=Action(ActionKind.MARK_ENVIRONMENT_ACTIVE, environment_id=ENV),
    ),
    Row(
        "stop already asked, execution not ended yet: wait a little for it",
        taskrun(with_env(), started(stopRequestedAt=at(-5), stopReason="EnvironmentStopped")),
        Observation(environment=env("STOPPED"), execution=execution()),
        succeeded=("Unknown", "EnvironmentStopped"),
        requeue=2.0,
    ),
    Row(
        "stop asked long ago and the execution never ended: the run ends anyway",
        taskrun(with_env(), started(stopRequestedAt=at(-31), stopReason="EnvironmentStopped")),
        Observation(environment=env("STOPPED"), execution=execution()),
        succeeded=("False", "EnvironmentStopped"),
        events=("EnvironmentStopped",),
    ),
    Row(
        "a look in this pass was refused: the run is followed without it",
        taskrun(with_env(), started(environmentCheckedAt=at(-31))),
        Observation(environment_looked=True, execution=execution()),
        succeeded=("Unknown", "Running"),
    ),
    Row(
        "execution ended stopped, environment stopped: EnvironmentStopped",
        taskrun(with_env(), started(stopRequestedAt=at(-2), stopReason="EnvironmentStopped")),
        Observation(
            environment=env("STOPPED"), execution=execution(phase=Phase.STOPPED, version=3)
        ),
        succeeded=("False", "EnvironmentStopped"),
        events=("EnvironmentStopped",),
    ),
    Row(
        "execution failed, environment failed: EnvironmentFailed",
        taskrun(with_env(), started()),
        Observation(
            environment=env("STOPPED", "out of disk"),
            execution=execution(phase=Phase.FAILED, version=3),
        ),
        succeeded=("False", "EnvironmentFailed"),
        ready=("False", "Failed"),
        events=("EnvironmentFailed",),
    ),
    Row(
        "execution succeeded: the environment does not matter any more",
        taskrun(with_env(), started()),
        Observation(execution=execution(phase=Phase.SUCCEEDED, version=3)),
        succeeded=("True", "Succeeded"),
        events=("Succeeded",),
    ),
    # ---- without spec.environment: whenStopped Start and keepAlive true, at no cost
    Row(
        "no spec.environment, not started: no look, the task is started",
        taskrun(inline_spec(), {"taskId": TASK}),
        action=Action(ActionKind.START, task_id=TASK),
    ),
    Row(
        "no spec.environment, StartTask said not running: read it (through the task)",
        taskrun({"taskRef": {"id": TASK}}, waiting_plain()),
        action=Action(ActionKind.GET_ENVIRONMENT, task_id=TASK),
        succeeded=("Unknown", "CheckingEnvironment"),
        ready=("False", "Checking"),
    ),
    Row(
        "no spec.environment, taskRef names its environment: read it by id",
        taskrun({"taskRef": {"environmentId": ENV, "reference": "nightly"}}, waiting_plain()),
        action=Action(ActionKind.GET_ENVIRONMENT, environment_id=ENV, task_id=TASK),
    ),
    Row(
        "no spec.environment, found stopped: StartEnvironment, the wait begins",
        taskrun({"taskRef": {"id": "task-ref"}}, waiting_plain()),
        Observation(environment=env("STOPPED")),
        action=Action(ActionKind.START_ENVIRONMENT, environment_id=ENV),
        status={"environmentId": ENV, "environmentRequestedAt": at(0)},
        succeeded=("Unknown", "EnvironmentStarting"),
        ready=("False", "Starting"),
        events=("EnvironmentStarting",),
    ),
    Row(
        "no spec.environment, starting: wait for it (woken by its watch)",
        taskrun({"taskRef": {"id": "task-ref"}}, waiting_plain(environmentRequestedAt=at(-3))),
        Observation(environment=env("STARTING")),
        succeeded=("Unknown", "EnvironmentStarting"),
        requeue=2.0,
    ),
    Row(
        "no spec.environment, running again: the task is started, claimed anew",
        taskrun({"taskRef": {"id": "task-ref"}}, waiting_plain(environmentRequestedAt=at(-3))),
        Observation(environment=env("RUNNING")),
        action=Action(ActionKind.START, task_id=TASK),
        status={"startRequestedAt": at(0), "startAttempts": 2, "attempt": 1},
        succeeded=("Unknown", "Starting"),
        ready=("True", "Running"),
    ),
    Row(
        "no spec.environment, not started after the timeout: EnvironmentNotReady",
        taskrun({"taskRef": {"id": "task-ref"}}, waiting_plain(environmentRequestedAt=at(-121))),
        Observation(environment=env("STARTING")),
        succeeded=("False", "EnvironmentNotReady"),
        events=("EnvironmentNotReady",),
    ),
    Row(
        "taskRef, whenStopped Fail, StartTask said not running: EnvironmentNotRunning",
        taskrun(
            {"taskRef": {"id": "task-ref"}, "environment": {"whenStopped": "Fail"}}, waiting_plain()
        ),
        Observation(environment=env("STOPPED")),
        succeeded=("False", "EnvironmentNotRunning"),
        ready=("False", "Stopped"),
        events=("EnvironmentNotRunning",),
    ),
    Row(
        "running again after a start refused in a running environment: one more start",
        taskrun(with_env(), waiting_plain(ready=START_REFUSED)),
        Observation(environment=env("RUNNING")),
        action=Action(ActionKind.START, task_id=TASK),
        ready=("False", START_REFUSED),
    ),
    Row(
        "no spec.environment, execution first followed: the keep-alive clock starts",
        taskrun(inline_spec(), plain_started()),
        Observation(execution=execution()),
        status={"environmentCheckedAt": at(0)},
        succeeded=("Unknown", "Running"),
        requeue=30.0,
    ),
    Row(
        "no spec.environment, within the period: no call",
        taskrun(inline_spec(), plain_started(environmentCheckedAt=at(-10))),
        Observation(execution=execution()),
        requeue=20.0,
    ),
    Row(
        "no spec.environment, a period run: read it (the execution names it)",
        taskrun({"taskRef": {"id": TASK}}, plain_started(environmentCheckedAt=at(-31))),
        Observation(execution=replace(execution(), environment_id="env-7")),
        action=Action(ActionKind.GET_ENVIRONMENT, environment_id="env-7", task_id=TASK),
    ),
    Row(
        "no spec.environment, a period run, running: signal activity",
        taskrun(inline_spec(), plain_started(environmentCheckedAt=at(-31))),
        Observation(environment=env("RUNNING"), execution=execution()),
        action=Action(ActionKind.MARK_ENVIRONMENT_ACTIVE, environment_id=ENV),
        status={"environmentCheckedAt": at(0), "environmentId": ENV},
    ),
    Row(
        "no spec.environment, environment stopped under the run: stop it, say why",
        taskrun(inline_spec(), plain_started(environmentCheckedAt=at(-31))),
        Observation(environment=env("STOPPED"), execution=execution()),
        action=Action(ActionKind.STOP, execution_id=EXEC, reason="EnvironmentStopped"),
        succeeded=("Unknown", "EnvironmentStopped"),
    ),
    Row(
        "no spec.environment, quick run succeeded: no environment call",
        taskrun(inline_spec(), plain_started()),
        Observation(execution=execution(phase=Phase.SUCCEEDED, version=3)),
        succeeded=("True", "Succeeded"),
        events=("Succeeded",),
    ),
    Row(
        "no spec.environment, execution failed: no look, it ends as the execution says",
        taskrun(inline_spec(), plain_started()),
        Observation(execution=execution(phase=Phase.FAILED, version=3)),
        succeeded=("False", "Failed"),
        events=("Failed",),
    ),
    Row(
        "a look refused mid-run: looked at again a period later, not at once",
        taskrun(with_env(), started(environmentCheckedAt=at(-31))),
        Observation(environment_looked=True, execution=execution()),
        status={"environmentCheckedAt": at(0)},
        requeue=30.0,
    ),
    Row(
        "started after a start refused in a running environment: ready again",
        taskrun(
            with_env(),
            started(
                environmentCheckedAt=at(-10),
                conditions=refused_ready(START_REFUSED),
            ),
        ),
        Observation(execution=execution()),
        ready=("True", "Running"),
    ),
    # ---- clean-up
    Row(
        "over, fromProject, cleanup Delete: the environment is deleted",
        taskrun(
            project_spec(),
            {
                "environmentId": ENV,
                "environmentPhase": "RUNNING",
                "conditions": [cond("Succeeded", "True", "Succeeded")],
            },
        ),
        action=Action(ActionKind.CLEAN_UP_ENVIRONMENT, environment_id=ENV, reason="Delete"),
    ),
    Row(
        "over, cleanup Stop: stopped",
        taskrun(
            project_spec(cleanup="Stop"),
            {
                "environmentId": ENV,
                "environmentPhase": "RUNNING",
                "conditions": [cond("Succeeded", "False", "Failed")],
            },
        ),
        action=Action(ActionKind.CLEAN_UP_ENVIRONMENT, environment_id=ENV, reason="Stop"),
    ),
    Row(
        "over, already deleting: nothing more",
        taskrun(
            project_spec(),
            {
                "environmentId": ENV,
                "environmentPhase": "DELETING",
                "conditions": [cond("Succeeded", "True", "Succeeded")],
            },
        ),
    ),
    Row(
        "over, cleanup Keep: left alone",
        taskrun(
            project_spec(cleanup="Keep"),
            {
                "environmentId": ENV,
                "environmentPhase": "RUNNING",
                "conditions": [cond("Succeeded", "True", "Succeeded")],
            },
        ),
    ),
    Row(
        "over, an environment not created for the run: never touched",
        taskrun(
            with_env(),
            {
                "environmentId": ENV,
                "environmentPhase": "RUNNING",
                "conditions": [cond("Succeeded", "True", "Succeeded")],
            },
        ),
    ),
    Row(
        "deleted TaskRun (policy Stop) with an ephemeral environment: deleted",
        taskrun(
            project_spec(),
            {"environmentId": ENV, "environmentPhase": "RUNNING", "taskId": TASK},
            deleting=True,
        ),
        Observation(task_deleted=True),
        action=Action(ActionKind.CLEAN_UP_ENVIRONMENT, environment_id=ENV, reason="Delete"),
    ),
    Row(
        "deleted TaskRun whose environment claim has no id: cleaned up by name",
        taskrun(project_spec(), {"environmentRequestedAt": at(-1)}, deleting=True),
        action=Action(ActionKind.CLEAN_UP_ENVIRONMENT, environment_id="", reason="Delete"),
    ),
    Row(
        "deleted TaskRun with deletionPolicy Orphan: the environment stays",
        taskrun(
            {**project_spec(), "deletionPolicy": "Orphan"},
            {"environmentId": ENV, "environmentPhase": "RUNNING"},
            deleting=True,
        ),
        action=Action(ActionKind.REMOVE_FINALIZER),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decide(row: Row) -> None:
    decision = decide(row.run, row.obs, NOW, CFG)
    assert decision.action == row.action
    out = decision.status.to_dict()
    for key, value in row.status.items():
        if value == "<absent>":
            assert key not in out, out
        else:
            assert out.get(key) == value, (key, out)
    conditions = {c.type: (c.status, c.reason) for c in decision.status.conditions}
    if row.succeeded is not None:
        assert conditions["Succeeded"] == row.succeeded
    if row.ready is not None:
        assert conditions[ENVIRONMENT_READY] == row.ready
    if row.requeue is not None:
        assert decision.requeue_after == pytest.approx(row.requeue)
    assert tuple(e.reason for e in decision.events) == row.events


def test_without_spec_environment_nothing_about_environments_happens() -> None:
    decision = decide(taskrun(inline_spec(), {"taskId": TASK}), Observation(), NOW, CFG)
    assert decision.action == Action(ActionKind.START, task_id=TASK)
    assert ENVIRONMENT_READY not in {c.type for c in decision.status.conditions}


# ------------------------------------------------------------------------ results


def apply(
    run: TaskRun, action: Action, result: Result
) -> tuple[TaskRun, Observation, tuple[Event, ...]]:
    return apply_result(run, action, result, Observation(), NOW)


def test_created_environment_is_recorded_with_its_phase() -> None:
    run = taskrun(project_spec(), {"environmentRequestedAt": at(0)})
    new, obs, events = apply(
        run, Action(ActionKind.CREATE_ENVIRONMENT), Result(environment=env("CREATING"))
    )
    assert (new.status.environment_id, new.status.environment_phase) == (ENV, "CREATING")
    assert obs.environment == env("CREATING")
    assert [e.reason for e in events] == ["EnvironmentCreated"]


def test_create_with_unknown_outcome_keeps_the_claim() -> None:
    run = taskrun(project_spec(), {"environmentRequestedAt": at(0)})
    unknown = failure(FailureKind.OUTCOME_UNKNOWN)
    new, _, events = apply(run, Action(ActionKind.CREATE_ENVIRONMENT), Result(failure=unknown))
    assert new.status.environment_requested_at == at(0)
    assert not new.status.environment_id
    assert [e.reason for e in events] == ["EnvironmentOutcomeUnknown"]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (FailureKind.NOT_FOUND, "ProjectNotFound"),
        (FailureKind.PERMISSION_DENIED, "Forbidden"),
        (FailureKind.INVALID_ARGUMENT, "InvalidEnvironment"),
    ],
)
def test_refused_create_ends_the_run_and_voids_the_claim(kind: FailureKind, reason: str) -> None:
    run = taskrun(project_spec(), {"environmentRequestedAt": at(0)})
    new, _, _ = apply(run, Action(ActionKind.CREATE_ENVIRONMENT), Result(failure=failure(kind)))
    assert new.status.finished
    assert new.status.condition("Succeeded").reason == reason  # type: ignore[union-attr]
    assert not new.status.environment_requested_at


def test_rate_limited_create_voids_the_claim_and_waits() -> None:
    run = taskrun(project_spec(), {"environmentRequestedAt": at(0)})
    limited = failure(FailureKind.RATE_LIMITED, retry_after=3)
    new, obs, _ = apply(run, Action(ActionKind.CREATE_ENVIRONMENT), Result(failure=limited))
    assert not new.status.environment_requested_at
    assert not new.status.finished
    assert obs.remote_failure == limited


NOT_RUNNING = RemoteFailure(
    FailureKind.INVALID_ARGUMENT,
    "StartTask: failed_precondition (HTTP 400): environment env-1 is not running",
    reason="FailedPrecondition",
)
START = Action(ActionKind.START, task_id=TASK)
CLAIMED = {"taskId": TASK, "startRequestedAt": at(0), "startAttempts": 1, "attempt": 1}


@pytest.mark.parametrize(
    "spec",
    [with_env(), inline_spec(), {"taskRef": {"id": TASK}}, with_env(whenStopped="Fail")],
    ids=["spec.environment", "inline", "taskRef", "whenStopped Fail"],
)
def test_start_task_refused_as_not_running_voids_the_claim_and_looks(spec: Any) -> None:
    new, obs, events = apply(taskrun(spec, CLAIMED), START, Result(failure=NOT_RUNNING))
    # Nothing was started: the claim is void, the attempt and the count of calls stay.
    assert not new.status.start_requested_at
    assert (new.status.start_attempts, new.status.attempt) == (1, 1)
    assert not new.status.finished
    ready = new.status.condition(ENVIRONMENT_READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "Checking")
    assert "not running" in ready.message
    assert obs.environment is None
    assert not events


def test_a_plain_run_in_a_stopped_environment_starts_it_waits_and_starts_once() -> None:
    """The nightly run: taskRef, no spec.environment, its environment idled out. Each
    decision's status is what the edge writes; each action's outcome is folded back in."""
    run = taskrun({"taskRef": {"id": TASK}}, {"observedGeneration": 1})
    obs = Observation()
    now = NOW
    calls: list[ActionKind] = []
    answers = {
        ActionKind.GET_ENVIRONMENT: [
            Result(environment=env("STOPPED")),
            Result(environment=env("STARTING")),
            Result(environment=env("RUNNING")),
        ],
        ActionKind.START: [
            Result(failure=NOT_RUNNING),
            Result(execution=execution(phase=Phase.PENDING, version=1, created_at=at(20))),
        ],
        ActionKind.START_ENVIRONMENT: [Result()],
    }
    for _ in range(12):
        decision = decide(run, obs, now, CFG)
        run = replace(run, status=Status.from_dict(decision.status.to_dict()))
        if decision.action is None:
            if run.status.task_execution_id:
                break
            # Waiting for the environment: its watch wakes the run, a new pass begins.
            assert decision.wait_environment == ENV
            now += timedelta(seconds=1)
            obs = Observation()
            continue
        calls.append(decision.action.kind)
        result = answers[decision.action.kind].pop(0)
        run, obs, _ = apply_result(run, decision.action, result, obs, now)
    assert calls == [
        ActionKind.START,  # refused: failed_precondition
        ActionKind.GET_ENVIRONMENT,  # through the task
        ActionKind.START_ENVIRONMENT,
        ActionKind.GET_ENVIRONMENT,  # STARTING: wait
        ActionKind.GET_ENVIRONMENT,  # RUNNING
        ActionKind.START,
    ]
    status = run.status
    assert status.task_execution_id == EXEC
    # One start claim that started something; the refused one was voided, same attempt.
    assert (status.start_attempts, status.attempt) == (2, 1)
    assert status.environment_id == ENV
    ready = status.condition(ENVIRONMENT_READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("True", "Running")
    # Followed from here at no environment call until a keep-alive period has passed.
    followed = decide(run, Observation(execution=execution()), now, CFG)
    assert followed.action is None
    assert followed.requeue_after == pytest.approx(30.0)


def test_a_second_refusal_in_a_running_environment_ends_as_invalid_task() -> None:
    seen = Observation(environment=env("RUNNING"))
    first, _, _ = apply_result(
        taskrun(inline_spec(), CLAIMED), START, Result(failure=NOT_RUNNING), seen, NOW
    )
    assert not first.status.finished  # the environment may have stopped just then
    ready = first.status.condition(ENVIRONMENT_READY)
    assert ready is not None
    assert ready.reason == START_REFUSED
    again = decide(first, seen, NOW, CFG)
    assert again.action == START
    claimed = replace(first, status=again.status)
    second, _, events = apply_result(claimed, START, Result(failure=NOT_RUNNING), seen, NOW)
    assert second.status.finished
    assert second.status.condition("Succeeded").reason == "InvalidTask"  # type: ignore[union-attr]
    assert [e.reason for e in events] == ["InvalidTask"]


def test_clean_up_records_the_environment_going() -> None:
    run = taskrun(project_spec(), {"environmentId": ENV, "environmentPhase": "RUNNING"})
    action = Action(ActionKind.CLEAN_UP_ENVIRONMENT, environment_id=ENV, reason="Delete")
    new, obs, events = apply(run, action, Result())
    assert new.status.environment_phase == "DELETING"
    assert obs.environment_cleaned
    assert [e.reason for e in events] == ["EnvironmentDeleted"]
    gone, _, _ = apply(run, action, Result(failure=failure(FailureKind.NOT_FOUND)))
    assert gone.status.environment_phase == "DELETED"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"whenStopped": "Maybe"}, "whenStopped"),
        ({"cleanup": "Burn"}, "cleanup"),
        ({"keepAlive": "yes"}, "keepAlive"),
        ({"fromProject": {}}, "projectId"),
        ({"fromProject": {"projectId": PROJECT, "branch": "main", "commit": "abc"}}, "branch"),
    ],
)
def test_bad_environment_specs_are_refused_clearly(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_environment(raw)


def test_from_project_needs_exactly_an_inline_task_without_environment_id() -> None:
    with pytest.raises(InvalidSpec, match="fromProject"):
        parse_spec({**inline_spec(), "environment": {"fromProject": {"projectId": PROJECT}}})
    with pytest.raises(InvalidSpec, match="fromProject"):
        parse_spec({"taskRef": {"id": "t"}, "environment": {"fromProject": {"projectId": PROJECT}}})
    with pytest.raises(InvalidSpec, match="environmentId"):
        parse_spec({"task": {"name": "n", "command": "c"}})
    spec = parse_spec(project_spec())
    assert spec.environment is not None
    assert spec.environment.from_project is not None


def test_creation_spec_carries_branch_or_commit_and_class() -> None:
    branch = FromProject(PROJECT, branch="main", machine_class="large")
    assert environment.creation_spec(branch) == {
        "machine": {"class": "large"},
        "content": {
            "initializer": {
                "specs": [
                    {
                        "git": {
                            "cloneTarget": "main",
                            "targetMode": "CLONE_TARGET_MODE_REMOTE_BRANCH",
                        }
                    }
                ]
            }
        },
    }
    assert environment.creation_spec(FromProject(PROJECT)) == {}


@pytest.mark.parametrize(
    "refusal", [FailureKind.PERMISSION_DENIED, FailureKind.UNAVAILABLE], ids=["403", "503"]
)
def test_a_failed_look_during_the_run_does_not_end_it(refusal: FailureKind) -> None:
    run = taskrun(with_env(), started())
    action = Action(ActionKind.GET_ENVIRONMENT, environment_id=ENV)
    new, obs, events = apply(run, action, Result(failure=failure(refusal)))
    assert new.status == run.status
    assert obs.environment_looked
    assert not events


def test_a_run_waiting_for_its_environment_asks_to_be_woken_by_it() -> None:
    starting = decide(taskrun(with_env()), Observation(environment=env("STARTING")), NOW, CFG)
    assert starting.wait_environment == ENV
    stopped = decide(taskrun(with_env()), Observation(environment=env("STOPPED")), NOW, CFG)
    assert stopped.wait_environment == ENV
    running = decide(taskrun(with_env()), Observation(environment=env("RUNNING")), NOW, CFG)
    assert running.wait_environment == ""


def test_every_environment_action_is_handed_to_this_module() -> None:
    kinds = {k for k in ActionKind if "Environment" in k.value}
    assert kinds == ENVIRONMENT_ACTIONS
