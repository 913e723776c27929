"""End to end: both APIs push back, and the operator slows down instead of hammering them.

A control plane of its own runs the API server with low `--max-requests-inflight` and
`--max-mutating-requests-inflight`, and API Priority and Fairness gives the operator's
identity a priority level of two seats that rejects (429 with Retry-After) rather than
queues; a simulator of its own limits the Ona API to a few requests per second (429
`resource_exhausted` with a computed Retry-After). 60 TaskRuns are created at once.

Every run ends, each started exactly once (by the simulator's own record: one task and
one execution per TaskRun), both throttled counters count 429s, and the Ona API never
sees more calls in a second than its limit lets through plus one round of refused calls.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client, config
from tools.localcluster import OPERATOR

from ona_simulator.control_client import SimulatorControl
from ona_taskrun.rules.spec import task_reference
from tests.support.cluster_fixtures import ControlPlane, dedicated_control_plane
from tests.support.operator_fixtures import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorFactory,
    TaskRuns,
    free_port,
    inline_task,
    report_logs_of,
    wait_for,
)
from tests.support.scrape import Scrape, scrape, try_scrape
from tests.support.simulator_fixtures import (
    SimulatorProcess,
    start_simulator_process,
    stop_simulator_process,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUNS = 60
WORKERS = 32  # the operator's reconcile workers (its default): its calls in flight
QUICK = "make # sim:pending=0.1s sim:duration=0.3s"
# The Ona API's limit: requests per second, and the bucket's size.
RATE, BURST = 8, 8
# The API server: ten requests in flight in all; the operator's level gets two seats of
# them (ceil(10 x 50 / (245 + 50)), 245 being the shares of the built-in levels).
APISERVER_FLAGS = ("--max-requests-inflight=5", "--max-mutating-requests-inflight=5")
BUSY_LEVEL = f"""
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata:
  name: ona-taskrun-operator-busy
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 50
    lendablePercent: 0
    borrowingLimitPercent: 0
    limitResponse:
      type: Reject
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: ona-taskrun-operator-busy
spec:
  matchingPrecedence: 500
  priorityLevelConfiguration:
    name: ona-taskrun-operator-busy
  distinguisherMethod:
    type: ByUser
  rules:
  - subjects:
    - kind: User
      user:
        name: "{OPERATOR.user}"
    resourceRules:
    - verbs: ["*"]
      apiGroups: ["*"]
      resources: ["*"]
      namespaces: ["*"]
      clusterScope: true
    nonResourceRules:
    - verbs: ["*"]
      nonResourceURLs: ["*"]
"""


@pytest.fixture(scope="module")
def busy_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with dedicated_control_plane(
        tmp_path_factory.mktemp("busy-control-plane"), apiserver_flags=APISERVER_FLAGS
    ) as plane:
        plane.kubectl_run("apply", "-f", "-", input=BUSY_LEVEL)
        yield plane


@pytest.fixture(scope="module")
def limited_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    running = start_simulator_process(
        token=secrets.token_urlsafe(24),
        readonly_token=secrets.token_urlsafe(24),
        stderr_dir=tmp_path_factory.mktemp("limited-simulator"),
    )
    try:
        yield running
    finally:
        stop_simulator_process(running)


def _when(call: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(call["time"]).replace("Z", "+00:00")).timestamp()


def busiest_second(times: list[float], after: float) -> int:
    """The most calls that arrived within any one second from `after` on."""
    times = sorted(t for t in times if t >= after)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_429s_from_both_apis_slow_the_operator_down_and_lose_no_run(
    request: pytest.FixtureRequest,
    busy_plane: ControlPlane,
    limited_simulator: SimulatorProcess,
    tmp_path: Path,
) -> None:
    api = config.new_client_from_config(config_file=str(busy_plane.admin_kubeconfig))  # type: ignore[no-untyped-call]
    namespace = f"t-busy-{secrets.token_hex(4)}"
    busy_plane.kubectl_run("create", "namespace", namespace)
    taskruns = TaskRuns(busy_plane, client.CustomObjectsApi(api), namespace)
    factory = OperatorFactory(busy_plane, limited_simulator, tmp_path)
    report_logs_of(request.node, factory)
    sim = SimulatorControl(limited_simulator.control_url)
    try:
        port = free_port()
        settings = {
            "METRICS_PORT": str(port),
            "METRICS_BIND_ADDRESS": "127.0.0.1",
            "RECONCILE_WORKERS": str(WORKERS),
        }
        factory(namespace, extra_env=settings)

        def leading() -> Scrape | None:
            scraped = try_scrape(port)
            return scraped if scraped is not None and scraped.value("ona_taskrun_leader") else None

        wait_for(leading, timeout=120, what="the operator to lead")
        sim.clear_calls()
        sim.set_rate_limit(RATE, burst=BURST)
        began = time.monotonic()
        for index in range(RUNS):
            taskruns.api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                taskruns.manifest(f"run-{index}", {"task": inline_task(QUICK)}),
            )

        def statuses() -> dict[str, dict[str, Any]]:
            found = cast(
                dict[str, Any],
                taskruns.api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL),
            )
            return {
                i["metadata"]["name"]: {**(i.get("status") or {}), "uid": i["metadata"]["uid"]}
                for i in found["items"]
            }

        def all_final() -> dict[str, dict[str, Any]] | None:
            now = statuses()
            done = [s for s in now.values() if s.get("phase") in ("SUCCEEDED", "FAILED")]
            return now if len(done) == RUNS else None

        final = wait_for(all_final, timeout=600, what=f"{RUNS} TaskRuns to end")
        took = time.monotonic() - began
        calls = sim.calls()
        limit = sim.rate_limit()
        tasks = sim.tasks()
        executions = sim.executions()
        scraped = scrape(port)
    finally:
        sim.clear_rate_limit()
        sim.close()
        api.close()  # type: ignore[no-untyped-call]

    refused = [c for c in calls if c["fault"] == "rate_limit"]
    arrivals = sorted(_when(c) for c in calls)
    first_wave = sum(1 for at in arrivals if at < arrivals[0] + 1.0)
    busiest = busiest_second(arrivals, after=arrivals[0] + 1.0)
    kube_requests = scraped.total("ona_taskrun_kube_requests_total")
    kube_429s = scraped.total("ona_taskrun_kube_requests_total", code="429")
    ona_ok = scraped.total("ona_taskrun_ona_requests_total", code="ok")
    ona_429s = scraped.total("ona_taskrun_ona_requests_total", code="resource_exhausted")
    seen = (
        f"{RUNS} runs in {took:.1f}s; Ona calls {len(calls)}, refused {len(refused)}, "
        f"first second {first_wave}, busiest second after it {busiest}; the operator's "
        f"Kubernetes requests {kube_requests:.0f}, refused {kube_429s:.0f}"
    )
    print(f"\n{seen}", file=sys.stderr)

    # Every run ended, and succeeded: none lost.
    assert Counter(s["phase"] for s in final.values()) == {"SUCCEEDED": RUNS}

    # Each started once, by the simulator's own record: one task per TaskRun (its
    # reference names the TaskRun's uid), one execution per task, the one in its status.
    references = Counter(t["metadata"]["reference"] for t in tasks)
    assert sorted(references) == sorted(task_reference(s["uid"]) for s in final.values())
    assert set(references.values()) == {1}
    per_task = Counter(e["execution"]["metadata"]["taskId"] for e in executions)
    assert len(per_task) == RUNS
    assert set(per_task.values()) == {1}, f"started twice: {per_task.most_common(3)}"
    assert {s["taskExecutionId"] for s in final.values()} == {
        e["execution"]["id"] for e in executions
    }

    # Both APIs pushed back, and the operator counted it.
    assert limit["refused"] == len(refused) > 0
    assert kube_429s > 0, "the API server never refused: the test proves nothing"
    assert scraped.value("ona_taskrun_throttled_total", source="kube", connection="") > 0
    assert scraped.value("ona_taskrun_throttled_total", source="ona", connection="default") > 0
    assert (
        scraped.value("ona_taskrun_throttle_wait_seconds_total", source="kube", connection="") > 0
    )
    assert (
        scraped.value("ona_taskrun_throttle_wait_seconds_total", source="ona", connection="default")
        > 0
    )

    # A bounded retry rate. The first second is the first wave, sent before any 429 came
    # back: no more than the operator's reconcile workers have in flight, and the burst.
    # After it, no second sees more calls than the limit lets through (the burst and a
    # second's tokens) and as many refused calls again as a second's tokens.
    assert first_wave <= WORKERS + BURST, seen
    assert busiest <= BURST + 2 * RATE, seen
    # Over the whole run, as the operator counts it: at most one refused call for two
    # answered ones, from either API.
    assert ona_429s <= ona_ok / 2, seen
    assert kube_429s <= (kube_requests - kube_429s) / 2, seen
