"""`automation.ona.com/adopt-execution` as a hostile tenant would write it: a name is a
request, refused unless the run's own look found that execution, and a refused name is
never repeated in the status or the Events (it may be another principal's execution)."""

from __future__ import annotations

from dataclasses import replace

from ona_taskrun.rules.model import ADOPT_ANNOTATION, ActionKind, Decision, Observation, Phase
from ona_taskrun.rules.pipeline import decide

from .builders import NOW, TASK, at, cond, execution, inline_spec, taskrun

FOREIGN = "exec-of-another-team-4f1c"
STALLED = {
    "observedGeneration": 1,
    "taskId": TASK,
    "startRequestedAt": at(-120),
    "startAttempts": 1,
    "conditions": [
        cond("Succeeded", "Unknown", "StartOutcomeUnknown"),
        cond("Reconciling", "True", "StartOutcomeUnknown"),
        cond("Stalled", "True", "StartOutcomeUnknown", "cannot tell which execution"),
        cond("RemoteReachable", "True", "Reachable"),
    ],
}
OWN = (execution("exec-own", Phase.RUNNING, 1, created_at=at(-119)),)


def _text(decision: Decision) -> str:
    status = str(decision.status.to_dict())
    return status + " ".join(e.message for e in decision.events)


def test_a_refused_name_never_appears_in_status_or_events() -> None:
    run = taskrun(inline_spec(), STALLED, annotations={ADOPT_ANNOTATION: FOREIGN})
    decision = decide(run, Observation(candidates=OWN), NOW)
    assert [e.reason for e in decision.events] == ["AdoptionRefused"]
    assert decision.status.task_execution_id == ""
    assert FOREIGN not in _text(decision)


def test_a_refused_name_is_not_looked_at_again_until_another_is_named() -> None:
    run = taskrun(inline_spec(), STALLED, annotations={ADOPT_ANNOTATION: FOREIGN})
    refused = decide(run, Observation(candidates=OWN), NOW)
    again = decide(replace(run, status=refused.status), Observation(), NOW)
    assert again.action is None
    assert again.events == ()
    renamed = replace(run, status=refused.status, annotations={ADOPT_ANNOTATION: "exec-own"})
    looked = decide(renamed, Observation(), NOW)
    assert looked.action is not None
    assert looked.action.kind is ActionKind.FIND_EXECUTIONS
    adopted = decide(renamed, Observation(candidates=OWN), NOW)
    assert adopted.status.task_execution_id == "exec-own"


def test_an_over_long_name_is_cut_before_use() -> None:
    run = taskrun(inline_spec(), STALLED, annotations={ADOPT_ANNOTATION: "x" * 100_000})
    decision = decide(run, Observation(candidates=OWN), NOW)
    assert "x" * 200 not in _text(decision)
    assert len(str(decision.status.to_dict())) < 5_000
