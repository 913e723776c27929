"""An API server of TaskRuns in memory, for driving the reconciler in-process.

It keeps what the reconciler relies on from the real one: every change gets a new
resourceVersion, writes carry the version they read and meet 409 Conflict when the
object changed, status and metadata are JSON merge patches, a deleted TaskRun waits for
its finalizers, and a TaskRun that no longer exists answers 404. Every change reaches the
reconciler as the TaskRun watch delivers it: a moment later, in order.

A test can make the API server do something between two of the reconciler's requests
(`before_status_write`), which a real one cannot be asked to do on cue.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ona_taskrun.clients.kube import Conflict, Gone

GROUP_VERSION = "automation.ona.com/v1alpha1"
Deliver = Callable[[str, dict[str, Any]], None]


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386: `patch` applied to `target` (None deletes a key)."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class FakeKube:
    def __init__(self, namespace: str = "ns") -> None:
        self.namespace = namespace
        self.objects: dict[str, dict[str, Any]] = {}  # name -> TaskRun
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []  # (name, reason, message)
        self.deliver: Deliver | None = None
        self.requests: list[tuple[str, str]] = []  # (method, TaskRun name), in order
        # Called with the TaskRun's name before a status write is answered; it may change
        # or remove the object (what another writer does meanwhile).
        self.before_status_write: Callable[[str], None] | None = None
        self._versions = itertools.count(1)

    # ------------------------------------------------------------------ as a user

    def create(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": "TaskRun",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": copy.deepcopy(dict(spec)),
        }
        self._store(name, body, "ADDED")
        return copy.deepcopy(body)

    def delete(self, name: str) -> None:
        """`kubectl delete`: the TaskRun goes once its finalizers are removed."""
        body = self._get(name)
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:01Z"
        self._store(name, body, "MODIFIED")

    def remove(self, name: str, *, tell: bool = True) -> None:
        """The TaskRun is gone at once, finalizers or not (a person removed them, or the
        namespace went). `tell=False`: the watch has not said so yet."""
        body = self.objects.pop(name)
        if tell:
            self._tell("DELETED", body)

    # ------------------------------------------------------------------ the client's API

    async def get_taskrun(self, namespace: str, name: str) -> dict[str, Any]:
        self.requests.append(("get_taskrun", name))
        return copy.deepcopy(self._get(name))

    async def list_objects(
        self, plural: str, namespace: str | None = None, *, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        return []  # no connection objects: TaskRuns use the default connection

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status_patch: Mapping[str, Any],
        resource_version: str,
        *,
        plural: str = "taskruns",
    ) -> dict[str, Any]:
        self.requests.append(("patch_status", name))
        if self.before_status_write is not None:
            self.before_status_write(name)
        body = self._current(name, resource_version)
        body["status"] = merge_patch(body.get("status") or {}, status_patch)
        return self._store(name, body, "MODIFIED")

    async def patch_metadata(
        self, namespace: str, name: str, metadata: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        self.requests.append(("patch_metadata", name))
        body = self._current(name, resource_version)
        body["metadata"] = merge_patch(body["metadata"], metadata)
        return self._store(name, body, "MODIFIED")

    async def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        return await self.patch_metadata(
            namespace, name, {"finalizers": finalizers}, resource_version
        )

    async def delete_taskrun(self, namespace: str, name: str, uid: str) -> None:
        self.requests.append(("delete_taskrun", name))
        if self._get(name)["metadata"]["uid"] != uid:
            raise Conflict(409, "the TaskRun was re-created")
        self.delete(name)

    async def post_event(
        self, obj: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        self.events.append((str(obj["metadata"]["name"]), reason, message))

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.secrets[namespace, name])
        except KeyError:
            raise Gone(404, f"secret {name} not found") from None

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = str(body["metadata"]["name"])
        self.secrets[namespace, name] = copy.deepcopy(dict(body))
        return copy.deepcopy(dict(body))

    # ------------------------------------------------------------------ inside

    def _get(self, name: str) -> dict[str, Any]:
        try:
            return self.objects[name]
        except KeyError:
            raise Gone(404, f"taskruns {name!r} not found") from None

    def _current(self, name: str, resource_version: str) -> dict[str, Any]:
        body = copy.deepcopy(self._get(name))
        if body["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(409, "the object has been modified")
        return body

    def _store(self, name: str, body: dict[str, Any], event: str) -> dict[str, Any]:
        meta = body["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects.pop(name, None)
            self._tell("DELETED", body)
        else:
            self.objects[name] = body
            self._tell(event, body)
        return copy.deepcopy(body)

    def _tell(self, event: str, body: dict[str, Any]) -> None:
        if self.deliver is not None:
            asyncio.get_running_loop().call_soon(self.deliver, event, copy.deepcopy(body))
