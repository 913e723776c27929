"""A method the Ona API does not serve, in the pure parts: an environment adoption that
needs ListEnvironments waits for a person instead of looking again, other environment
calls fail with a message naming the method, and the connection's status lists it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from ona_taskrun.clients.ona import errors
from ona_taskrun.controller.remote import to_failure
from ona_taskrun.rules.conditions import status_patch
from ona_taskrun.rules.connection import Check, Identity, connection_status, readiness
from ona_taskrun.rules.model import (
    ADOPT_ENVIRONMENT_ANNOTATION,
    ENVIRONMENT_READY,
    Action,
    ActionKind,
    Observation,
    RemoteFailure,
    Result,
    Settings,
    Status,
    TaskRun,
)
from ona_taskrun.rules.pipeline import decide
from ona_taskrun.rules.results import apply_result

from .builders import NOW, at, taskrun

PROJECT = "0d6c2b55-7777-4888-9999-aaaabbbbcccc"
LIST = "gitpod.v1.EnvironmentService/ListEnvironments"
CFG = Settings(environment_poll=2.0, environment_timeout=timedelta(seconds=120))


def unserved(method: str) -> RemoteFailure:
    """The failure the edge hands the core for a method answered `unimplemented`."""
    exc = errors.Unimplemented(
        f"{method} is not implemented", method=method, code="unimplemented", http_status=501
    )
    return to_failure(exc)


def project_run(**status: Any) -> TaskRun:
    spec = {
        "task": {"name": "build", "command": "make test"},
        "environment": {"fromProject": {"projectId": PROJECT}},
    }
    return taskrun(spec, {"environmentRequestedAt": at(-30), **status})


def conditions(status: Status) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_an_unserved_lookup_stalls_the_adoption_with_the_edges_message() -> None:
    run = project_run()
    assert decide(run, Observation(), NOW, CFG).action == Action(ActionKind.FIND_ENVIRONMENTS)
    failure = unserved("ListEnvironments")
    new, obs, events = apply_result(
        run, Action(ActionKind.FIND_ENVIRONMENTS), Result(failure=failure), Observation(), NOW
    )
    table = conditions(new.status)
    assert table["Stalled"] == ("True", "EnvironmentOutcomeUnknown")
    assert table["Succeeded"] == ("Unknown", "EnvironmentOutcomeUnknown")
    assert table[ENVIRONMENT_READY] == ("False", "Creating")
    stalled = new.status.condition("Stalled")
    assert stalled is not None
    assert stalled.message == failure.message
    assert LIST in stalled.message
    # The claim stays: nothing is created again behind the person's back.
    assert new.status.environment_requested_at == at(-30)
    assert not new.status.finished
    assert [(e.type, e.reason) for e in events] == [("Warning", "EnvironmentOutcomeUnknown")]
    assert obs.remote_failure is None  # not an outage: nothing to back off from

    # Never loops: the next decisions, now or much later, call nothing.
    for later in (NOW, NOW + timedelta(hours=1)):
        decision = decide(new, Observation(), later, CFG)
        assert decision.action is None
        assert decision.requeue_after is None


def test_the_stalled_run_takes_the_environment_a_person_names() -> None:
    run = project_run()
    new, _, _ = apply_result(
        run,
        Action(ActionKind.FIND_ENVIRONMENTS),
        Result(failure=unserved("ListEnvironments")),
        Observation(),
        NOW,
    )
    annotated = replace(new, annotations={ADOPT_ENVIRONMENT_ANNOTATION: "env-7"})
    decision = decide(annotated, Observation(), NOW, CFG)
    assert conditions(decision.status)["Stalled"][0] == "False"
    # The named environment is the one the run goes on with (adopted, or read first).
    looked = decision.action.environment_id if decision.action is not None else ""
    assert "env-7" in (decision.status.environment_id, looked)


def test_other_unserved_environment_calls_fail_with_the_method_named() -> None:
    run = taskrun(
        {
            "task": {"environmentId": "env-1", "name": "build", "command": "make test"},
            "environment": {},
        }
    )
    new, _, events = apply_result(
        run,
        Action(ActionKind.GET_ENVIRONMENT, environment_id="env-1"),
        Result(failure=unserved("GetEnvironment")),
        Observation(),
        NOW,
    )
    assert new.status.finished
    succeeded = new.status.condition("Succeeded")
    assert succeeded is not None
    assert succeeded.status == "False"
    assert "does not serve gitpod.v1.EnvironmentService/GetEnvironment" in succeeded.message
    assert [e.type for e in events] == ["Warning"]


def test_a_refused_start_names_the_unserved_method_and_ends_the_run() -> None:
    run = taskrun(
        {"task": {"environmentId": "env-1", "name": "b", "command": "x"}},
        {"taskId": "task-1", "startRequestedAt": at(0)},
    )
    new, _, _ = apply_result(
        run,
        Action(ActionKind.START, task_id="task-1"),
        Result(failure=unserved("StartTask")),
        Observation(),
        NOW,
    )
    succeeded = new.status.condition("Succeeded")
    assert succeeded is not None
    assert succeeded.status == "False"
    assert "does not serve gitpod.v1.EnvironmentAutomationService/StartTask" in succeeded.message


def test_the_connection_status_lists_unserved_methods() -> None:
    identity = Identity(subject_id="s-1", principal="PRINCIPAL_USER", organization_id="o-1")
    check = Check(identity=identity, unserved_methods=(LIST,))
    status = connection_status({}, 1, check, NOW)
    assert status["unservedMethods"] == [LIST]
    # A connection opened anew (a restart, another base URL) knows of none: the field goes.
    again = connection_status(status, 1, Check(identity=identity), NOW)
    assert "unservedMethods" not in again
    assert status_patch(status, again)["unservedMethods"] is None


def test_an_unserved_identity_method_says_nothing_about_the_token() -> None:
    ready = readiness(Check(failure=unserved("GetAuthenticatedIdentity")))
    assert (ready.status, ready.reason) == ("Unknown", "MethodNotServed")
    assert ready.message.startswith("cannot check the token: the Ona API does not serve")
    assert "gitpod.v1.IdentityService/GetAuthenticatedIdentity" in ready.message
