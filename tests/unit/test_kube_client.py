"""The operator's own Kubernetes writes: preconditions, errors, and token rotation, over
real HTTP to a small API server stand-in on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ona_taskrun.clients.kube import Conflict, Gone, KubeClient, KubeError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """Answers every request with `handler`, keeping what it was sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.handler: Handler = self._ok
        self.url = ""

    @staticmethod
    async def _ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"metadata": {"resourceVersion": "8"}})

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            (request.method, request.path, dict(request.headers), await request.read())
        )
        return await self.handler(request)

    def client(self, token_path: Path | None = None) -> KubeClient:
        return KubeClient(
            self.url,
            verify=False,
            headers={"Authorization": "Bearer old-token"},
            token_path=token_path,
        )


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    fake = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


def answer(status: int, body: Any) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handler


async def test_status_patch_carries_the_resource_version_it_read(server: Server) -> None:
    kube = server.client()
    await kube.patch_status("ns", "run", {"phase": "RUNNING"}, "7")
    await kube.aclose()
    [(method, path, headers, body)] = server.seen
    assert method == "PATCH"
    assert path == "/apis/automation.ona.com/v1alpha1/namespaces/ns/taskruns/run/status"
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(body) == {
        "metadata": {"resourceVersion": "7"},
        "status": {"phase": "RUNNING"},
    }


async def test_connection_status_goes_to_its_own_path(server: Server) -> None:
    kube = server.client()
    await kube.patch_status("", "shared", {"x": 1}, "3", plural="clusteronaconnections")
    await kube.patch_status("team", "a", {"x": 1}, "3", plural="onaconnections")
    await kube.aclose()
    assert [p for _, p, _, _ in server.seen] == [
        "/apis/automation.ona.com/v1alpha1/clusteronaconnections/shared/status",
        "/apis/automation.ona.com/v1alpha1/namespaces/team/onaconnections/a/status",
    ]


@pytest.mark.parametrize(("code", "error"), [(409, Conflict), (404, Gone), (500, KubeError)])
async def test_errors_say_what_the_api_server_said(
    server: Server, code: int, error: type[Exception]
) -> None:
    server.handler = answer(code, {"message": "nope"})
    kube = server.client()
    with pytest.raises(error, match=f"{code}: nope"):
        await kube.get_taskrun("ns", "run")
    await kube.aclose()


async def test_an_unreachable_api_server_is_a_kube_error(server: Server) -> None:
    kube = KubeClient("http://127.0.0.1:9", verify=False, headers={})
    with pytest.raises(KubeError, match="talking to the API server"):
        await kube.get_taskrun("ns", "run")
    await kube.aclose()


async def test_a_rotated_service_account_token_is_read_again_after_a_401(
    server: Server, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("new-token\n")

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers["Authorization"] == "Bearer old-token":
            return web.json_response({"message": "token expired"}, status=401)
        return web.json_response({"metadata": {"name": "run"}})

    server.handler = handler
    kube = server.client(token_path=token_file)
    body = await kube.get_taskrun("ns", "run")
    await kube.aclose()
    assert body["metadata"]["name"] == "run"
    assert [h["Authorization"] for _, _, h, _ in server.seen] == [
        "Bearer old-token",
        "Bearer new-token",
    ]


async def test_without_a_token_file_a_401_is_an_error(server: Server) -> None:
    server.handler = answer(401, {"message": "no"})
    kube = server.client()
    with pytest.raises(KubeError, match="401"):
        await kube.get_taskrun("ns", "run")
    await kube.aclose()


async def test_a_list_is_read_a_page_at_a_time(server: Server) -> None:
    async def pages(request: web.Request) -> web.StreamResponse:
        last = request.query.get("continue") == "page-2"
        return web.json_response(
            {
                "metadata": {"resourceVersion": "40", "continue": "" if last else "page-2"},
                "items": [{"metadata": {"name": "b" if last else "a"}}],
            }
        )

    server.handler = pages
    kube = server.client()
    first = await kube.list_page("taskruns", "ns", limit=1)
    second = await kube.list_page("taskruns", "ns", limit=1, token=first[2])
    await kube.aclose()
    assert [request[1] for request in server.seen] == [
        "/apis/automation.ona.com/v1alpha1/namespaces/ns/taskruns"
    ] * 2
    assert first[1:] == ("40", "page-2")
    assert second[1:] == ("40", "")
    assert second[0] == [
        {"metadata": {"name": "b"}, "apiVersion": "automation.ona.com/v1alpha1", "kind": "TaskRun"}
    ]
