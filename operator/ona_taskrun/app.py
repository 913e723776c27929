"""The kopf edge: builds the registry of handlers for one configured operator.

Handlers are registered on a registry built from the loaded configuration, never at
import time. kopf watches Ona connections and TaskRunSchedules; TaskRuns are watched by
`watch.Watch` (see there for why), which hands every event to the reconciler and the
schedules; the reconciler and the execution tracker do the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from datetime import timedelta
from typing import Any

import kopf

from .clients.kube import (
    CLUSTER_CONNECTIONS,
    CONNECTIONS,
    GROUP,
    PLURAL,
    SCHEDULES,
    VERSION,
    KubeClient,
)
from .config import Config
from .controller import connections, memory
from .controller.checkpoints import NO_CHECKPOINTS, Checkpoints
from .controller.customruns import CustomRuns
from .controller.leader import LeaderElector
from .controller.reconciler import Reconciler
from .controller.schedules import Schedules
from .controller.watch import Watch
from .observability import metrics
from .rules import customrun, schedule
from .rules.connection import ConnectionKey
from .rules.model import Settings

log = logging.getLogger(__name__)

# Logged once the operator acts: its TaskRuns listed, synced, and leading.
READY_LINE = "operator ready:"


class App:
    """Everything one running operator holds."""

    def __init__(self, config: Config, checkpoints: Checkpoints = NO_CHECKPOINTS) -> None:
        self.config = config
        self.connections = connections.Connections(
            connections.Settings(
                operator_namespace=config.operator_namespace,
                default_base_url=config.ona_base_url,
                default_namespaces=config.default_namespaces,
                default_limits=config.default_limits,
                allowed_urls=config.allowed_base_urls,
                recheck_seconds=config.connection_recheck,
                secret_resync_seconds=config.secret_resync,
            ),
            connections.RemoteSettings(
                request_timeout=config.request_timeout,
                poll_interval=config.poll_interval,
                max_watches=config.max_watches,
                observer=metrics.ONA_OBSERVER,
                on_watch_reconnect=metrics.watch_reconnected,
            ),
            notify_taskrun=self._notify,
            enqueue=self._enqueue,
            wake_users=self._wake_users,
            default_token=config.token.reveal() if config.token is not None else None,
            default_token_file=config.token_file,
        )
        self.reconciler = Reconciler(
            self.connections,
            workers=config.workers,
            settings=Settings(
                start_settle=_seconds(config.start_settle),
                resync_seconds=config.resync_seconds,
                stop_resend=_seconds(config.stop_resend),
                retry_backoff_base=config.retry_backoff_base,
                environment_poll=config.environment_poll,
                environment_timeout=_seconds(config.environment_timeout),
                keepalive=_seconds(config.environment_keepalive),
            ),
            checkpoints=checkpoints,
            merge_window=config.merge_window,
            operator_namespace=config.operator_namespace,
        )
        self.schedules = Schedules(self._enqueue, checkpoints=checkpoints)
        self.reconciler.handlers[schedule.KIND] = self.schedules.reconcile
        # Tekton CustomRuns (TEKTON_CUSTOM_TASKS): one more kind sharing the queue.
        self.customruns: CustomRuns | None = None
        if config.tekton_custom_tasks:
            self.customruns = runs = CustomRuns(self._enqueue)
            self.reconciler.handlers[customrun.KIND] = runs.reconcile
            self.reconciler.remembered_by["customruns"] = lambda: runs.remembered
        self.metrics = metrics.Exporter(
            enabled=config.metrics_enabled,
            host=config.metrics_bind_address,
            port=config.metrics_port,
            sources=metrics.Sources(
                taskruns=self.reconciler.taskruns,
                remotes=self.connections.remotes,
                leading=self.reconciler.active.is_set,
            ),
            debug_heap=config.debug_heap,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._elector: LeaderElector | None = None
        self._created = time.monotonic()

    # The registry and the reconciler call each other through these.
    def _notify(self, key: str) -> None:
        self.reconciler.enqueue_urgent(key)

    def _enqueue(self, key: str) -> None:
        self.reconciler.enqueue(key)

    def _wake_users(self, key: ConnectionKey) -> None:
        self.reconciler.wake_users(key)

    def observe_taskrun(self, event_type: str, body: dict[str, Any]) -> None:
        self.reconciler.observe(event_type, body)
        self.schedules.observe_taskrun(event_type, body)
        if self.customruns is not None:
            self.customruns.observe_taskrun(event_type, body)

    def connect(self, info: kopf.ConnectionInfo) -> None:
        first = self.reconciler.kube is None
        self.reconciler.kube = KubeClient.from_connection(info, observer=metrics.KUBE_OBSERVER)
        self.schedules.kube = self.reconciler.kube
        if self.customruns is not None:
            self.customruns.kube = self.reconciler.kube
        if first and self.config.leader_election:
            # A standby acts on nothing, not even during its first sync.
            self.reconciler.active.clear()
        if first:
            watches: list[Watch] = []
            for namespace in self.config.namespaces or ("",):
                watch = Watch(
                    _CurrentKube(self), PLURAL, "TaskRun", namespace, self.observe_taskrun
                )
                watches.append(watch)
                self._tasks.append(
                    asyncio.create_task(watch.run(), name=f"watch-taskruns-{namespace or 'all'}")
                )
            # The watches' first lists are the initial sync: TaskRuns are listed once.
            self._tasks.append(
                asyncio.create_task(
                    self.reconciler.initial_sync(
                        self.config.namespaces, [w.listed for w in watches]
                    ),
                    name="initial-sync",
                )
            )
            self._tasks.append(asyncio.create_task(self._announce_ready(watches), name="ready"))
            self._tasks.append(
                asyncio.create_task(memory.give_back_forever(), name="give-memory-back")
            )
        if self.config.leader_election and first:
            self._elector = elector = LeaderElector(
                self.reconciler.kube,
                self.reconciler.active,
                namespace=self.config.lease_namespace,
                name=self.config.lease_name,
                identity=self.config.identity,
                duration=self.config.lease_duration,
            )
            self._tasks.append(asyncio.create_task(elector.run(), name="leader-election"))

    async def _announce_ready(self, watches: list[Watch]) -> None:
        """Say once when this replica is ready: every TaskRun watch has delivered its first
        list, the initial sync is done, and it leads (or runs without leader election).
        Harnesses (the restart benchmark) time a restart by this line: keep its wording."""
        await asyncio.gather(*(w.listed.wait() for w in watches))
        await self.reconciler.synced.wait()
        await self.reconciler.active.wait()
        log.info(
            "%s %s, %d TaskRuns listed, %.2f s after start-up",
            READY_LINE,
            "leading" if self.config.leader_election else "no leader election",
            sum(w.count for w in watches),
            time.monotonic() - self._created,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.reconciler.stop()
        await self.schedules.stop()
        if self.customruns is not None:
            await self.customruns.stop()
        await self.metrics.stop()
        if self._elector is not None:
            # Nothing acts any more: the next replica may lead at once.
            await self._elector.release()
        if self.reconciler.kube is not None:
            await self.reconciler.kube.aclose()


class _CurrentKube:
    """The client of the latest login: kopf logs in again when credentials stop working,
    and a watch reopened after that must use the new ones."""

    def __init__(self, app: App) -> None:
        self._app = app

    def _kube(self) -> KubeClient:
        kube = self._app.reconciler.kube
        assert kube is not None, "the TaskRun watch starts after the first login"
        return kube

    async def list_versioned(
        self, plural: str, namespace: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        return await self._kube().list_versioned(plural, namespace)

    async def list_page(
        self, plural: str, namespace: str, *, limit: int, token: str
    ) -> tuple[list[dict[str, Any]], str, str]:
        """One page of a list (`limit` objects, from the `continue` token of the page
        before): the watch reads thousands of TaskRuns a page at a time (watch.PagedSource)."""
        return await self._kube().list_page(plural, namespace, limit=limit, token=token)

    def watch(
        self, plural: str, namespace: str, resource_version: str, *, timeout_seconds: int
    ) -> AsyncGenerator[dict[str, Any]]:
        return self._kube().watch(
            plural, namespace, resource_version, timeout_seconds=timeout_seconds
        )


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps a "last handled" essence of each object to tell on.create/on.update
    handlers what changed. Every handler here is an on.event handler, which gets no diff:
    building the essence (a deep copy of the object) on each watch event was a twentieth
    of the operator's CPU at a thousand TaskRuns, for nothing. `build_registry` refuses
    change handlers while this is in place."""

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[kopf.FieldSpec] | None = None,
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def build_registry(app: App) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # The operator posts its own Events; kopf's log-to-event posting would echo ours.
        settings.posting.enabled = False
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        await app.metrics.start()
        await app.reconciler.start()
        default = (
            f"default connection {app.config.ona_base_url}"
            if app.config.token is not None
            else "no default connection (TaskRuns must name one)"
        )
        log.info(
            "taskrun-operator started: %s, namespaces %s",
            default,
            ", ".join(app.config.namespaces) or "all",
        )

    @kopf.on.login(registry=registry, retries=3)
    # Async, so that connect() runs in the operator's event loop, not in a worker thread.
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if info is not None:
            app.connect(info)
        return info

    # Async handlers run in the operator's event loop; a plain function would run in a
    # worker thread and touch the reconciler's queue from outside the loop. TaskRuns are
    # watched by App (watch.Watch), not here.
    @kopf.on.event(GROUP, VERSION, CONNECTIONS, registry=registry)
    async def on_connection(event: kopf.RawEvent, **_: Any) -> None:
        app.connections.observe(str(event.get("type") or "MODIFIED"), event["object"])

    @kopf.on.event(GROUP, VERSION, CLUSTER_CONNECTIONS, registry=registry)
    async def on_cluster_connection(event: kopf.RawEvent, **_: Any) -> None:
        app.connections.observe(str(event.get("type") or "MODIFIED"), event["object"])

    @kopf.on.event(GROUP, VERSION, SCHEDULES, registry=registry)
    async def on_schedule(event: kopf.RawEvent, **_: Any) -> None:
        app.schedules.observe(str(event.get("type") or "MODIFIED"), event["object"])

    if app.customruns is not None:
        customruns = app.customruns

        @kopf.on.event(customrun.GROUP, customrun.VERSION, customrun.PLURAL, registry=registry)
        async def on_customrun(event: kopf.RawEvent, **_: Any) -> None:
            customruns.observe(str(event.get("type") or "MODIFIED"), event["object"])

    @kopf.on.probe(id="trackedExecutions", registry=registry)
    async def tracked(**_: Any) -> int:
        return app.reconciler.tracked

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await app.stop()

    # NoDiffBase gives change handlers nothing to compare: none may be registered.
    changing = registry._changing.get_all_handlers()
    if changing:
        raise RuntimeError(
            f"change handlers need kopf's diff base: {sorted(h.id for h in changing)}"
        )
    return registry
