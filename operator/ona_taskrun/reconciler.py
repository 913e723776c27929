"""The reconciler: a work queue of TaskRuns, each handled by the pure core.

kopf delivers every watch event here; the newest object per TaskRun is kept and its key
queued. A worker takes a key (never two workers the same key), asks `core.decide` what
to do, writes the status it returns with a resourceVersion precondition *before* acting,
performs the one action, folds the result back in with `core.apply_result`, and goes
round again until the core has nothing more to do, then requeues when the core asks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from . import core, environment_actions, environment_core, metrics
from .backoff import exponential
from .claims import KEY_FIELD, KEY_SECRET, SIGNATURE_ANNOTATION, ClaimSigner, new_key
from .connection_core import ConnectionKey, is_connection_key, key_for
from .connections import Connections, Remote
from .eventpost import EventPoster
from .kube import Conflict, Gone, KubeClient, KubeError
from .logtail import LogTails
from .ona import errors
from .remote import to_remote

log = logging.getLogger(__name__)
MAX_STEPS = 25
# Kubernetes-only actions: they never wait for the Ona API's back-off or breaker.
_LOCAL_ACTIONS = (
    core.ActionKind.ADD_FINALIZER,
    core.ActionKind.REMOVE_FINALIZER,
    core.ActionKind.DELETE_TASKRUN,
)


def key_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata", {})
    return f"{meta.get('namespace')}/{meta.get('name')}"


def parse_taskrun(body: Mapping[str, Any], signer: ClaimSigner | None = None) -> core.TaskRun:
    """The core's view of a TaskRun body. The start claim in its annotations counts only
    when `signer` verifies it as the operator's own (see `claims`); otherwise the claim
    the status mirrors is the run's."""
    meta = body.get("metadata", {})
    spec: core.Spec | core.InvalidSpec
    try:
        spec = core.parse_spec(body.get("spec") or {})
    except core.InvalidSpec as exc:
        spec = exc
    status = core.Status.from_dict(body.get("status"))
    claim = _claim_of(body, signer)
    if claim is not None and claim[1] < status.start_attempts:
        claim = None  # an older claim of this run, written back: the status is newer
    if claim is not None:
        status = replace(
            status, start_requested_at=claim[0], start_attempts=claim[1], claim_attempt=claim[2]
        )
    return core.TaskRun(
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=spec,
        status=status,
        deleting=bool(meta.get("deletionTimestamp")),
        has_finalizer=core.FINALIZER in (meta.get("finalizers") or ()),
        annotations=dict(meta.get("annotations") or {}),
    )


def _claim_of(body: Mapping[str, Any], signer: ClaimSigner | None) -> tuple[str, int, int] | None:
    """The start claim as the operator wrote it in the annotations (an empty time: no
    claim), with the StartTask count and the attempt it is for; None when the annotations
    hold no claim the operator signed (the status then says)."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if core.CLAIM_ANNOTATION not in annotations or signer is None:
        return None
    attempts = str(annotations.get(core.ATTEMPTS_ANNOTATION, "0"))
    attempt = str(annotations.get(core.CLAIM_ATTEMPT_ANNOTATION, "0"))
    if not (attempts.isdigit() and attempt.isdigit()) or len(attempts) + len(attempt) > 12:
        return None
    claim = (str(annotations[core.CLAIM_ANNOTATION]), int(attempts), int(attempt))
    signature = str(annotations.get(SIGNATURE_ANNOTATION, ""))
    if not signer.verify(str(meta.get("uid", "")), *claim, signature):
        return None
    return claim


def crash(point: str, wanted: str) -> None:
    """A crash point for tests only: die at once, as a SIGKILL would."""
    if point and point == wanted:
        log.warning("crash point %s reached: killing the operator", point)
        os.kill(os.getpid(), signal.SIGKILL)


class Reconciler:
    def __init__(
        self,
        connections: Connections,
        *,
        workers: int = 8,
        settings: core.Settings | None = None,
        crash_point: str = "",
        merge_window: float = 1.0,
        operator_namespace: str = "ona-system",
    ) -> None:
        self.connections = connections
        self._kube: KubeClient | None = None
        self.settings = settings or core.Settings()
        self.crash_point = crash_point
        self.merge_window = merge_window
        # Verifies the start claims in TaskRuns' annotations; loaded before the first
        # reconcile (initial_sync), from a Secret only the operator reads.
        self.claim_signer: ClaimSigner | None = None
        self.claim_key_secret = (operator_namespace, KEY_SECRET)
        self._objects: dict[str, dict[str, Any]] = {}
        self._claims: dict[str, str] = {}  # execution id -> key of the TaskRun holding it
        # Task id -> keys of TaskRuns whose StartTask of it awaits its answer.
        self._starts: dict[str, set[str]] = {}
        # Two lanes: news of a remote execution (urgent) goes before TaskRuns waiting to
        # start, so a finished run is mirrored at once even behind a backlog of starts.
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._queued: dict[str, int] = {}  # key -> its best lane while queued
        self._active: set[str] = set()
        self._dirty: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failures: dict[str, core.RemoteFailure] = {}
        self._attempts: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}  # loop time before which no remote call
        # A status decided but not written yet: news that can wait is merged into one
        # write per merge window (see _may_wait), newest first.
        self._unwritten: dict[str, core.Status] = {}
        self._written_at: dict[str, float] = {}  # loop time of the last status write
        # Events wait while TaskRuns wait to be reconciled (see eventpost).
        self.events = EventPoster(self._post_one, busy=lambda: not self._queue.empty())
        self._poster: asyncio.Task[None] | None = None
        # Log tails of ended runs, read beside the reconcile (see logtail).
        self.logtails = LogTails(enqueue=self.enqueue_urgent, post=self._post)
        self._workers = workers
        # Reconcilers of other kinds whose keys (`Kind:ns/name`) share this queue.
        self.handlers: dict[str, Callable[[str], Awaitable[float | None]]] = {}
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
        return self._objects.values()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"reconcile-{i}") for i in range(self._workers)
        ]
        self._poster = asyncio.create_task(self.events.run(), name="events")
        self.connections.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        await self.logtails.stop()
        if self._poster is not None:
            self._poster.cancel()
            await asyncio.gather(self._poster, return_exceptions=True)
        await self.events.flush(within=5.0)
        await self.connections.stop()

    # ------------------------------------------------------------------ intake

    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event from kopf: keep the newest object and queue it."""
        key = key_of(body)
        if event_type == "DELETED":
            old = self._objects.pop(key, None)
            if old is not None:
                self._forget(key, old)
            return
        old = self._objects.get(key)
        if old is not None and 0 < _rv(body) <= _rv(old):
            # Our own write coming back (its answer is already held), or an older event:
            # nothing new to decide on.
            return
        if old is None:
            self._written_at.setdefault(key, asyncio.get_running_loop().time())
        self._remember(key, dict(body))
        self.enqueue(key)

    def _remember(self, key: str, body: dict[str, Any]) -> None:
        old = self._objects.get(key)
        if old is not None and _rv(old) > _rv(body) > 0:
            return  # an older event than what our own write returned
        meta = body.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            # Nothing here reads them, and they are most of an object's size: at 10,000
            # TaskRuns they were most of the operator's memory.
            body["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        self._objects[key] = body
        execution = (body.get("status") or {}).get("taskExecutionId")
        if execution:
            self._claims[execution] = key
        for attempt in (body.get("status") or {}).get("attempts") or ():
            # Earlier attempts' executions stay this TaskRun's: no other may adopt them.
            if isinstance(attempt, Mapping) and attempt.get("executionId"):
                self._claims[str(attempt["executionId"])] = key

    def _forget(self, key: str, body: Mapping[str, Any]) -> None:
        execution = (body.get("status") or {}).get("taskExecutionId")
        if execution:
            self._claims.pop(execution, None)
            remote = self.connections.remote_for(_namespace(key), body.get("spec") or {})
            if remote is not None:
                remote.tracker.untrack(execution)
        remote = self.connections.remote_for(_namespace(key), body.get("spec") or {})
        if remote is not None:
            remote.environments.done(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        self._attempts.pop(key, None)
        self._retry_at.pop(key, None)
        self._unwritten.pop(key, None)
        self._written_at.pop(key, None)
        self.logtails.forget(key)

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
        log.info("read %d TaskRuns; reconciling", len(self._objects))
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
        for key, body in self._objects.items():
            try:
                ref = core.parse_connection_ref((body.get("spec") or {}).get("connectionRef"))
            except core.InvalidSpec:
                continue
            if key_for(_namespace(key), ref) == connection:
                self.enqueue(key)

    def enqueue(self, key: str, lane: int = 1) -> None:
        if key in self._active:
            self._dirty[key] = min(lane, self._dirty.get(key, lane))
        elif lane < self._queued.get(key, lane + 1):
            # Queued again in a better lane; the older entry is skipped when it comes up.
            self._queued[key] = lane
            self._queue.put_nowait((lane, next(self._order), key))
            metrics.queue_added(key)

    def enqueue_urgent(self, key: str) -> None:
        self.enqueue(key, lane=0)

    def _requeue(self, key: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        old = self._timers.get(key)
        if old is not None:
            if old.when() <= when:
                return
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        # A held status is news already decided: it goes before TaskRuns waiting to start.
        self.enqueue(key, lane=0 if key in self._unwritten else 1)

    # ------------------------------------------------------------------ workers

    async def _worker(self) -> None:
        while True:
            lane, _, key = await self._queue.get()
            if self._queued.get(key) != lane:
                continue  # a stale entry: the key was queued again in a better lane
            await self.synced.wait()
            await self.active.wait()
            self._queued.pop(key, None)
            started = metrics.queue_taken(key)
            self._active.add(key)
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
                self._active.discard(key)
                if key in self._dirty:
                    self.enqueue(key, self._dirty.pop(key))

    @contextlib.contextmanager
    def _starting(self, key: str, action: core.Action) -> Iterator[None]:
        """A StartTask from its call until its answer (whose execution is then held for
        the TaskRun at once): meanwhile, another TaskRun of the same task does not adopt
        an execution it finds (it may be this one's)."""
        if action.kind is not core.ActionKind.START or not action.task_id:
            yield
            return
        starting = self._starts.setdefault(action.task_id, set())
        starting.add(key)
        try:
            yield
        finally:
            starting.discard(key)
            if not starting:
                del self._starts[action.task_id]

    def _starts_in_flight(self, key: str, task_id: str) -> int:
        return len(self._starts.get(task_id, set()) - {key}) if task_id else 0

    def _claimed_elsewhere(self, key: str) -> frozenset[str]:
        return frozenset(e for e, k in self._claims.items() if k != key)

    def _reserve(self, key: str, run: core.TaskRun, decision: core.Decision) -> str:
        """An execution this TaskRun is about to record (an adoption) is held for it from
        the decision on, not from the write's answer: another TaskRun deciding meanwhile
        sees it taken. Returns the id newly held, to release if the write fails."""
        execution = decision.track
        if not execution or execution == run.status.task_execution_id:
            return ""
        if execution in self._claims:
            return ""  # already held (by this TaskRun: decide never adopts another's)
        self._claims[execution] = key
        return execution

    def _release(self, key: str, execution: str) -> None:
        """The write that would have recorded `execution` failed: hold it no longer,
        unless the TaskRun as last seen records it after all."""
        if not execution or self._claims.get(execution) != key:
            return
        body = self._objects.get(key) or {}
        if (body.get("status") or {}).get("taskExecutionId") != execution:
            del self._claims[execution]

    async def reconcile(self, key: str) -> None:
        body = self._objects.get(key)
        if body is None or self.kube is None:
            return
        obs = core.Observation()
        for _ in range(MAX_STEPS):
            run = self._parse(key, body)
            # The finalizer goes out with the first write that needs it (the start claim,
            # or before a task is created), not in a write of its own.
            finalizer_due = not run.has_finalizer and not run.deleting
            if finalizer_due:
                run = replace(run, has_finalizer=True)
            view, usable = await self.connections.view(_namespace(key), run)
            # A run the connection does not serve gets no remote read or action at all.
            remote = usable if view.access is not core.Access.REFUSED else None
            obs = replace(obs, connection=view)
            if remote is not None:
                obs = await self._observe_remote(key, run, obs, remote)
            if run.status.start_requested_at and not run.status.task_execution_id:
                # Only an adoption needs to know which executions other TaskRuns hold. Read
                # here, with no wait between this, the decision and the reservation below:
                # TaskRuns of one task deciding at once must not adopt the same execution.
                obs = replace(
                    obs,
                    claimed_elsewhere=self._claimed_elsewhere(key),
                    starts_in_flight=self._starts_in_flight(key, run.status.task_id),
                )
            decision = core.decide(run, obs, _now(), self.settings)
            decision = replace(decision, status=self.logtails.fold(key, decision.status))
            if self._backing_off(key, decision.action, remote):
                # Woken by a watch event (often our own write) before the back-off ends:
                # no remote call, and no claim written for a start that is not made now.
                return
            reserved = self._reserve(key, run, decision)
            written: dict[str, Any] | None = None
            try:
                written = await self._write_status(
                    key, body, run, decision.status, decision.action, finalizer_due
                )
            except Conflict:
                log.debug("%s changed while being reconciled (409); reading it again", key)
                body = await self._reread(key)
                if body is None:
                    return
                continue
            except Gone:
                return
            finally:
                if written is None:
                    self._release(key, reserved)
            wrote, body = written is not body, written
            await self._post(body, self.logtails.after_write(key, body, decision.events, remote))
            self._follow(key, body, decision, remote, run.status.task_execution_id)
            action = decision.action
            if action is None:
                if decision.requeue_after is not None:
                    self._requeue(key, decision.requeue_after)
                if wrote:
                    # What was just written may lead to a next step (a cleared claim to a
                    # new start): decide again now, since the write's own watch event is
                    # not reconciled.
                    continue
                return
            if action.kind is core.ActionKind.DELETE_TASKRUN:
                await self._delete_taskrun(body)
                return
            if action.kind in _LOCAL_ACTIONS:
                try:
                    body = await self._set_finalizer(body, action.kind)
                except Conflict:
                    body = await self._reread(key) or body
                except Gone:
                    return
                continue
            # The core acts remotely only through a usable connection.
            assert remote is not None, f"{action.kind.value} without a connection"
            run = replace(run, status=decision.status)
            if action.kind is core.ActionKind.START:
                crash(self.crash_point, "after-claim")
            if action.kind is core.ActionKind.STOP:
                crash(self.crash_point, "after-stop-claim")
            if action.kind is core.ActionKind.CREATE_ENVIRONMENT:
                crash(self.crash_point, "after-environment-claim")
            with self._starting(key, action):
                result = await self._perform_through(remote, action, run, body)
            if action.kind is core.ActionKind.CREATE_ENVIRONMENT:
                crash(self.crash_point, "after-environment-create")
            if result.failure is None:
                remote.answered()  # a failure was recorded as it came (Remote.failed)
            if action.kind is core.ActionKind.START:
                crash(self.crash_point, "after-start")
                if result.execution is not None:
                    log.info("%s: started execution %s", key, result.execution.id)
                    # Its own start: held for it from the answer on (no await since),
                    # though its record may wait for the merge window.
                    self._claims[result.execution.id] = key
            new_run, obs, events = core.apply_result(run, action, result, obs, _now())
            recorded = await self._write_result(key, body, run, action, result, obs)
            if recorded is None:
                return
            body = recorded
            await self._post(body, events)
            if result.failure is not None and result.failure.transient:
                self._failures[key] = result.failure
                self._attempts[key] = self._attempts.get(key, 0) + 1
                delay = _retry_delay(result.failure, self._attempts[key])
                self._retry_at[key] = asyncio.get_running_loop().time() + delay
                metrics.retried()
                self._requeue(key, delay)
                return
            self._failures.pop(key, None)
            self._attempts.pop(key, None)
            self._retry_at.pop(key, None)
            if new_run.status.task_execution_id and result.execution is not None:
                remote.tracker.observe(result.execution)
        log.warning("%s did not settle after %d steps; looking again later", key, MAX_STEPS)
        self._requeue(key, 5.0)

    async def _observe_remote(
        self, key: str, run: core.TaskRun, obs: core.Observation, remote: Remote
    ) -> core.Observation:
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
            if key in self._failures and obs.remote_failure is None:
                obs = replace(obs, remote_failure=self._failures[key])
            if run.status.start_requested_at and not remote.principal:
                await remote.ask_principal()
        return replace(obs, own_principal=remote.principal)

    def _backing_off(self, key: str, action: core.Action | None, remote: Remote | None) -> bool:
        """True while a remote action for this TaskRun must wait: for its own back-off,
        or for its connection's breaker while the Ona API keeps failing."""
        if action is None or action.kind in _LOCAL_ACTIONS or remote is None:
            return False
        retry_at = self._retry_at.get(key)
        remaining = retry_at - asyncio.get_running_loop().time() if retry_at else 0.0
        if remaining <= 0:
            remaining = remote.breaker.wait_time()
        if remaining <= 0:
            return False
        self._requeue(key, remaining)
        return True

    def _follow(
        self,
        key: str,
        body: Mapping[str, Any],
        decision: core.Decision,
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
                remote.environments.wait(decision.wait_environment, key)
            else:
                remote.environments.done(key)
        if decision.track and remote is not None:
            spec = body.get("spec") or {}
            env = (spec.get("task") or spec.get("taskRef") or {}).get("environmentId", "")
            env = env or status.environment_id
            remote.tracker.track(decision.track, key, status.task_id, env)
            self._claims[decision.track] = key
        elif (
            remote is not None
            and status.task_execution_id
            and (status.finished or parse_taskrun(body).deleting)
        ):
            remote.tracker.untrack(status.task_execution_id)

    # ------------------------------------------------------------------ writes

    async def _reread(self, key: str) -> dict[str, Any] | None:
        assert self.kube is not None
        namespace, name = key.split("/", 1)
        try:
            body = await self.kube.get_taskrun(namespace, name)
        except Gone:
            self._objects.pop(key, None)
            return None
        self._remember(key, body)
        return body

    def _parse(self, key: str, body: Mapping[str, Any]) -> core.TaskRun:
        """The TaskRun as the object says, with the status decided but not written yet:
        only this operator writes status, so what it holds is newer."""
        run = parse_taskrun(body, self.claim_signer)
        held = self._unwritten.get(key)
        return run if held is None else replace(run, status=held)

    async def _write_status(
        self,
        key: str,
        body: dict[str, Any],
        run: core.TaskRun,
        status: core.Status,
        action: core.Action | None,
        finalizer_due: bool = False,
    ) -> dict[str, Any]:
        """Write the start claim (with the finalizer, if it is still due) in one
        conditional metadata write; then the status, or hold it to merge with what comes
        next (see _may_wait)."""
        body = await self._write_claim(body, status, action, finalizer_due)
        old = body.get("status") or {}
        new = status.to_dict()
        patch = core.status_patch(old, new)
        if not patch:
            self._unwritten.pop(key, None)
            return body
        loop = asyncio.get_running_loop()
        if self._may_wait(run, status, action, old):
            if action is not None:
                # A call whose outcome is recorded right after it (the start claim, if
                # any, is in the annotations already): this goes out with that outcome.
                self._unwritten[key] = status
                return body
            window = merge_window(
                self.merge_window,
                first=not old.get("taskExecutionId"),
                busy=not self._queue.empty(),
            )
            due = self._written_at.get(key, loop.time()) + window
            if loop.time() < due:
                self._unwritten[key] = status
                self._requeue(key, due - loop.time())
                return body
        assert self.kube is not None
        meta = body["metadata"]
        updated = await self.kube.patch_status(
            meta["namespace"], meta["name"], patch, meta["resourceVersion"]
        )
        self._unwritten.pop(key, None)
        self._written_at[key] = loop.time()
        self._remember(key_of(updated), updated)
        metrics.taskrun_written(body, updated)
        return updated

    async def _write_claim(
        self,
        body: dict[str, Any],
        status: core.Status,
        action: core.Action | None,
        finalizer_due: bool,
    ) -> dict[str, Any]:
        meta = body["metadata"]
        written = _claim_of(body, self.claim_signer)
        if written is None:
            before = core.Status.from_dict(body.get("status"))
            written = (before.start_requested_at, before.start_attempts, 0)
        patch: dict[str, Any] = {}
        wanted = (status.start_requested_at, status.start_attempts, status.claim_attempt)
        if wanted[:2] != written[:2] or (status.start_requested_at and wanted[2] != written[2]):
            assert self.claim_signer is not None, "no TaskRun is reconciled before the key"
            signature = self.claim_signer.sign(str(meta.get("uid", "")), *wanted)
            patch["annotations"] = {
                core.CLAIM_ANNOTATION: status.start_requested_at,
                core.ATTEMPTS_ANNOTATION: str(status.start_attempts),
                core.CLAIM_ATTEMPT_ANNOTATION: str(status.claim_attempt),
                SIGNATURE_ANNOTATION: signature,
            }
        needs_finalizer = bool(patch) or (action is not None and action.kind in _NEED_FINALIZER)
        if finalizer_due and needs_finalizer:
            patch["finalizers"] = [*(meta.get("finalizers") or []), core.FINALIZER]
        if not patch:
            return body
        assert self.kube is not None
        updated = await self.kube.patch_metadata(
            meta["namespace"], meta["name"], patch, meta["resourceVersion"]
        )
        self._remember(key_of(updated), updated)
        return updated

    def _may_wait(
        self,
        run: core.TaskRun,
        status: core.Status,
        action: core.Action | None,
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
        succeeded = status.condition(core.SUCCEEDED)
        if succeeded is not None and succeeded.reason == "Adopted":
            return False  # the end of an unknown start: say so at once, as itself
        # The start claim is the annotations' (already written); its mirror can wait.
        before = core.Status.from_dict(written)
        if len(status.attempts) != len(before.attempts):
            return False  # the move to a next attempt (spec.retries) is written first
        return status.stop_requested_at == before.stop_requested_at and _stalled(
            status
        ) == _stalled(before)

    async def _write_result(
        self,
        key: str,
        body: dict[str, Any],
        run: core.TaskRun,
        action: core.Action,
        result: core.Result,
        obs: core.Observation,
    ) -> dict[str, Any] | None:
        """Record an action's outcome; on a conflict re-read and fold it in again, so an
        execution id is never lost to a concurrent edit of the TaskRun."""
        for _ in range(10):
            new_run, _, _ = core.apply_result(run, action, result, obs, _now())
            try:
                return await self._write_status(key, body, new_run, new_run.status, None)
            except Conflict:
                log.debug("%s changed before %s was recorded (409); again", key, action.kind)
                fresh = await self._reread(key)
                if fresh is None:
                    return None
                body, run = fresh, self._parse(key, fresh)
            except Gone:
                return None
        raise KubeError(409, f"could not record the outcome of {action.kind.value} for {key}")

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

    async def _set_finalizer(self, body: dict[str, Any], kind: core.ActionKind) -> dict[str, Any]:
        assert self.kube is not None
        meta = body["metadata"]
        current = list(meta.get("finalizers") or [])
        if kind is core.ActionKind.ADD_FINALIZER:
            wanted = [*current, core.FINALIZER]
        else:
            wanted = [f for f in current if f != core.FINALIZER]
        updated = await self.kube.set_finalizers(
            meta["namespace"], meta["name"], wanted, meta["resourceVersion"]
        )
        self._remember(key_of(updated), updated)
        return updated

    async def _post(self, body: Mapping[str, Any], events: tuple[core.Event, ...]) -> None:
        """Queue Events to be posted beside the reconcile, not in it: they are best effort,
        and a worker waiting on one is a TaskRun not being started."""
        if self.kube is None:
            return
        for event in events:
            log.info("%s: %s: %s", key_of(body), event.reason, event.message)
            self.events.submit(body, event)

    async def _post_one(self, body: Mapping[str, Any], event: core.Event) -> None:
        if self.kube is not None:
            await self.kube.post_event(body, event.type, event.reason, event.message)

    # ------------------------------------------------------------------ actions

    async def _perform_through(
        self, remote: Remote, action: core.Action, run: core.TaskRun, body: Mapping[str, Any]
    ) -> core.Result:
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
        self, remote: Remote, action: core.Action, run: core.TaskRun, body: Mapping[str, Any]
    ) -> core.Result:
        spec = run.spec if isinstance(run.spec, core.Spec) else None
        kind = action.kind
        ona = remote.client
        if kind in environment_core.ACTIONS:
            name = key_of(body).split("/", 1)[-1]
            return await environment_actions.perform(remote, action, run, name)
        try:
            if kind is core.ActionKind.START:
                execution = await ona.start_task(action.task_id)
                remote.principal = execution.metadata.creator.id or remote.principal
                return core.Result(execution=to_remote(execution))
            if kind is core.ActionKind.FIND_OWNED_TASK and spec and spec.task:
                ref = core.task_reference(run.uid)
                env_id = spec.task.environment_id or run.status.environment_id
                tasks = await ona.list_tasks(references=[ref], environment_ids=[env_id])
                if not tasks:
                    return core.Result(missing=True)
                remote.principal = remote.principal or tasks[0].metadata.creator.id
                return core.Result(task_id=tasks[0].id)
            if kind is core.ActionKind.CREATE_TASK and spec and spec.task:
                task = spec.task
                created = await ona.create_task(
                    task.environment_id or run.status.environment_id,
                    task.name,
                    task.command,
                    reference=core.task_reference(run.uid),
                    description=task.description or f"TaskRun {key_of(body)}",
                    env=dict(task.env),
                    runs_on=task.runs_on,
                    depends_on=task.depends_on,
                )
                remote.principal = created.metadata.creator.id or remote.principal
                return core.Result(task_id=created.id)
            if kind is core.ActionKind.RESOLVE_TASK_REF and spec and spec.task_ref:
                task_ref = spec.task_ref
                tasks = await ona.list_tasks(
                    references=[task_ref.reference or ""],
                    environment_ids=[task_ref.environment_id or ""],
                )
                return core.Result(task_id=tasks[0].id) if tasks else core.Result(missing=True)
            if kind is core.ActionKind.FIND_EXECUTIONS:
                found = await ona.list_task_executions(task_ids=[action.task_id])
                return core.Result(candidates=tuple(to_remote(e) for e in found))
            if kind is core.ActionKind.STOP:
                await ona.stop_task_execution(action.execution_id)
                return core.Result()
            if kind is core.ActionKind.STOP_OWNED_EXECUTIONS:
                for execution in await ona.list_task_executions(task_ids=[action.task_id]):
                    if not execution.is_final:
                        await ona.stop_task_execution(execution.id)
                return core.Result()
            if kind is core.ActionKind.DELETE_TASK:
                await ona.delete_task(action.task_id, missing_ok=True)
                return core.Result()
        except errors.OnaError as exc:
            return core.Result(failure=remote.failed(exc))
        raise ValueError(f"action {kind.value} does not fit this TaskRun")


# Remote side effects that a delete must be able to clean up: the finalizer comes first.
_NEED_FINALIZER = frozenset(
    {
        core.ActionKind.CREATE_TASK,
        core.ActionKind.START,
        core.ActionKind.STOP,
        core.ActionKind.STOP_OWNED_EXECUTIONS,
        core.ActionKind.CREATE_ENVIRONMENT,
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
        core.ActionKind.FIND_OWNED_TASK,
        core.ActionKind.CREATE_TASK,
        core.ActionKind.RESOLVE_TASK_REF,
        core.ActionKind.FIND_EXECUTIONS,
        core.ActionKind.START,
        # Reads, and calls that change nothing when repeated after a crash. Creating an
        # environment is not among them: its claim is written first.
        core.ActionKind.GET_ENVIRONMENT,
        core.ActionKind.FIND_ENVIRONMENTS,
        core.ActionKind.START_ENVIRONMENT,
        core.ActionKind.MARK_ENVIRONMENT_ACTIVE,
    }
)


def _stalled(status: core.Status) -> bool:
    cond = status.condition(core.STALLED)
    return cond is not None and cond.status == "True"


def _namespace(key: str) -> str:
    return key.split("/", 1)[0]


def _refused_token(result: core.Result) -> bool:
    failure = result.failure
    return failure is not None and failure.kind is core.FailureKind.UNAUTHENTICATED


def _rv(body: Mapping[str, Any]) -> int:
    raw = (body.get("metadata") or {}).get("resourceVersion", "")
    return int(raw) if str(raw).isdigit() else 0


def _retry_delay(failure: core.RemoteFailure, attempt: int) -> float:
    """Capped exponential backoff with jitter; a longer Retry-After from the server wins."""
    backoff = exponential(2.0, attempt, 60.0, jitter=random.random())
    return max(float(failure.retry_after or 0.0), backoff)


def _now() -> datetime:
    return datetime.now(UTC)
