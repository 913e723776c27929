"""Ona connections at the edge: the OnaConnection and ClusterOnaConnection objects the
operator watches, the Secrets they name, and one `Remote` per usable connection.

A `Remote` is everything that talks to Ona for one connection: its client (base URL and
token), circuit breaker, execution tracker and learned principal. Nothing is shared
between connections, so an execution is never read or stopped with another connection's
token. The default connection is the operator-level token (ONA_API_TOKEN / file).

Secrets are read by name only (no list, no watch): when a connection is looked at, at a
steady interval, and at once after the Ona API refuses a token (a rotation).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..clients.kube import CLUSTER_CONNECTIONS, CONNECTIONS, Conflict, Gone, KubeClient, KubeError
from ..clients.ona import NO_OBSERVER, OnaClient, OnaObserver, RetryPolicy, errors
from ..clients.ratelimit import TokenBucket
from ..clients.throttle import Throttle
from ..observability import logs
from ..observability.metrics import connection_label
from ..rules import selectors
from ..rules.backoff import exponential
from ..rules.capacity import DEFAULT_REQUESTS_PER_SECOND, NO_LIMITS, Limits
from ..rules.conditions import status_patch
from ..rules.connection import (
    DEFAULT_CONNECTION,
    ONA_ONLY,
    AllowedUrls,
    Check,
    ConnectionKey,
    ConnectionSpec,
    Identity,
    InvalidConnection,
    Policy,
    Readiness,
    SecretState,
    check_policy,
    connection_status,
    key_for,
    key_of,
    parse_connection,
    readiness,
)
from ..rules.model import (
    ADOPT_ANNOTATION,
    READY,
    Access,
    ConnectionView,
    FailureKind,
    InvalidSpec,
    RemoteExecution,
    RemoteFailure,
    Spec,
    TaskRun,
)
from ..rules.spec import parse_connection_ref
from .breaker import CircuitBreaker
from .environment_watch import EnvironmentWatch
from .lru import Lru
from .remote import is_outage, to_failure, unserved_method
from .tracker import ExecutionTracker

log = logging.getLogger(__name__)
# The tasks' environments a connection keeps: more than the runs at once of a busy one.
TASK_ENVIRONMENTS_KEPT = 4096
NAMESPACE_LABELS_TTL = 10.0


@dataclass(frozen=True)
class RemoteSettings:
    request_timeout: float = 10.0
    poll_interval: float = 5.0
    max_watches: int = 100  # WatchEvents streams per connection
    # What the connection's calls and watches report to (the operator's metrics).
    observer: OnaObserver = NO_OBSERVER
    on_watch_reconnect: Callable[[], None] | None = None


class Remote:
    """One connection's side of the Ona API."""

    def __init__(
        self,
        key: ConnectionKey,
        base_url: str,
        token: str,
        settings: RemoteSettings,
        notify: Callable[[str], None],
        on_unauthenticated: Callable[[], None],
        on_unserved: Callable[[str], None] | None = None,
    ) -> None:
        self.key = key
        # The connection's own: its rate limit holds back its calls, no other's.
        throttle = Throttle(connection_label(key), settings.observer)
        self.client = OnaClient(
            base_url,
            token,
            timeout=settings.request_timeout,
            connect_timeout=min(settings.request_timeout, 5.0),
            retry=RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=5.0),
            observer=settings.observer,
            throttle=throttle,
            rate=TokenBucket(DEFAULT_REQUESTS_PER_SECOND),
        )
        self.breaker = CircuitBreaker(throttle=throttle)
        # Methods this connection's API answered `unimplemented`, each told once through
        # on_unserved (the connection's Event and status.unservedMethods).
        self.unserved: set[str] = set()
        self._on_unserved = on_unserved
        # Wakes TaskRuns waiting for their environment (spec.environment) when it changes.
        self.environments = EnvironmentWatch(self.client, notify)
        self.tracker = ExecutionTracker(
            self.client,
            notify,
            poll_interval=settings.poll_interval,
            on_unauthenticated=on_unauthenticated,
            max_watches=settings.max_watches,
            on_watch_reconnect=settings.on_watch_reconnect,
        )
        # The Ona subject this connection's token acts as; adopting an execution of a
        # referenced task needs it.
        self.principal = ""
        self._principal_retry_at = 0.0
        self._warned = False
        # A task's environment never changes: learned once for the environment policy, and
        # kept for the tasks used most lately (one more GetTask for a task not seen for long).
        self.task_environments: Lru[str, str] = Lru(TASK_ENVIRONMENTS_KEPT)
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def start(self) -> None:
        self._task = asyncio.create_task(self.tracker.run(), name=f"tracker {self.key}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.environments.close()
        await self.client.aclose()

    def failed(self, exc: errors.OnaError) -> RemoteFailure:
        """A call made for a TaskRun failed: what it means for the run. Only an outage
        (`is_outage`) counts toward the breaker; any other answer shows the API is up. A
        429 is the throttle's to answer, and counts as an outage only once the API has
        answered nothing else for a while (`Throttle.persistent`). A method the server
        does not serve is reported for the connection, once."""
        outage = is_outage(exc)
        if isinstance(exc, errors.RateLimited):
            outage = self.client.throttle.persistent
        self._record(outage=outage)
        self.note_unserved(exc)
        return to_failure(exc)

    def answered(self) -> None:
        """A call made for a TaskRun succeeded."""
        self._record(outage=False)

    def _record(self, *, outage: bool) -> None:
        opened_before = self.breaker.opened
        self.breaker.record(ok=not outage)
        if self.breaker.opened > opened_before:
            log.warning("the Ona API keeps failing through %s: pausing its remote calls", self.key)

    def note_unserved(self, exc: errors.OnaError) -> None:
        method = unserved_method(exc)
        if method and method not in self.unserved:
            self.unserved.add(method)
            if self._on_unserved is not None:
                self._on_unserved(method)

    async def ask_principal(self) -> None:
        """Ask the API who the token acts as, at most every 30 s while it fails."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._principal_retry_at:
            return
        self._principal_retry_at = loop.time() + 30.0
        try:
            identity = await self.client.get_authenticated_identity()
        except errors.OnaError as exc:
            self.note_unserved(exc)
            log.info("cannot learn the principal of %s yet: %s", self.key, exc)
            return
        self.principal = self.principal or identity.subject.id

    def learn_principal(self, run: TaskRun, execution: RemoteExecution | None) -> None:
        # Only executions this operator started itself (not adopted by a person) count.
        started_here = run.status.start_attempts > 0
        adopted_by_hand = ADOPT_ANNOTATION in run.annotations
        if execution is not None and execution.creator_id and started_here and not adopted_by_hand:
            if self.principal and self.principal != execution.creator_id and not self._warned:
                # Expected once after a rotation to a token of another subject.
                self._warned = True
                log.warning("executions started through %s show different creators", self.key)
            self.principal = self.principal or execution.creator_id


@dataclass
class _Look:
    """What is remembered of one named connection between looks."""

    identity: Identity | None = None
    failure: RemoteFailure | None = None
    check_at: float = 0.0  # loop time of the next identity check
    readiness: Readiness | None = None
    misses: int = 0  # looks in a row that found no usable Secret


@dataclass(frozen=True)
class Settings:
    operator_namespace: str = "ona-system"
    default_base_url: str = "https://app.ona.com/api"
    # Which namespaces may use the default connection.
    default_namespaces: selectors.LabelSelector = selectors.NOTHING
    default_limits: Limits = NO_LIMITS  # the default connection's spec.limits (settings)
    # The base URLs a connection may send its token to.
    allowed_urls: AllowedUrls = ONA_ONLY
    recheck_seconds: float = 300.0  # how often a token is asked who it acts as
    secret_resync_seconds: float = 60.0  # how often a connection's Secret is read again


class Connections:
    """The registry: connection objects, their Remotes, and a TaskRun's view of its own."""

    def __init__(
        self,
        settings: Settings,
        remote_settings: RemoteSettings,
        *,
        notify_taskrun: Callable[[str], None],
        enqueue: Callable[[str], None],
        wake_users: Callable[[ConnectionKey], None],
        default_token: str | None = None,
        default_token_file: str | None = None,
    ) -> None:
        self.settings = settings
        self.remote_settings = remote_settings
        self.kube: KubeClient | None = None
        self._notify_taskrun = notify_taskrun
        self._enqueue = enqueue
        self._wake_users = wake_users
        self._default_token = default_token
        self._default_token_file = default_token_file
        self._bodies: dict[ConnectionKey, dict[str, Any]] = {}
        self._looks: dict[ConnectionKey, _Look] = {}
        self._remotes: dict[ConnectionKey, Remote] = {}
        self._namespace_labels: dict[str, tuple[float, dict[str, str]]] = {}
        self._closing: set[asyncio.Task[object]] = set()  # work under way in the background
        self._default_policy = Policy(
            namespaces=settings.default_namespaces,
            namespaces_from="DEFAULT_CONNECTION_NAMESPACE_SELECTOR",
            limits=settings.default_limits,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._default_token:
            self._open(DEFAULT_CONNECTION, self.settings.default_base_url, self._default_token)

    async def stop(self) -> None:
        remotes = list(self._remotes.values())
        self._remotes.clear()
        await asyncio.gather(*(r.close() for r in remotes), return_exceptions=True)

    def remotes(self) -> list[Remote]:
        return list(self._remotes.values())

    def remote(self, key: ConnectionKey) -> Remote | None:
        return self._remotes.get(key)

    def remote_for(self, namespace: str, spec: Mapping[str, Any]) -> Remote | None:
        """The Remote a TaskRun body's spec names, if it is usable."""
        try:
            ref = parse_connection_ref(spec.get("connectionRef"))
        except InvalidSpec:
            return None
        return self._remotes.get(key_for(namespace, ref))

    def _open(self, key: ConnectionKey, base_url: str, token: str) -> Remote:
        remote = Remote(
            key,
            base_url,
            token,
            self.remote_settings,
            self._notify_taskrun,
            lambda: self.token_refused(key),
            lambda method: self._unserved(key, method),
        )
        remote.start()
        self._remotes[key] = remote
        self._set_rate(key)
        return remote

    def _set_rate(self, key: ConnectionKey) -> None:
        """The connection's spec.limits.requestsPerSecond, on its client."""
        remote = self._remotes.get(key)
        if remote is not None and remote.client.rate is not None:
            remote.client.rate.set_rate(self.limits(key).requests_per_second)

    async def _drop(self, key: ConnectionKey) -> None:
        remote = self._remotes.pop(key, None)
        if remote is not None:
            log.info("%s can no longer be used; its client is closed", key)
            await remote.close()

    # ------------------------------------------------------------------ intake

    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event of an OnaConnection or ClusterOnaConnection."""
        key = key_of(body)
        if event_type == "DELETED":
            self._bodies.pop(key, None)
            self._looks.pop(key, None)
            remote = self._remotes.pop(key, None)
            if remote is not None:
                log.info("%s was deleted; its client is closed", key)
                self._background(remote.close())
            self._wake_users(key)
            return
        old = self._bodies.get(key)
        if old is not None and _rv(old) > _rv(body) > 0:
            return
        self._bodies[key] = dict(body)
        self._set_rate(key)
        # A status-only change (most often our own write) needs no new look.
        if old is None or _generation(old) != _generation(body):
            self._enqueue(key.queue_key)

    def token_refused(self, key: ConnectionKey) -> None:
        """The Ona API answered 401 for this connection: read its Secret again now."""
        if key.default:
            # The operator's own token file may have been rotated: read it again.
            if self._default_token_file:
                self._background(self.reload(key))
            return
        look = self._looks.get(key)
        if look is not None:
            look.check_at = 0.0
        self._enqueue(key.queue_key)

    def _unserved(self, key: ConnectionKey, method: str) -> None:
        """The connection's API answered that it does not serve `method`, for the first
        time since the connection was opened: say so once, on the connection (a Warning
        Event and status.unservedMethods), or in the log for the default connection,
        which has no object."""
        remote = self._remotes.get(key)
        where = f" at {remote.base_url}" if remote is not None else ""
        message = (
            f"the Ona API{where} does not serve {method}: runs that need it say so in their "
            "conditions instead of retrying, and the calls of other runs go on"
        )
        log.warning("%s: %s", key, message)
        body = self._bodies.get(key)
        if key.default or body is None or self.kube is None:
            return
        self._background(self._post_warning(key, body, "MethodNotServed", message))
        self._enqueue(key.queue_key)  # writes status.unservedMethods

    async def _post_warning(
        self, key: ConnectionKey, body: Mapping[str, Any], reason: str, message: str
    ) -> None:
        assert self.kube is not None
        target = dict(body)
        # A listed object comes without its kind; the Event must name it.
        target.setdefault("kind", key.kind)
        try:
            await self.kube.post_event(target, "Warning", reason, message)
        except KubeError as exc:
            log.warning("cannot post the %s Event on %s: %s", reason, key, exc)

    def _background(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def list_all(self, namespaces: tuple[str, ...], *, check: bool = True) -> None:
        """Read every connection once (before TaskRuns are reconciled) and, on the active
        replica, look at each, so a TaskRun that names one does not wait for a first check
        that is under way."""
        assert self.kube is not None
        bodies: list[dict[str, Any]] = []
        for plural, scopes in (
            (CONNECTIONS, namespaces or (None,)),
            (CLUSTER_CONNECTIONS, (None,)),
        ):
            for namespace in scopes:
                try:
                    bodies += await self.kube.list_objects(plural, namespace)
                except Gone:
                    log.warning(
                        "the %s CRD is not installed: connections of that kind are off", plural
                    )
        for body in bodies:
            self._bodies[key_of(body)] = body
        if check:  # a standby looks once it leads, through the queue
            looks = asyncio.gather(*(self.reconcile(k.queue_key) for k in list(self._bodies)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(looks, self.remote_settings.request_timeout * 2)
        for key in list(self._bodies):
            self._enqueue(key.queue_key)
        log.info("read %d Ona connections", len(bodies))

    # ------------------------------------------------------------------ looking

    async def reload(self, key: ConnectionKey) -> bool:
        """Read the token again (the Secret, or the operator's token file); True if it
        changed and the next call will use the new one."""
        remote = self._remotes.get(key)
        if remote is None:
            return False
        if key.default:
            if not self._default_token_file:
                return False
            token = _read_token_file(self._default_token_file)
            return bool(token) and remote.client.set_token(token)
        body = self._bodies.get(key)
        if body is None or self.kube is None:
            return False
        try:
            spec = self._parse(body)
            state, token = await self._read_secret(spec.secret)
        except (InvalidConnection, KubeError):
            return False
        if state is not SecretState.FOUND or not remote.client.set_token(token):
            return False
        log.info("the token of %s changed; using the new one", key)
        self.token_refused(key)  # check who the new token is, and say so in the status
        return True

    async def reconcile(self, queue_key: str) -> float | None:
        """Look at one connection: its spec, Secret and token. Returns when to look again."""
        key = ConnectionKey.from_queue_key(queue_key)
        body = self._bodies.get(key)
        if body is None or self.kube is None:
            return None
        look = self._looks.setdefault(key, _Look())
        check = await self._check(key, body, look)
        ready = readiness(check)
        changed = ready != look.readiness
        look.readiness = ready
        if changed:
            level = logging.INFO if ready.ready else logging.WARNING
            log.log(level, "%s: Ready=%s (%s) %s", key, ready.status, ready.reason, ready.message)
        requeue = await self._write_status(key, body, check)
        if changed:
            self._wake_users(key)
        loop_now = asyncio.get_running_loop().time()
        if key not in self._remotes:
            look.misses += 1
            return exponential(2.5, min(look.misses, 6), self.settings.secret_resync_seconds)
        look.misses = 0
        wait = min(self.settings.secret_resync_seconds, max(look.check_at - loop_now, 0.5))
        return min(wait, requeue) if requeue is not None else wait

    async def _check(self, key: ConnectionKey, body: Mapping[str, Any], look: _Look) -> Check:
        try:
            spec = self._parse(body)
        except InvalidConnection as exc:
            await self._drop(key)
            return Check(invalid=str(exc), invalid_reason=exc.reason)
        try:
            state, token = await self._read_secret(spec.secret)
        except KubeError as exc:
            # The API server did not answer: keep using what we have, and say so.
            failure = RemoteFailure(
                FailureKind.UNAVAILABLE,
                f"cannot read {spec.secret}: {exc}",
                reason="SecretUnreadable",
            )
            return Check(secret_ref=spec.secret, identity=None, failure=failure)
        if state is not SecretState.FOUND:
            await self._drop(key)
            return Check(secret=state, secret_ref=spec.secret)
        remote = self._remotes.get(key)
        rotated = False
        if remote is None or remote.base_url != spec.base_url:
            await self._drop(key)
            remote = self._open(key, spec.base_url, token)
            rotated = True
        elif remote.client.set_token(token):
            log.info("the token of %s changed; using the new one", key)
            rotated = True
        loop = asyncio.get_running_loop()
        asked = rotated or loop.time() >= look.check_at
        if asked:
            try:
                found = await remote.client.get_authenticated_identity()
            except errors.OnaError as exc:
                remote.note_unserved(exc)
                failure = to_failure(exc)
                if failure.kind.transient and look.identity is None:
                    look.identity = _last_identity(body)  # as an earlier replica saw it
                if failure.kind.transient and look.identity is not None:
                    # An outage says nothing about the token: trust the last answer, so a
                    # restart during API trouble does not hold up the connection's runs.
                    look.check_at = loop.time() + min(5.0, self.settings.recheck_seconds)
                    remote.principal = remote.principal or look.identity.subject_id
                else:
                    look.identity, look.failure = None, failure
                    retry = 5.0 if failure.kind.transient else 30.0
                    look.check_at = loop.time() + min(retry, self.settings.recheck_seconds)
            else:
                look.identity = Identity(
                    subject_id=found.subject.id,
                    principal=found.subject.principal.value,
                    organization_id=found.organization_id,
                )
                look.failure = None
                look.check_at = loop.time() + self.settings.recheck_seconds
                if rotated or not remote.principal:
                    remote.principal = found.subject.id
        return Check(
            secret_ref=spec.secret, identity=look.identity, failure=look.failure, asked=asked
        )

    async def _read_secret(self, ref: Any) -> tuple[SecretState, str]:
        assert self.kube is not None
        try:
            secret = await self.kube.get_secret(ref.namespace, ref.name)
        except Gone:
            return SecretState.MISSING, ""
        raw = (secret.get("data") or {}).get(ref.key)
        if raw is None:
            return SecretState.KEY_MISSING, ""
        try:
            token = base64.b64decode(raw, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            return SecretState.EMPTY, ""
        if not token:
            return SecretState.EMPTY, ""
        logs.protect(token)
        return SecretState.FOUND, token

    async def _write_status(
        self, key: ConnectionKey, body: Mapping[str, Any], check: Check
    ) -> float | None:
        """Write the connection's status if it changed; a delay if it must be tried again."""
        assert self.kube is not None
        old = body.get("status") or {}
        meta = body.get("metadata") or {}
        remote = self._remotes.get(key)
        if remote is not None and remote.unserved:
            check = replace(check, unserved_methods=tuple(sorted(remote.unserved)))
        new = connection_status(old, _generation(body), check, datetime.now(UTC))
        patch = status_patch(old, new)
        if not patch:
            return None
        plural = CONNECTIONS if key.namespace else CLUSTER_CONNECTIONS
        try:
            updated = await self.kube.patch_status(
                key.namespace, key.name, patch, str(meta.get("resourceVersion", "")), plural=plural
            )
        except Conflict:
            return 1.0  # the watch brings the newer object; write again then
        except Gone:
            return None
        except KubeError as exc:
            log.warning("cannot write the status of %s: %s", key, exc)
            return 5.0
        updated.setdefault("kind", body.get("kind"))
        if key in self._bodies:
            self._bodies[key] = updated
        return None

    # ------------------------------------------------------------------ a TaskRun's view

    async def view(self, namespace: str, run: TaskRun) -> tuple[ConnectionView, Remote | None]:
        """Whether this TaskRun may go on through its connection, and the Remote to use.

        The namespace rule and the connection's policy are asked before every remote action
        for the run (create, start, adopt, stop, read logs, clean up), whatever its
        annotations say: what a TaskRun's author writes is a request, never authority. The
        rules that need no Ona call come first, so a refusal never waits for the connection
        to be ready. Only a run not yet claimed waits for the connection to be Ready and
        has its task's environment looked up; a claimed run (the claim is the operator's
        own, see `claims`) is checked against what is already known of it.
        """
        spec = run.spec
        ref = spec.connection_ref if isinstance(spec, Spec) else None
        key = key_for(namespace, ref)
        remote = self._remotes.get(key)
        if remote is None and (key.default or key not in self._bodies):
            return self._missing(key), None
        policy = self._default_policy if key.default else self._policy(key)
        if policy is None:
            # A policy that cannot be read allows nothing (and the connection says why).
            return self._missing(key), None
        status = run.status
        parsed = spec if isinstance(spec, Spec) else None
        environment_id = (parsed.environment_id if parsed else None) or ""
        task_id = status.task_id or (parsed.task_ref.id if parsed and parsed.task_ref else "")
        if not environment_id and remote is not None:
            environment_id = remote.task_environments.get(task_id or "", "")
        project = parsed.environment.from_project if parsed and parsed.environment else None
        claimed = bool(status.task_execution_id or status.start_requested_at)
        settled = claimed or run.deleting or status.finished or parsed is None
        lookup = bool(policy.environment_ids) and not environment_id and project is None
        # The environment rule waits for the one read that tells the task's environment; a
        # run past its start was checked by it then (a task's environment never changes).
        local = replace(policy, environment_ids=frozenset()) if lookup else policy
        refused = await self._refusal(key, local, namespace, parsed, environment_id)
        if refused is not None or remote is None:
            return refused or self._missing(key), remote
        if settled:
            return READY, remote
        assert parsed is not None
        if not key.default:
            look = self._looks.get(key)
            ready = look.readiness if look is not None else None
            if ready is None or not ready.ready:
                why = ready or readiness(Check())
                return _waiting(why.reason, f"{key} is not ready: {why.message}"), remote
        if lookup:
            found = await self._task_environment(remote, task_id or "")
            if isinstance(found, ConnectionView):
                return found, remote
            refused = await self._refusal(key, policy, namespace, parsed, found)
        return refused or READY, remote

    def limits(self, key: ConnectionKey) -> Limits:
        """The connection's spec.limits; none for the default connection or for one whose
        spec cannot be read (it serves no run then)."""
        policy = self._default_policy if key.default else self._policy(key)
        return policy.limits if policy is not None else NO_LIMITS

    def _policy(self, key: ConnectionKey) -> Policy | None:
        """The connection's policy; None when its spec cannot be read (allow nothing)."""
        body = self._bodies.get(key)
        if body is None:
            return None
        try:
            return parse_connection(
                body, operator_namespace=self.settings.operator_namespace
            ).policy
        except InvalidConnection:
            return None

    def _parse(self, body: Mapping[str, Any]) -> ConnectionSpec:
        return parse_connection(
            body,
            operator_namespace=self.settings.operator_namespace,
            allowed_urls=self.settings.allowed_urls,
        )

    def _missing(self, key: ConnectionKey) -> ConnectionView:
        if key.default:
            return _waiting(
                "NoDefaultConnection",
                "spec.connectionRef is not set and the operator has no Ona token of its own "
                "(ONA_API_TOKEN): name an OnaConnection or ClusterOnaConnection in "
                "spec.connectionRef",
            )
        look = self._looks.get(key)
        if key not in self._bodies:
            return _waiting("ConnectionNotFound", f"{key} does not exist")
        ready = look.readiness if look is not None else None
        why = ready or readiness(Check())
        return _waiting(why.reason, f"{key} cannot be used: {why.message}")

    async def _refusal(
        self,
        key: ConnectionKey,
        policy: Policy,
        namespace: str,
        spec: Spec | None,
        environment_id: str,
    ) -> ConnectionView | None:
        """A refusal (or a wait, if the namespace cannot be read) under this policy. With
        no spec (an invalid one) only the namespace rule can be asked."""
        labels: Mapping[str, str] = {}
        if policy.namespaces.requirements:
            try:
                labels = await self._labels(namespace)
            except KubeError as exc:
                return _waiting("Waiting", f"cannot read namespace {namespace}: {exc}")
        if spec is None:
            policy = replace(policy, environment_ids=frozenset(), inline_tasks=True)
        project = spec.environment.from_project if spec and spec.environment else None
        refusal = check_policy(
            policy,
            key,
            namespace,
            labels,
            environment_id=environment_id,
            inline=spec is not None and spec.task is not None,
            project_id=project.project_id if project else "",
        )
        if refusal is None:
            return None
        return ConnectionView(Access.REFUSED, "NotPermitted", refusal)

    async def _task_environment(self, remote: Remote, task_id: str) -> str | ConnectionView:
        known = remote.task_environments.lookup(task_id)
        if known is not None:
            return known
        try:
            task = await remote.client.get_task(task_id)
        except errors.NotFound:
            # Fail closed: a task this token cannot read has no environment to allow.
            return ConnectionView(
                Access.REFUSED,
                "NotPermitted",
                f"task {task_id} was not found through {remote.key}, so its environment "
                "cannot be checked against spec.policy.environmentIds",
            )
        except errors.OnaError as exc:
            if isinstance(exc, errors.Unauthenticated):
                self.token_refused(remote.key)
            failure = to_failure(exc)
            return _waiting(
                failure.condition_reason,
                f"cannot read task {task_id} to check the environment policy: {failure.message}",
            )
        remote.task_environments[task_id] = task.environment_id
        return task.environment_id

    async def _labels(self, namespace: str) -> Mapping[str, str]:
        loop = asyncio.get_running_loop()
        cached = self._namespace_labels.get(namespace)
        if cached is not None and loop.time() - cached[0] < NAMESPACE_LABELS_TTL:
            return cached[1]
        assert self.kube is not None
        body = await self.kube.get_namespace(namespace)
        labels = dict((body.get("metadata") or {}).get("labels") or {})
        self._namespace_labels[namespace] = (loop.time(), labels)
        return labels


def _last_identity(body: Mapping[str, Any]) -> Identity | None:
    """Who the token acted as when the connection was last Ready, from its status."""
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
    subject = status.get("subject") or {}
    if ready is None or ready.get("status") != "True" or not subject.get("id"):
        return None
    return Identity(
        subject_id=str(subject["id"]),
        principal=str(subject.get("principal", "")),
        organization_id=str(status.get("organizationId", "")),
    )


def _read_token_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _waiting(reason: str, message: str) -> ConnectionView:
    return ConnectionView(Access.WAITING, reason, message)


def _rv(body: Mapping[str, Any]) -> int:
    raw = (body.get("metadata") or {}).get("resourceVersion", "")
    return int(raw) if str(raw).isdigit() else 0


def _generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)
