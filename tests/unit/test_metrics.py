"""The metrics' own logic: which status writes count as a start, an adoption, an end or
a stall; the Kubernetes resource label; the work-queue clock; the gauges read at a
scrape; and the /metrics endpoint serving them in the text format Prometheus reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ona_taskrun.controller.breaker import CircuitBreaker
from ona_taskrun.observability import metrics
from ona_taskrun.rules.connection import CLUSTER_CONNECTION, DEFAULT_CONNECTION, ConnectionKey

NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def body(namespace: str = "team-a", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "creationTimestamp": "2026-01-01T12:00:00Z"},
        "status": status,
    }


def conditions(succeeded: tuple[str, str], stalled: str = "False") -> list[dict[str, str]]:
    s_status, s_reason = succeeded
    return [
        {"type": "Succeeded", "status": s_status, "reason": s_reason},
        {"type": "Stalled", "status": stalled, "reason": s_reason},
    ]


def test_a_start_counts_once_with_its_latency_from_creation() -> None:
    started = sample("ona_taskrun_taskruns_started_total", namespace="team-a")
    latency = sample("ona_taskrun_start_latency_seconds_sum", namespace="team-a")
    before = body(startRequestedAt="x", conditions=conditions(("Unknown", "Starting")))
    after = body(taskExecutionId="e1", conditions=conditions(("Unknown", "Starting")))

    metrics.taskrun_written(before, after, NOW)
    metrics.taskrun_written(after, after, NOW)  # a later write of the same run: no new start

    assert sample("ona_taskrun_taskruns_started_total", namespace="team-a") == started + 1
    assert sample("ona_taskrun_start_latency_seconds_sum", namespace="team-a") == latency + 30


def test_an_adoption_is_not_a_start() -> None:
    started = sample("ona_taskrun_taskruns_started_total", namespace="adopting")
    adopted = sample("ona_taskrun_executions_adopted_total", namespace="adopting")
    before = body("adopting", conditions=conditions(("Unknown", "StartOutcomeUnknown")))
    after = body("adopting", taskExecutionId="e2", conditions=conditions(("Unknown", "Adopted")))

    metrics.taskrun_written(before, after, NOW)

    assert sample("ona_taskrun_executions_adopted_total", namespace="adopting") == adopted + 1
    assert sample("ona_taskrun_taskruns_started_total", namespace="adopting") == started


@pytest.mark.parametrize(
    ("phase", "reason", "ok"),
    [("SUCCEEDED", "Succeeded", "True"), ("FAILED", "Failed", "False")],
)
def test_an_end_counts_its_reason_and_the_run_duration(phase: str, reason: str, ok: str) -> None:
    finished = sample("ona_taskrun_taskruns_finished_total", namespace="ends", reason=reason)
    count = sample("ona_taskrun_run_duration_seconds_count", namespace="ends", phase=phase)
    total = sample("ona_taskrun_run_duration_seconds_sum", namespace="ends", phase=phase)
    running = body("ends", phase="RUNNING", conditions=conditions(("Unknown", "Running")))
    ended = body(
        "ends",
        phase=phase,
        startedAt="2026-01-01T12:00:05Z",
        completedAt="2026-01-01T12:01:05.5Z",
        conditions=conditions((ok, reason), "False" if ok == "True" else "True"),
    )

    metrics.taskrun_written(running, ended, NOW)
    metrics.taskrun_written(ended, ended, NOW)

    assert (
        sample("ona_taskrun_taskruns_finished_total", namespace="ends", reason=reason)
        == finished + 1
    )
    assert (
        sample("ona_taskrun_run_duration_seconds_count", namespace="ends", phase=phase) == count + 1
    )
    assert sample(
        "ona_taskrun_run_duration_seconds_sum", namespace="ends", phase=phase
    ) == pytest.approx(total + 60.5)


def test_an_end_before_any_execution_counts_without_a_duration() -> None:
    finished = sample(
        "ona_taskrun_taskruns_finished_total", namespace="early", reason="NotPermitted"
    )
    durations = sample("ona_taskrun_run_duration_seconds_count", namespace="early", phase="NONE")
    waiting = body("early", conditions=conditions(("Unknown", "Checking")))
    refused = body("early", conditions=conditions(("False", "NotPermitted"), "True"))

    metrics.taskrun_written(waiting, refused, NOW)

    assert (
        sample("ona_taskrun_taskruns_finished_total", namespace="early", reason="NotPermitted")
        == finished + 1
    )
    assert (
        sample("ona_taskrun_run_duration_seconds_count", namespace="early", phase="NONE")
        == durations
    )


def test_a_stall_for_a_person_counts_once_and_a_failed_end_is_not_one() -> None:
    stalls = sample("ona_taskrun_stalls_total", namespace="stuck", reason="StartOutcomeUnknown")
    failed_stalls = sample("ona_taskrun_stalls_total", namespace="stuck", reason="Failed")
    looking = body("stuck", conditions=conditions(("Unknown", "StartOutcomeUnknown")))
    stalled = body("stuck", conditions=conditions(("Unknown", "StartOutcomeUnknown"), "True"))
    failed = body("stuck", phase="FAILED", conditions=conditions(("False", "Failed"), "True"))

    metrics.taskrun_written(looking, stalled, NOW)
    metrics.taskrun_written(stalled, stalled, NOW)
    metrics.taskrun_written(looking, failed, NOW)

    assert (
        sample("ona_taskrun_stalls_total", namespace="stuck", reason="StartOutcomeUnknown")
        == stalls + 1
    )
    assert sample("ona_taskrun_stalls_total", namespace="stuck", reason="Failed") == failed_stalls


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/automation.ona.com/v1alpha1/namespaces/a/taskruns/x/status", "taskruns/status"),
        ("/apis/automation.ona.com/v1alpha1/namespaces/a/taskruns/x", "taskruns"),
        ("/apis/automation.ona.com/v1alpha1/taskruns", "taskruns"),
        ("/apis/automation.ona.com/v1alpha1/onaconnections", "onaconnections"),
        ("/apis/automation.ona.com/v1alpha1/namespaces/a/onaconnections/c/status",
         "onaconnections/status"),
        ("/api/v1/namespaces/a/events", "events"),
        ("/api/v1/namespaces/a/secrets/token", "secrets"),
        ("/api/v1/namespaces/a", "namespaces"),
        ("/apis/coordination.k8s.io/v1/namespaces/ona-system/leases/l", "leases"),
    ],
)  # fmt: skip
def test_kubernetes_requests_are_labelled_by_resource_never_by_name(
    path: str, resource: str
) -> None:
    assert metrics.resource_of(path) == resource


def test_ona_requests_count_each_result_code_and_time_it() -> None:
    # What the client tells its observer is in tests/ona/test_observer.py.
    ok_before = sample("ona_taskrun_ona_requests_total", method="UnitCall", code="ok")
    bad_before = sample("ona_taskrun_ona_requests_total", method="UnitCall", code="unavailable")
    timed = sample("ona_taskrun_ona_request_duration_seconds_sum", method="UnitCall")

    metrics.ONA_OBSERVER.on_request("UnitCall", "ok", 0.25)
    metrics.ONA_OBSERVER.on_request("UnitCall", "unavailable", 0.5)

    assert sample("ona_taskrun_ona_requests_total", method="UnitCall", code="ok") == ok_before + 1
    assert (
        sample("ona_taskrun_ona_requests_total", method="UnitCall", code="unavailable")
        == bad_before + 1
    )
    assert sample(
        "ona_taskrun_ona_request_duration_seconds_sum", method="UnitCall"
    ) == pytest.approx(timed + 0.75)


def test_kubernetes_requests_and_watch_reconnects_are_counted() -> None:
    path = "/apis/automation.ona.com/v1alpha1/namespaces/ns/taskruns/run/status"
    labels = {"method": "PATCH", "resource": "taskruns/status"}
    written = sample("ona_taskrun_kube_requests_total", **labels, code="200")
    unanswered = sample("ona_taskrun_kube_requests_total", **labels, code="0")
    reconnects = sample("ona_taskrun_watch_reconnects_total")

    metrics.KUBE_OBSERVER.on_request("PATCH", path, 200)
    metrics.KUBE_OBSERVER.on_request("PATCH", path, 0)
    metrics.watch_reconnected()

    assert sample("ona_taskrun_kube_requests_total", **labels, code="200") == written + 1
    assert sample("ona_taskrun_kube_requests_total", **labels, code="0") == unanswered + 1
    assert sample("ona_taskrun_watch_reconnects_total") == reconnects + 1


def test_the_work_queue_measures_time_in_queue_depth_and_the_oldest_wait() -> None:
    now = [100.0]
    queue = metrics._WorkQueue(clock=lambda: now[0])
    waited = sample("ona_taskrun_workqueue_wait_seconds_sum")
    adds = sample("ona_taskrun_workqueue_adds_total")

    queue.added("a/one")
    now[0] = 101.0
    queue.added("a/two")
    queue.added("a/one")  # already queued (a better lane): the first add's time is kept
    now[0] = 104.0
    assert (queue.depth, queue.longest_wait) == (2, 4.0)

    started = queue.taken("a/one")
    assert (queue.depth, queue.longest_wait) == (1, 3.0)
    assert sample("ona_taskrun_workqueue_wait_seconds_sum") == waited + 4.0
    assert sample("ona_taskrun_workqueue_adds_total") == adds + 2
    now[0] = 104.5
    reconciles = sample("ona_taskrun_reconcile_duration_seconds_sum", kind="taskrun")
    queue.done("a/one", started)
    assert sample("ona_taskrun_reconcile_duration_seconds_sum", kind="taskrun") == reconciles + 0.5
    queue.taken("a/two")
    assert (queue.depth, queue.longest_wait) == (0, 0.0)


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("team-a/build", "taskrun"),
        ("OnaConnection:team-a/ona", "connection"),
        ("ClusterOnaConnection:shared", "connection"),
        ("TaskRunSchedule:team-a/nightly", "schedule"),
        ("CustomRun:team-a/pipeline-run-1", "customrun"),
    ],
)
def test_reconciles_are_counted_by_kind(key: str, kind: str) -> None:
    queue = metrics._WorkQueue(clock=lambda: 0.0)
    before = sample("ona_taskrun_reconcile_duration_seconds_count", kind=kind)
    queue.added(key)
    queue.done(key, queue.taken(key))
    assert sample("ona_taskrun_reconcile_duration_seconds_count", kind=kind) == before + 1


@dataclass
class FakeTracker:
    tracked: int
    streams: int


@dataclass
class FakeRemote:
    key: ConnectionKey
    tracker: FakeTracker
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(threshold=1))


def scrape(
    collector: metrics.StateCollector,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_gauges_are_read_from_the_operators_state_at_scrape_time() -> None:
    team = ConnectionKey("OnaConnection", "team-a", "ona")
    platform = ConnectionKey(CLUSTER_CONNECTION, "", "platform")
    remotes = [
        FakeRemote(DEFAULT_CONNECTION, FakeTracker(tracked=3, streams=1)),
        FakeRemote(team, FakeTracker(tracked=1, streams=0)),
        FakeRemote(platform, FakeTracker(tracked=0, streams=0)),
    ]
    remotes[1].breaker.record(ok=False)
    bodies: list[Mapping[str, Any]] = [
        body("team-a", phase="RUNNING", conditions=conditions(("Unknown", "Running"))),
        body("team-a", phase="RUNNING", conditions=conditions(("Unknown", "Running"))),
        body("team-a", conditions=conditions(("Unknown", "StartOutcomeUnknown"), "True")),
        body("team-b", phase="FAILED", conditions=conditions(("False", "Failed"), "True")),
        {"metadata": {"namespace": "team-b"}},
    ]
    leading = [False]
    queue = metrics._WorkQueue(clock=lambda: 10.0)
    queue.added("team-a/x")
    collector = metrics.StateCollector(queue)

    def taskruns() -> Iterable[Mapping[str, Any]]:
        return bodies

    collector.sources = metrics.Sources(
        taskruns=taskruns,
        remotes=lambda: remotes,  # type: ignore[arg-type, return-value]
        leading=lambda: leading[0],
    )
    got = scrape(collector)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    assert value("ona_taskrun_taskruns", namespace="team-a", phase="RUNNING") == 2
    assert value("ona_taskrun_taskruns", namespace="team-a", phase="NONE") == 1
    assert value("ona_taskrun_taskruns", namespace="team-b", phase="FAILED") == 1
    assert value("ona_taskrun_taskruns", namespace="team-b", phase="NONE") == 1
    # Only the run that is not over waits for a person.
    assert (
        value("ona_taskrun_taskruns_stalled", namespace="team-a", reason="StartOutcomeUnknown") == 1
    )
    assert value("ona_taskrun_taskruns_stalled", namespace="team-b", reason="Failed") is None
    assert value("ona_taskrun_circuit_breaker_open", connection="default") == 0
    assert value("ona_taskrun_circuit_breaker_open", connection="OnaConnection/team-a/ona") == 1
    assert (
        value("ona_taskrun_circuit_breaker_opened_total", connection="OnaConnection/team-a/ona")
        == 1
    )
    assert value("ona_taskrun_tracked_executions", connection="default") == 3
    assert value("ona_taskrun_tracked_executions", connection="ClusterOnaConnection/platform") == 0
    assert value("ona_taskrun_watch_streams", connection="default") == 1
    assert value("ona_taskrun_workqueue_depth") == 1
    assert value("ona_taskrun_leader") == 0
    leading[0] = True
    assert scrape(collector)[("ona_taskrun_leader", ())] == 1
    # No label ever carries a TaskRun's name or an id.
    assert {k for _, labels in got for k, _ in labels} <= {
        "namespace",
        "phase",
        "reason",
        "connection",
    }


async def test_the_endpoint_serves_the_registry_in_the_text_format() -> None:
    exporter = metrics.Exporter(
        enabled=True,
        host="127.0.0.1",
        port=0,
        sources=metrics.Sources(taskruns=list, remotes=list, leading=lambda: True),
    )
    await exporter.start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{exporter.port}/metrics")
    finally:
        await exporter.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"ona_taskrun_leader", "ona_taskrun_ona_requests", "process_cpu_seconds"} <= names


async def test_a_port_in_use_is_refused_with_the_setting_to_change() -> None:
    first = metrics.Exporter(
        enabled=True,
        host="127.0.0.1",
        port=0,
        sources=metrics.Sources(taskruns=list, remotes=list, leading=lambda: True),
    )
    await first.start()
    second = metrics.Exporter(
        enabled=True,
        host="127.0.0.1",
        port=first.port,
        sources=metrics.Sources(taskruns=list, remotes=list, leading=lambda: True),
    )
    try:
        with pytest.raises(Exception, match="METRICS_PORT"):
            await second.start()
    finally:
        await first.stop()


async def test_switched_off_it_listens_nowhere() -> None:
    exporter = metrics.Exporter(
        enabled=False,
        host="127.0.0.1",
        port=0,
        sources=metrics.Sources(taskruns=list, remotes=list, leading=lambda: True),
    )
    await exporter.start()
    assert exporter.port == 0
    await exporter.stop()


def test_a_retry_is_counted_and_its_start_is_not_a_new_taskrun() -> None:
    retries = sample("ona_taskrun_retries_total", namespace="retrying")
    started = sample("ona_taskrun_taskruns_started_total", namespace="retrying")
    first = body("retrying", taskExecutionId="e1", conditions=conditions(("Unknown", "Running")))
    waiting = body(
        "retrying",
        attempts=[{"executionId": "e1", "phase": "FAILED"}],
        conditions=conditions(("Unknown", "Retrying")),
    )
    second = body(
        "retrying",
        taskExecutionId="e2",
        attempts=[{"executionId": "e1", "phase": "FAILED"}],
        conditions=conditions(("Unknown", "Starting")),
    )

    metrics.taskrun_written(first, waiting, NOW)
    metrics.taskrun_written(waiting, second, NOW)
    metrics.taskrun_written(second, second, NOW)

    assert sample("ona_taskrun_retries_total", namespace="retrying") == retries + 1
    assert sample("ona_taskrun_taskruns_started_total", namespace="retrying") == started


def test_no_metric_is_bound_to_a_name_another_one_took() -> None:
    # Two module-level metrics under one name: the later one silently replaced the queue
    # wait histogram the reconciler labels, and every let-in run's reconcile raised.
    import ast
    from pathlib import Path

    from ona_taskrun.observability import metrics as module

    tree = ast.parse(Path(module.__file__).read_text())
    names = [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    assert sorted({n for n in names if names.count(n) > 1}) == []
    module.LIMIT_WAIT.labels("team-a").observe(3.0)
