"""CustomRuns at the edge (controller/customruns.py), against a fake API server: which
watch events make a CustomRun look again, one child created however often it is looked
at, a cancel that stops the child once, and a status written with a resourceVersion
precondition."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from ona_taskrun.clients.kube import Conflict, Gone, KubeError
from ona_taskrun.controller.customruns import CustomRuns, key_of
from ona_taskrun.rules import customrun as rules

NOW = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
UID = "6b1e8f0a-0000-4000-8000-000000000001"
ENV = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"
KEY = "CustomRun:team-a/greet-first"
CHILD = rules.child_name("greet-first", UID)
TEMPLATE_SPEC = {
    "task": {"environmentId": ENV, "name": "greet", "command": "echo $(params.who)"},
    "desiredPhase": "STOPPED",
}


def customrun(
    rv: int = 1, generation: int = 1, *, spec: dict[str, Any] | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {
            "namespace": "team-a",
            "name": "greet-first",
            "uid": UID,
            "generation": generation,
            "resourceVersion": str(rv),
        },
        "spec": spec
        or {
            "customRef": {
                "apiVersion": "automation.ona.com/v1alpha1",
                "kind": "TaskRun",
                "name": "greet-template",
            },
            "params": [{"name": "who", "value": "world"}],
        },
        "status": status,
    }


class FakeKube:
    """The requests the edge makes, answered from a dict of TaskRuns and CustomRuns."""

    def __init__(self) -> None:
        self.taskruns: dict[str, dict[str, Any]] = {
            "greet-template": {
                "metadata": {"name": "greet-template", "namespace": "team-a", "uid": "t1"},
                "spec": copy.deepcopy(TEMPLATE_SPEC),
            }
        }
        self.customruns: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.rv = 100
        self.create_error: KubeError | None = None
        self.events: list[tuple[str, str, str]] = []
        # Names a read misses once, as a read made just before another replica's create.
        self.unseen: set[str] = set()

    def _next(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def get_taskrun(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", namespace, name))
        if namespace != "team-a" or name not in self.taskruns or name in self.unseen:
            self.unseen.discard(name)
            raise Gone(404, "not found")
        return copy.deepcopy(self.taskruns[name])

    async def create_object(
        self, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.calls.append(("create", namespace, name))
        if self.create_error is not None:
            raise self.create_error
        if name in self.taskruns:
            raise Conflict(409, "already exists")
        stored = copy.deepcopy(body)
        stored["metadata"].update(uid=f"uid-{name}", resourceVersion=self._next())
        stored["spec"].setdefault("desiredPhase", "RUNNING")
        stored["spec"].setdefault("deletionPolicy", "Stop")
        self.taskruns[name] = stored
        return copy.deepcopy(stored)

    async def merge_patch(self, path: str, json: Any) -> dict[str, Any]:
        self.calls.append(("patch", path))
        parts = path.split("/")
        if path.endswith("/status"):
            name = parts[-2]
            assert path.startswith("/apis/tekton.dev/v1beta1/namespaces/team-a/customruns/")
            current = self.customruns[name]
            if json["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise Conflict(409, "the object has been modified")
            status = current.setdefault("status", {})
            for key, value in json["status"].items():
                if value is None:
                    status.pop(key, None)
                else:
                    status[key] = value
            current["metadata"]["resourceVersion"] = self._next()
            return copy.deepcopy(current)
        assert path.startswith("/apis/automation.ona.com/v1alpha1/namespaces/team-a/taskruns/")
        name = parts[-1]
        if name not in self.taskruns:
            raise Gone(404, "not found")
        current = self.taskruns[name]
        if json["metadata"]["uid"] != current["metadata"]["uid"]:
            raise Conflict(409, "Precondition failed: UID in precondition")
        current["spec"].update(json["spec"])
        current["metadata"]["resourceVersion"] = self._next()
        return copy.deepcopy(current)

    async def post_event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


def edge(kube: FakeKube, queued: list[str] | None = None) -> CustomRuns:
    runs = CustomRuns((queued if queued is not None else []).append, clock=lambda: NOW)
    runs.kube = kube  # type: ignore[assignment]
    return runs


def put(kube: FakeKube, runs: CustomRuns, body: dict[str, Any]) -> None:
    """The CustomRun as the API server holds it, and its watch event."""
    kube.customruns[body["metadata"]["name"]] = copy.deepcopy(body)
    runs.observe("MODIFIED", body)


def creates(kube: FakeKube) -> list[tuple[str, ...]]:
    return [c for c in kube.calls if c[0] == "create"]


def stored_status(kube: FakeKube) -> dict[str, Any]:
    status: dict[str, Any] = kube.customruns["greet-first"]["status"]
    return status


def succeeded(kube: FakeKube) -> tuple[str, str]:
    cond = stored_status(kube)["conditions"][0]
    return cond["status"], cond["reason"]


# --------------------------------------------------------------------------- intake


def test_a_customrun_is_looked_at_when_created_or_its_spec_changes() -> None:
    queued: list[str] = []
    runs = CustomRuns(queued.append)
    runs.observe("ADDED", customrun(1))
    runs.observe("MODIFIED", customrun(1))  # the same version again
    runs.observe("MODIFIED", customrun(2))  # a status write: the same generation
    assert queued == [KEY]
    runs.observe("MODIFIED", customrun(3, generation=2))  # spec.status: RunCancelled
    assert queued == [KEY, KEY]
    runs.observe("DELETED", customrun(4, generation=2))
    runs.observe("ADDED", customrun(5))
    assert queued == [KEY] * 3


def test_another_controllers_customruns_are_not_looked_at() -> None:
    queued: list[str] = []
    runs = CustomRuns(queued.append)
    spec = {"customRef": {"apiVersion": "example.dev/v1", "kind": "Wait", "name": "w"}}
    runs.observe("ADDED", customrun(spec=spec))
    assert queued == []
    assert runs.remembered == 0


def taskrun(
    rv: int, *, name: str = CHILD, uid: str = UID, namespace: str = "team-a"
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": "child-uid",
            "resourceVersion": str(rv),
            "ownerReferences": [
                {
                    "apiVersion": "tekton.dev/v1beta1",
                    "kind": "CustomRun",
                    "name": "greet-first",
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "status": {"phase": "RUNNING"},
    }


def test_the_childs_changes_wake_its_customrun() -> None:
    queued: list[str] = []
    runs = CustomRuns(queued.append)
    runs.observe_taskrun("ADDED", taskrun(1))
    runs.observe_taskrun("MODIFIED", taskrun(1))  # nothing new
    runs.observe_taskrun("MODIFIED", taskrun(2))
    runs.observe_taskrun("DELETED", taskrun(3))
    assert queued == [KEY] * 3


def test_only_a_taskrun_under_the_childs_name_and_namespace_wakes_the_customrun() -> None:
    queued: list[str] = []
    runs = CustomRuns(queued.append)
    # Anyone may write an owner reference: under another name it is no child.
    runs.observe_taskrun("ADDED", taskrun(1, name="greet-first-forged"))
    # The name fits another uid, not the one its owner reference gives.
    runs.observe_taskrun("ADDED", taskrun(1, uid="another-uid"))
    # In another namespace, it names a CustomRun of that namespace, not this one.
    runs.observe_taskrun("ADDED", taskrun(1, namespace="team-b"))
    assert KEY not in queued
    assert queued == ["CustomRun:team-b/greet-first"]


# --------------------------------------------------------------------------- a look


async def test_one_child_however_often_the_customrun_is_looked_at(kube: FakeKube) -> None:
    runs = edge(kube)
    put(kube, runs, customrun())
    assert await runs.reconcile(KEY) == 60.0
    assert creates(kube) == [("create", "team-a", CHILD)]
    child = kube.taskruns[CHILD]
    assert child["spec"]["task"]["command"] == "echo world"
    assert child["spec"]["desiredPhase"] == "RUNNING"
    assert succeeded(kube) == ("Unknown", "Pending")
    assert stored_status(kube)["extraFields"]["taskRunUid"] == f"uid-{CHILD}"
    await runs.stop()
    assert ("Normal", "Created", f"created TaskRun {CHILD}") in kube.events
    # Looked at again, from the body the status write returned: nothing more is created.
    await runs.reconcile(KEY)
    # And from a stale body, as after a lost status write: the name finds the child.
    fresh = edge(kube)
    put(
        kube,
        fresh,
        customrun(rv=int(kube.customruns["greet-first"]["metadata"]["resourceVersion"])),
    )
    kube.customruns["greet-first"]["status"] = {}
    fresh._bodies[KEY]["status"] = {}
    await fresh.reconcile(KEY)
    assert creates(kube) == [("create", "team-a", CHILD)]
    assert stored_status(kube)["extraFields"]["taskRun"] == CHILD


async def test_a_lost_create_answer_finds_the_child_by_its_name(kube: FakeKube) -> None:
    runs = edge(kube)
    put(kube, runs, customrun())
    await runs.reconcile(KEY)
    # A second replica, which saw nothing of it and read before the first one created,
    # creates too: AlreadyExists, and the TaskRun under the name is this CustomRun's, with
    # the spec it asks for.
    other = edge(kube)
    kube.unseen.add(CHILD)
    body = copy.deepcopy(kube.customruns["greet-first"])
    body["status"] = {}
    kube.customruns["greet-first"]["status"] = {}
    other.observe("MODIFIED", body)
    await other.reconcile(KEY)
    assert len(creates(kube)) == 2
    assert succeeded(kube) == ("Unknown", "Pending")
    assert stored_status(kube)["extraFields"]["taskRun"] == CHILD


async def test_the_child_ends_and_so_does_the_customrun(kube: FakeKube) -> None:
    runs = edge(kube)
    put(kube, runs, customrun())
    await runs.reconcile(KEY)
    child = kube.taskruns[CHILD]
    child["status"] = {
        "phase": "SUCCEEDED",
        "taskExecutionId": "e1",
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
        "steps": [{"id": "s", "output": {"greeting": "hello world"}}],
    }
    child["metadata"]["resourceVersion"] = "900"
    runs.observe_taskrun("MODIFIED", child)
    assert await runs.reconcile(KEY) is None
    assert succeeded(kube) == ("True", "Succeeded")
    assert stored_status(kube)["results"] == [{"name": "greeting", "value": "hello world"}]
    # Done: looked at again, nothing is read or written.
    runs.observe("MODIFIED", kube.customruns["greet-first"])
    calls = len(kube.calls)
    assert await runs.reconcile(KEY) is None
    assert len(kube.calls) == calls


async def test_a_cancel_stops_the_child_once_and_ends_when_it_has_stopped(kube: FakeKube) -> None:
    runs = edge(kube)
    put(kube, runs, customrun())
    await runs.reconcile(KEY)
    cancelled = copy.deepcopy(kube.customruns["greet-first"])
    cancelled["spec"]["status"] = "RunCancelled"
    cancelled["spec"]["statusMessage"] = (
        "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
    )
    cancelled["metadata"]["generation"] = 2
    cancelled["metadata"]["resourceVersion"] = kube._next()
    put(kube, runs, cancelled)
    await runs.reconcile(KEY)
    assert kube.taskruns[CHILD]["spec"]["desiredPhase"] == "STOPPED"
    stops = [c for c in kube.calls if c[0] == "patch" and not c[1].endswith("/status")]
    assert stops == [
        ("patch", f"/apis/automation.ona.com/v1alpha1/namespaces/team-a/taskruns/{CHILD}")
    ]
    assert succeeded(kube) == ("Unknown", "Cancelling")
    await runs.reconcile(KEY)
    stops = [c for c in kube.calls if c[0] == "patch" and not c[1].endswith("/status")]
    assert len(stops) == 1  # asked once
    child = kube.taskruns[CHILD]
    child["status"] = {
        "phase": "STOPPED",
        "conditions": [{"type": "Succeeded", "status": "False", "reason": "Stopped"}],
    }
    child["metadata"]["resourceVersion"] = kube._next()
    runs.observe_taskrun("MODIFIED", child)
    assert await runs.reconcile(KEY) is None
    assert succeeded(kube) == ("False", rules.REASON_CANCELLED)
    assert "has been cancelled" in stored_status(kube)["conditions"][0]["message"]


async def test_cancelled_before_its_child_was_created_creates_none(kube: FakeKube) -> None:
    runs = edge(kube)
    body = customrun()
    body["spec"]["status"] = "RunCancelled"
    put(kube, runs, body)
    assert await runs.reconcile(KEY) is None
    assert creates(kube) == []
    assert succeeded(kube) == ("False", rules.REASON_CANCELLED)


async def test_a_status_write_that_meets_a_newer_customrun_looks_again(kube: FakeKube) -> None:
    runs = edge(kube)
    put(kube, runs, customrun())
    kube.customruns["greet-first"]["metadata"]["resourceVersion"] = "55"  # changed meanwhile
    assert await runs.reconcile(KEY) == 1.0
    assert "conditions" not in kube.customruns["greet-first"]["status"]


async def test_a_missing_template_fails_the_customrun_with_its_name(kube: FakeKube) -> None:
    runs = edge(kube)
    del kube.taskruns["greet-template"]
    put(kube, runs, customrun())
    assert await runs.reconcile(KEY) is None
    assert succeeded(kube) == ("False", "TemplateNotFound")
    assert creates(kube) == []
    await runs.stop()
    assert kube.events[-1][:2] == ("Warning", "TemplateNotFound")


async def test_a_taskrun_the_api_server_refuses_fails_the_customrun(kube: FakeKube) -> None:
    runs = edge(kube)
    kube.create_error = KubeError(422, 'TaskRun.automation.ona.com "x" is invalid: spec.timeout')
    put(kube, runs, customrun())
    assert await runs.reconcile(KEY) is None
    assert succeeded(kube) == ("False", "InvalidTaskRun")
    assert "is invalid: spec.timeout" in stored_status(kube)["conditions"][0]["message"]


async def test_a_forbidden_create_waits_and_tries_again(kube: FakeKube) -> None:
    runs = edge(kube)
    kube.create_error = KubeError(403, "forbidden")
    put(kube, runs, customrun())
    assert await runs.reconcile(KEY) == 30.0
    assert succeeded(kube) == ("Unknown", "CreateRefused")


async def test_a_child_deleted_before_it_ended_is_not_started_again(kube: FakeKube) -> None:
    runs = edge(kube)
    put(kube, runs, customrun())
    await runs.reconcile(KEY)
    gone = kube.taskruns.pop(CHILD)
    runs.observe_taskrun("DELETED", gone)
    assert await runs.reconcile(KEY) is None
    assert succeeded(kube) == ("False", "TaskRunDeleted")
    assert len(creates(kube)) == 1


async def test_a_child_deleted_right_after_it_ended_still_tells_how(kube: FakeKube) -> None:
    runs = edge(kube)
    put(kube, runs, customrun())
    await runs.reconcile(KEY)
    child = kube.taskruns.pop(CHILD)
    child["status"] = {
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}]
    }
    child["metadata"]["resourceVersion"] = kube._next()
    runs.observe_taskrun("MODIFIED", child)
    runs.observe_taskrun("DELETED", child)  # its ttlSecondsAfterFinished was 0
    assert await runs.reconcile(KEY) is None
    assert succeeded(kube) == ("True", "Succeeded")


def test_the_key_names_the_kind_namespace_and_name() -> None:
    assert key_of(customrun()) == KEY
