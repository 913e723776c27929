"""End to end: TaskRunSchedules on real minute boundaries.

Cron has no finer unit than the minute and the operator's clock is the real one, so the
cases share their slots instead of each waiting for its own. One module fixture starts
two operators (one per namespace) and creates every schedule suspended, with a
`lastScheduleTime` one slot behind, as a schedule that was suspended over a slot has:
resumed, each runs its most recent missed slot (M0) at once (CronJob's rule), and its
next run comes at the next real minute boundary (M1). The tests below, in this order,
check what each schedule did at M0 and M1. The operator in namespace B dies right after
creating its M0 TaskRun, before recording it; the one in namespace A runs throughout.
Under a minute and a half in all.
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    GROUP,
    VERSION,
    OperatorFactory,
    OperatorProcess,
    TaskRuns,
    inline_task,
    report_logs_of,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle, SimulatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEDULES = "taskrunschedules"
LABEL = "automation.ona.com/schedule"
ON_TIME = 10.0  # seconds a run may be created after its slot on a busy 2-core machine
# The schedules, by namespace: (concurrencyPolicy, successfulRunsHistoryLimit, command).
IN_A = {
    "every": ("Allow", 1, "report # sim:duration=1s"),
    "forbid": ("Forbid", 3, "long # sim:hang"),
    "replace": ("Replace", 3, "long # sim:hang"),
}
IN_B = {"crashy": ("Allow", 3, "report # sim:duration=1s")}


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_name(schedule: str, slot: datetime) -> str:
    return f"{schedule}-{int(slot.timestamp()) // 60}"


def seconds_until(moment: datetime) -> float:
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def wait_until(moment: datetime) -> None:
    wait_for(
        lambda: datetime.now(UTC) >= moment,
        timeout=seconds_until(moment) + 5,
        what=f"the clock to pass {moment:%H:%M:%S}",
    )


@dataclass
class Timeline:
    control_plane: ControlPlane
    api: client.CustomObjectsApi
    factory: OperatorFactory
    a: str
    b: str
    operator_b: OperatorProcess
    first: dict[str, datetime] = field(default_factory=dict)  # schedule -> its first slot

    def schedule(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, SCHEDULES, name
        )
        return found

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.schedule(namespace, name).get("status") or {})

    def runs(self, namespace: str, schedule: str) -> list[dict[str, Any]]:
        found = self.api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "taskruns", label_selector=f"{LABEL}={schedule}"
        )
        return sorted(found["items"], key=lambda r: str(r["metadata"]["name"]))

    def names(self, namespace: str, schedule: str) -> list[str]:
        return [r["metadata"]["name"] for r in self.runs(namespace, schedule)]

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        found = client.CoreV1Api(self.api.api_client).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return [
            {"reason": e.reason, "message": e.message, "kind": e.involved_object.kind}
            for e in found.items
        ]


def _manifest(namespace: str, name: str, policy: str, keep: int, command: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskRunSchedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "* * * * *",
            "suspend": True,
            "concurrencyPolicy": policy,
            "successfulRunsHistoryLimit": keep,
            "taskRunTemplate": {
                "metadata": {"labels": {"example.com/team": "a"}},
                "spec": {"task": inline_task(command, name=name)},
            },
        },
    }


def _wait_synced(proc: OperatorProcess) -> None:
    wait_for(lambda: "TaskRuns; reconciling" in proc.log(), timeout=60, what="a first sync")


def _wait_first_look(tl: Timeline, namespace: str, name: str) -> None:
    wait_for(
        lambda: tl.status(namespace, name).get("observedGeneration") == 1,
        what=f"the first status of {name}",
    )


@pytest.fixture(scope="module")
def timeline(
    control_plane: ControlPlane,
    k8s_admin: client.ApiClient,
    ona_simulator_process: SimulatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Timeline]:
    core = client.CoreV1Api(k8s_admin)
    suffix = uuid.uuid4().hex[:8]
    a, b = f"t-schedules-a-{suffix}", f"t-schedules-b-{suffix}"
    for name in (a, b):
        core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(name=name, labels={"ona-taskrun/test": "true"})
            )
        )
    factory = OperatorFactory(control_plane, ona_simulator_process, tmp_path_factory.mktemp("ops"))
    operators = [
        factory(a),
        factory(b, extra_env={"ONA_TASKRUN_CRASH_POINT": "after-schedule-create"}),
    ]
    try:
        for proc in operators:
            _wait_synced(proc)
        # Every schedule's missed slot must be the same M0: keep clear of a boundary.
        now = datetime.now(UTC)
        boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if seconds_until(boundary) < 15:
            wait_until(boundary + timedelta(seconds=1))
        m0 = datetime.now(UTC).replace(second=0, microsecond=0)
        tl = Timeline(
            control_plane, client.CustomObjectsApi(k8s_admin), factory, a, b, operators[1]
        )
        docs = [_manifest(a, n, *spec) for n, spec in IN_A.items()]
        docs += [_manifest(b, n, *spec) for n, spec in IN_B.items()]
        control_plane.kubectl_run(
            "apply", "-f", "-", input=yaml.safe_dump_all(docs, sort_keys=False)
        )
        for doc in docs:
            namespace, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
            # The operator's first look at the suspended schedule comes first.
            _wait_first_look(tl, namespace, name)
            tl.api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                SCHEDULES,
                name,
                {"status": {"lastScheduleTime": rfc3339(m0 - timedelta(minutes=1))}},
            )
            tl.first[name] = m0
        for doc in docs:
            meta = doc["metadata"]
            control_plane.kubectl_run(
                "-n",
                meta["namespace"],
                "patch",
                SCHEDULES,
                meta["name"],
                "--type=merge",
                "-p",
                '{"spec": {"suspend": false}}',
            )
        assert datetime.now(UTC) < m0 + timedelta(minutes=1), "set-up crossed a boundary"
        yield tl
    finally:
        factory.stop_all()
        for name in (a, b):
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(name)


@pytest.fixture(autouse=True)
def _logs(request: pytest.FixtureRequest, timeline: Timeline) -> None:
    report_logs_of(request.node, timeline.factory)


def test_an_operator_killed_at_the_slot_leaves_exactly_one_run(
    timeline: Timeline, control_plane: ControlPlane, e2e_simulator: SimulatorHandle
) -> None:
    tl, slot = timeline, timeline.first["crashy"]
    # The crash point fires right after the create, before the slot is recorded.
    assert tl.operator_b.wait_exit(timeout=seconds_until(slot) + 30) == -signal.SIGKILL
    assert tl.names(tl.b, "crashy") == [run_name("crashy", slot)]
    assert tl.status(tl.b, "crashy").get("lastScheduleTime") != rfc3339(slot)

    tl.factory(tl.b)  # the restart, without the crash point
    wait_for(
        lambda: tl.status(tl.b, "crashy").get("lastScheduleTime") == rfc3339(slot),
        timeout=60,
        what="the restarted operator to record the slot",
    )
    assert tl.names(tl.b, "crashy") == [run_name("crashy", slot)]
    runs = TaskRuns(control_plane, tl.api, tl.b)
    final = runs.wait_phase(run_name("crashy", slot), "SUCCEEDED", timeout=60)
    executions = [
        e["execution"]["id"]
        for e in e2e_simulator.control.executions()
        if e["execution"]["metadata"]["taskId"] == final["taskId"]
    ]
    assert executions == [final["taskExecutionId"]]


def test_replace_deletes_the_active_run_and_its_execution_stops(
    timeline: Timeline, control_plane: ControlPlane, e2e_simulator: SimulatorHandle
) -> None:
    tl = timeline
    m0 = tl.first["replace"]
    m1 = m0 + timedelta(minutes=1)
    runs = TaskRuns(control_plane, tl.api, tl.a)
    old = runs.wait_phase(run_name("replace", m0), "RUNNING", timeout=seconds_until(m0) + 30)
    wait_for(
        lambda: tl.names(tl.a, "replace") == [run_name("replace", m1)],
        timeout=seconds_until(m1) + 45,
        what="the M1 run to replace the M0 run",
    )

    def remote_phase() -> str:
        execution = e2e_simulator.control.execution(old["taskExecutionId"])["execution"]
        return str(execution["status"]["phase"])

    wait_for(lambda: remote_phase() == "TASK_EXECUTION_PHASE_STOPPED", what="the old execution")
    runs.wait_phase(run_name("replace", m1), "RUNNING")
    created = parse(runs.get(run_name("replace", m1))["metadata"]["creationTimestamp"])
    assert 0 <= (created - m1).total_seconds() <= ON_TIME
    # Events are posted beside the schedule's writes, so they may trail them a little.
    wait_for(
        lambda: {"Created", "Replaced"} <= {e["reason"] for e in tl.events(tl.a, "replace")},
        what="Created and Replaced Events on the schedule",
    )


def test_every_minute_runs_on_time_and_prunes_its_history(
    timeline: Timeline, control_plane: ControlPlane
) -> None:
    tl = timeline
    m0 = tl.first["every"]
    m1 = m0 + timedelta(minutes=1)
    runs = TaskRuns(control_plane, tl.api, tl.a)
    # successfulRunsHistoryLimit 1: once the M1 run has succeeded, the M0 run goes.
    wait_for(
        lambda: tl.names(tl.a, "every") == [run_name("every", m1)],
        timeout=seconds_until(m1) + 45,
        what="the M0 run to be pruned",
    )
    final = runs.wait_phase(run_name("every", m1), "SUCCEEDED")
    run = runs.get(run_name("every", m1))
    late = (parse(run["metadata"]["creationTimestamp"]) - m1).total_seconds()
    assert 0 <= late <= ON_TIME
    assert run["metadata"]["labels"]["example.com/team"] == "a"
    assert run["metadata"]["ownerReferences"][0]["kind"] == "TaskRunSchedule"

    status = wait_for(
        lambda: (s := tl.status(tl.a, "every")).get("lastSuccessfulTime") and s,
        what="lastSuccessfulTime",
    )
    assert status["lastScheduleTime"] == rfc3339(m1)
    assert parse(status["lastSuccessfulTime"]) >= parse(final["completedAt"]) - timedelta(seconds=1)
    assert status["activeCount"] == 0
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")

    def told(what: str) -> bool:
        messages = [e["message"] for e in tl.events(tl.a, "every")]
        return any(run_name("every", m0) in m and what in m for m in messages)

    wait_for(lambda: told("created"), what="an Event saying the M0 run was created")
    wait_for(lambda: told("deleted"), what="an Event saying the M0 run was deleted")

    table = control_plane.kubectl_run("-n", tl.a, "get", "otrs").stdout.splitlines()
    assert table[0].split() == ["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    row = next(line for line in table if line.startswith("every "))
    assert "* * * * *" in row
    assert row.split()[6:8] == ["false", "0"]


def test_forbid_starts_nothing_while_its_run_is_active(timeline: Timeline) -> None:
    tl = timeline
    m0 = tl.first["forbid"]
    m1 = m0 + timedelta(minutes=1)

    def skipped() -> bool:
        return any(e["reason"] == "AlreadyActive" for e in tl.events(tl.a, "forbid"))

    wait_for(skipped, timeout=seconds_until(m1) + 45, what="the M1 slot to be skipped")
    (only,) = tl.runs(tl.a, "forbid")
    assert only["metadata"]["name"] == run_name("forbid", m0)
    status = tl.status(tl.a, "forbid")
    assert status["lastScheduleTime"] == rfc3339(m0)
    assert [a["name"] for a in status["active"]] == [run_name("forbid", m0)]


def test_the_restarted_operator_keeps_to_one_run_per_slot(timeline: Timeline) -> None:
    tl = timeline
    m0 = tl.first["crashy"]
    m1 = m0 + timedelta(minutes=1)
    wanted = [run_name("crashy", m0), run_name("crashy", m1)]
    wait_for(
        lambda: tl.names(tl.b, "crashy") == wanted,
        timeout=seconds_until(m1) + 45,
        what="the M1 run",
    )
    # The schedule creates the run, then records the slot in its status.
    wait_for(
        lambda: tl.status(tl.b, "crashy").get("lastScheduleTime") == rfc3339(m1),
        what="the M1 slot recorded in the schedule's status",
    )
