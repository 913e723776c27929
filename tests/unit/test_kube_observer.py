"""What the Kubernetes client tells its observer (the operator's metrics count it): each
request and watch with the status it got, 0 when no answer came; over real HTTP to a
small API server stand-in on loopback."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from ona_taskrun.clients.kube import KubeClient, KubeError

RUNS = "/apis/automation.ona.com/v1alpha1/namespaces/ns/taskruns"


@dataclass
class Seen:
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def on_request(self, method: str, path: str, code: int) -> None:
        self.requests.append((method, path.split("?", 1)[0], code))


@dataclass
class Login:
    """A login as kopf hands it over, without kopf."""

    server: str
    insecure: bool | None = True
    token: str | None = None

    def as_ssl_context(self) -> ssl.SSLContext:
        raise AssertionError("an insecure login needs no TLS context")

    def as_http_headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer t"}


async def serve(request: web.Request) -> web.StreamResponse:
    if request.query.get("watch") == "true":
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(json.dumps({"type": "ADDED", "object": {}}).encode() + b"\n")
        return response
    if request.path.endswith("/missing"):
        return web.json_response({"message": "not found"}, status=404)
    return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})


@pytest.fixture
async def url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_each_request_and_watch_is_told_with_its_status(url: str) -> None:
    seen = Seen()
    kube = KubeClient.from_connection(Login(url), observer=seen)
    try:
        await kube.get_taskrun("ns", "run")
        with pytest.raises(KubeError):
            await kube.get_taskrun("ns", "missing")
        events = [e async for e in kube.watch("taskruns", "ns", "1", timeout_seconds=5)]
    finally:
        await kube.aclose()
    assert events == [{"type": "ADDED", "object": {}}]
    assert seen.requests == [
        ("GET", f"{RUNS}/run", 200),
        ("GET", f"{RUNS}/missing", 404),
        ("WATCH", RUNS, 200),
    ]


async def test_a_request_without_an_answer_is_told_as_0() -> None:
    seen = Seen()
    kube = KubeClient("http://127.0.0.1:9", verify=False, headers={}, observer=seen)
    try:
        with pytest.raises(KubeError):
            await kube.get_taskrun("ns", "run")
    finally:
        await kube.aclose()
    assert seen.requests == [("GET", f"{RUNS}/run", 0)]
