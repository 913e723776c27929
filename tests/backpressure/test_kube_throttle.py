"""The operator's Kubernetes client under the API server's 429s, over real HTTP to a small
API server stand-in on loopback that refuses as API Priority and Fairness does: past its
seats, at once, with Retry-After. The refused request is sent again once the hold is
over, every other request of the client waits for the same hold, and fewer go at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from ona_taskrun.clients.kube import THROTTLED_ATTEMPTS, KubeClient, TooManyRequests
from ona_taskrun.clients.throttle import Throttle
from tests.backpressure.test_throttle import Time
from tests.support.waits import until

RUNS = "/apis/automation.ona.com/v1alpha1/namespaces/ns/taskruns"


@dataclass
class Server:
    """Serves `seats` requests at once (each takes `work` seconds); past that, or while
    `refuse_all`, answers 429 with `retry_after`. Records (arrival, path, status)."""

    seats: int = 1000
    work: float = 0.0
    retry_after: str | None = "1"
    refuse_first: int = 0
    refuse_all: bool = False
    busy: int = 0
    seen: list[tuple[float, str, int]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        refuse = self.refuse_all or self.busy >= self.seats or self.refuse_first > 0
        if refuse:
            self.refuse_first = max(self.refuse_first - 1, 0)
            self.seen.append((now, request.path, 429))
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.json_response(
                {"kind": "Status", "message": "Too many requests, please try again later."},
                status=429,
                headers=headers,
            )
        self.busy += 1
        try:
            if request.query.get("watch") == "true":
                response = web.StreamResponse()
                await response.prepare(request)
                await response.write(b'{"type": "BOOKMARK", "object": {}}\n')
                self.seen.append((now, request.path, 200))
                return response
            await asyncio.sleep(self.work)
        finally:
            self.busy -= 1
        self.seen.append((now, request.path, 200))
        return web.json_response({"metadata": {"resourceVersion": "7"}, "items": []})

    def arrivals(self, status: int | None = None) -> list[float]:
        return [at for at, _, code in self.seen if status is None or code == status]


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    stand_in = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield stand_in, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@dataclass
class Seen:
    requests: list[tuple[str, int]] = field(default_factory=list)
    throttled: list[tuple[str, float]] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)

    def on_request(self, method: str, path: str, code: int) -> None:
        self.requests.append((method, code))

    def on_throttled(self, name: str, hold: float) -> None:
        self.throttled.append((name, hold))

    def on_waited(self, name: str, seconds: float) -> None:
        self.waited.append(seconds)


def kube(url: str, seen: Seen | None = None, throttle: Throttle | None = None) -> KubeClient:
    return KubeClient(url, verify=False, headers={}, observer=seen or Seen(), throttle=throttle)


async def test_a_refused_request_goes_again_after_retry_after(
    server: tuple[Server, str],
) -> None:
    stand_in, url = server
    stand_in.refuse_first = 1
    seen = Seen()
    client = kube(url, seen)
    try:
        body = await client.get_taskrun("ns", "run")
    finally:
        await client.aclose()
    assert body["metadata"]["resourceVersion"] == "7"
    refused, accepted = stand_in.arrivals()
    assert accepted - refused >= 1.0, "not sent again before Retry-After"
    assert seen.requests == [("GET", 429), ("GET", 200)]
    assert seen.throttled == [("", 1.0)]
    assert len(seen.waited) == 1
    assert seen.waited[0] >= 0.9


async def test_the_hold_is_the_whole_clients(server: tuple[Server, str]) -> None:
    stand_in, url = server
    stand_in.refuse_first = 1
    client = kube(url)
    try:
        first = asyncio.create_task(client.get_taskrun("ns", "run"))
        await until(lambda: client.throttle.remaining() > 0, "the first request's 429")
        # Another request, of another resource, while the first waits out its 429.
        await client.get_secret("ns", "token")
        await first
    finally:
        await client.aclose()
    refused_at = stand_in.arrivals(429)[0]
    secret_at = next(at for at, path, _ in stand_in.seen if path.endswith("/secrets/token"))
    assert secret_at - refused_at >= 1.0


async def test_a_server_with_few_seats_gets_fewer_requests_at_once(
    server: tuple[Server, str],
) -> None:
    stand_in, url = server
    stand_in.seats, stand_in.work, stand_in.retry_after = 2, 0.02, "0.5"
    client = kube(url)
    try:
        bodies = await asyncio.gather(*(client.get_taskrun("ns", f"run-{i}") for i in range(40)))
    finally:
        await client.aclose()
    assert len(bodies) == 40, "every request got its answer"
    refused = len(stand_in.arrivals(429))
    # The first round refuses what the 2 seats cannot take of the 40 sent at once; each
    # later round at most half as many as the one before.
    assert refused < 2 * 40
    assert client.throttle.throttled == refused


async def test_a_refused_watch_says_when_to_come_back(server: tuple[Server, str]) -> None:
    stand_in, url = server
    stand_in.refuse_first = 1
    stand_in.retry_after = "2"
    client = kube(url)
    try:
        with pytest.raises(TooManyRequests) as refused:
            async for _ in client.watch("taskruns", "ns", "7", timeout_seconds=5):
                pass
        assert refused.value.status == 429
        assert refused.value.retry_after == 2.0
        await client.list_versioned("taskruns", "ns")  # the watch's list again: held back
    finally:
        await client.aclose()
    watch_at, list_at = stand_in.arrivals()
    assert list_at - watch_at >= 2.0


async def test_a_request_refused_every_time_gives_up(server: tuple[Server, str]) -> None:
    stand_in, url = server
    stand_in.refuse_all = True
    stand_in.retry_after = None
    fake = Time()
    client = kube(url, throttle=Throttle(clock=fake.clock, sleep=fake.sleep, rand=lambda: 0.5))
    try:
        with pytest.raises(TooManyRequests) as refused:
            await client.patch_status("ns", "run", {"phase": "RUNNING"}, "7")
    finally:
        await client.aclose()
    assert refused.value.retry_after is None
    assert len(stand_in.seen) == THROTTLED_ATTEMPTS
    # Without Retry-After the project's back-off, doubled per 429 in a row.
    assert fake.slept == [0.375, 0.75, 1.5, 3.0, 6.0, 12.0, 22.5, 22.5, 22.5]
