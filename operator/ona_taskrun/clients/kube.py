"""The operator's own Kubernetes requests, on aiohttp.

The TaskRun list and watch (see `watch.py`), and the writes kopf cannot express safely: status
updates with a resourceVersion precondition (so a stale view never overwrites a newer
one, and two operators cannot both claim a start), finalizers, Events and Leases, and
the TaskRuns a TaskRunSchedule creates and deletes. Credentials come from kopf's login
(kubeconfig or in-cluster service account), handed over as a `Login`; what the client does
is told to an optional `KubeObserver` (the operator's metrics).

A 429 from the API server (API Priority and Fairness, or its max-in-flight limit, both
refuse before doing anything, so any request may be sent again) slows all of the
operator's requests down through one `Throttle`: they wait for the server's Retry-After
(or the back-off) and go a few at a time; the refused request itself is sent again, up
to `THROTTLED_ATTEMPTS` times in all, before `TooManyRequests` is raised.
"""

from __future__ import annotations

import json as _json
import logging
import ssl
import uuid
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp

from .throttle import Throttle, ThrottleObserver, parse_retry_after

GROUP, VERSION, PLURAL = "automation.ona.com", "v1alpha1", "taskruns"
CONNECTIONS, CLUSTER_CONNECTIONS = "onaconnections", "clusteronaconnections"
SCHEDULES = "taskrunschedules"
_KINDS = {
    PLURAL: "TaskRun",
    CONNECTIONS: "OnaConnection",
    CLUSTER_CONNECTIONS: "ClusterOnaConnection",
    SCHEDULES: "TaskRunSchedule",
}
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# Tries of one request the API server keeps answering 429 (client-go makes ten).
THROTTLED_ATTEMPTS = 10
log = logging.getLogger(__name__)


class Login(Protocol):
    """What the client reads of a login: kopf's ConnectionInfo is one."""

    @property
    def server(self) -> str: ...
    @property
    def insecure(self) -> bool | None: ...
    @property
    def token(self) -> str | None: ...
    def as_ssl_context(self) -> ssl.SSLContext: ...
    def as_http_headers(self) -> dict[str, str]: ...


class KubeObserver(ThrottleObserver, Protocol):
    """Told each request and, as a `ThrottleObserver` (with the name ""), each 429 and
    each wait it caused."""

    def on_request(self, method: str, path: str, code: int) -> None:
        """A request (`WATCH` for a watch) to `path` was answered with `code`, 0 when no
        answer came. Called on the caller's task: it must be quick and must not raise."""


class _NoObserver:
    def on_request(self, method: str, path: str, code: int) -> None:
        return None

    def on_throttled(self, name: str, hold: float) -> None:
        return None

    def on_waited(self, name: str, seconds: float) -> None:
        return None


NO_OBSERVER = _NoObserver()


class KubeError(Exception):
    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"Kubernetes API answered {status}: {message}")
        self.status = status
        # The server's Retry-After (seconds), when it sent one.
        self.retry_after = retry_after


class Conflict(KubeError):
    """The object changed since it was read (409): re-read and decide again."""


class Gone(KubeError):
    """The object no longer exists (404)."""


class TooManyRequests(KubeError):
    """The API server kept answering 429 (too many requests); nothing was done."""


def _error(status: int, raw: bytes, retry_after: float | None = None) -> KubeError:
    text = raw.decode(errors="replace")
    try:
        message = str(_json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        message = text[:300]
    kind = {409: Conflict, 404: Gone, 429: TooManyRequests}.get(status, KubeError)
    return kind(status, message, retry_after=retry_after)


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = _json.loads(line)
    except ValueError as exc:
        raise KubeError(0, "a watch event that is not JSON") from exc
    if not isinstance(event, dict):
        raise KubeError(0, "a watch event that is not a JSON object")
    return event


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeClient:
    """The operator's own requests, on aiohttp: at thousands of TaskRuns the cost of each
    request in the operator's CPU matters, and aiohttp's is a fraction of httpx's."""

    def __init__(
        self,
        server: str,
        *,
        verify: ssl.SSLContext | bool,
        headers: Mapping[str, str],
        token_path: Path | None = None,
        observer: KubeObserver = NO_OBSERVER,
        throttle: Throttle | None = None,
    ):
        # A projected service-account token is rotated on disk: re-read it on a 401.
        self._token_path = token_path
        self._server = server.rstrip("/")
        self._ssl: ssl.SSLContext | bool = verify
        self._headers = dict(headers)
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._observer = observer
        # One for every request of the operator: the API server's 429s concern them all.
        self.throttle = throttle or Throttle("", observer)

    @classmethod
    def from_connection(cls, info: Login, *, observer: KubeObserver = NO_OBSERVER) -> KubeClient:
        verify: ssl.SSLContext | bool = False if info.insecure else info.as_ssl_context()
        in_cluster = info.token is not None and SERVICE_ACCOUNT_TOKEN.is_file()
        return cls(
            info.server,
            verify=verify,
            headers=info.as_http_headers(),
            token_path=SERVICE_ACCOUNT_TOKEN if in_cluster else None,
            observer=observer,
        )

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will run it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=30.0, sock_connect=5.0),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._watch_session is not None:
            await self._watch_session.close()

    def _watch_http(self) -> aiohttp.ClientSession:
        # Watches hold their connection for minutes: a session of their own, without the
        # requests' 30 s bound (the server ends each watch; a silent one is read-timed).
        if self._watch_session is None or self._watch_session.closed:
            self._watch_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=None),
            )
        return self._watch_session

    async def _send(
        self, method: str, path: str, data: bytes | None, content_type: str | None
    ) -> tuple[int, bytes, float | None]:
        """One request: its status, body and Retry-After (seconds), if any."""
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        async with self._http().request(
            method, self._server + path, data=data, headers=headers
        ) as response:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return response.status, await response.read(), retry_after

    async def _request(
        self, method: str, path: str, *, json: Any = None, content_type: str | None = None
    ) -> dict[str, Any]:
        data = None
        if json is not None:
            data = _json.dumps(json).encode()
            content_type = content_type or "application/json"
        for attempt in range(1, THROTTLED_ATTEMPTS + 1):
            async with self.throttle.request() as sent_at:
                try:
                    status, raw, retry_after = await self._send(method, path, data, content_type)
                    if status == 401 and self._refresh_token():
                        status, raw, retry_after = await self._send(
                            method, path, data, content_type
                        )
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self._observer.on_request(method, path, 0)
                    raise KubeError(0, f"{type(exc).__name__} talking to the API server") from exc
                self._observer.on_request(method, path, status)
                if status != 429:
                    self.throttle.answered(sent_at)
                    break
                hold = self.throttle.refused(sent_at, retry_after)
            if attempt < THROTTLED_ATTEMPTS:
                log.debug("%s %s: 429 from the API server; again in %.2fs", method, path, hold)
        if status >= 400:
            raise _error(status, raw, retry_after)
        try:
            body: dict[str, Any] = _json.loads(raw)
        except ValueError as exc:
            raise KubeError(
                status, "the API server answered with something that is not JSON"
            ) from exc
        return body

    def _refresh_token(self) -> bool:
        if self._token_path is None:
            return False
        try:
            token = self._token_path.read_text().strip()
        except OSError:
            return False
        self._headers["Authorization"] = f"Bearer {token}"
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

    async def list_objects(
        self, plural: str, namespace: str | None = None, *, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Every object of a kind (in one namespace, or all); list items get their kind."""
        items, _ = await self.list_versioned(plural, namespace or "", label_selector=label_selector)
        return items

    async def list_versioned(
        self, plural: str, namespace: str = "", *, label_selector: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object of a kind (in one namespace, or all), with their kind, and the
        list's resourceVersion: a watch from it misses nothing that happened after the
        list."""
        query = {"labelSelector": label_selector} if label_selector else {}
        items, meta = await self._list(plural, namespace, query)
        return items, str(meta.get("resourceVersion") or "")

    async def list_page(
        self, plural: str, namespace: str = "", *, limit: int, token: str = ""
    ) -> tuple[list[dict[str, Any]], str, str]:
        """One page of a list: at most `limit` objects from the `continue` token of the
        page before ("" for the first), with their kind; the list's resourceVersion; and
        the token of the next page ("" after the last). Thousands of TaskRuns are read a
        page at a time (controller.watch.PagedSource)."""
        query = {"limit": str(limit), **({"continue": token} if token else {})}
        items, meta = await self._list(plural, namespace, query)
        return items, str(meta.get("resourceVersion") or ""), str(meta.get("continue") or "")

    async def _list(
        self, plural: str, namespace: str, query: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], Mapping[str, Any]]:
        """A list's objects, with their kind, and its metadata."""
        path = self._path(namespace, plural=plural)
        body = await self._request("GET", f"{path}?{urlencode(query)}" if query else path)
        items = list(body.get("items") or [])
        for item in items:  # list items come without kind/apiVersion
            item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            item.setdefault("kind", _KINDS[plural])
        return items, body.get("metadata") or {}

    async def watch(
        self, plural: str, namespace: str, resource_version: str, *, timeout_seconds: int
    ) -> AsyncGenerator[dict[str, Any]]:
        """The watch events of a kind after `resource_version`, with bookmarks, until the
        server ends the watch (after about `timeout_seconds`). A refused watch raises
        KubeError (410 when the version is too old to watch from: list again)."""
        query = urlencode(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(timeout_seconds),
            }
        )
        path = f"{self._path(namespace, plural=plural)}?{query}"
        # A watch that sends nothing (not even a bookmark, which comes about once a
        # minute) for this long is dead without a word.
        idle = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=timeout_seconds + 30)
        for attempt in (1, 2):
            # A watch holds no place among the requests in flight, but waits for a hold.
            sent_at = await self.throttle.admit(slot=False)
            try:
                async with self._watch_http().get(
                    self._server + path, headers=self._headers, timeout=idle
                ) as response:
                    self._observer.on_request("WATCH", path, response.status)
                    if response.status == 401 and attempt == 1 and self._refresh_token():
                        continue
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if response.status == 429:
                        self.throttle.refused(sent_at, retry_after)
                    else:
                        self.throttle.answered(sent_at)
                    if response.status >= 400:
                        raise _error(response.status, await response.read(), retry_after)
                    buffer = bytearray()
                    async for chunk in response.content.iter_any():
                        buffer += chunk
                        start = 0
                        while (end := buffer.find(b"\n", start)) >= 0:
                            line = bytes(buffer[start:end])
                            start = end + 1
                            if line.strip():
                                yield _event(line)
                        del buffer[:start]
                    return
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._observer.on_request("WATCH", path, 0)
                raise KubeError(0, f"{type(exc).__name__} watching {plural}") from exc

    async def create_object(
        self, plural: str, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create an object; Conflict (409) if one of that name exists."""
        return await self._request("POST", self._path(namespace, plural=plural), json=dict(body))

    async def delete_object(self, plural: str, namespace: str, name: str, uid: str) -> None:
        """Delete an object if it is still the one with this uid (a 409 otherwise; Gone if
        it is already gone). Its dependents go in the background."""
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        await self._request("DELETE", self._path(namespace, name, plural=plural), json=options)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        """One Secret by name: the operator never lists or watches Secrets."""
        return await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Secret (the operator's own, in its namespace); Conflict if it exists."""
        return await self._request(
            "POST", f"/api/v1/namespaces/{namespace}/secrets", json=dict(body)
        )

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

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch any object by its API path (`/apis/<group>/<version>/...`); the
        caller's preconditions (metadata.resourceVersion or metadata.uid) go in the patch.
        Conflict or Gone as for every write."""
        return await self._request(
            "PATCH", path, json=dict(patch), content_type="application/merge-patch+json"
        )

    async def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        return await self.patch_metadata(
            namespace, name, {"finalizers": finalizers}, resource_version
        )

    async def patch_metadata(
        self, namespace: str, name: str, metadata: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch finalizers and annotations; Conflict if the object changed."""
        body = {"metadata": {**metadata, "resourceVersion": resource_version}}
        return await self._request(
            "PATCH",
            self._path(namespace, name),
            json=body,
            content_type="application/merge-patch+json",
        )

    async def delete_taskrun(self, namespace: str, name: str, uid: str) -> None:
        """Delete a TaskRun, only if it is still the object with this uid (Conflict if
        it was re-created under the same name, Gone if it is gone)."""
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        await self._request("DELETE", self._path(namespace, name), json=options)

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
                "apiVersion": obj.get("apiVersion") or f"{GROUP}/{VERSION}",
                "kind": obj.get("kind") or "TaskRun",
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
