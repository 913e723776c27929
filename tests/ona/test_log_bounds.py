"""Reading a log costs bounded memory whatever it holds, and what is kept of it is
scrubbed of tokens: the line cutter, `open_log` over a streamed body, the tail ring, the
secrets registry and the Events that quote them."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import secrets
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from ona_taskrun.clients.ona import OnaError, Unavailable
from ona_taskrun.clients.ona.logs import LineCutter, open_log
from ona_taskrun.controller.eventpost import EventPoster
from ona_taskrun.observability import logs
from ona_taskrun.rules.linecut import cut_line, split_cut
from ona_taskrun.rules.logtail import MAX_TAIL_BYTES, TAIL_LINE_BYTES, TailRing, tail_text
from ona_taskrun.rules.model import Event
from tests.support import waits

MiB = 1 << 20
BASE = "https://api.example.com"
LOG_URL = "https://logs.example.com/logs/task-executions/e1"
TOKEN = "logs-token-" + "k" * 24


def cutter_lines(chunks: list[bytes], max_line: int = 8) -> list[str]:
    cutter = LineCutter(max_line)
    lines = [line for chunk in chunks for line in cutter.feed(chunk)]
    last = cutter.end()
    return [*lines, last] if last is not None else lines


# ------------------------------------------------------------------------ line cutter


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"one\ntwo\n"], ["one", "two"]),
        ([b"one\ntw", b"o\nthree"], ["one", "two", "three"]),  # a last line without `\n`
        ([b"a\r\nb\rc\n"], ["a", "b", "c"]),
        ([b"a\r", b"\nb\n"], ["a", "b"]),  # `\r\n` split between two chunks
        ([b"a\n\nb\n"], ["a", "", "b"]),
        ([b"12345678\n"], ["12345678"]),  # exactly the bound: not cut
        ([b"123456789\n"], [cut_line("12345678", 1)]),
        ([b"1234", b"5678", b"90ab", b"\nok\n"], [cut_line("12345678", 4), "ok"]),
        ([b"x" * 100], [cut_line("x" * 8, 92)]),  # cut, and the stream ended mid-line
        ([bytes([c]) for c in b"abc\nlonger line\n"], ["abc", cut_line("longer l", 3)]),
    ],
)
def test_lines_are_split_at_line_ends_and_cut_to_the_bound(
    chunks: list[bytes], expected: list[str]
) -> None:
    assert cutter_lines(chunks) == expected


def test_a_cut_never_leaves_half_a_character() -> None:
    # "é" is two bytes: the 8-byte bound falls in the middle of the fifth one.
    assert cutter_lines(["ééééé\n".encode()], 9) == [cut_line("éééé", 2)]


def test_the_cut_marker_says_how_much_was_left_out() -> None:
    line = cut_line("head", 209_715_200)
    assert line == "head… [line cut: 209715200 bytes]"
    assert split_cut(line) == ("head", 209_715_200)
    assert split_cut("an ordinary line") == ("an ordinary line", 0)


def test_a_line_of_a_hundred_mib_holds_only_its_bound() -> None:
    chunk = b"y" * (64 * 1024)
    cutter = LineCutter(1024)
    tracemalloc.start()
    try:
        for _ in range(100 * MiB // len(chunk)):
            assert cutter.feed(chunk) == []
        lines = cutter.feed(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == [cut_line("y" * 1024, 100 * MiB - 1024)]
    assert peak < 256 * 1024


# ------------------------------------------------------------------------ open_log


def streamed(chunks: Callable[[], Iterator[bytes]]) -> httpx.AsyncByteStream:
    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in chunks():
                yield chunk

    return Body()


class Server:
    """A log endpoint behind httpx.MockTransport that records what it was asked."""

    def __init__(
        self,
        chunks: Callable[[], Iterator[bytes]],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.chunks = chunks
        self.status = status
        self.headers = dict(headers or {})
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, headers=self.headers, stream=streamed(self.chunks))


async def public(host: str, port: int) -> list[str]:
    return ["203.0.113.7"]  # TEST-NET-3: an ordinary address, never dialled here


async def read(server: Server, url: str = LOG_URL, base_url: str = BASE) -> list[str]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as http:
        stream = open_log(
            http,
            url,
            TOKEN,
            limits=httpx.Timeout(5.0),
            redact=lambda text: text.replace(TOKEN, "[redacted]"),
            base_url=base_url,
            resolve=public,
        )
        return [line async for line in stream]


def big_line(size: int, before: bytes = b"start\n", after: bytes = b"\nerror: boom\n"):
    def chunks() -> Iterator[bytes]:
        block = b"z" * (64 * 1024)
        yield before
        for _ in range(size // len(block)):
            yield block
        yield after

    return chunks


async def test_open_log_reads_a_huge_line_in_bounded_memory() -> None:
    server = Server(big_line(64 * MiB))
    tracemalloc.start()
    try:
        lines = await read(server)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines[0] == "start"
    head, dropped = split_cut(lines[1])
    assert head == "z" * (64 * 1024)
    assert dropped == 64 * MiB - 64 * 1024
    assert lines[2] == "error: boom"
    # The line's kept start, a chunk and the reader's own: far from the line's 64 MiB.
    assert peak < 4 * MiB
    sent = server.requests[0]
    assert sent.headers["accept-encoding"] == "identity"


async def test_a_compressed_log_is_inflated_a_chunk_at_a_time() -> None:
    # 64 MiB of one line, compressed to a few dozen KiB: a bomb if inflated whole.
    packed = gzip.compress(b"start\n" + b"z" * (64 * MiB) + b"\nerror: boom\n")
    assert len(packed) < MiB

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(packed), 4096):
            yield packed[at : at + 4096]

    server = Server(chunks, headers={"content-encoding": "gzip"})
    tracemalloc.start()
    try:
        lines = await read(server)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [lines[0], split_cut(lines[1])[1], lines[2]] == [
        "start",
        64 * MiB - 64 * 1024,
        "error: boom",
    ]
    assert peak < 4 * MiB

    deflated = Server(
        lambda: iter([zlib.compress(b"one\ntwo\n")]), headers={"content-encoding": "deflate"}
    )
    assert await read(deflated) == ["one", "two"]


async def test_an_unknown_content_encoding_is_a_clear_error() -> None:
    with pytest.raises(OnaError, match="content encoding 'br', which is not read"):
        await read(Server(lambda: iter([b"?"]), headers={"content-encoding": "br"}))


async def test_an_error_body_is_read_only_up_to_its_bound() -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(1024):  # 64 MiB if it were all read
            sent.append(1)
            yield b"<p>" + TOKEN.encode() + b" bad gateway </p>" + b" " * (64 * 1024)

    with pytest.raises(Unavailable) as failed:
        await read(Server(chunks, status=502))
    assert failed.value.http_status == 502
    assert "HTTP 502 from the log endpoint: <p>[redacted] bad gateway </p>" in failed.value.message
    assert len(sent) < 4


# ------------------------------------------------------------------------ the tail ring


def test_the_ring_keeps_the_last_lines_within_its_bytes() -> None:
    ring = TailRing(3, max_bytes=20)
    for line in ["one", "two", "three", "four"]:
        ring.push(line)
    assert ring.lines() == ["two", "three", "four"]
    ring.push("x" * 15)  # 5 + 4 + 15 > 20: the oldest go first
    assert ring.lines() == ["four", "x" * 15]
    assert ring.size == 19


def test_the_ring_always_keeps_the_newest_line_cut_to_its_bound() -> None:
    ring = TailRing(20, max_bytes=64, line_bytes=16)
    ring.push("ok")
    ring.push("y" * 100)
    assert ring.lines() == ["ok", cut_line("y" * 16, 84)]
    # A line the reader cut already keeps its marker, with the count of both cuts.
    ring.push(cut_line("z" * 40, 1000))
    assert ring.lines()[-1] == cut_line("z" * 16, 1024)


def test_the_ring_holds_a_fixed_size_whatever_it_is_fed() -> None:
    ring = TailRing(100)
    for index in range(10_000):
        ring.push(f"{index} " + "w" * (index % 5000))
    assert ring.size <= 2 * MAX_TAIL_BYTES + TAIL_LINE_BYTES + 40
    assert all(len(line.encode()) <= TAIL_LINE_BYTES + 40 for line in ring.lines())


def test_a_cut_line_fits_the_tail_with_the_lines_around_it() -> None:
    ring = TailRing(20)
    for line in ["[build] started", cut_line("x" * 65536, 200 * MiB), "[build] error: boom"]:
        ring.push(line)
    tail = tail_text(ring.lines(), 20)
    assert tail.startswith("[build] started\n" + "x" * TAIL_LINE_BYTES + "… [line cut: ")
    assert tail.endswith("\n[build] error: boom")
    assert len(tail.encode()) <= MAX_TAIL_BYTES


# ------------------------------------------------------------------------ scrubbing


@pytest.fixture
def secret() -> str:
    """A token the operator holds, as a connection's Secret would register it."""
    value = "tok-" + secrets.token_urlsafe(24)
    logs.protect(value, lifetime=60)
    return value


def test_scrub_masks_every_token_the_operator_holds(secret: str) -> None:
    other = "extra-" + secrets.token_urlsafe(12)
    text = f"curl -H 'Authorization: Bearer {secret}' && echo {other} {secret}"
    assert logs.scrub(text, extra=(other,)) == "curl -H 'Authorization: Bearer ***' && echo *** ***"
    assert secret in logs.protected()


def test_a_token_is_masked_whole_before_a_line_is_cut(secret: str) -> None:
    ring = TailRing(5, line_bytes=32, scrub=logs.scrub)
    # The token straddles the ring's cut: masked first, then cut, so none of it shows.
    ring.push("a" * 20 + secret + "b" * 100)
    assert ring.lines() == [cut_line("a" * 20 + "***" + "b" * 9, 91)]


def test_a_token_cut_by_the_reader_is_masked_in_part(secret: str) -> None:
    # The reader kept the line's first bytes, which end with the token's first half.
    ring = TailRing(5, line_bytes=1024, scrub=logs.scrub)
    ring.push(cut_line("key=" + secret[:16], 5000))
    assert ring.lines() == [cut_line("key=***", 5000)]
    assert secret[:8] not in ring.lines()[0]
    # Uncut text ending the same way is a whole line: nothing in it was cut away.
    assert logs.scrub("ends with " + secret[:3]) == "ends with " + secret[:3]


def test_a_protected_token_is_forgotten_after_its_lifetime_never_before() -> None:
    short = "short-" + secrets.token_urlsafe(12)
    logs.protect(short, lifetime=0)
    assert logs.scrub(short) == short
    kept = "kept-" + secrets.token_urlsafe(12)
    logs.protect(kept)
    logs.protect(kept, lifetime=0)  # asking again for less does not shorten it
    assert logs.scrub(kept) == "***"


async def test_events_are_scrubbed_as_they_are_queued(secret: str) -> None:
    posted: list[str] = []

    async def post(body: Mapping[str, Any], event: Event) -> None:
        posted.append(event.message)

    poster = EventPoster(post, busy=lambda: False)
    task = asyncio.create_task(poster.run())
    try:
        poster.submit({}, Event("Warning", "Failed", f"execution failed: token {secret}"))
        await waits.until(lambda: posted, "the Event posted", within=5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert posted == ["execution failed: token ***"]
