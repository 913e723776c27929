"""End to end: a connection's spec.limits hold runs back in a fair line, spec.suspend holds
a run until it is released, and a restarted operator keeps to the limit. What ran at once
is read from the simulator's own record of its executions (created -> completed)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.test_connections import Kube, _calls_for, _execution, _taskruns, _team, _token
from tests.support.operator_fixtures import (
    ENVIRONMENT_ID,
    GROUP,
    VERSION,
    OperatorFactory,
    TaskRuns,
    inline_task,
    unique_reference,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e


@pytest.fixture
def kube(control_plane: Any, k8s_admin: client.ApiClient) -> Kube:
    return Kube(control_plane, k8s_admin)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _spans(sim: SimulatorHandle, statuses: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    spans = []
    for status in statuses:
        meta = _execution(sim, status["taskExecutionId"])["metadata"]
        spans.append((_when(meta["createdAt"]), _when(meta["completedAt"])))
    return spans


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def _limit(kube: Kube, namespace: str, name: str, limits: dict[str, Any]) -> None:
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "onaconnections", name, {"spec": {"limits": limits}}
    )


def _reason(taskruns: TaskRuns, name: str) -> str:
    for cond in taskruns.status(name).get("conditions") or ():
        if cond["type"] == "Succeeded":
            return str(cond["reason"])
    return ""


def test_a_limit_of_two_never_runs_more_than_two(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    _limit(kube, team.namespace, "team", {"maxConcurrentRuns": 2})
    operator_factory(team.namespace)
    kube.wait_ready(team.namespace, "team")
    names = [f"run-{i}" for i in range(10)]
    for name in names:
        team.taskruns.apply(
            name, {"task": inline_task("make # sim:duration=1s"), "connectionRef": {"name": "team"}}
        )
    queued = wait_for(
        lambda: [n for n in names if _reason(team.taskruns, n) == "Queued"] or None,
        what="a run held back with reason Queued",
    )
    message = next(
        c["message"]
        for c in team.taskruns.status(queued[0])["conditions"]
        if c["type"] == "Succeeded"
    )
    assert "allows 2 concurrent runs" in message
    assert "in line" in message
    statuses = [team.taskruns.wait_phase(n, "SUCCEEDED", timeout=90) for n in names]
    spans = _spans(e2e_simulator, statuses)
    assert _most_at_once(spans) == 2
    # A freed slot wakes the next run at once: five waves of 1 s runs take seconds. Left to
    # the safety net (each waiting run looks again every 30 s) they would take 2 minutes.
    first_start, last_end = min(s for s, _ in spans), max(e for _, e in spans)
    assert (last_end - first_start).total_seconds() < 60, spans
    assert sum(1 for s in statuses if s.get("queuedAt")) >= 8
    for status in statuses:  # each started once
        assert len(_calls_for(e2e_simulator, "StartTask", status["taskId"])) == 1


def test_one_namespaces_backlog_does_not_starve_another(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    operator_namespace = kube.namespace()
    label = f"shared-{uuid.uuid4().hex[:6]}"
    busy, quiet = (
        kube.namespace({"ona.com/shared": label}),
        kube.namespace({"ona.com/shared": label}),
    )
    token = _token()
    e2e_simulator.control.add_token(token)
    kube.secret(operator_namespace, "shared-token", token)
    kube.core.create_namespaced_secret(
        operator_namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="ona-taskrun-claim-key"),
            data={"key": base64.b64encode(uuid.uuid4().bytes * 2).decode()},
        ),
    )
    name = f"shared-{uuid.uuid4().hex[:8]}"
    kube.apply(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterOnaConnection",
            "metadata": {"name": name},
            "spec": {
                "baseUrl": e2e_simulator.base_url,
                "tokenSecretRef": {"name": "shared-token", "key": "token"},
                "namespaceSelector": {"matchLabels": {"ona.com/shared": label}},
                "limits": {"maxConcurrentRuns": 2},
            },
        }
    )
    try:
        operator_factory(f"{busy},{quiet}", extra_env={"OPERATOR_NAMESPACE": operator_namespace})
        kube.wait_ready("", name, cluster=True)
        # The backlog's runs last long enough that the line is still there when the
        # other namespace's run comes, however slowly a loaded machine applies 50 runs.
        long_task, short_task = (
            e2e_simulator.control.seed_task(
                environment_id=ENVIRONMENT_ID,
                reference=unique_reference(),
                command=f"build # sim:duration={duration}",
            )
            for duration in ("15s", "2s")
        )
        connection_ref = {"kind": "ClusterOnaConnection", "name": name}
        spec = {"taskRef": {"id": long_task["id"]}, "connectionRef": connection_ref}
        backlog = _taskruns(kube, busy)
        for i in range(50):
            backlog.apply(f"b-{i:02d}", spec)
        wait_for(
            lambda: (
                sum(1 for i in range(50) if _reason(backlog, f"b-{i:02d}") == "Queued") >= 45
                or None
            ),
            timeout=120,
            what="the busy namespace's backlog queued",
        )
        single = _taskruns(kube, quiet)
        single.apply("only", {"taskRef": {"id": short_task["id"]}, "connectionRef": connection_ref})
        mine = single.wait_phase("only", "SUCCEEDED", timeout=90)
        started_before = [
            s
            for i in range(50)
            if (s := backlog.status(f"b-{i:02d}")).get("taskExecutionId")
            and _execution(e2e_simulator, s["taskExecutionId"])["metadata"]["createdAt"]
            < _execution(e2e_simulator, mine["taskExecutionId"])["metadata"]["createdAt"]
        ]
        # Two were running when it came; at most the runs that started while it was being
        # created went before it, never the rest of the backlog.
        assert len(started_before) <= 4, [s["taskExecutionId"] for s in started_before]
    finally:
        for namespace in (busy, quiet):
            kube.control_plane.kubectl_run(
                "delete", "taskruns", "--all", "-n", namespace, "--wait=false"
            )
        kube.custom.delete_cluster_custom_object(GROUP, VERSION, "clusteronaconnections", name)


def test_suspend_holds_a_run_until_it_is_released(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    operator_factory(team.namespace)
    kube.wait_ready(team.namespace, "team")
    reference = unique_reference()
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=reference, command="x # sim:duration=200ms"
    )
    spec = {"taskRef": {"id": task["id"]}, "connectionRef": {"name": "team"}, "suspend": True}
    team.taskruns.apply("later", spec)
    team.taskruns.apply("never", spec)
    team.taskruns.wait_condition("later", "Succeeded", "Unknown", "Suspended")
    team.taskruns.wait_condition("never", "Succeeded", "Unknown", "Suspended")
    assert _calls_for(e2e_simulator, "StartTask", task["id"]) == []
    # Stopped while suspended: it ends with nothing started.
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "taskruns", "never", {"spec": {"desiredPhase": "STOPPED"}}
    )
    team.taskruns.wait_condition("never", "Succeeded", "False", "Stopped")
    assert _calls_for(e2e_simulator, "StartTask", task["id"]) == []
    # Released: it starts through its connection, once.
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "taskruns", "later", {"spec": {"suspend": False}}
    )
    team.taskruns.wait_phase("later", "SUCCEEDED")
    assert len(_calls_for(e2e_simulator, "StartTask", task["id"])) == 1


def test_a_restarted_operator_keeps_to_the_limit_and_the_order(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    _limit(kube, team.namespace, "team", {"maxConcurrentRuns": 1})
    first = operator_factory(team.namespace)
    kube.wait_ready(team.namespace, "team")
    names = [f"q-{i}" for i in range(4)]
    for name in names:
        team.taskruns.apply(
            name, {"task": inline_task("make # sim:duration=2s"), "connectionRef": {"name": "team"}}
        )
    team.taskruns.wait_phase("q-0", "RUNNING")
    wait_for(lambda: _reason(team.taskruns, "q-3") == "Queued" or None, what="q-3 queued")
    first.kill()
    operator_factory(team.namespace)
    statuses = [team.taskruns.wait_phase(n, "SUCCEEDED", timeout=60) for n in names]
    spans = _spans(e2e_simulator, statuses)
    assert _most_at_once(spans) == 1
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)  # first created, first started
