"""The reconciler: a work queue of TaskRuns, each handled by the pure rules.

The TaskRun watch (`watch.Watch`) delivers every event here; what is remembered of each
TaskRun, its newest object included, is one `record.TaskRunRecord`, and its key is
queued. A worker takes a key (never two workers the same key) and takes the TaskRun a
step at a time: observe, decide (`decide`), write the status it returns with a
resourceVersion precondition *before* acting, act, record the outcome
(`apply_result`); until the rules have nothing more to do, then requeues when
they ask. A TaskRun that is gone is forgotten whole (`Reconciler._forget`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..clients.kube import Conflict, Gone, KubeClient, KubeError
from ..clients.ona import errors
from ..observability import metrics
from ..rules.backoff import exponential
from ..rules.claims import KEY_FIELD, KEY_SECRET, SIGNATURE_ANNOTATION, ClaimSigner, new_key
from ..rules.conditions import status_patch
from ..rules.connection import ConnectionKey, is_connection_key, key_for
from ..rules.model import (
    ATTEMPTS_ANNOTATION,
    CLAIM_ANNOTATION,
    CLAIM_ATTEMPT_ANNOTATION,
    ENVIRONMENT_ACTIONS,
    FINALIZER,
    STALLED,
    SUCCEEDED,
    Access,
    Action,
    ActionKind,
    ConnectionView,
    Decision,
    Event,
    FailureKind,
    InvalidSpec,
    Observation,
    Queued,
    RemoteFailure,
    Result,
    Settings,
    Spec,
    Status,
    TaskRun,
    parse_time,
)
from ..rules.pipeline import decide
from ..rules.results import apply_result
from ..rules.spec import parse_connection_ref, parse_spec, task_reference
from . import environment_actions
from .admission import Admission
from .checkpoints import (
    AFTER_CLAIM,
    AFTER_ENVIRONMENT_CLAIM,
    AFTER_ENVIRONMENT_CREATE,
    AFTER_START,
    AFTER_STOP_CLAIM,
    NO_CHECKPOINTS,
    Checkpoints,
)
from .connections import Connections, Remote
from .eventpost import EventPoster
from .logtails import LogTails
from .record import QueueState, TaskRunRecord
from .remote import to_remote

log = logging.getLogger(__name__)
MAX_STEPS = 25
# The lane of a TaskRun first seen finished, behind news (0) and everything else (1),
# and the longest one of them waits for the other lanes to be idle (seconds).
FINISHED_LANE = 2
FINISHED_WAIT = 0.01
# Kubernetes-only actions: they never wait for the Ona API's back-off or breaker.
_LOCAL_ACTIONS = (
    ActionKind.REMOVE_FINALIZER,
    ActionKind.DELETE_TASKRUN,
)


def key_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata", {})
    return f"{meta.get('namespace')}/{meta.get('name')}"


def parse_taskrun(body: Mapping[str, Any], signer: ClaimSigner | None = None) -> TaskRun:
    """The rules' view of a TaskRun body. The start claim in its annotations counts only
    when `signer` verifies it as the operator's own (see `claims`); otherwise the claim
    the status mirrors is the run's."""
    meta = body.get("metadata", {})
    spec: Spec | InvalidSpec
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec as exc:
        spec = exc
    status = Status.from_dict(body.get("status"))
    claim = _claim_of(body, signer)
    if claim is not None and claim[1] < status.start_attempts:
        claim = None  # an older claim of this run, written back: the status is newer
    if claim is not None:
        status = replace(
            status, start_requested_at=claim[0], start_attempts=claim[1], claim_attempt=claim[2]
        )
    return TaskRun(
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=spec,
        status=status,
        deleting=bool(meta.get("deletionTimestamp")),
        has_finalizer=FINALIZER in (meta.get("finalizers") or ()),
        annotations=dict(meta.get("annotations") or {}),
    )


def _claim_of(body: Mapping[str, Any], signer: ClaimSigner | None) -> tuple[str, int, int] | None:
    """The start claim as the operator wrote it in the annotations (an empty time: no
    claim), with the StartTask count and the attempt it is for; None when the annotations
    hold no claim the operator signed (the status then says)."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if CLAIM_ANNOTATION not in annotations or signer is None:
        return None
    attempts = str(annotations.get(ATTEMPTS_ANNOTATION, "0"))
    attempt = str(annotations.get(CLAIM_ATTEMPT_ANNOTATION, "0"))
    if not (attempts.isdigit() and attempt.isdigit()) or len(attempts) + len(attempt) > 12:
        return None
    claim = (str(annotations[CLAIM_ANNOTATION]), int(attempts), int(attempt))
    signature = str(annotations.get(SIGNATURE_ANNOTATION, ""))
    if not signer.verify(str(meta.get("uid", "")), *claim, signature):
        return None
    return claim


@dataclass(frozen=True)
class _Seen:
    """What one step of a reconcile knows before it decides."""

    run: TaskRun  # as held: the status decided but not written yet included
    obs: Observation
    remote: Remote | None  # the run's connection, when it may be used for this run
    finalizer_due: bool  # the finalizer goes out with the next write that needs it


@dataclass(frozen=True)
class _Written:
    body: dict[str, Any]
    changed: bool = False  # a write was made (not held for the merge window, not a no-op)
    conflict: bool = False  # the TaskRun changed meanwhile: `body` is it as read again


class Reconciler:
    def __init__(
        self,
        connections: Connections,
        *,
        workers: int = 8,
        settings: Settings | None = None,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
        merge_window: float = 1.0,
        operator_namespace: str = "ona-system",
    ) -> None:
        self.connections = connections
        self._kube: KubeClient | None = None
        self.settings = settings or Settings()
        self.checkpoints = checkpoints
        self.merge_window = merge_window
        # Verifies the start claims in TaskRuns' annotations; loaded before the first
        # reconcile (initial_sync), from a Secret only the operator reads.
        self.claim_signer: ClaimSigner | None = None
        self.claim_key_secret = (operator_namespace, KEY_SECRET)
        # One record per TaskRun (see record.py), and the queue state of keys of other
        # kinds sharing the queue (connections, schedules), dropped once idle.
        self._records: dict[str, TaskRunRecord] = {}
        self._others: dict[str, QueueState] = {}
        # Indexes over the records, kept with them: execution id -> the record of the
        # TaskRun holding it (an adoption never takes another TaskRun's), and task id ->
        # keys of TaskRuns whose StartTask of it awaits its answer.
        self._held_by: dict[str, TaskRunRecord] = {}
        self._starts: dict[str, set[str]] = {}
        # Two lanes: news of a remote execution (urgent) goes before TaskRuns waiting to
        # start, so a finished run is mirrored at once even behind a backlog of starts.
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        # TaskRuns first seen finished (FINISHED_LANE: thousands after a restart) wait in
        # a queue of their own, for one worker of their own (see _finished_worker).
        self._finished: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue()
        # Events wait while TaskRuns wait to be reconciled (see eventpost).
        self.events = EventPoster(self._post_one, busy=lambda: not self._queue.empty())
        self._poster: asyncio.Task[None] | None = None
        # Log tails of ended runs, read beside the reconcile (see logtail).
        self.logtails = LogTails(enqueue=self.enqueue_urgent, post=self._post)
        # Who holds each connection's capacity and who waits (spec.limits): a freed slot
        # wakes the runs next in line.
        self.admission = Admission(wake=self.enqueue)
        self._workers = workers
        # Whether no key is being reconciled but the finished backlog's (_finished_worker).
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Reconcilers of other kinds whose keys (`Kind:ns/name`) share this queue.
        self.handlers: dict[str, Callable[[str], Awaitable[float | None]]] = {}
        # What those other kinds hold, by name, for `remembered` (CustomRuns).
        self.remembered_by: dict[str, Callable[[], int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.active = asyncio.Event()  # set while this replica may act (leader)
        self.active.set()
        # Set once every watched TaskRun has been read: until then an adoption could not
        # know which executions other TaskRuns already hold.
        self.synced = asyncio.Event()

    @property
    def kube(self) -> KubeClient | None:
        return self._kube

    @kube.setter
    def kube(self, kube: KubeClient | None) -> None:
        self._kube = kube
        self.connections.kube = kube

    @property
    def tracked(self) -> int:
        return sum(r.tracker.tracked for r in self.connections.remotes())

    def taskruns(self) -> Iterable[Mapping[str, Any]]:
        """The newest body of every watched TaskRun (read by the metrics at a scrape)."""
        return (record.body for record in self._records.values() if not record.forgotten)

    def remembered(self) -> dict[str, int]:
        """What is held for TaskRuns, by kind (the `ona_taskrun_remembered` gauge, read at
        a scrape): records, executions a connection's tracker follows or keeps the status
        of, claims (execution ids held for a TaskRun, every attempt's, and StartTasks
        awaiting their answer), waits on an environment, requeue timers, log tails read or
        being read, and Events waiting to be posted. All 0 once every TaskRun the operator
        has seen is gone (Events within moments: they are posted after the TaskRun's own
        writes)."""
        remotes = self.connections.remotes()
        executions: set[str] = set()
        for remote in remotes:
            executions.update(remote.tracker.execution_ids())
        return {
            "taskruns": len(self._records),
            "executions": len(executions),
            "claims": len(self._held_by) + len(self._starts),
            "environments": sum(remote.environments.waiting for remote in remotes),
            "timers": sum(1 for record in self._records.values() if record.timer is not None),
            "log_tails": self.logtails.remembered,
            "events": self.events.pending,
            "queue": len(self.admission),
            **{kind: count() for kind, count in self.remembered_by.items()},
        }

    def _queued(self) -> dict[tuple[str, str], int]:
        return {(ns, str(conn)): n for (ns, conn), n in self.admission.queued().items()}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        metrics.REMEMBERED.source = self.remembered
        metrics.QUEUED.source = self._queued
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"reconcile-{i}") for i in range(self._workers)
        ]
        self._tasks.append(asyncio.create_task(self._finished_worker(), name="reconcile-finished"))
        self._poster = asyncio.create_task(self.events.run(), name="events")
        self.connections.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for state in [*self._records.values(), *self._others.values()]:
            state.cancel_timer()
        await self.logtails.stop()
        if self._poster is not None:
            self._poster.cancel()
            await asyncio.gather(self._poster, return_exceptions=True)
        await self.events.flush(within=5.0)
        await self.connections.stop()
        if metrics.REMEMBERED.source == self.remembered:
            metrics.REMEMBERED.source = None

    # ------------------------------------------------------------------ intake

    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A TaskRun watch event: keep the newest object and queue it; forget a deleted one."""
        key = key_of(body)
        record = self._records.get(key)
        if record is not None and record.forgotten:
            # A TaskRun of the same name while a worker still has the forgotten one: it
            # waits for that worker (see _done).
            if event_type == "DELETED":
                record.successor = None
            elif record.successor is None or _rv(body) > _rv(record.successor):
                record.successor = dict(body)
            return
        if event_type == "DELETED":
            if record is not None and _same_object(body, record.body):
                self._forget(record)
            return
        lane = 1
        if record is None:
            self._new_record(key, dict(body))
            # Seen first finished (the list after a restart: thousands of them): nothing
            # to do but maybe a TTL to time, so it waits behind the TaskRuns that run.
            lane = FINISHED_LANE if _finished(body) else 1
        elif 0 < _rv(body) <= _rv(record.body):
            # Our own write coming back (its answer is already held), or an older event:
            # nothing new to decide on.
            return
        else:
            self._remember(record, dict(body))
        self.admission.note_body(key, body)
        self.enqueue(key, lane)

    def _new_record(self, key: str, body: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        record = self._records[key] = TaskRunRecord(key=key, body={}, written_at=loop.time())
        self._remember(record, body)

    def _remember(self, record: TaskRunRecord, body: dict[str, Any]) -> None:
        if _rv(record.body) > _rv(body) > 0:
            return  # an older event than what our own write returned
        meta = body.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            # Nothing here reads them, and they are most of an object's size: at 10,000
            # TaskRuns they were most of the operator's memory.
            body["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        record.body = body
        status = body.get("status") or {}
        execution = status.get("taskExecutionId")
        if execution:
            self._hold(record, str(execution))
        for attempt in status.get("attempts") or ():
            # Earlier attempts' executions stay this TaskRun's: no other may adopt them.
            if isinstance(attempt, Mapping) and attempt.get("executionId"):
                self._hold(record, str(attempt["executionId"]))

    def _hold(self, record: TaskRunRecord, execution: str) -> None:
        """`execution` is this TaskRun's: no other adopts it while the record lasts."""
        record.executions.add(execution)
        self._held_by[execution] = record

    def _forget(self, record: TaskRunRecord) -> None:
        """The TaskRun is gone (deleted, or a read or write of it answered 404): drop its
        record and everything held for it elsewhere. While a worker still has it, the
        record stays, marked forgotten, until that worker is done (see _done)."""
        if record.forgotten:
            return
        record.forgotten = True
        self._drop(record)
        if not record.active and self._records.get(record.key) is record:
            del self._records[record.key]

    def _drop(self, record: TaskRunRecord) -> None:
        """Drop what is held for a forgotten TaskRun: its executions in the index and the
        trackers, its wait on an environment, its log tail, its timer and queue entry.
        Done again when its worker is done, for whatever its reconcile added since."""
        key = record.key
        remotes = self.connections.remotes()
        for execution in record.executions:
            holder = self._held_by.get(execution)
            if holder is record:
                del self._held_by[execution]
            if holder is None or holder is record:
                for remote in remotes:
                    remote.tracker.untrack(execution)
        for remote in remotes:
            remote.environments.done(key)
        self.logtails.forget(key)
        self.admission.forget(key)
        metrics.queue_forgotten(key)
        record.cancel_timer()
        record.lane = record.dirty = None
        record.unwritten = None
        record.last_failure = None
        record.retry_at = None

    async def initial_sync(
        self, namespaces: tuple[str, ...], listed: Iterable[asyncio.Event]
    ) -> None:
        """Wait until the TaskRun watches have delivered their first lists (they list,
        and retry, themselves: `watch.Watch`), then read the Ona connections once."""
        await asyncio.gather(*(event.wait() for event in listed))
        if self.claim_signer is None:
            self.claim_signer = await self._load_claim_key()
        delay = 1.0
        while True:
            try:
                await self.connections.list_all(namespaces, check=self.active.is_set())
                break
            except KubeError as exc:
                log.warning("cannot list Ona connections yet (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = exponential(delay, 1, 30.0)
        # Harnesses wait for this line: keep its wording.
        log.info("read %d TaskRuns; reconciling", len(self._records))
        self.synced.set()

    async def _load_claim_key(self) -> ClaimSigner:
        """The key that signs start claims: read from its Secret, or created there by the
        first operator to start (a replica that loses the race reads the winner's). Until
        it is known no TaskRun is reconciled: a claim cannot be told from a forgery."""
        namespace, name = self.claim_key_secret
        delay = 1.0
        while True:
            assert self.kube is not None
            try:
                return ClaimSigner(await self._claim_key(namespace, name))
            except (KubeError, ValueError) as exc:
                log.warning(
                    "cannot read or create the start-claim key Secret %s/%s (%s); TaskRuns "
                    "wait for it, retrying in %.0fs",
                    namespace,
                    name,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = exponential(delay, 1, 30.0)

    async def _claim_key(self, namespace: str, name: str) -> bytes:
        assert self.kube is not None
        try:
            secret = await self.kube.get_secret(namespace, name)
        except Gone:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "labels": {"app.kubernetes.io/name": "ona-taskrun-operator"},
                    "annotations": {
                        "automation.ona.com/purpose": "signs the operator's TaskRun start "
                        "claims; deleting it voids claims of starts under way"
                    },
                },
                "type": "Opaque",
                "data": {KEY_FIELD: base64.b64encode(new_key()).decode("ascii")},
            }
            try:
                secret = await self.kube.create_secret(namespace, body)
                log.info("created the start-claim key Secret %s/%s", namespace, name)
            except Conflict:
                secret = await self.kube.get_secret(namespace, name)  # another replica won
        raw = (secret.get("data") or {}).get(KEY_FIELD, "")
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"its {KEY_FIELD!r} is not base64") from None

    def wake_users(self, connection: ConnectionKey) -> None:
        """Queue every TaskRun that uses this connection: it became usable, or not."""
        for key, record in self._records.items():
            if record.forgotten:
                continue
            try:
                ref = parse_connection_ref((record.body.get("spec") or {}).get("connectionRef"))
            except InvalidSpec:
                continue
            if key_for(_namespace(key), ref) == connection:
                self.enqueue(key)

    def _state(self, key: str, *, create: bool = False) -> QueueState | None:
        """The queue state of a key: a TaskRun's record (None once forgotten), or that of a
        key of another kind, made if `create` is asked and it has none."""
        if ":" not in key:
            record = self._records.get(key)
            return record if record is not None and not record.forgotten else None
        state = self._others.get(key)
        if state is None and create:
            state = self._others[key] = QueueState(key=key)
        return state

    def enqueue(self, key: str, lane: int = 1) -> None:
        state = self._state(key, create=True)
        if state is None:
            return  # a TaskRun not watched (any more): nothing to reconcile
        if state.active:
            state.dirty = lane if state.dirty is None else min(lane, state.dirty)
        elif state.lane is None or lane < state.lane:
            # Queued again in a better lane; the older entry is skipped when it comes up.
            state.lane = lane
            queue = self._finished if lane >= FINISHED_LANE else self._queue
            queue.put_nowait((lane, next(self._order), key))
            metrics.queue_added(key)

    def enqueue_urgent(self, key: str) -> None:
        self.enqueue(key, lane=0)

    def _requeue(self, key: str, delay: float) -> None:
        state = self._state(key, create=True)
        if state is None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if state.timer is not None:
            if state.timer.when() <= when:
                return
            state.timer.cancel()
        state.timer = loop.call_at(when, self._fire, state)

    def _fire(self, state: QueueState) -> None:
        state.timer = None
        # A held status is news already decided: it goes before TaskRuns waiting to start.
        held = isinstance(state, TaskRunRecord) and state.unwritten is not None
        self.enqueue(state.key, lane=0 if held else 1)

    # ------------------------------------------------------------------ workers

    async def _worker(self) -> None:
        while True:
            lane, _, key = await self._queue.get()
            self._busy += 1
            self._idle.clear()
            try:
                # In a call of its own: what a worker took (a record, and its body) is
                # not held by its frame while it waits for the next key.
                await self._take(lane, key)
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    async def _finished_worker(self) -> None:
        """The TaskRuns first seen finished (thousands after a restart), one at a time,
        each once no other key is being reconciled or `FINISHED_WAIT` has passed. They
        need nothing soon; the news of running ones among them does, and on a busy
        machine the backlog's CPU (0.4-0.7 ms a TaskRun) was theirs."""
        while True:
            lane, _, key = await self._finished.get()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), FINISHED_WAIT)
            await self._take(lane, key)

    async def _take(self, lane: int, key: str) -> None:
        state = self._state(key)
        if state is None or state.lane != lane:
            return  # stale: queued again in a better lane, or forgotten
        await self.synced.wait()
        await self.active.wait()
        if self._state(key) is not state or state.lane != lane:
            return  # the same, while this worker waited
        state.lane = None
        started = metrics.queue_taken(key)
        state.active = True
        try:
            handler = self.handlers.get(key.partition(":")[0]) if ":" in key else None
            if handler is not None:  # another kind sharing the queue (schedules)
                again = await handler(key)
                if again is not None:
                    self._requeue(key, again)
            elif is_connection_key(key):
                again = await self.connections.reconcile(key)
                if again is not None:
                    self._requeue(key, again)
            else:
                await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            # The API server is restarting or refusing: expected in operation, no trace.
            log.warning("reconciling %s: %s; looking again in 5s", key, exc)
            self._requeue(key, 5.0)
        except Exception:
            # Never let one TaskRun take the operator down; look again later.
            log.exception("reconciling %s failed unexpectedly", key)
            metrics.reconcile_failed(key)
            self._requeue(key, 10.0)
        finally:
            metrics.reconciled(key, started)
            self._done(state)
        # A reconcile that needs no I/O (a finished TaskRun's, thousands after a
        # restart) never yields: let the watches and trackers in between.
        await asyncio.sleep(0)

    def _done(self, state: QueueState) -> None:
        """A worker is done with a key: queue it again if that was asked meanwhile."""
        state.active = False
        key = state.key
        if isinstance(state, TaskRunRecord) and state.forgotten:
            # Gone while the worker had it: drop what its reconcile added since, and take
            # in a TaskRun of the same name that waited.
            self._drop(state)
            if self._records.get(key) is state:
                del self._records[key]
            if state.successor is not None:
                self._new_record(key, state.successor)
                self.enqueue(key)
            return
        if state.dirty is not None:
            lane, state.dirty = state.dirty, None
            self.enqueue(key, lane)
        if not isinstance(state, TaskRunRecord) and state.idle:
            self._others.pop(key, None)

    @contextlib.contextmanager
    def _starting(self, record: TaskRunRecord, action: Action) -> Iterator[None]:
        """A StartTask from its call until its answer (whose execution is then held for
        the TaskRun at once): meanwhile, another TaskRun of the same task does not adopt
        an execution it finds (it may be this one's)."""
        if action.kind is not ActionKind.START or not action.task_id:
            yield
            return
        task_id = action.task_id
        starting = self._starts.setdefault(task_id, set())
        starting.add(record.key)
        record.starting = task_id
        try:
            yield
        finally:
            record.starting = ""
            starting.discard(record.key)
            if not starting and self._starts.get(task_id) is starting:
                del self._starts[task_id]

    def _starts_in_flight(self, key: str, task_id: str) -> int:
        return len(self._starts.get(task_id, set()) - {key}) if task_id else 0

    def _claimed_elsewhere(self, record: TaskRunRecord) -> frozenset[str]:
        return frozenset(e for e, holder in self._held_by.items() if holder is not record)

    def _reserve(self, record: TaskRunRecord, run: TaskRun, decision: Decision) -> str:
        """An execution this TaskRun is about to record (an adoption) is held for it from
        the decision on, not from the write's answer: another TaskRun deciding meanwhile
        sees it taken. Returns the id newly held, to release if the write fails."""
        execution = decision.track
        if not execution or execution == run.status.task_execution_id:
            return ""
        if execution in self._held_by:
            return ""  # already held (by this TaskRun: decide never adopts another's)
        self._hold(record, execution)
        return execution

    def _release(self, record: TaskRunRecord, execution: str) -> None:
        """The write that would have recorded `execution` failed: hold it no longer,
        unless the TaskRun as last seen records it after all."""
        if not execution or self._held_by.get(execution) is not record:
            return
        if (record.body.get("status") or {}).get("taskExecutionId") != execution:
            del self._held_by[execution]
            record.executions.discard(execution)

    async def reconcile(self, key: str) -> None:
        """Take one TaskRun as far as it goes now, a step at a time: observe what is known
        of it, decide (the pure rules), write the decided status before acting (so a crash
        never loses a claim), act, and record the outcome; until the rules have
        nothing more to do, requeueing it when they ask."""
        record = self._records.get(key)
        if record is None or record.forgotten or self.kube is None:
            return
        body, obs = record.body, Observation()
        for _ in range(MAX_STEPS):
            if record.forgotten:
                return  # gone meanwhile: nothing more to write
            seen = await self._observe(record, body, obs)
            obs = seen.obs
            decision = self._decide(record, seen)
            if self._backing_off(record, decision.action, seen.remote):
                # Woken by a watch event (often our own write) before the back-off ends:
                # no remote call, and no claim written for a start that is not made now.
                return
            written = await self._write(record, body, seen, decision)
            if written is None:
                return  # gone
            body = written.body
            if written.conflict:
                continue  # changed meanwhile: decide again on what it is now
            action = decision.action
            if action is None:
                if decision.requeue_after is not None:
                    self._requeue(key, decision.requeue_after)
                if written.changed:
                    # What was just written may lead to a next step (a cleared claim to a
                    # new start): decide again now, since the write's own watch event is
                    # not reconciled.
                    continue
                return
            acted = await self._act(record, body, seen, decision, action)
            if acted is None:
                return
            body, obs = acted
        log.warning("%s did not settle after %d steps; looking again later", key, MAX_STEPS)
        self._requeue(key, 5.0)

    async def _observe(
        self, record: TaskRunRecord, body: Mapping[str, Any], obs: Observation
    ) -> _Seen:
        """Observe: the TaskRun as held, its connection's view of it, what that connection
        knows of its execution and, before an adoption, which executions other TaskRuns
        hold."""
        run = self._parse(record, body)
        # The finalizer goes out with the first write that needs it (the start claim,
        # or before a task is created), not in a write of its own.
        finalizer_due = not run.has_finalizer and not run.deleting
        if finalizer_due:
            run = replace(run, has_finalizer=True)
        view, usable = await self.connections.view(_namespace(record.key), run)
        # A run the connection does not serve gets no remote read or action at all.
        remote = usable if view.access is not Access.REFUSED else None
        obs = replace(obs, connection=view)
        if remote is not None:
            obs = await self._observe_remote(record, run, obs, remote)
        # With no wait between the count and the decision: a slot let in is taken at once.
        obs = replace(obs, queued=self._turn(record, run, body, view))
        if run.status.start_requested_at and not run.status.task_execution_id:
            # Only an adoption needs to know which executions other TaskRuns hold. Read
            # last, with no wait between this, the decision and the reservation (_write):
            # TaskRuns of one task deciding at once must not adopt the same execution.
            obs = replace(
                obs,
                claimed_elsewhere=self._claimed_elsewhere(record),
                starts_in_flight=self._starts_in_flight(record.key, run.status.task_id),
            )
        return _Seen(run, obs, remote, finalizer_due)

    def _turn(
        self, record: TaskRunRecord, run: TaskRun, body: Mapping[str, Any], view: ConnectionView
    ) -> Queued | None:
        """The run's place in its connection's line (`admission`), noted afresh from the
        parsed run; None when nothing holds it back."""
        self.admission.note_run(record.key, run, body)
        spec = run.spec
        if view.access is not Access.READY or not isinstance(spec, Spec):
            return None
        connection = key_for(_namespace(record.key), spec.connection_ref)
        limits = self.connections.limits(connection)
        if not limits.limited or not self.admission.waiting(record.key):
            return None
        if not self.synced.is_set():
            return Queued(0, "queued: counting the runs of its connection after a start-up")
        queued = self.admission.turn(record.key, limits, str(connection))
        since = parse_time(run.status.queued_at)
        if queued is None and since is not None:
            waited = (_now() - since).total_seconds()
            metrics.LIMIT_WAIT.labels(_namespace(record.key)).observe(max(waited, 0.0))
        return queued

    def _decide(self, record: TaskRunRecord, seen: _Seen) -> Decision:
        """Decide: the pure rules' decision, with a log tail read meanwhile folded in."""
        decision = decide(seen.run, seen.obs, _now(), self.settings)
        return replace(decision, status=self.logtails.fold(record.key, decision.status))

    async def _write(
        self, record: TaskRunRecord, body: dict[str, Any], seen: _Seen, decision: Decision
    ) -> _Written | None:
        """Write the decided status (and start claim) before any action, an execution about
        to be adopted held for the TaskRun meanwhile; then what follows from it being
        written: its Events, a log tail read, following its execution. None when the
        TaskRun is gone."""
        reserved = self._reserve(record, seen.run, decision)
        written: dict[str, Any] | None = None
        try:
            written = await self._write_status(
                record, body, seen.run, decision.status, decision.action, seen.finalizer_due
            )
        except Conflict:
            log.debug("%s changed while being reconciled (409); reading it again", record.key)
            fresh = await self._reread(record)
            return None if fresh is None else _Written(fresh, conflict=True)
        except Gone:
            self._forget(record)
            return None
        finally:
            if written is None:
                self._release(record, reserved)
        events = self.logtails.after_write(record.key, written, decision.events, seen.remote)
        await self._post(written, events)
        self._follow(record, written, decision, seen.remote, seen.run.status.task_execution_id)
        return _Written(written, changed=written is not body)

    async def _act(
        self,
        record: TaskRunRecord,
        body: dict[str, Any],
        seen: _Seen,
        decision: Decision,
        action: Action,
    ) -> tuple[dict[str, Any], Observation] | None:
        """Act, and record the outcome: the body and observation to decide on next, or
        None when there is nothing more to do now."""
        if action.kind is ActionKind.DELETE_TASKRUN:
            await self._delete_taskrun(body)
            return None
        if action.kind in _LOCAL_ACTIONS:
            try:
                return await self._remove_finalizer(record, body), seen.obs
            except Conflict:
                fresh = await self._reread(record)
                return None if fresh is None else (fresh, seen.obs)
            except Gone:
                self._forget(record)
                return None
        # The rules act remotely only through a usable connection.
        remote = seen.remote
        assert remote is not None, f"{action.kind.value} without a connection"
        run = replace(seen.run, status=decision.status)
        result = await self._call(record, remote, action, run, body)
        return await self._record(record, body, remote, run, action, result, seen.obs)

    async def _call(
        self,
        record: TaskRunRecord,
        remote: Remote,
        action: Action,
        run: TaskRun,
        body: Mapping[str, Any],
    ) -> Result:
        """One remote action through the TaskRun's connection, between its checkpoints
        (where crash tests kill it). An execution it starts is the TaskRun's from the
        answer on."""
        kind = action.kind
        if kind is ActionKind.START:
            self.checkpoints.reached(AFTER_CLAIM)
        if kind is ActionKind.STOP:
            self.checkpoints.reached(AFTER_STOP_CLAIM)
        if kind is ActionKind.CREATE_ENVIRONMENT:
            self.checkpoints.reached(AFTER_ENVIRONMENT_CLAIM)
        with self._starting(record, action):
            result = await self._perform_through(remote, action, run, body)
        if kind is ActionKind.CREATE_ENVIRONMENT:
            self.checkpoints.reached(AFTER_ENVIRONMENT_CREATE)
        if result.failure is None:
            remote.answered()  # a failure was recorded as it came (Remote.failed)
        if kind is ActionKind.START:
            self.checkpoints.reached(AFTER_START)
            if result.execution is not None:
                log.info("%s: started execution %s", record.key, result.execution.id)
                # Its own start: held for it from the answer on (no await since),
                # though its record may wait for the merge window.
                self._hold(record, result.execution.id)
        return result

    async def _record(
        self,
        record: TaskRunRecord,
        body: dict[str, Any],
        remote: Remote,
        run: TaskRun,
        action: Action,
        result: Result,
        obs: Observation,
    ) -> tuple[dict[str, Any], Observation] | None:
        """Record an action's outcome: written, its Events posted, and the back-off of the
        TaskRun's remote calls kept or cleared."""
        new_run, obs, events = apply_result(run, action, result, obs, _now())
        recorded = await self._write_result(record, body, run, action, result, obs)
        if recorded is None:
            return None
        await self._post(recorded, events)
        if result.failure is not None and result.failure.transient:
            record.last_failure = result.failure
            record.failed_calls += 1
            delay = _retry_delay(result.failure, record.failed_calls)
            record.retry_at = asyncio.get_running_loop().time() + delay
            metrics.retried()
            self._requeue(record.key, delay)
            return None
        record.last_failure = None
        record.failed_calls = 0
        record.retry_at = None
        if new_run.status.task_execution_id and result.execution is not None:
            remote.tracker.observe(result.execution)
        return recorded, obs

    async def _observe_remote(
        self, record: TaskRunRecord, run: TaskRun, obs: Observation, remote: Remote
    ) -> Observation:
        """What the TaskRun's connection knows of its execution, failures and principal."""
        exec_id = run.status.task_execution_id
        if exec_id:
            obs = replace(
                obs,
                execution=remote.tracker.latest(exec_id) or obs.execution,
                remote_failure=remote.tracker.failure or obs.remote_failure,
            )
            remote.learn_principal(run, obs.execution)
        else:
            if record.last_failure is not None and obs.remote_failure is None:
                obs = replace(obs, remote_failure=record.last_failure)
            if run.status.start_requested_at and not remote.principal:
                await remote.ask_principal()
        return replace(obs, own_principal=remote.principal)

    def _backing_off(
        self, record: TaskRunRecord, action: Action | None, remote: Remote | None
    ) -> bool:
        """True while a remote action for this TaskRun must wait: for its own back-off,
        or for its connection's breaker while the Ona API keeps failing."""
        if action is None or action.kind in _LOCAL_ACTIONS or remote is None:
            return False
        retry_at = record.retry_at
        remaining = retry_at - asyncio.get_running_loop().time() if retry_at else 0.0
        if remaining <= 0:
            remaining = remote.breaker.wait_time()
        if remaining <= 0:
            return False
        self._requeue(record.key, remaining)
        return True

    def _follow(
        self,
        record: TaskRunRecord,
        body: Mapping[str, Any],
        decision: Decision,
        remote: Remote | None,
        before: str = "",
    ) -> None:
        status = decision.status
        if (
            remote is not None
            and before
            and before not in (decision.track, status.task_execution_id)
        ):
            # The attempt it belonged to is over (spec.retries): its news changes nothing.
            remote.tracker.untrack(before)
        if remote is not None:
            if decision.wait_environment:
                remote.environments.wait(decision.wait_environment, record.key)
            else:
                remote.environments.done(record.key)
        if decision.track and remote is not None:
            spec = body.get("spec") or {}
            env = (spec.get("task") or spec.get("taskRef") or {}).get("environmentId", "")
            env = env or status.environment_id
            remote.tracker.track(decision.track, record.key, status.task_id, env)
            self._hold(record, decision.track)
        elif (
            remote is not None
            and status.task_execution_id
            and (status.finished or parse_taskrun(body).deleting)
        ):
            remote.tracker.untrack(status.task_execution_id)

    # ------------------------------------------------------------------ writes

    async def _reread(self, record: TaskRunRecord) -> dict[str, Any] | None:
        """The TaskRun as it is now; None, and the TaskRun forgotten, when it is gone (the
        watch may not have said so yet) or another of its name has taken its place."""
        assert self.kube is not None
        namespace, name = record.key.split("/", 1)
        try:
            body: dict[str, Any] | None = await self.kube.get_taskrun(namespace, name)
        except Gone:
            body = None
        if body is None or not _same_object(body, record.body):
            log.debug("%s is gone (read again); forgetting it", record.key)
            self._forget(record)
            return None
        self._remember(record, body)
        return body

    def _parse(self, record: TaskRunRecord, body: Mapping[str, Any]) -> TaskRun:
        """The TaskRun as the object says, with the status decided but not written yet:
        only this operator writes status, so what it holds is newer."""
        run = parse_taskrun(body, self.claim_signer)
        held = record.unwritten
        return run if held is None else replace(run, status=held)

    async def _write_status(
        self,
        record: TaskRunRecord,
        body: dict[str, Any],
        run: TaskRun,
        status: Status,
        action: Action | None,
        finalizer_due: bool = False,
    ) -> dict[str, Any]:
        """Write the start claim (with the finalizer, if it is still due) in one
        conditional metadata write; then the status, or hold it to merge with what comes
        next (see _may_wait)."""
        body = await self._write_claim(record, body, status, action, finalizer_due)
        old = body.get("status") or {}
        new = status.to_dict()
        patch = status_patch(old, new)
        if not patch:
            record.unwritten = None
            return body
        loop = asyncio.get_running_loop()
        if self._may_wait(run, status, action, old):
            if action is not None:
                # A call whose outcome is recorded right after it (the start claim, if
                # any, is in the annotations already): this goes out with that outcome.
                record.unwritten = status
                return body
            window = merge_window(
                self.merge_window,
                first=not old.get("taskExecutionId"),
                busy=not self._queue.empty(),
            )
            due = record.written_at + window
            if loop.time() < due:
                record.unwritten = status
                self._requeue(record.key, due - loop.time())
                return body
        assert self.kube is not None
        meta = body["metadata"]
        updated = await self.kube.patch_status(
            meta["namespace"], meta["name"], patch, meta["resourceVersion"]
        )
        record.unwritten = None
        record.written_at = loop.time()
        self._remember(record, updated)
        metrics.taskrun_written(body, updated)
        return updated

    async def _write_claim(
        self,
        record: TaskRunRecord,
        body: dict[str, Any],
        status: Status,
        action: Action | None,
        finalizer_due: bool,
    ) -> dict[str, Any]:
        meta = body["metadata"]
        written = _claim_of(body, self.claim_signer)
        if written is None:
            before = Status.from_dict(body.get("status"))
            written = (before.start_requested_at, before.start_attempts, 0)
        patch: dict[str, Any] = {}
        wanted = (status.start_requested_at, status.start_attempts, status.claim_attempt)
        if wanted[:2] != written[:2] or (status.start_requested_at and wanted[2] != written[2]):
            assert self.claim_signer is not None, "no TaskRun is reconciled before the key"
            signature = self.claim_signer.sign(str(meta.get("uid", "")), *wanted)
            patch["annotations"] = {
                CLAIM_ANNOTATION: status.start_requested_at,
                ATTEMPTS_ANNOTATION: str(status.start_attempts),
                CLAIM_ATTEMPT_ANNOTATION: str(status.claim_attempt),
                SIGNATURE_ANNOTATION: signature,
            }
        needs_finalizer = bool(patch) or (action is not None and action.kind in _NEED_FINALIZER)
        if finalizer_due and needs_finalizer:
            patch["finalizers"] = [*(meta.get("finalizers") or []), FINALIZER]
        if not patch:
            return body
        assert self.kube is not None
        updated = await self.kube.patch_metadata(
            meta["namespace"], meta["name"], patch, meta["resourceVersion"]
        )
        self._remember(record, updated)
        return updated

    def _may_wait(
        self,
        run: TaskRun,
        status: Status,
        action: Action | None,
        written: Mapping[str, Any],
    ) -> bool:
        """Whether a status change may wait for the merge window: progress that loses
        nothing if the operator dies before writing it (the tracker or a look-up by
        reference finds it again). A start or stop claim is written before its call, and
        an end, a delete or a person's view of trouble is never held back."""
        if run.deleting or status.finished or self.merge_window <= 0:
            return False
        if action is not None and action.kind not in _MAY_ACT_UNWRITTEN:
            return False
        succeeded = status.condition(SUCCEEDED)
        if succeeded is not None and succeeded.reason == "Adopted":
            return False  # the end of an unknown start: say so at once, as itself
        # The start claim is the annotations' (already written); its mirror can wait.
        before = Status.from_dict(written)
        if len(status.attempts) != len(before.attempts):
            return False  # the move to a next attempt (spec.retries) is written first
        return status.stop_requested_at == before.stop_requested_at and _stalled(
            status
        ) == _stalled(before)

    async def _write_result(
        self,
        record: TaskRunRecord,
        body: dict[str, Any],
        run: TaskRun,
        action: Action,
        result: Result,
        obs: Observation,
    ) -> dict[str, Any] | None:
        """Record an action's outcome; on a conflict re-read and fold it in again, so an
        execution id is never lost to a concurrent edit of the TaskRun."""
        for _ in range(10):
            new_run, _, _ = apply_result(run, action, result, obs, _now())
            try:
                return await self._write_status(record, body, new_run, new_run.status, None)
            except Conflict:
                log.debug("%s changed before %s was recorded (409); again", record.key, action.kind)
                fresh = await self._reread(record)
                if fresh is None:
                    return None
                body, run = fresh, self._parse(record, fresh)
            except Gone:
                self._forget(record)
                return None
        raise KubeError(
            409, f"could not record the outcome of {action.kind.value} for {record.key}"
        )

    async def _delete_taskrun(self, body: Mapping[str, Any]) -> None:
        """spec.ttlSecondsAfterFinished is over: delete the TaskRun (its finalizer then
        applies its deletionPolicy). The uid precondition spares a TaskRun re-created
        under the same name meanwhile."""
        assert self.kube is not None
        meta = body["metadata"]
        try:
            await self.kube.delete_taskrun(meta["namespace"], meta["name"], meta["uid"])
        except (Conflict, Gone):
            log.debug("%s: already deleted or re-created; nothing to delete", key_of(body))

    async def _remove_finalizer(
        self, record: TaskRunRecord, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Let the TaskRun go. (The finalizer is added with the first write that needs it,
        the start claim or a status write before a task is created: `_write`.)"""
        assert self.kube is not None
        meta = body["metadata"]
        wanted = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        updated = await self.kube.set_finalizers(
            meta["namespace"], meta["name"], wanted, meta["resourceVersion"]
        )
        self._remember(record, updated)
        return updated

    async def _post(self, body: Mapping[str, Any], events: tuple[Event, ...]) -> None:
        """Queue Events to be posted beside the reconcile, not in it: they are best effort,
        and a worker waiting on one is a TaskRun not being started."""
        if self.kube is None:
            return
        for event in events:
            log.info("%s: %s: %s", key_of(body), event.reason, event.message)
            self.events.submit(body, event)

    async def _post_one(self, body: Mapping[str, Any], event: Event) -> None:
        if self.kube is not None:
            await self.kube.post_event(body, event.type, event.reason, event.message)

    # ------------------------------------------------------------------ actions

    async def _perform_through(
        self, remote: Remote, action: Action, run: TaskRun, body: Mapping[str, Any]
    ) -> Result:
        """Perform an action; after a 401, read the token again and, if it was rotated,
        try once more (a refused call changed nothing). A named connection's 401 is
        waited out rather than ending the run (its token may be rotating), except on
        delete, which never hangs on a refused token."""
        result = await self._perform(remote, action, run, body)
        if not _refused_token(result):
            return result
        if await self.connections.reload(remote.key):
            result = await self._perform(remote, action, run, body)
        if _refused_token(result) and not remote.key.default and not run.deleting:
            self.connections.token_refused(remote.key)
            assert result.failure is not None
            result = replace(result, failure=replace(result.failure, wait=True))
        return result

    async def _perform(
        self, remote: Remote, action: Action, run: TaskRun, body: Mapping[str, Any]
    ) -> Result:
        spec = run.spec if isinstance(run.spec, Spec) else None
        kind = action.kind
        ona = remote.client
        if kind in ENVIRONMENT_ACTIONS:
            name = key_of(body).split("/", 1)[-1]
            return await environment_actions.perform(remote, action, run, name)
        try:
            if kind is ActionKind.START:
                execution = await ona.start_task(action.task_id)
                remote.principal = execution.metadata.creator.id or remote.principal
                return Result(execution=to_remote(execution))
            if kind is ActionKind.FIND_OWNED_TASK and spec and spec.task:
                ref = task_reference(run.uid)
                env_id = spec.task.environment_id or run.status.environment_id
                tasks = await ona.list_tasks(references=[ref], environment_ids=[env_id])
                if not tasks:
                    return Result(missing=True)
                remote.principal = remote.principal or tasks[0].metadata.creator.id
                return Result(task_id=tasks[0].id)
            if kind is ActionKind.CREATE_TASK and spec and spec.task:
                task = spec.task
                created = await ona.create_task(
                    task.environment_id or run.status.environment_id,
                    task.name,
                    task.command,
                    reference=task_reference(run.uid),
                    description=task.description or f"TaskRun {key_of(body)}",
                    env=dict(task.env),
                    runs_on=task.runs_on,
                    depends_on=task.depends_on,
                )
                remote.principal = created.metadata.creator.id or remote.principal
                return Result(task_id=created.id)
            if kind is ActionKind.RESOLVE_TASK_REF and spec and spec.task_ref:
                task_ref = spec.task_ref
                tasks = await ona.list_tasks(
                    references=[task_ref.reference or ""],
                    environment_ids=[task_ref.environment_id or ""],
                )
                return Result(task_id=tasks[0].id) if tasks else Result(missing=True)
            if kind is ActionKind.FIND_EXECUTIONS:
                found = await ona.list_task_executions(task_ids=[action.task_id])
                return Result(candidates=tuple(to_remote(e) for e in found))
            if kind is ActionKind.STOP:
                await ona.stop_task_execution(action.execution_id)
                return Result()
            if kind is ActionKind.STOP_OWNED_EXECUTIONS:
                for execution in await ona.list_task_executions(task_ids=[action.task_id]):
                    if not execution.is_final:
                        await ona.stop_task_execution(execution.id)
                return Result()
            if kind is ActionKind.DELETE_TASK:
                await ona.delete_task(action.task_id, missing_ok=True)
                return Result()
        except errors.OnaError as exc:
            return Result(failure=remote.failed(exc))
        raise ValueError(f"action {kind.value} does not fit this TaskRun")


# Remote side effects that a delete must be able to clean up: the finalizer comes first.
_NEED_FINALIZER = frozenset(
    {
        ActionKind.CREATE_TASK,
        ActionKind.START,
        ActionKind.STOP,
        ActionKind.STOP_OWNED_EXECUTIONS,
        ActionKind.CREATE_ENVIRONMENT,
    }
)

# Actions that need no status written before them: look-ups, a task creation that a
# look-up by reference finds again after a crash, and a start, whose claim is written in
# the metadata (with the finalizer) before it.
# How many merge windows progress may wait while the reconcile queue is not empty.
BUSY_MERGE_FACTOR = 5


def merge_window(base: float, *, first: bool, busy: bool) -> float:
    """How long a status change that may wait is held after the TaskRun's last status
    write. The first write (the execution id) waits `base`, so the first news goes with
    it. Later progress waits `base` too, or BUSY_MERGE_FACTOR times that while TaskRuns
    wait in the reconcile queue: the API server is what they wait for, an end is never
    held, and a short run's progress then goes out with its end."""
    return base if first or not busy else base * BUSY_MERGE_FACTOR


_MAY_ACT_UNWRITTEN = frozenset(
    {
        ActionKind.FIND_OWNED_TASK,
        ActionKind.CREATE_TASK,
        ActionKind.RESOLVE_TASK_REF,
        ActionKind.FIND_EXECUTIONS,
        ActionKind.START,
        # Reads, and calls that change nothing when repeated after a crash. Creating an
        # environment is not among them: its claim is written first.
        ActionKind.GET_ENVIRONMENT,
        ActionKind.FIND_ENVIRONMENTS,
        ActionKind.START_ENVIRONMENT,
        ActionKind.MARK_ENVIRONMENT_ACTIVE,
    }
)


def _stalled(status: Status) -> bool:
    cond = status.condition(STALLED)
    return cond is not None and cond.status == "True"


def _finished(body: Mapping[str, Any]) -> bool:
    """Final (Succeeded True or False) and not being deleted."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (body.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == SUCCEEDED:
            return cond.get("status") in ("True", "False")
    return False


def _namespace(key: str) -> str:
    return key.split("/", 1)[0]


def _refused_token(result: Result) -> bool:
    failure = result.failure
    return failure is not None and failure.kind is FailureKind.UNAUTHENTICATED


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


def _same_object(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two bodies are of one object, not of two TaskRuns of the same name."""
    return not _uid(a) or not _uid(b) or _uid(a) == _uid(b)


def _rv(body: Mapping[str, Any]) -> int:
    raw = (body.get("metadata") or {}).get("resourceVersion", "")
    return int(raw) if str(raw).isdigit() else 0


def _retry_delay(failure: RemoteFailure, attempt: int) -> float:
    """Capped exponential backoff with jitter; a longer Retry-After from the server wins."""
    backoff = exponential(2.0, attempt, 60.0, jitter=random.random())
    return max(float(failure.retry_after or 0.0), backoff)


def _now() -> datetime:
    return datetime.now(UTC)
