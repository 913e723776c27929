"""Exactly-once creation, one table run against every user of it: a task execution
(StartTask) and an environment (CreateEnvironmentFromProject). Each row is a situation
after a creation whose outcome is unknown (claimed, no id recorded), decided through
`decide` as the operator does; the two users differ only in their words, their look
and what they record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from ona_taskrun.rules import environment
from ona_taskrun.rules.model import (
    ADOPT_ANNOTATION,
    ADOPT_ENVIRONMENT_ANNOTATION,
    STALLED,
    ActionKind,
    Condition,
    Decision,
    Observation,
    RemoteEnvironment,
    Settings,
    Status,
    TaskRun,
)
from ona_taskrun.rules.pipeline import decide
from ona_taskrun.rules.spec import parse_spec

from .builders import NOW, TASK, UID, at, cond, execution

CFG = Settings()  # settle 15 s
PROJECT = "0d6c2b55-7777-4888-9999-aaaabbbbcccc"
FOREIGN = "belongs-to-another-team-4f1c"


def _conditions(reason: str, stalled: str | None) -> list[dict[str, Any]]:
    return [
        cond("Succeeded", "Unknown", reason),
        cond("Reconciling", "True", reason),
        cond("Stalled", "True" if stalled else "False", reason, stalled or ""),
        cond("RemoteReachable", "True", "Reachable"),
    ]


@dataclass(frozen=True)
class User:
    """One user of the protocol: how its runs, looks and records read."""

    name: str
    look: ActionKind
    annotation: str
    unknown: str  # the reason of the Stalled condition and its Event
    adopted: str  # Event reasons
    recreating: str
    refused: str

    def claimed(self, claimed_at: str, *, stalled: str | None = None, adopt: str = "") -> TaskRun:
        annotations = {self.annotation: adopt} if adopt else {}
        if self.name == "execution":
            spec: Mapping[str, Any] = {
                "task": {"environmentId": "env-1", "name": "build", "command": "make test"}
            }
            status: dict[str, Any] = {
                "taskId": TASK,
                "startRequestedAt": claimed_at,
                "startAttempts": 1,
                "attempt": 1,
            }
        else:
            spec = {
                "task": {"name": "build", "command": "make test"},
                "environment": {"fromProject": {"projectId": PROJECT}},
            }
            status = {"environmentRequestedAt": claimed_at}
        status = {
            "observedGeneration": 1,
            **status,
            "conditions": _conditions(self.unknown, stalled),
        }
        return TaskRun(
            uid=UID,
            generation=1,
            spec=parse_spec(spec),
            status=Status.from_dict(status),
            has_finalizer=True,
            annotations=annotations,
        )

    def found(self, *ids: str) -> Observation:
        """The run's own look found these (each may be this run's)."""
        if self.name == "execution":
            made = at(-19)
            return Observation(candidates=tuple(execution(i, created_at=made) for i in ids))
        return Observation(environment_candidates=tuple(self._mine(i) for i in ids))

    def named(self, id_: str, *, ours: bool) -> Observation:
        """What the run's own check of a name a person wrote finds: for an execution the
        look (the named one among this run's candidates, or not), for an environment a
        read of the named one (made for this run, or for another)."""
        if self.name == "execution":
            return self.found("exec-other", *([id_] if ours else []))
        seen = self._mine(id_)
        if not ours:
            seen = replace(seen, name="someone-elses-run-1234")
        return Observation(environment=seen, environment_looked=True)

    def recorded(self, decision: Decision) -> str:
        status = decision.status
        return status.task_execution_id if self.name == "execution" else status.environment_id

    def claim(self, decision: Decision) -> str:
        status = decision.status
        if self.name == "execution":
            return status.start_requested_at
        return status.environment_requested_at

    @staticmethod
    def _mine(id_: str) -> RemoteEnvironment:
        name = environment.environment_name("run", UID)
        return RemoteEnvironment(id=id_, phase="CREATING", name=name, project_id=PROJECT)


EXECUTION = User(
    "execution",
    ActionKind.FIND_EXECUTIONS,
    ADOPT_ANNOTATION,
    unknown="StartOutcomeUnknown",
    adopted="Adopted",
    recreating="Restarting",
    refused="AdoptionRefused",
)
ENVIRONMENT = User(
    "environment",
    ActionKind.FIND_ENVIRONMENTS,
    ADOPT_ENVIRONMENT_ANNOTATION,
    unknown="EnvironmentOutcomeUnknown",
    adopted="EnvironmentAdopted",
    recreating="EnvironmentRecreating",
    refused="EnvironmentAdoptionRefused",
)
USERS = [pytest.param(EXECUTION, id="execution"), pytest.param(ENVIRONMENT, id="environment")]
SETTLED = at(-20)  # past the settle
STALL_NOTE = "cannot tell which one was made"


def _stalled(decision: Decision) -> Condition | None:
    cond = decision.status.condition(STALLED)
    return cond if cond is not None and cond.status == "True" else None


def _shown(decision: Decision) -> str:
    return str(decision.status.to_dict()) + " ".join(e.message for e in decision.events)


@pytest.mark.parametrize("user", USERS)
def test_before_the_settle_it_waits(user: User) -> None:
    decision = decide(user.claimed(at(-5)), user.found("made-1"), NOW, CFG)
    assert decision.action is None
    assert user.recorded(decision) == ""
    assert decision.requeue_after == 11.0  # 15 s from the end of the claim's second
    assert decision.events == ()


@pytest.mark.parametrize("user", USERS)
def test_settled_without_a_look_it_looks(user: User) -> None:
    decision = decide(user.claimed(SETTLED), Observation(), NOW, CFG)
    assert decision.action is not None
    assert decision.action.kind is user.look
    assert user.claim(decision) == SETTLED


@pytest.mark.parametrize("user", USERS)
def test_nothing_found_creates_again(user: User) -> None:
    decision = decide(user.claimed(SETTLED), user.found(), NOW, CFG)
    assert user.claim(decision) == ""
    assert user.recorded(decision) == ""
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", user.recreating)]


@pytest.mark.parametrize("user", USERS)
def test_one_found_is_adopted(user: User) -> None:
    decision = decide(user.claimed(SETTLED), user.found("made-1"), NOW, CFG)
    assert user.recorded(decision) == "made-1"
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", user.adopted)]
    assert "made-1" in decision.events[0].message


@pytest.mark.parametrize("user", USERS)
def test_two_found_stall_for_a_person_naming_both(user: User) -> None:
    decision = decide(user.claimed(SETTLED), user.found("made-2", "made-1"), NOW, CFG)
    assert user.recorded(decision) == ""
    assert user.claim(decision) == SETTLED  # nothing more is created
    stalled = _stalled(decision)
    assert stalled is not None
    assert stalled.reason == user.unknown
    assert "(made-1, made-2" in stalled.message
    assert f"{user.annotation}=<{user.name} id>" in stalled.message
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", user.unknown)]
    again = decide(replace(user.claimed(SETTLED), status=decision.status), Observation(), NOW, CFG)
    assert (again.action, again.events) == (None, ())  # it waits for the person


@pytest.mark.parametrize("user", USERS)
def test_a_hand_adoption_of_one_the_run_finds_its_own_is_adopted(user: User) -> None:
    run = user.claimed(SETTLED, stalled=STALL_NOTE, adopt=" made-2 ")
    decision = decide(run, user.named("made-2", ours=True), NOW, CFG)
    assert user.recorded(decision) == "made-2"
    assert _stalled(decision) is None
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", user.adopted)]
    assert "as annotated" in decision.events[0].message


@pytest.mark.parametrize("user", USERS)
def test_a_hand_adoption_of_one_not_the_runs_is_refused_without_naming_it(user: User) -> None:
    run = user.claimed(SETTLED, stalled=STALL_NOTE, adopt=FOREIGN)
    decision = decide(run, user.named(FOREIGN, ours=False), NOW, CFG)
    assert user.recorded(decision) == ""
    stalled = _stalled(decision)
    assert stalled is not None
    assert "was refused" in stalled.message
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", user.refused)]
    assert FOREIGN not in _shown(decision)


@pytest.mark.parametrize("user", USERS)
def test_a_refused_name_is_not_looked_at_again(user: User) -> None:
    run = user.claimed(SETTLED, stalled=STALL_NOTE, adopt=FOREIGN)
    refused = decide(run, user.named(FOREIGN, ours=False), NOW, CFG)
    again = decide(replace(run, status=refused.status), Observation(), NOW, CFG)
    assert (again.action, again.events) == (None, ())
    assert user.recorded(again) == ""
    # Another name is considered: the run looks (or reads) again.
    renamed = replace(run, status=refused.status, annotations={user.annotation: "made-2"})
    looked = decide(renamed, Observation(), NOW, CFG)
    assert looked.action is not None


@pytest.mark.parametrize("user", USERS)
def test_the_settle_counts_from_the_end_of_the_claims_second(user: User) -> None:
    # The claim is written in whole seconds: one written as 00:00:00 may have been made at
    # 00:00:00.999, so with a 15 s settle nothing is looked at before 00:00:16.
    run = user.claimed(at(0))
    early = decide(run, Observation(), NOW + timedelta(seconds=15.5), CFG)
    assert early.action is None
    assert early.requeue_after == pytest.approx(0.5)
    due = decide(run, Observation(), NOW + timedelta(seconds=16), CFG)
    assert due.action is not None
    assert due.action.kind is user.look
