"""End to end: the operator's /metrics, scraped as Prometheus would while TaskRuns start,
succeed, fail, meet Ona API faults and conflicting writes."""

from __future__ import annotations

import pytest

from tests.support.operator_fixtures import (
    OperatorFactory,
    TaskRuns,
    free_port,
    inline_task,
    wait_for,
)
from tests.support.scrape import Scrape, scrape, try_scrape
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e


def _moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.total(name, **labels) - before.total(name, **labels)


def test_counters_and_histograms_follow_runs_that_succeed_fail_and_meet_faults(
    metrics_port: int,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    ns = namespace
    before = wait_for(
        lambda: (s := scrape(metrics_port)).value("ona_taskrun_leader") == 1 and s,
        what="the operator to lead",
    )
    # Two 503s for the first ListTasks: the client retries them, the run goes on.
    e2e_simulator.control.set_faults("ListTasks", error_503=1.0, count=2)
    taskruns.apply("good", {"task": inline_task("make # sim:duration=1s")})
    taskruns.apply("bad", {"task": inline_task('false # sim:duration=0.5s sim:fail="broken"')})
    taskruns.wait_phase("good", "SUCCEEDED")
    taskruns.wait_phase("bad", "FAILED")
    # StartTask's answer is lost (a 503 after it took effect): the execution is adopted.
    e2e_simulator.control.set_faults(
        "StartTask", lost_response=1.0, lost_response_mode="503", count=1
    )
    taskruns.apply("lost", {"task": inline_task("make # sim:duration=0.5s")})
    taskruns.wait_phase("lost", "SUCCEEDED", timeout=60)

    # Another writer keeps editing a running TaskRun: the operator's writes meet 409s.
    # Another writer edits the TaskRun as fast as the API server takes it while the run
    # moves a step a second: the operator's status writes, which carry the
    # resourceVersion they read, meet 409 Conflict and are re-read and retried.
    taskruns.apply("contended", {"task": inline_task("x # sim:duration=15s sim:steps=15")})
    kube = "ona_taskrun_kube_requests_total"
    with taskruns.edited("contended"):
        wait_for(
            lambda: _moved(before, scrape(metrics_port), kube, code="409"),
            timeout=60,
            what="a status write that met 409 Conflict",
        )
    taskruns.wait_phase("contended", "SUCCEEDED", timeout=60)

    # Gauges are read at scrape time; wait for the last writes to be seen.
    def settled() -> Scrape | None:
        now = scrape(metrics_port)
        done = now.value("ona_taskrun_taskruns", namespace=ns, phase="SUCCEEDED") == 3
        idle = now.value("ona_taskrun_workqueue_depth") == 0
        untracked = now.value("ona_taskrun_tracked_executions", connection="default") == 0
        # Events go out after the writes they tell of: all 6 (3 Succeeded, Failed,
        # StartOutcomeUnknown, Adopted) counted once the API server has answered.
        posted = _moved(before, now, kube, method="POST", resource="events", code="201") >= 6
        return now if done and idle and untracked and posted else None

    after = wait_for(settled, timeout=30, what="3 SUCCEEDED TaskRuns, an idle queue, 6 Events")
    assert after.value("ona_taskrun_taskruns", namespace=ns, phase="FAILED") == 1
    assert after.value("ona_taskrun_workqueue_longest_wait_seconds") == 0
    assert after.value("ona_taskrun_leader") == 1

    # Starts, adoptions and ends, by namespace and reason.
    assert _moved(before, after, "ona_taskrun_taskruns_started_total", namespace=ns) == 3
    assert _moved(before, after, "ona_taskrun_executions_adopted_total", namespace=ns) == 1
    finished = "ona_taskrun_taskruns_finished_total"
    assert _moved(before, after, finished, namespace=ns, reason="Succeeded") == 3
    assert _moved(before, after, finished, namespace=ns, reason="Failed") == 1
    assert _moved(before, after, "ona_taskrun_stalls_total", namespace=ns) == 0

    # Run durations: startedAt -> completedAt, 1 s + 0.5 s + 15 s for the successes.
    duration = "ona_taskrun_run_duration_seconds"
    assert _moved(before, after, f"{duration}_count", namespace=ns, phase="SUCCEEDED") == 3
    assert _moved(before, after, f"{duration}_count", namespace=ns, phase="FAILED") == 1
    ran = _moved(before, after, f"{duration}_sum", namespace=ns, phase="SUCCEEDED")
    assert 16.0 <= ran < 40.0
    inf = after.value(f"{duration}_bucket", namespace=ns, phase="SUCCEEDED", le="+Inf")
    assert inf == after.value(f"{duration}_count", namespace=ns, phase="SUCCEEDED")
    bucket = f"{duration}_bucket"
    assert _moved(before, after, bucket, namespace=ns, phase="SUCCEEDED", le="5.0") == 2
    assert _moved(before, after, bucket, namespace=ns, phase="SUCCEEDED", le="30.0") == 3
    # Start latency: one per fresh start (not for the adoption), from creation on.
    latency = "ona_taskrun_start_latency_seconds"
    assert _moved(before, after, f"{latency}_count", namespace=ns) == 3
    assert 0 < _moved(before, after, f"{latency}_sum", namespace=ns) < 3 * 30

    # The Ona API, by method and result: the faults are there, and so is the recovery.
    requests = "ona_taskrun_ona_requests_total"
    assert _moved(before, after, requests, method="ListTasks", code="unavailable") == 2
    assert _moved(before, after, requests, method="StartTask", code="unavailable") == 1
    assert _moved(before, after, requests, method="StartTask", code="ok") == 3
    assert _moved(before, after, requests, method="CreateTask", code="ok") == 4
    # The adoption looked for the execution.
    assert _moved(before, after, requests, method="ListTaskExecutions", code="ok") >= 1
    timed = "ona_taskrun_ona_request_duration_seconds_count"
    assert _moved(before, after, timed, method="StartTask") == 4

    # Kubernetes requests by method, resource and code: status patches, Events, a 409.
    kube = "ona_taskrun_kube_requests_total"
    assert _moved(before, after, kube, method="PATCH", resource="taskruns/status", code="200") >= 8
    # The conflicting write may be the start claim (metadata) or a status write.
    assert _moved(before, after, kube, method="PATCH", code="409") >= 1
    # Outcomes and trouble only: Succeeded x3, Failed, StartOutcomeUnknown, Adopted.
    assert _moved(before, after, kube, method="POST", resource="events", code="201") >= 6
    for labels in after.labels(kube):
        assert set(labels) == {"method", "resource", "code"}
        assert "contended" not in labels["resource"]

    # The work queue moved, and every TaskRun was reconciled.
    assert _moved(before, after, "ona_taskrun_workqueue_adds_total") >= 4
    assert _moved(before, after, "ona_taskrun_workqueue_wait_seconds_count") >= 4
    reconciles = "ona_taskrun_reconcile_duration_seconds_count"
    assert _moved(before, after, reconciles, kind="taskrun") >= 4
    assert _moved(before, after, "ona_taskrun_reconcile_errors_total") == 0

    # No label anywhere names a TaskRun or carries an id.
    for (_, labels), _value in after.samples.items():
        for _key, label in labels:
            assert not any(name in label for name in ("good", "bad", "lost", "contended"))


def test_an_outage_opens_the_breaker_and_watch_streams_reconnect(
    metrics_port: int,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    taskruns.apply("watched", {"task": inline_task("x # sim:hang")})
    running = taskruns.wait_phase("watched", "RUNNING")
    wait_for(
        lambda: scrape(metrics_port).value("ona_taskrun_watch_streams", connection="default"),
        what="a WatchEvents stream for the running execution",
    )
    first = scrape(metrics_port)
    assert first.value("ona_taskrun_tracked_executions", connection="default") == 1
    assert first.value("ona_taskrun_taskruns", namespace=namespace, phase="RUNNING") == 1

    e2e_simulator.control.disconnect_watchers()
    wait_for(
        lambda: _moved(first, scrape(metrics_port), "ona_taskrun_watch_reconnects_total") >= 1,
        what="the watch stream to be reopened",
    )

    # Every call fails: TaskRuns created now fail to start, and the breaker opens.
    e2e_simulator.control.set_faults("*", error_503=1.0)
    for index in range(3):
        taskruns.apply(f"blocked-{index}", {"task": inline_task("x # sim:duration=0.2s")})
    opened = wait_for(
        lambda: (
            (s := scrape(metrics_port)).value(
                "ona_taskrun_circuit_breaker_open", connection="default"
            )
            == 1
            and s
        ),
        timeout=60,
        what="the breaker of the default connection to open",
    )
    assert _moved(first, opened, "ona_taskrun_circuit_breaker_opened_total") >= 1
    assert _moved(first, opened, "ona_taskrun_ona_requests_total", code="unavailable") >= 3
    # A failed start is counted as retried after its failure is written to the TaskRun,
    # so the breaker can open (on the third failure) a moment before the third retry is
    # counted: wait for it rather than read it from the same scrape.
    wait_for(
        lambda: _moved(first, scrape(metrics_port), "ona_taskrun_workqueue_retries_total") >= 3,
        timeout=30,
        what="each of the 3 failed starts to be put back on the queue",
    )

    e2e_simulator.control.clear_faults()
    e2e_simulator.control.set_phase(running["taskExecutionId"], "SUCCEEDED")
    for index in range(3):
        taskruns.wait_phase(f"blocked-{index}", "SUCCEEDED", timeout=90)
    taskruns.wait_phase("watched", "SUCCEEDED", timeout=60)
    wait_for(
        lambda: (
            scrape(metrics_port).value("ona_taskrun_circuit_breaker_open", connection="default")
            == 0
        ),
        what="the breaker to close",
    )


def test_switched_off_the_operator_serves_no_metrics(
    operator_factory: OperatorFactory, namespace: str, taskruns: TaskRuns
) -> None:
    port = free_port()
    operator = operator_factory(
        namespace, extra_env={"METRICS_ENABLED": "false", "METRICS_PORT": str(port)}
    )
    taskruns.apply("quiet", {"task": inline_task("x # sim:duration=0.2s")})
    taskruns.wait_phase("quiet", "SUCCEEDED")
    assert try_scrape(port) is None
    assert "metrics are off" in operator.log()
