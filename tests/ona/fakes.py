"""Test doubles for the Ona client: a scripted Connect server on httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ona_taskrun.clients.ona import OnaClient, RetryPolicy
from ona_taskrun.controller.connections import Remote, RemoteSettings
from ona_taskrun.rules.connection import ConnectionKey

TOKEN = "ona-pat-s3cr3t-6f1c2d9e8b7a"
BASE_URL = "http://ona.test/api"


@dataclass
class FakeSleep:
    """Records every delay instead of sleeping."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def policy(
    sleep: FakeSleep,
    *,
    max_attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    random: Callable[[], float] = lambda: 1.0,
) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts,
        base_delay=base_delay,
        max_delay=max_delay,
        sleep=sleep,
        random=random,
    )


def connect_error(status: int, code: str, message: str = "", **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"code": code, "message": message or f"{code} happened"},
        headers=headers,
    )


Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Recorder:
    """Serves each request with the next scripted reply (a Response, an exception, or a
    function of the request) and remembers the requests."""

    replies: list[httpx.Response | Exception | Handler]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)

    @property
    def methods(self) -> list[str]:
        return [r.url.path.rsplit("/", 1)[-1] for r in self.requests]

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]


def client(
    handler: Callable[[httpx.Request], httpx.Response],
    sleep: FakeSleep | None = None,
    **kwargs: Any,
) -> OnaClient:
    retry = kwargs.pop("retry", None) or policy(sleep or FakeSleep())
    return OnaClient(BASE_URL, TOKEN, retry=retry, transport=httpx.MockTransport(handler), **kwargs)


def execution_json(
    execution_id: str,
    *,
    task_id: str = "task-1",
    phase: str = "TASK_EXECUTION_PHASE_RUNNING",
    version: str = "1",
) -> dict[str, Any]:
    return {
        "id": execution_id,
        "metadata": {"taskId": task_id, "environmentId": "env-1"},
        "status": {"phase": phase, "statusVersion": version},
    }


def offline_remote(**told: Callable[[str], None]) -> Remote:
    """A connection's Remote to an address nothing answers (its calls are faked or never
    made), telling nobody; `told` adds callbacks such as `on_unserved`."""
    return Remote(
        ConnectionKey(),
        "http://ona.test/api",
        "a-token",
        RemoteSettings(),
        notify=lambda _: None,
        on_unauthenticated=lambda: None,
        **told,
    )
