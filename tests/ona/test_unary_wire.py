"""Unary calls over a real socket (the aiohttp sender): what goes out, and how a failure
to get an answer is told apart by whether the request may have reached the server."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import certifi
import pytest

from ona_taskrun.clients.ona import OnaClient, OutcomeUnknown, Unavailable
from ona_taskrun.clients.ona._unary import proxy_for, trusted_cas

from .fakes import TOKEN, FakeSleep, execution_json, policy


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# What the server does once it has read a whole request: answer with these bytes, or
# None to hang up without a word, or wait for the event before doing nothing at all.
Act = Callable[[Seen], Awaitable[bytes | None]]


@dataclass
class RawServer:
    """A loopback HTTP/1.1 server that reads each request whole, then acts."""

    act: Act
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, path, headers, body)
                self.seen.append(seen)
                answer = await self.act(seen)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def reply(
    status: int, body: object, *, content_type: str = "application/json", **headers: str
) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(data)}\r\n{extra}\r\n"
    ).encode() + data


Serve = Callable[[Act], Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(act: Act) -> RawServer:
        raw = RawServer(act)
        server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        raw.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return raw

    yield start
    for server in servers:
        server.close()


def ona_at(port: int, *, timeout: float = 5.0, attempts: int = 3) -> tuple[OnaClient, FakeSleep]:
    sleep = FakeSleep()
    client = OnaClient(
        f"http://127.0.0.1:{port}/api",
        TOKEN,
        timeout=timeout,
        retry=policy(sleep, max_attempts=attempts),
    )
    return client, sleep


async def test_a_start_goes_out_as_a_connect_unary_call(serve: Serve) -> None:
    async def answer(seen: Seen) -> bytes:
        return reply(200, {"taskExecution": execution_json("x1")})

    server = await serve(answer)
    client, _ = ona_at(server.port, timeout=12.5)
    async with client as ona:
        execution = await ona.start_task("t1")
        again = await ona.start_task("t2")
    assert (execution.id, again.id) == ("x1", "x1")
    first = server.seen[0]
    assert (first.method, first.path) == (
        "POST",
        "/api/gitpod.v1.EnvironmentAutomationService/StartTask",
    )
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["connect-protocol-version"] == "1"
    assert first.headers["connect-timeout-ms"] == "12500"
    assert json.loads(first.body) == {"id": "t1"}
    assert json.loads(server.seen[1].body) == {"id": "t2"}


async def test_nothing_listening_means_not_sent_so_even_a_start_is_tried_again() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client, sleep = ona_at(port, attempts=3)
    async with client as ona:
        with pytest.raises(Unavailable) as caught:
            await ona.start_task("t1")
    assert type(caught.value) is Unavailable
    assert caught.value.request_sent is False
    assert caught.value.code == "unavailable"
    assert len(sleep.delays) == 2  # three attempts in all


async def test_hanging_up_after_the_request_makes_a_start_unknown_and_not_repeated(
    serve: Serve,
) -> None:
    async def hang_up(seen: Seen) -> None:
        return None

    server = await serve(hang_up)
    client, sleep = ona_at(server.port, attempts=3)
    async with client as ona:
        with pytest.raises(OutcomeUnknown) as caught:
            await ona.start_task("t1")
        # A read that met the same is retried, and reports that it was sent.
        with pytest.raises(Unavailable) as read:
            await ona.get_task_execution("x1")
    assert caught.value.code == "unavailable"
    assert "may have reached the server" in caught.value.message
    assert [s.path.rsplit("/", 1)[-1] for s in server.seen] == ["StartTask"] + [
        "GetTaskExecution"
    ] * 3
    assert read.value.request_sent is True
    assert len(sleep.delays) == 2


async def test_no_answer_within_the_timeout_is_a_deadline(serve: Serve) -> None:
    never = asyncio.Event()

    async def stall(seen: Seen) -> None:
        await never.wait()
        return None

    server = await serve(stall)
    client, _ = ona_at(server.port, timeout=0.3, attempts=1)
    async with client as ona:
        with pytest.raises(OutcomeUnknown) as start:
            await ona.start_task("t1")
        with pytest.raises(Unavailable) as read:
            await ona.get_task("t1")
    never.set()
    assert start.value.code == "deadline_exceeded"
    assert (read.value.code, read.value.request_sent) == ("deadline_exceeded", True)


async def test_an_error_answer_keeps_its_retry_after_and_never_shows_the_token(
    serve: Serve,
) -> None:
    async def echo_auth(seen: Seen) -> bytes:
        # A misbehaving proxy that echoes the request's headers into its error page.
        page = f"<html>bad gateway for {seen.headers['authorization']}</html>".encode()
        return reply(503, page, content_type="text/html", retry_after="7")

    server = await serve(echo_auth)
    client, _ = ona_at(server.port, attempts=1)
    async with client as ona:
        with pytest.raises(Unavailable) as caught:
            await ona.list_tasks()
    error = caught.value
    assert (error.http_status, error.retry_after) == (503, 7.0)
    assert "HTTP 503" in error.message
    assert TOKEN not in str(error)
    assert TOKEN not in error.message
    assert "[redacted]" in error.message


@pytest.mark.parametrize(
    ("url", "env", "proxy"),
    [
        ("https://app.ona.com/api", {}, None),
        ("https://app.ona.com/api", {"HTTPS_PROXY": "http://proxy:3128"}, "http://proxy:3128"),
        ("https://app.ona.com/api", {"https_proxy": "http://p:1"}, "http://p:1"),
        ("https://app.ona.com/api", {"HTTP_PROXY": "http://p:1"}, None),
        ("http://ona.internal/api", {"HTTP_PROXY": "http://p:1"}, "http://p:1"),
        ("https://app.ona.com/api", {"ALL_PROXY": "http://all:1"}, "http://all:1"),
        ("https://app.ona.com/api", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ona.com"}, None),
        ("https://app.ona.com/api", {"HTTPS_PROXY": "http://p:1", "no_proxy": ".ona.com"}, None),
        ("https://app.ona.com/api", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        (
            "https://app.ona.com/api",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "notona.com,app.ona.com:443"},
            None,
        ),
        (
            "https://app.ona.com/api",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "pona.com"},
            "http://p:1",
        ),
    ],
)
def test_the_proxy_comes_from_the_environment_as_for_streams(
    url: str, env: dict[str, str], proxy: str | None
) -> None:
    assert proxy_for(url, env) == proxy


async def test_unary_calls_go_through_the_proxy_the_environment_names(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answer(seen: Seen) -> bytes:
        return reply(200, {"taskExecution": execution_json("x1")})

    proxy = await serve(answer)
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    # Nothing resolves this name: only the proxy can have answered.
    async with OnaClient("http://ona.invalid/api", TOKEN, retry=policy(FakeSleep())) as ona:
        execution = await ona.start_task("t1")
    assert execution.id == "x1"
    assert proxy.seen[0].path == (
        "http://ona.invalid/api/gitpod.v1.EnvironmentAutomationService/StartTask"
    )
    assert proxy.seen[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_tls_trusts_certifi_unless_the_environment_names_cas(tmp_path: Path) -> None:
    assert (
        trusted_cas({}).get_ca_certs()
        == ssl.create_default_context(cafile=certifi.where()).get_ca_certs()
    )
    empty = tmp_path / "certs"
    empty.mkdir()
    # A directory of CAs is read on demand: none is loaded up front.
    assert trusted_cas({"SSL_CERT_DIR": str(empty)}).get_ca_certs() == []
    with pytest.raises(FileNotFoundError):
        trusted_cas({"SSL_CERT_FILE": str(tmp_path / "missing.pem")})
