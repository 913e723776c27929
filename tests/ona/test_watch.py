"""WatchEvents: both framings, frames split anywhere, stream errors and reconnects."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from ona_taskrun.clients.ona import (
    OnaError,
    PermissionDenied,
    ResourceEvent,
    ResourceOperation,
    Resync,
    Unauthenticated,
    Unavailable,
    WatchItem,
)
from ona_taskrun.clients.ona.watch import ConnectFrameDecoder, JsonLinesDecoder

from .fakes import FakeSleep, Recorder, client, connect_error, policy


def frame(payload: Any, flags: int = 0) -> bytes:
    data = json.dumps(payload).encode()
    return struct.pack(">BI", flags, len(data)) + data


def event(resource_id: str, operation: str = "RESOURCE_OPERATION_UPDATE") -> dict[str, str]:
    return {
        "operation": operation,
        "resourceType": "RESOURCE_TYPE_TASK_EXECUTION",
        "resourceId": resource_id,
    }


def stream(*chunks: bytes | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """A connection that sends the chunks in order; an exception cuts it there."""

    def serve(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                if isinstance(chunk, Exception):
                    raise chunk
                yield chunk

        return httpx.Response(200, content=body())

    return serve


async def take(items: AsyncIterator[WatchItem], count: int) -> list[WatchItem]:
    taken: list[WatchItem] = []
    async with aclosing(items) as iterator:
        async for item in iterator:
            taken.append(item)
            if len(taken) == count:
                break
    return taken


def test_connect_frames_split_at_every_byte() -> None:
    data = frame(event("a")) + frame(event("b")) + frame({}, flags=0x02)
    decoder = ConnectFrameDecoder()
    frames = [f for byte in range(len(data)) for f in decoder.feed(data[byte : byte + 1])]
    assert [json.loads(f.payload) for f in frames] == [event("a"), event("b"), {}]
    assert [f.end_stream for f in frames] == [False, False, True]
    assert decoder.pending == 0


def test_connect_frames_many_in_one_chunk_and_a_partial_tail() -> None:
    data = frame(event("a")) + frame(event("b"))
    decoder = ConnectFrameDecoder()
    frames = decoder.feed(data + data[:3])
    assert len(frames) == 2
    assert decoder.pending == 3


def test_json_lines_split_across_chunks() -> None:
    decoder = JsonLinesDecoder()
    text = (json.dumps(event("a")) + "\n\n" + json.dumps(event("b")) + "\r\n").encode()
    lines = decoder.feed(text[:10]) + decoder.feed(text[10:31]) + decoder.feed(text[31:])
    lines += decoder.feed(json.dumps(event("c")).encode())
    lines += decoder.finish()
    assert [json.loads(line)["resourceId"] for line in lines] == ["a", "b", "c"]


async def test_connect_stream_request_and_events() -> None:
    data = frame(event("x1", "RESOURCE_OPERATION_CREATE")) + frame(event("x1"))
    # The frames arrive cut in awkward places.
    server = Recorder([stream(data[:3], data[3:20], data[20:])])
    async with client(server) as ona:
        items = await take(ona.watch_events("env-1"), 3)
    assert items[0] == Resync(reconnect=False)
    assert items[1:] == [
        ResourceEvent(
            operation=ResourceOperation.CREATE,
            resource_type="RESOURCE_TYPE_TASK_EXECUTION",
            resource_id="x1",
        ),
        ResourceEvent(
            operation=ResourceOperation.UPDATE,
            resource_type="RESOURCE_TYPE_TASK_EXECUTION",
            resource_id="x1",
        ),
    ]
    request = server.requests[0]
    assert request.url.path == "/api/gitpod.v1.EventService/WatchEvents"
    assert request.headers["content-type"] == "application/connect+json"
    assert request.headers["authorization"].startswith("Bearer ")
    flags, length = struct.unpack(">BI", request.content[:5])
    assert flags == 0
    assert json.loads(request.content[5 : 5 + length]) == {"environmentId": "env-1"}


async def test_json_lines_stream_request_and_events() -> None:
    lines = (json.dumps(event("a")) + "\n" + json.dumps({"result": event("b")}) + "\n").encode()
    server = Recorder([stream(lines[:7], lines[7:])])
    async with client(server) as ona:
        items = await take(ona.watch_events("env-1", framing="jsonl"), 3)
    assert isinstance(items[0], Resync)
    assert [i.resource_id for i in items[1:] if isinstance(i, ResourceEvent)] == ["a", "b"]
    request = server.requests[0]
    assert request.headers["accept"] == "application/jsonl"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"environmentId": "env-1"}


async def test_dropped_connection_reconnects_and_resyncs() -> None:
    sleep = FakeSleep()
    server = Recorder(
        [
            stream(frame(event("a")), frame(event("b"))[:4], httpx.ReadError("connection reset")),
            httpx.ConnectError("connection refused"),
            stream(frame(event("c"))),
        ]
    )
    async with client(server, sleep) as ona:
        items = await take(ona.watch_events("env-1"), 4)
    assert items[0] == Resync(reconnect=False)
    assert isinstance(items[1], ResourceEvent)
    assert items[1].resource_id == "a"
    assert isinstance(items[2], Resync)
    assert items[2].reconnect
    assert "connection lost" in items[2].reason
    assert isinstance(items[3], ResourceEvent)
    assert items[3].resource_id == "c"
    # The first stream delivered an event, so backoff restarted: retry 1, then retry 2.
    assert sleep.delays == [0.5, 1.0]
    assert len(server.requests) == 3


async def test_clean_end_of_stream_reconnects() -> None:
    sleep = FakeSleep()
    server = Recorder([stream(frame({}, flags=0x02)), stream(frame(event("a")))])
    async with client(server, sleep) as ona:
        items = await take(ona.watch_events("env-1"), 3)
    assert items[1] == Resync(reconnect=True, reason="server ended the stream")
    assert isinstance(items[2], ResourceEvent)


async def test_stream_without_end_frame_counts_as_a_drop() -> None:
    sleep = FakeSleep()
    server = Recorder([stream(frame(event("a"))), stream(frame(event("b")))])
    async with client(server, sleep) as ona:
        items = await take(ona.watch_events("env-1"), 4)
    assert isinstance(items[2], Resync)
    assert "end-of-stream" in items[2].reason


async def test_end_frame_with_a_transient_error_reconnects() -> None:
    sleep = FakeSleep()
    end = frame({"error": {"code": "unavailable", "message": "draining"}}, flags=0x02)
    server = Recorder([stream(end), stream(frame(event("a")))])
    async with client(server, sleep) as ona:
        items = await take(ona.watch_events("env-1"), 3)
    assert isinstance(items[1], Resync)
    assert "draining" in items[1].reason


async def test_end_frame_with_a_permanent_error_is_raised() -> None:
    end = frame({"error": {"code": "permission_denied", "message": "no access"}}, flags=0x02)
    server = Recorder([stream(frame(event("a")) + end)])
    async with client(server) as ona:
        with pytest.raises(PermissionDenied) as caught:
            await take(ona.watch_events("env-1"), 10)
    assert caught.value.message == "no access"
    assert caught.value.method == "WatchEvents"


async def test_json_lines_error_line_is_raised() -> None:
    line = json.dumps({"error": {"code": "unauthenticated", "message": "token expired"}})
    server = Recorder([stream(line.encode() + b"\n")])
    async with client(server) as ona:
        with pytest.raises(Unauthenticated):
            await take(ona.watch_events("env-1", framing="jsonl"), 10)


async def test_http_error_on_connect() -> None:
    sleep = FakeSleep()
    server = Recorder(
        [
            connect_error(503, "unavailable", **{"Retry-After": "4"}),
            connect_error(401, "unauthenticated", "expired"),
        ]
    )
    async with client(server, sleep) as ona:
        with pytest.raises(Unauthenticated):
            await take(ona.watch_events("env-1"), 10)
    assert sleep.delays == [4.0]


async def test_compressed_or_garbled_frames_reconnect() -> None:
    sleep = FakeSleep()
    garbled = struct.pack(">BI", 0, 3) + b"{{{"
    compressed = struct.pack(">BI", 0x01, 2) + b"\x1f\x8b"
    server = Recorder([stream(garbled), stream(compressed), stream(frame(event("a")))])
    async with client(server, sleep) as ona:
        items = await take(ona.watch_events("env-1"), 4)
    assert [type(i).__name__ for i in items] == ["Resync", "Resync", "Resync", "ResourceEvent"]
    reasons = [i.reason for i in items if isinstance(i, Resync)]
    assert "not JSON" in reasons[1]
    assert "compressed" in reasons[2]


async def test_gives_up_after_max_failures() -> None:
    sleep = FakeSleep()
    server = Recorder([httpx.ConnectError("refused")])
    async with client(server, sleep, retry=policy(sleep, max_delay=2.0)) as ona:
        with pytest.raises(Unavailable) as caught:
            await take(ona.watch_events("env-1", max_failures=5), 10)
    assert len(server.requests) == 5
    assert sleep.delays == [0.5, 1.0, 2.0, 2.0]
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_unknown_errors_are_not_retried_forever() -> None:
    server = Recorder([httpx.Response(418, text="teapot")])
    async with client(server) as ona:
        with pytest.raises(OnaError) as caught:
            await take(ona.watch_events("env-1"), 10)
    assert caught.value.http_status == 418
    assert len(server.requests) == 1
