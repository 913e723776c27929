"""The Kubernetes requests `kubectl ona` makes as the user, on aiohttp.

Its own small client rather than the operator's: a command line tool should start fast,
and the operator's client comes with kopf.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp

from ..rules.customrun import GROUP as CUSTOMRUN_GROUP
from ..rules.customrun import PLURAL as CUSTOMRUNS
from ..rules.customrun import VERSION as CUSTOMRUN_VERSION

GROUP: Final = "automation.ona.com"
VERSION: Final = "v1alpha1"
PLURAL: Final = "taskruns"


class KubeApiError(Exception):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the Kubernetes API answered {status}: {message}" if status else message)
        self.status = status


class Kube:
    def __init__(
        self, server: str, *, verify: ssl.SSLContext | bool, headers: Mapping[str, str]
    ) -> None:
        self._server = server.rstrip("/")
        self._verify = verify
        self._headers = dict(headers)
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify),
                timeout=aiohttp.ClientTimeout(total=30.0, sock_connect=10.0),
            )
        headers = {**self._headers, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            async with self._session.request(
                method, self._server + path, data=data, headers=headers
            ) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(
                0, f"cannot reach the Kubernetes API at {self._server}: {_why(exc)}"
            ) from exc
        text = raw.decode(errors="replace")
        if status >= 400:
            try:
                message = str(json.loads(text).get("message", text))
            except (ValueError, AttributeError):
                message = text[:300]
            raise KubeApiError(status, message)
        try:
            result: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise KubeApiError(status, "the answer is not JSON") from exc
        return result

    @staticmethod
    def _taskruns(namespace: str, name: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        return f"{path}/{name}" if name else path

    async def get_taskrun(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._request("GET", self._taskruns(namespace, name))

    async def create_taskrun(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", self._taskruns(namespace), dict(body))

    async def patch_spec(
        self, namespace: str, name: str, spec: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            self._taskruns(namespace, name),
            {"spec": dict(spec)},
            content_type="application/merge-patch+json",
        )

    async def get_customrun(self, namespace: str, name: str) -> dict[str, Any]:
        """A Tekton CustomRun (the parent of a TaskRun that runs for one)."""
        path = f"/apis/{CUSTOMRUN_GROUP}/{CUSTOMRUN_VERSION}/namespaces/{namespace}"
        return await self._request("GET", f"{path}/{CUSTOMRUNS}/{name}")

    async def events(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        query = urlencode(
            {"fieldSelector": f"involvedObject.name={name},involvedObject.kind=TaskRun"}
        )
        body = await self._request("GET", f"/api/v1/namespaces/{namespace}/events?{query}")
        items = [e for e in body.get("items") or () if isinstance(e, dict)]
        return [e for e in items if (e.get("involvedObject") or {}).get("uid") in (uid, None)]


def _why(exc: BaseException) -> str:
    """What went wrong on the way to the API server, in a few words."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", "") or str(error)
        return f"its certificate is not trusted ({reason})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            return f"cannot resolve {exc.host} ({error.strerror or error})"
        reason = os.strerror(error.errno) if error.errno else str(error)
        return f"cannot connect to {exc.host}:{exc.port} ({reason})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection was closed before an answer"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
