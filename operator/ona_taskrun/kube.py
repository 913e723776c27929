"""The few Kubernetes writes the operator makes itself, on httpx.

kopf watches TaskRuns; this module writes what kopf cannot express safely: status
updates with a resourceVersion precondition (so a stale view never overwrites a newer
one, and two operators cannot both claim a start), finalizers, Events and Leases.
Credentials come from kopf's login (kubeconfig or in-cluster service account).
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import kopf

from . import metrics

GROUP, VERSION, PLURAL = "automation.ona.com", "v1alpha1", "taskruns"
CONNECTIONS, CLUSTER_CONNECTIONS = "onaconnections", "clusteronaconnections"
_KINDS = {
    PLURAL: "TaskRun",
    CONNECTIONS: "OnaConnection",
    CLUSTER_CONNECTIONS: "ClusterOnaConnection",
}
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
log = logging.getLogger(__name__)


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API answered {status}: {message}")
        self.status = status


class Conflict(KubeError):
    """The object changed since it was read (409): re-read and decide again."""


class Gone(KubeError):
    """The object no longer exists (404)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeClient:
    def __init__(
        self,
        server: str,
        *,
        verify: ssl.SSLContext | bool,
        headers: Mapping[str, str],
        token_path: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        # A projected service-account token is rotated on disk: re-read it on a 401.
        self._token_path = token_path
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=server.rstrip("/"),
            verify=verify,
            headers=dict(headers),
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo) -> KubeClient:
        verify: ssl.SSLContext | bool = False if info.insecure else info.as_ssl_context()
        in_cluster = info.token is not None and SERVICE_ACCOUNT_TOKEN.is_file()
        return cls(
            info.server,
            verify=verify,
            headers=info.as_http_headers(),
            token_path=SERVICE_ACCOUNT_TOKEN if in_cluster else None,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, *, json: Any = None, content_type: str | None = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": content_type} if content_type else None
        try:
            response = await self._http.request(method, path, json=json, headers=headers)
            if response.status_code == 401 and self._refresh_token():
                response = await self._http.request(method, path, json=json, headers=headers)
        except httpx.HTTPError as exc:
            metrics.kube_request(method, path, 0)
            raise KubeError(0, f"{type(exc).__name__} talking to the API server") from exc
        metrics.kube_request(method, path, response.status_code)
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text[:300]
            error = {409: Conflict, 404: Gone}.get(response.status_code, KubeError)
            raise error(response.status_code, message)
        body: dict[str, Any] = response.json()
        return body

    def _refresh_token(self) -> bool:
        if self._token_path is None:
            return False
        try:
            token = self._token_path.read_text().strip()
        except OSError:
            return False
        self._http.headers["Authorization"] = f"Bearer {token}"
        return True

    @staticmethod
    def _path(namespace: str, name: str = "", sub: str = "", plural: str = PLURAL) -> str:
        """The path of a custom object; an empty namespace means cluster-scoped."""
        path = f"/apis/{GROUP}/{VERSION}"
        if namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    async def get_taskrun(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._request("GET", self._path(namespace, name))

    async def list_taskruns(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return await self.list_objects(PLURAL, namespace)

    async def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of a kind (in one namespace, or all); list items get their kind."""
        body = await self._request("GET", self._path(namespace or "", plural=plural))
        items = list(body.get("items", []))
        for item in items:  # list items come without kind/apiVersion
            item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            item.setdefault("kind", _KINDS[plural])
        return items

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        """One Secret by name: the operator never lists or watches Secrets."""
        return await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")

    async def get_namespace(self, name: str) -> dict[str, Any]:
        return await self._request("GET", f"/api/v1/namespaces/{name}")

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status_patch: Mapping[str, Any],
        resource_version: str,
        *,
        plural: str = PLURAL,
    ) -> dict[str, Any]:
        """Merge-patch the status; fails with Conflict if the object changed meanwhile."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status_patch)}
        return await self._request(
            "PATCH",
            self._path(namespace, name, "status", plural),
            json=body,
            content_type="application/merge-patch+json",
        )

    async def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        return await self._request(
            "PATCH",
            self._path(namespace, name),
            json=body,
            content_type="application/merge-patch+json",
        )

    async def post_event(
        self, obj: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace", "default")
        now = _now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'taskrun')}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TaskRun",
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "ona-taskrun-operator"},
            "reportingComponent": "ona-taskrun-operator",
            "reportingInstance": "ona-taskrun-operator",
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "eventTime": now,
            "action": reason,
            "count": 1,
        }
        try:
            await self._request("POST", f"/api/v1/namespaces/{namespace}/events", json=event)
        except KubeError as exc:  # Events are best effort: never fail a reconcile for one.
            log.warning("could not post event %s on %s: %s", reason, meta.get("name"), exc)

    # ------------------------------------------------------------------ leases

    def _lease_path(self, namespace: str, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", self._lease_path(namespace, name))
        except Gone:
            return None

    async def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> Any:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        return await self._request("POST", self._lease_path(namespace), json=body)

    async def replace_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        meta = lease["metadata"]
        return await self._request(
            "PUT", self._lease_path(meta["namespace"], meta["name"]), json=dict(lease)
        )
