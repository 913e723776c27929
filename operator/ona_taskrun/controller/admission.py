"""Who holds a connection's capacity and who waits for it: the controller's side of
`rules.capacity`.

Every TaskRun the operator sees is noted here under its connection: as holding a slot
(claimed or started at least once, and not final), as waiting (not started, not suspended,
not stopped), or as neither. A watch event notes it from the object alone (a hint: an
unsigned claim counts until the TaskRun's own reconcile, which verifies the claim, says
otherwise); each reconcile notes it again from the parsed TaskRun. So after a restart or
a change of leader the same holders and the same order are rebuilt from the cluster, and
nothing of the queue needs to be stored.

A run is let in only by `turn`, which takes its slot at once (no await between the count
and the taking: two workers never see one free slot), and a slot that frees wakes the
runs the fair order gives the free slots to, at once rather than at the next resync.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..rules.capacity import Limits, Line, Waiter, let_in, turn
from ..rules.connection import ConnectionKey, key_for
from ..rules.model import (
    CLAIM_ANNOTATION,
    SUCCEEDED,
    InvalidSpec,
    Queued,
    Spec,
    TaskRun,
)
from ..rules.spec import parse_connection_ref


class Place(enum.Enum):
    HOLDING = "holding"
    WAITING = "waiting"
    NONE = "none"


@dataclass
class _Pool:
    """One connection's holders (key -> namespace) and waiting runs."""

    holders: dict[str, str] = field(default_factory=dict)
    waiting: Line = field(default_factory=Line)
    let_in: set[str] = field(default_factory=set)  # holders `turn` let in, not started yet
    limits: Limits | None = None  # as last seen by a turn


def place_of(run: TaskRun) -> Place:
    """Where a parsed TaskRun stands (its claim already verified)."""
    status = run.status
    if status.finished:
        return Place.NONE
    if status.task_execution_id or status.start_requested_at or status.attempt > 0:
        return Place.HOLDING
    spec = run.spec
    if run.deleting or not isinstance(spec, Spec) or spec.suspend or spec.desired_stopped:
        return Place.NONE
    return Place.WAITING


def _finished(status: Mapping[str, Any]) -> bool:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == SUCCEEDED:
            return cond.get("status") in ("True", "False")
    return False


def place_of_body(body: Mapping[str, Any]) -> Place:
    """Where a TaskRun stands, read from the object alone (see the module's note)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    if not isinstance(status, Mapping) or not isinstance(spec, Mapping):
        return Place.NONE
    if _finished(status):
        return Place.NONE
    annotations = meta.get("annotations") or {}
    if status.get("taskExecutionId") or status.get("attempt") or CLAIM_ANNOTATION in annotations:
        return Place.HOLDING
    if meta.get("deletionTimestamp") or spec.get("suspend") is True:
        return Place.NONE
    if spec.get("desiredPhase") == "STOPPED":
        return Place.NONE
    return Place.WAITING


def pool_of(namespace: str, spec: Mapping[str, Any]) -> ConnectionKey | None:
    try:
        return key_for(namespace, parse_connection_ref(spec.get("connectionRef")))
    except InvalidSpec:
        return None


class Admission:
    """The holders and the waiting runs of every connection."""

    def __init__(self, wake: Callable[[str], None]) -> None:
        self._wake = wake
        self._pools: dict[ConnectionKey, _Pool] = {}
        self._where: dict[str, ConnectionKey] = {}

    def __len__(self) -> int:
        return len(self._where)

    def note_body(self, key: str, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        spec = body.get("spec")
        pool = pool_of(str(meta.get("namespace") or ""), spec if isinstance(spec, Mapping) else {})
        self.note(key, pool, place_of_body(body), _waiter(meta))

    def note_run(self, key: str, run: TaskRun, body: Mapping[str, Any]) -> None:
        """Note a TaskRun as its reconcile parsed it (its claim verified)."""
        meta = body.get("metadata") or {}
        spec = run.spec
        pool = (
            key_for(str(meta.get("namespace") or ""), spec.connection_ref)
            if isinstance(spec, Spec)
            else None
        )
        self.note(key, pool, place_of(run), _waiter(meta))

    def note(self, key: str, pool_key: ConnectionKey | None, place: Place, waiter: Waiter) -> None:
        before = self._where.get(key)
        if before is not None and (before != pool_key or place is Place.NONE):
            self.forget(key)
        if pool_key is None or place is Place.NONE:
            return
        pool = self._pools.setdefault(pool_key, _Pool())
        self._where[key] = pool_key
        if place is Place.HOLDING:
            pool.waiting.discard(key)
            pool.holders[key] = waiter.namespace
        elif key not in pool.let_in:
            # Waiting; a run counted as holding from its object alone (an unsigned claim)
            # holds nothing once its reconcile says otherwise.
            pool.holders.pop(key, None)
            pool.waiting.add(waiter)
        # A run let in keeps its slot until it is seen started (or leaves).

    def waiting(self, key: str) -> bool:
        """Whether the run is in line (noted as waiting, not let in yet)."""
        pool_key = self._where.get(key)
        return pool_key is not None and key in self._pools[pool_key].waiting

    def forget(self, key: str) -> None:
        pool_key = self._where.pop(key, None)
        if pool_key is None:
            return
        pool = self._pools[pool_key]
        held = pool.holders.pop(key, None) is not None
        pool.waiting.discard(key)
        pool.let_in.discard(key)
        if not pool.holders and not pool.waiting:
            del self._pools[pool_key]
        elif held:
            self._wake_next(pool)

    def turn(self, key: str, limits: Limits, connection: str) -> Queued | None:
        """None when the run may start now (its slot is taken for it at once), or its
        place in line. A run not noted as waiting is not held back."""
        pool_key = self._where.get(key)
        pool = self._pools.get(pool_key) if pool_key is not None else None
        if pool is None:
            return None
        pool.limits = limits
        waiter = pool.waiting.get(key)
        if waiter is None:
            return None
        queued = turn(waiter, limits, Counter(pool.holders.values()), pool.waiting, connection)
        if queued is None:
            pool.waiting.discard(key)
            pool.holders[key] = waiter.namespace
            pool.let_in.add(key)
        return queued

    def _wake_next(self, pool: _Pool) -> None:
        """Wake the waiting runs that the free slots would go to now."""
        if pool.limits is None or not pool.waiting:
            return
        running = Counter(pool.holders.values())
        for waiter in let_in(pool.limits, running, pool.waiting):
            self._wake(waiter.key)

    def queued(self) -> dict[tuple[str, ConnectionKey], int]:
        """Runs waiting, by namespace and connection (for metrics)."""
        counts: Counter[tuple[str, ConnectionKey]] = Counter()
        for pool_key, pool in self._pools.items():
            if pool.limits is None or not pool.limits.limited:
                continue
            for waiter in pool.waiting:
                counts[(waiter.namespace, pool_key)] += 1
        return dict(counts)


def _waiter(meta: Mapping[str, Any]) -> Waiter:
    return Waiter(
        str(meta.get("creationTimestamp") or ""),
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )
