"""Helpers for the simulator's own tests: a small raw Connect client and condition waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.simulator_fixtures import SimulatorHandle

SERVICE = "gitpod.v1.EnvironmentAutomationService"
T = TypeVar("T")
JSON = dict[str, Any]


class Api:
    """Raw Connect calls over HTTP, so tests see exactly what a client would see."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    async def raw(
        self,
        method: str,
        body: Any = None,
        *,
        token: str | None = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {"Content-Type": "application/json"}
        if token is None:
            token = self.token
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        return await self.http.post(
            f"/{SERVICE}/{method}",
            json=body if content is None else None,
            content=content,
            params=params,
            headers=all_headers,
        )

    async def call(self, method: str, body: JSON | None = None, **kwargs: Any) -> JSON:
        response = await self.raw(method, body if body is not None else {}, **kwargs)
        assert response.status_code == 200, response.text
        result: JSON = response.json()
        return result

    async def execution(self, execution_id: str) -> JSON:
        result: JSON = (await self.call("GetTaskExecution", {"id": execution_id}))["taskExecution"]
        return result

    async def wait_phase(self, execution_id: str, phase: str, within: float = 5.0) -> JSON:
        async def reached() -> JSON | None:
            execution = await self.execution(execution_id)
            return execution if execution["status"]["phase"] == phase else None

        return await wait_for(reached, within=within, what=f"{execution_id} in {phase}")


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 5.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something other than None, or fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def api(simulator: SimulatorHandle) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=simulator.base_url, timeout=10.0) as http:
        yield Api(http, simulator.token)


FAST = "sim:pending=50ms sim:duration=100ms"


@pytest.fixture
def fast_task(simulator: SimulatorHandle) -> JSON:
    return simulator.control.seed_task(reference="fast", name="fast", command=f"true {FAST}")
