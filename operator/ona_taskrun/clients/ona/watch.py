"""Reading the WatchEvents server stream: both framings, and the resync marker.

The stream says what changed, never the new state, and it cannot be resumed: after every
(re)connect the watcher yields a `Resync` marker, meaning "events may have been missed,
re-list what you care about". The marker comes after the new stream is established, so a
re-list done on receiving it cannot miss a change that happens while it runs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from ._connect import (
    FLAG_COMPRESSED,
    FLAG_END_STREAM,
    Redact,
    decode_envelope_prefix,
    envelope_prefix_size,
    error_from_end_stream,
)
from .errors import Unavailable
from .models import ResourceEvent

__all__ = [
    "ConnectFrameDecoder",
    "Frame",
    "Framing",
    "JsonLinesDecoder",
    "Resync",
    "WatchItem",
    "read_events",
]

Framing = Literal["connect", "jsonl"]

# A frame larger than this is a broken stream, not an event (events are three short fields).
MAX_FRAME_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Resync:
    """The watch stream was (re)established; anything may have changed in between.

    `reconnect` is False for the first connection of a watch and True afterwards;
    `reason` says why the previous stream ended (empty for the first connection).
    """

    reconnect: bool
    reason: str = ""


WatchItem = ResourceEvent | Resync


@dataclass(frozen=True)
class Frame:
    flags: int
    payload: bytes

    @property
    def end_stream(self) -> bool:
        return bool(self.flags & FLAG_END_STREAM)


class ConnectFrameDecoder:
    """Cuts a byte stream into Connect envelopes, whatever the chunk boundaries."""

    def __init__(self, *, method: str = "WatchEvents") -> None:
        self._buffer = bytearray()
        self._method = method

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer.extend(chunk)
        frames: list[Frame] = []
        prefix_size = envelope_prefix_size()
        while len(self._buffer) >= prefix_size:
            flags, length = decode_envelope_prefix(bytes(self._buffer[:prefix_size]))
            if length > MAX_FRAME_BYTES:
                raise Unavailable(
                    f"stream frame of {length} bytes exceeds {MAX_FRAME_BYTES}",
                    method=self._method,
                    code="internal",
                )
            if len(self._buffer) < prefix_size + length:
                break
            payload = bytes(self._buffer[prefix_size : prefix_size + length])
            del self._buffer[: prefix_size + length]
            frames.append(Frame(flags, payload))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest."""
        return len(self._buffer)


class JsonLinesDecoder:
    """Cuts a byte stream into lines, whatever the chunk boundaries; blank lines are dropped."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer.extend(chunk)
        lines: list[bytes] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                break
            line = bytes(self._buffer[:newline]).strip()
            del self._buffer[: newline + 1]
            if line:
                lines.append(line)
        return lines

    def finish(self) -> list[bytes]:
        """The last line when the stream ended without a trailing newline."""
        line = bytes(self._buffer).strip()
        self._buffer.clear()
        return [line] if line else []


def _load(payload: bytes, method: str) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unavailable("stream message is not JSON", method=method, code="internal") from exc


def _event(data: Any, method: str) -> ResourceEvent:
    # Some gateways wrap each stream message as {"result": {...}}.
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    try:
        return ResourceEvent.model_validate(data)
    except ValidationError as exc:
        raise Unavailable("stream message is not an event", method=method, code="internal") from exc


async def read_events(
    response: httpx.Response, framing: Framing, *, method: str, redact: Redact
) -> AsyncIterator[ResourceEvent]:
    """Events from an established stream until it ends.

    Returns when the server ends the stream without an error; raises the mapped OnaError
    when it ends with one, and Unavailable for a cut or garbled stream (code "internal"
    for garbled), so a watcher reconnects after either.
    """
    if framing == "connect":
        frames = ConnectFrameDecoder(method=method)
        async for chunk in response.aiter_bytes():
            for frame in frames.feed(chunk):
                if frame.flags & FLAG_COMPRESSED:
                    raise Unavailable(
                        "server sent a compressed frame that was not asked for",
                        method=method,
                        code="internal",
                    )
                data = _load(frame.payload, method)
                if frame.end_stream:
                    if isinstance(data, dict) and data.get("error"):
                        raise error_from_end_stream(method, data["error"], redact)
                    return
                yield _event(data, method)
        if frames.pending:
            raise Unavailable(
                "stream ended in the middle of a frame", method=method, code="unavailable"
            )
        # A Connect stream must finish with an end-of-stream frame; without one the
        # connection was cut.
        raise Unavailable(
            "stream ended without an end-of-stream frame", method=method, code="unavailable"
        )

    lines = JsonLinesDecoder()
    async for chunk in response.aiter_bytes():
        for line in lines.feed(chunk):
            data = _load(line, method)
            if isinstance(data, dict) and data.get("error"):
                raise error_from_end_stream(method, data["error"], redact)
            yield _event(data, method)
    for line in lines.finish():
        data = _load(line, method)
        if isinstance(data, dict) and data.get("error"):
            raise error_from_end_stream(method, data["error"], redact)
        yield _event(data, method)
