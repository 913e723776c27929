"""Prometheus metrics: what the operator counts, and its `/metrics` endpoint.

Counters and histograms are fed by one call at each place where something happens (an
Ona call, a Kubernetes request, a status write, the work queue). The clients know nothing
of this module: the controller hands them the observers defined here (`ONA_OBSERVER`,
`KUBE_OBSERVER`, `watch_reconnected`), which keeps them importable without prometheus.
Gauges are not updated per event at all: a collector reads them from the operator's own
state when Prometheus scrapes (TaskRuns by phase, breakers, tracked executions, watch
streams, leadership).
Names start with `ona_taskrun_`; labels are bounded: a namespace, a connection, and small
enums (phase, reason, method, code), never a TaskRun's name or any id.
docs/metrics.md is the table of every metric.

The endpoint is served by aiohttp inside the operator's event loop, so the collector
reads the operator's dictionaries on the thread that changes them.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import kopf
from aiohttp import web
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..rules import customrun, schedule
from . import heap

if TYPE_CHECKING:
    from ..rules.connection import ConnectionKey

log = logging.getLogger(__name__)
PREFIX = "ona_taskrun_"
# No `_created` series beside every counter and histogram: half the series, no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

# ------------------------------------------------------------------ TaskRuns

TASKRUNS_STARTED = Counter(
    "ona_taskrun_taskruns_started",
    "TaskRuns whose StartTask answered with a new execution (adoptions are counted apart).",
    ["namespace"],
)
TASKRUNS_FINISHED = Counter(
    "ona_taskrun_taskruns_finished",
    "TaskRuns that ended, by the reason of their Succeeded condition.",
    ["namespace", "reason"],
)
EXECUTIONS_ADOPTED = Counter(
    "ona_taskrun_executions_adopted",
    "Executions adopted instead of started: found after a StartTask whose outcome was "
    "unknown, or named by a person.",
    ["namespace"],
)
RETRIES = Counter(
    "ona_taskrun_retries",
    "Attempts that failed and were followed by a new one (spec.retries).",
    ["namespace"],
)
STALLS = Counter(
    "ona_taskrun_stalls",
    "TaskRuns that began to wait for a person (Stalled=True while not over).",
    ["namespace", "reason"],
)
RUN_DURATION = Histogram(
    "ona_taskrun_run_duration_seconds",
    "How long executions ran, from the execution's startedAt to its completedAt.",
    ["namespace", "phase"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400),
)
START_LATENCY = Histogram(
    "ona_taskrun_start_latency_seconds",
    "From the TaskRun's creation to StartTask's answer with its execution.",
    ["namespace"],
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900),
)

# ------------------------------------------------------------------ the Ona API

ONA_REQUESTS = Counter(
    "ona_taskrun_ona_requests",
    "Unary Ona API requests (each attempt), by method and result: ok or the Connect code.",
    ["method", "code"],
)
ONA_REQUEST_DURATION = Histogram(
    "ona_taskrun_ona_request_duration_seconds",
    "Latency of unary Ona API requests (each attempt), whatever their result.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LIMIT_WAIT = Histogram(
    "ona_taskrun_queue_wait_seconds",
    "How long runs waited for a slot of their connection's spec.limits (reason Queued).",
    ["namespace"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
LOG_TAIL_READS = Counter(
    "ona_taskrun_log_tail_reads",
    "Reads of a finished run's log tail (logs token and log, retries included), by result: "
    "ok, timeout, unexpected, or the Connect code of the call that failed.",
    ["result"],
)
LOG_TAIL_READ_DURATION = Histogram(
    "ona_taskrun_log_tail_read_duration_seconds",
    "How long one log tail read took, logs token and retries included, whatever its result.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WATCH_RECONNECTS = Counter(
    "ona_taskrun_watch_reconnects",
    "WatchEvents streams opened again after the previous stream of the same watch ended.",
)

# ------------------------------------------------------------------ work queue, Kubernetes

QUEUE_ADDS = Counter("ona_taskrun_workqueue_adds", "Keys (TaskRuns, connections) queued.")
QUEUE_RETRIES = Counter(
    "ona_taskrun_workqueue_retries",
    "TaskRuns put back on the queue after a back-off because an Ona call failed transiently.",
)
QUEUE_WAIT = Histogram(
    "ona_taskrun_workqueue_wait_seconds",
    "Time a key waited in the queue before a worker took it.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
RECONCILE_DURATION = Histogram(
    "ona_taskrun_reconcile_duration_seconds",
    "Time one reconcile of a key took, Ona calls and Kubernetes writes included.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "ona_taskrun_reconcile_errors",
    "Reconciles that failed unexpectedly (logged with a traceback and retried in 10 s).",
    ["kind"],
)
KUBE_REQUESTS = Counter(
    "ona_taskrun_kube_requests",
    "Requests the operator makes to the Kubernetes API itself (kopf's watches excluded), "
    "by HTTP method, resource and status code (0: no answer).",
    ["method", "resource", "code"],
)
THROTTLED = Counter(
    "ona_taskrun_throttled",
    "429 answers (too many requests), by source: kube (the API server; no connection) or "
    "ona (by connection). Each holds that source's requests back for a while.",
    ["source", "connection"],
)
THROTTLE_WAIT = Counter(
    "ona_taskrun_throttle_wait_seconds",
    "Time requests waited before they were sent, held back after 429s (Retry-After or "
    "back-off, or a place among the requests in flight), by source and connection.",
    ["source", "connection"],
)
# The API server's series exist from the start (0 until a 429).
THROTTLED.labels("kube", "")
THROTTLE_WAIT.labels("kube", "")

# ------------------------------------------------------------------ recording


class OnaRequests:
    """The Ona client's observer (`ona.OnaObserver`): counts and times each attempt,
    and counts each 429 and the time it made calls wait, by connection (the throttle's
    name)."""

    def on_request(self, method: str, code: str, seconds: float) -> None:
        ONA_REQUESTS.labels(method, code).inc()
        ONA_REQUEST_DURATION.labels(method).observe(seconds)

    def on_throttled(self, name: str, hold: float) -> None:
        THROTTLED.labels("ona", name).inc()

    def on_waited(self, name: str, seconds: float) -> None:
        THROTTLE_WAIT.labels("ona", name).inc(seconds)


class KubeRequests:
    """The Kubernetes client's observer (`kube.KubeObserver`): counts each request, each
    429 and the time it made requests wait."""

    def on_request(self, method: str, path: str, code: int) -> None:
        KUBE_REQUESTS.labels(method, resource_of(path), str(code)).inc()

    def on_throttled(self, name: str, hold: float) -> None:
        THROTTLED.labels("kube", name).inc()

    def on_waited(self, name: str, seconds: float) -> None:
        THROTTLE_WAIT.labels("kube", name).inc(seconds)


ONA_OBSERVER = OnaRequests()
KUBE_OBSERVER = KubeRequests()


def log_tail_read(result: str, seconds: float) -> None:
    LOG_TAIL_READS.labels(result).inc()
    LOG_TAIL_READ_DURATION.observe(seconds)


def watch_reconnected() -> None:
    """The execution tracker's hook: one of its WatchEvents streams was opened again."""
    WATCH_RECONNECTS.inc()


def resource_of(path: str) -> str:
    """`/apis/g/v/namespaces/ns/taskruns/name/status` -> `taskruns/status`: the resource,
    and a subresource if any, without names."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    # /api/v1/... or /apis/group/version/...
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    if not rest:
        return "unknown"
    return f"{rest[0]}/{rest[2]}" if len(rest) > 2 else rest[0]


class _WorkQueue:
    """When each queued key was added: the time in queue, the depth and the oldest wait."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.queued_at: dict[str, float] = {}

    def added(self, key: str) -> None:
        if key not in self.queued_at:
            self.queued_at[key] = self.clock()
            QUEUE_ADDS.inc()

    def taken(self, key: str) -> float:
        now = self.clock()
        at = self.queued_at.pop(key, None)
        if at is not None:
            QUEUE_WAIT.observe(now - at)
        return now

    def done(self, key: str, started: float) -> None:
        RECONCILE_DURATION.labels(_kind(key)).observe(self.clock() - started)

    @property
    def depth(self) -> int:
        return len(self.queued_at)

    @property
    def longest_wait(self) -> float:
        return self.clock() - min(self.queued_at.values()) if self.queued_at else 0.0


QUEUE = _WorkQueue()


def queue_added(key: str) -> None:
    QUEUE.added(key)


def queue_taken(key: str) -> float:
    """A worker took the key; returns the time to pass to `reconciled`."""
    return QUEUE.taken(key)


def queue_forgotten(key: str) -> None:
    """The TaskRun is gone: its entry, if queued, is never taken (see `Reconciler._forget`)."""
    QUEUE.queued_at.pop(key, None)


def reconciled(key: str, started: float) -> None:
    QUEUE.done(key, started)


def reconcile_failed(key: str) -> None:
    RECONCILE_ERRORS.labels(_kind(key)).inc()


def retried() -> None:
    QUEUE_RETRIES.inc()


_KINDS = {schedule.KIND: "schedule", customrun.KIND: "customrun"}


def _kind(key: str) -> str:
    # TaskRun keys are `ns/name`; the others `Kind:ns/name`, connections of two kinds.
    kind, colon, _ = key.partition(":")
    if not colon:
        return "taskrun"
    return _KINDS.get(kind, "connection")


def taskrun_written(
    before: Mapping[str, Any], after: Mapping[str, Any], now: datetime | None = None
) -> None:
    """A TaskRun's status was written (`before` -> `after`): count what changed."""
    old = before.get("status") or {}
    new = after.get("status") or {}
    meta = after.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    now = now or datetime.now(UTC)
    succeeded = _condition(new, "Succeeded")
    if len(new.get("attempts") or ()) > len(old.get("attempts") or ()):
        RETRIES.labels(namespace).inc()
    if new.get("taskExecutionId") and not old.get("taskExecutionId"):
        if succeeded.get("reason") == "Adopted":
            EXECUTIONS_ADOPTED.labels(namespace).inc()
        elif not new.get("attempts"):
            # Only a first attempt: a later one's TaskRun was counted at its first start.
            TASKRUNS_STARTED.labels(namespace).inc()
            created = _time(meta.get("creationTimestamp"))
            if created is not None:
                START_LATENCY.labels(namespace).observe(max((now - created).total_seconds(), 0))
    if _over(new) and not _over(old):
        TASKRUNS_FINISHED.labels(namespace, str(succeeded.get("reason") or "Unknown")).inc()
        started, completed = _time(new.get("startedAt")), _time(new.get("completedAt"))
        if started is not None and completed is not None:
            RUN_DURATION.labels(namespace, str(new.get("phase") or "NONE")).observe(
                max((completed - started).total_seconds(), 0)
            )
    reason = _waiting_for_person(new)
    if reason and not _waiting_for_person(old):
        STALLS.labels(namespace, reason).inc()


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return {}


def _over(status: Mapping[str, Any]) -> bool:
    return _condition(status, "Succeeded").get("status") in ("True", "False")


def _waiting_for_person(status: Mapping[str, Any]) -> str:
    """The Stalled reason of a run that is not over but waits for a person; else ''."""
    stalled = _condition(status, "Stalled")
    if stalled.get("status") != "True" or _over(status):
        return ""
    return str(stalled.get("reason") or "Unknown")


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


# ------------------------------------------------------------------ read at scrape time


def connection_label(key: ConnectionKey) -> str:
    """`default`, `OnaConnection/<namespace>/<name>` or `ClusterOnaConnection/<name>`."""
    if key.default:
        return "default"
    return "/".join(p for p in (key.kind, key.namespace, key.name) if p)


class _Breaker(Protocol):
    @property
    def open(self) -> bool: ...
    @property
    def opened(self) -> int: ...


class _Tracker(Protocol):
    @property
    def tracked(self) -> int: ...
    @property
    def streams(self) -> int: ...


class RemoteState(Protocol):
    """What the collector reads of one connection's side of the Ona API."""

    @property
    def key(self) -> ConnectionKey: ...
    @property
    def breaker(self) -> _Breaker: ...
    @property
    def tracker(self) -> _Tracker: ...


@dataclass
class Sources:
    """Where the collector reads the operator's state; set once the operator is built."""

    taskruns: Callable[[], Iterable[Mapping[str, Any]]]
    remotes: Callable[[], Iterable[RemoteState]]
    leading: Callable[[], bool]


class StateCollector(Collector):
    """The gauges, computed from the operator's state at each scrape."""

    def __init__(self, queue: _WorkQueue = QUEUE) -> None:
        self.sources: Sources | None = None
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        sources = self.sources
        if sources is None:
            return
        yield from self._taskruns(sources.taskruns())
        yield from self._remotes(list(sources.remotes()))
        depth = GaugeMetricFamily(
            PREFIX + "workqueue_depth", "Keys waiting in the queue for a worker."
        )
        depth.add_metric([], self.queue.depth)
        yield depth
        longest = GaugeMetricFamily(
            PREFIX + "workqueue_longest_wait_seconds",
            "How long the key that has waited longest in the queue has waited so far.",
        )
        longest.add_metric([], self.queue.longest_wait)
        yield longest
        leader = GaugeMetricFamily(
            PREFIX + "leader",
            "1 while this replica leads (acts on TaskRuns); 0 while it is a standby.",
        )
        leader.add_metric([], 1.0 if sources.leading() else 0.0)
        yield leader

    @staticmethod
    def _taskruns(bodies: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
        phases: Tally[tuple[str, str]] = Tally()
        stalled: Tally[tuple[str, str]] = Tally()
        for body in bodies:
            namespace = str((body.get("metadata") or {}).get("namespace") or "")
            status = body.get("status") or {}
            phases[namespace, str(status.get("phase") or "NONE")] += 1
            reason = _waiting_for_person(status)
            if reason:
                stalled[namespace, reason] += 1
        by_phase = GaugeMetricFamily(
            PREFIX + "taskruns",
            "TaskRuns the operator watches, by status.phase (NONE: no execution yet).",
            labels=["namespace", "phase"],
        )
        for (namespace, phase), count in sorted(phases.items()):
            by_phase.add_metric([namespace, phase], count)
        yield by_phase
        waiting = GaugeMetricFamily(
            PREFIX + "taskruns_stalled",
            "TaskRuns not over that wait for a person (Stalled=True), by the Stalled reason.",
            labels=["namespace", "reason"],
        )
        for (namespace, reason), count in sorted(stalled.items()):
            waiting.add_metric([namespace, reason], count)
        yield waiting

    @staticmethod
    def _remotes(remotes: list[RemoteState]) -> Iterator[Metric]:
        breaker_open = GaugeMetricFamily(
            PREFIX + "circuit_breaker_open",
            "1 while the connection's circuit breaker holds Ona calls back.",
            labels=["connection"],
        )
        breaker_opened = CounterMetricFamily(
            PREFIX + "circuit_breaker_opened",
            "Times the connection's circuit breaker opened.",
            labels=["connection"],
        )
        tracked = GaugeMetricFamily(
            PREFIX + "tracked_executions",
            "Executions the connection's tracker follows (running TaskRuns).",
            labels=["connection"],
        )
        streams = GaugeMetricFamily(
            PREFIX + "watch_streams",
            "Environments whose WatchEvents stream is open (the rest are polled).",
            labels=["connection"],
        )
        for remote in remotes:
            label = [connection_label(remote.key)]
            breaker_open.add_metric(label, 1.0 if remote.breaker.open else 0.0)
            breaker_opened.add_metric(label, remote.breaker.opened)
            tracked.add_metric(label, remote.tracker.tracked)
            streams.add_metric(label, remote.tracker.streams)
        yield from (breaker_open, breaker_opened, tracked, streams)


STATE = StateCollector()
REGISTRY.register(STATE)


class RememberedCollector(Collector):
    """`ona_taskrun_remembered`: what the controller holds for TaskRuns, by kind, read
    from the controller at each scrape. The controller registers itself as the source
    when it starts (`Reconciler.remembered`)."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        source = self.source
        if source is None:
            return
        family = GaugeMetricFamily(
            PREFIX + "remembered",
            "What the operator holds for TaskRuns, by kind (taskruns, executions, claims, "
            "environments, timers, log_tails, events, queue; customruns with Tekton): 0 "
            "once every TaskRun it saw is gone.",
            labels=["kind"],
        )
        for kind, count in source().items():
            family.add_metric([kind], count)
        yield family


REMEMBERED = RememberedCollector()
REGISTRY.register(REMEMBERED)


class QueuedCollector(Collector):
    """`ona_taskrun_queued`: runs their connection's limits hold back, by namespace and
    connection, read from the controller at each scrape (`Admission.queued`)."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[tuple[str, str], int]] | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "queued",
            "TaskRuns waiting for a slot of their connection's spec.limits (reason Queued).",
            labels=["namespace", "connection"],
        )
        source = self.source
        for (namespace, connection), count in (source() if source is not None else {}).items():
            family.add_metric([namespace, connection], count)
        yield family


QUEUED = QueuedCollector()
REGISTRY.register(QUEUED)

# ------------------------------------------------------------------ the endpoint


class Exporter:
    """Serves `/metrics` for one operator, if enabled."""

    def __init__(
        self,
        *,
        enabled: bool,
        host: str,
        port: int,
        sources: Sources,
        registry: CollectorRegistry = REGISTRY,
        debug_heap: int = 0,
    ) -> None:
        self.enabled = enabled
        self.host = host
        self.port = port
        self._registry = registry
        self._runner: web.AppRunner | None = None
        # Frames per traced allocation for `/debug/heap` (observability.heap, the
        # setting ONA_TASKRUN_DEBUG_HEAP); 0: off, the default.
        self._debug_heap = debug_heap
        self.heap: heap.HeapDebug | None = None
        STATE.sources = sources

    async def start(self) -> None:
        frames = self._debug_heap
        if not self.enabled:
            log.info("metrics are off (METRICS_ENABLED=false)")
            if frames:
                log.warning("%s is set but metrics are off: no %s", heap.ENV, heap.PATH)
            return
        try:
            sock = socket.create_server(
                (self.host, self.port),
                family=socket.AF_INET6 if ":" in self.host else socket.AF_INET,
            )
        except OSError as exc:
            # A port in use is a setting to fix, not a reason to retry.
            raise kopf.PermanentError(
                f"cannot serve metrics on {self.host}:{self.port} ({exc.strerror}): "
                "set METRICS_PORT or METRICS_BIND_ADDRESS, or METRICS_ENABLED=false"
            ) from exc
        self.port = sock.getsockname()[1]
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        if frames:
            self.heap = heap.HeapDebug(frames, remembered=_remembered)
            self.heap.start()
            app.router.add_get(heap.PATH, self._heap)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("serving metrics on http://%s:%d/metrics", host, self.port)
        if self.heap is not None:
            log.warning(
                "%s=%d: the heap is traced (%d frames), and %s answers loopback requests; "
                "for measurements, not production",
                heap.ENV,
                frames,
                frames,
                heap.PATH,
            )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _heap(self, request: web.Request) -> web.Response:
        if self.heap is None:
            raise web.HTTPNotFound()
        if not heap.loopback(request.remote):
            return _json({"error": f"{heap.PATH} answers requests from this host only"}, 403)
        try:
            report = self.heap.report(request.query)
        except heap.QueryError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(report, 200)


def _json(body: Mapping[str, Any], status: int) -> web.Response:
    return web.Response(
        text=json.dumps(body), status=status, content_type="application/json", charset="utf-8"
    )


def _remembered() -> Mapping[str, int]:
    source = REMEMBERED.source
    return source() if source is not None else {}
