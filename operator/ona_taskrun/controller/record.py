"""What the controller remembers about one TaskRun between reconciles, held in one place.

The reconciler keeps one `TaskRunRecord` per TaskRun it has seen and not yet forgotten:
its newest body, its place in the work queue, its requeue timer, the back-off of its own
remote calls, a status decided but not written yet, and the executions it holds. Other
components keep a little more for it, under its key: a log tail being read
(`logtail.LogTails`), a wait on its environment (`environment_watch.EnvironmentWatch`),
the executions a connection's tracker follows (`tracker.ExecutionTracker`) and its entry
in the metrics' view of the queue. `Reconciler._forget` drops the record and all of
those together; nothing else is kept per TaskRun, so an operator that has seen a million
runs holds no more than one that has seen the ones still there.

Keys of other kinds that share the work queue (connections, schedules) have only a
`QueueState`, dropped as soon as it is idle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..rules.model import RemoteFailure, Status


@dataclass(eq=False, kw_only=True)
class QueueState:
    """One key's place in the work queue."""

    key: str
    lane: int | None = None  # its best lane while queued (0 is served first)
    active: bool = False  # a worker has it: it is never given to a second one
    dirty: int | None = None  # queued again while active: the lane to queue it in after
    timer: asyncio.TimerHandle | None = None  # a requeue after a delay

    @property
    def idle(self) -> bool:
        return self.lane is None and not self.active and self.dirty is None and self.timer is None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(eq=False, kw_only=True)
class TaskRunRecord(QueueState):
    """Everything the reconciler remembers about one TaskRun."""

    body: dict[str, Any]  # the newest object seen (watch event or the answer to a write)
    # Back-off of the TaskRun's own remote calls after a transient failure.
    last_failure: RemoteFailure | None = None
    failed_calls: int = 0  # transient failures in a row: the back-off grows with them
    retry_at: float | None = None  # loop time before which no remote call is made
    # A status decided but not written yet (merged into a later write, see the merge
    # window), and the loop time of the last status write.
    unwritten: Status | None = None
    written_at: float = 0.0
    # Execution ids this TaskRun holds, no other may adopt them: every attempt's, one
    # reserved by an adoption under way, and its own start's from the answer on.
    executions: set[str] = field(default_factory=set)
    starting: str = ""  # the task id of its StartTask awaiting an answer
    # The TaskRun is gone while a worker still has it (the record is dropped when the
    # worker is done), and the newest body of a TaskRun of the same name seen meanwhile,
    # which waits for that worker: never two workers on one key.
    forgotten: bool = False
    successor: dict[str, Any] | None = None
