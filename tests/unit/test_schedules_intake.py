"""Which watch events make a TaskRunSchedule look again: its creation and spec edits (not
its own status writes), and a TaskRun of its own appearing, ending, being deleted or
gone (not every progress write of that run)."""

from __future__ import annotations

from typing import Any

from ona_taskrun.controller.schedules import Schedules

KEY = "TaskRunSchedule:team-a/nightly"


def schedule(rv: int, generation: int = 1, uid: str = "s1") -> dict[str, Any]:
    meta = {"namespace": "team-a", "name": "nightly", "uid": uid}
    return {"metadata": {**meta, "resourceVersion": str(rv), "generation": generation}}


def taskrun(
    rv: int, *, owned: bool = True, succeeded: str | None = None, deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": "team-a",
        "name": "nightly-29930460",
        "uid": "r1",
        "resourceVersion": str(rv),
        "creationTimestamp": "2026-11-28T01:00:01Z",
    }
    if owned:
        meta["ownerReferences"] = [
            {"kind": "TaskRunSchedule", "name": "nightly", "uid": "s1", "controller": True}
        ]
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T01:05:00Z"
    status: dict[str, Any] = {"phase": "RUNNING"}
    if succeeded is not None:
        status["conditions"] = [{"type": "Succeeded", "status": succeeded, "reason": "x"}]
    return {"metadata": meta, "status": status}


def test_a_schedule_is_looked_at_when_created_or_its_spec_changes() -> None:
    queued: list[str] = []
    schedules = Schedules(queued.append)
    schedules.observe("ADDED", schedule(1))
    schedules.observe("MODIFIED", schedule(1))  # the same version again
    schedules.observe("MODIFIED", schedule(2))  # a status write: same generation
    assert queued == [KEY]
    schedules.observe("MODIFIED", schedule(3, generation=2))
    assert queued == [KEY, KEY]
    schedules.observe("DELETED", schedule(4, generation=2))
    schedules.observe("ADDED", schedule(5, uid="s2"))  # created again under the name
    assert queued == [KEY, KEY, KEY]


def test_a_run_wakes_its_schedule_only_when_that_matters() -> None:
    queued: list[str] = []
    schedules = Schedules(queued.append)
    schedules.observe_taskrun("ADDED", taskrun(1))
    schedules.observe_taskrun("MODIFIED", taskrun(2))  # progress only
    schedules.observe_taskrun("MODIFIED", taskrun(3, succeeded="Unknown"))  # still active
    assert queued == [KEY]
    schedules.observe_taskrun("MODIFIED", taskrun(4, succeeded="True"))
    schedules.observe_taskrun("MODIFIED", taskrun(5, succeeded="True", deleting=True))
    schedules.observe_taskrun("DELETED", taskrun(6, succeeded="True", deleting=True))
    assert queued == [KEY] * 4
    schedules.observe_taskrun("ADDED", taskrun(7, owned=False))  # not a schedule's
    schedules.observe_taskrun("DELETED", taskrun(8, owned=False))
    assert queued == [KEY] * 4
