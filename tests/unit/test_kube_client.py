"""The operator's own Kubernetes writes: preconditions, errors, and token rotation."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from ona_taskrun.kube import Conflict, Gone, KubeClient, KubeError


def _client(handler: httpx.MockTransport, token_path: Path | None = None) -> KubeClient:
    return KubeClient(
        "https://api.example:6443",
        verify=False,
        headers={"Authorization": "Bearer old-token"},
        token_path=token_path,
        transport=handler,
    )


async def test_status_patch_carries_the_resource_version_it_read() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"metadata": {"resourceVersion": "8"}})

    kube = _client(httpx.MockTransport(handler))
    await kube.patch_status("ns", "run", {"phase": "RUNNING"}, "7")
    await kube.aclose()
    [request] = seen
    assert request.method == "PATCH"
    assert request.url.path == "/apis/automation.ona.com/v1alpha1/namespaces/ns/taskruns/run/status"
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(request.content) == {
        "metadata": {"resourceVersion": "7"},
        "status": {"phase": "RUNNING"},
    }


@pytest.mark.parametrize(("code", "error"), [(409, Conflict), (404, Gone)])
async def test_conflict_and_gone_are_their_own_errors(code: int, error: type[Exception]) -> None:
    kube = _client(httpx.MockTransport(lambda r: httpx.Response(code, json={"message": "nope"})))
    with pytest.raises(error, match="nope"):
        await kube.get_taskrun("ns", "run")
    await kube.aclose()


async def test_a_rotated_service_account_token_is_read_again_after_a_401(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("new-token\n")
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer old-token":
            return httpx.Response(401, json={"message": "token expired"})
        return httpx.Response(200, json={"metadata": {"name": "run"}})

    kube = _client(httpx.MockTransport(handler), token_path=token_file)
    body = await kube.get_taskrun("ns", "run")
    await kube.aclose()
    assert body["metadata"]["name"] == "run"
    assert tokens == ["Bearer old-token", "Bearer new-token"]


async def test_without_a_token_file_a_401_is_an_error() -> None:
    kube = _client(httpx.MockTransport(lambda r: httpx.Response(401, json={"message": "no"})))
    with pytest.raises(KubeError, match="401"):
        await kube.get_taskrun("ns", "run")
    await kube.aclose()
