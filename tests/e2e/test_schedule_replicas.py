"""The schedule edge in-process against the real API server, as the operator's own RBAC
identity, with its clock set just after a slot: two replicas looking at one slot at once
create one TaskRun; an AlreadyExists answer for a TaskRun the schedule owns records the
slot (what a replica meets when another created the run between its list and its
create); and a TaskRun of that name the schedule does not own is left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import kopf
import pytest
import yaml
from kubernetes import client

from ona_taskrun.clients.kube import KubeClient, KubeError
from ona_taskrun.controller.schedules import Schedules, key_of
from ona_taskrun.rules import schedule as schedule_rules
from ona_taskrun.rules.model import rfc3339
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import GROUP, VERSION, inline_task

pytestmark = pytest.mark.e2e


@pytest.fixture
async def kube(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[KubeClient]:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.operator_kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    found = KubeClient.from_connection(info)
    yield found
    await found.aclose()


def create_schedule(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskRunSchedule",
        "metadata": {"name": "hourly", "namespace": namespace},
        "spec": {
            "schedule": "@hourly",
            "taskRunTemplate": {"spec": {"task": inline_task("report")}},
        },
    }
    created: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "taskrunschedules", body
    )
    return created


def slot_after(schedule: dict[str, Any]) -> datetime:
    created = schedule_rules.parse_schedule(schedule).created
    return created.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def replica(kube: KubeClient, now: datetime, schedule: dict[str, Any]) -> Schedules:
    found = Schedules(lambda _key: None, clock=lambda: now)
    found.kube = kube
    found.observe("ADDED", schedule)
    return found


async def look(schedules: Schedules, key: str) -> None:
    """One look, tried again as the operator's work queue would after the API server's
    429 or 5xx (a fresh control plane answers 429 while its storage initializes)."""
    for _ in range(50):
        try:
            await schedules.reconcile(key)
            return
        except KubeError as exc:
            if exc.status not in (0, 429, 500, 503):
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("the API server kept refusing")


def fetch(api: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    return got


def runs(api: client.CustomObjectsApi, namespace: str) -> list[str]:
    found = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns")
    return sorted(item["metadata"]["name"] for item in found["items"])


async def test_two_replicas_at_one_slot_create_one_run(
    kube: KubeClient, k8s_admin: client.ApiClient, namespace: str
) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    schedule = create_schedule(api, namespace)
    slot = slot_after(schedule)
    now = slot + timedelta(seconds=2)
    first, second = replica(kube, now, schedule), replica(kube, now, schedule)
    key = key_of(schedule)
    await asyncio.gather(look(first, key), look(second, key))
    name = schedule_rules.run_name("hourly", slot)
    assert runs(api, namespace) == [name]
    # Whichever status write lost its precondition looks again: the slot stays recorded.
    for each in (first, second):
        each.observe("MODIFIED", fetch(api, namespace, "taskrunschedules", "hourly"))
        await look(each, key)
    status = fetch(api, namespace, "taskrunschedules", "hourly")["status"]
    assert status["lastScheduleTime"] == rfc3339(slot)
    assert [a["name"] for a in status["active"]] == [name]
    assert runs(api, namespace) == [name]


def _run(schedule: dict[str, Any], slot: datetime, *, owned: bool) -> dict[str, Any]:
    parsed = schedule_rules.parse_schedule(schedule)
    assert isinstance(parsed.spec, schedule_rules.ScheduleSpec)
    manifest = schedule_rules.run_manifest(parsed, parsed.spec, slot)
    # Without the schedule's label, the list before the create cannot see it: as if another
    # replica created it in between.
    del manifest["metadata"]["labels"]
    if not owned:
        del manifest["metadata"]["ownerReferences"]
    return manifest


@pytest.mark.parametrize("owned", [True, False], ids=["ours", "someone-elses"])
async def test_already_exists(
    owned: bool,
    kube: KubeClient,
    k8s_admin: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    schedule = create_schedule(api, namespace)
    slot = slot_after(schedule)
    existing = _run(schedule, slot, owned=owned)
    control_plane.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(existing))
    before = fetch(api, namespace, "taskruns", existing["metadata"]["name"])

    looker = replica(kube, slot + timedelta(seconds=2), schedule)
    await look(looker, key_of(schedule))

    status = fetch(api, namespace, "taskrunschedules", "hourly")["status"]
    assert status["lastScheduleTime"] == rfc3339(slot)  # done either way
    assert runs(api, namespace) == [existing["metadata"]["name"]]
    after = fetch(api, namespace, "taskruns", existing["metadata"]["name"])
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    if owned:
        assert [a["uid"] for a in status["active"]] == [before["metadata"]["uid"]]
        return
    assert status["active"] == []
    core = client.CoreV1Api(k8s_admin)
    for _ in range(100):  # the Event is posted beside the look
        found = core.list_namespaced_event(namespace, field_selector="involvedObject.name=hourly")
        if any(e.reason == "NameTaken" for e in found.items):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no NameTaken Event on the schedule")
