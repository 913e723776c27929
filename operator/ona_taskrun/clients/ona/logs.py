"""Reading a task execution's log: `status.logUrl` with a logs token.

The log is plain text streamed with chunked encoding, one line per `\\n`, growing while the
execution runs; the server ends the response once the execution has ended. `open_log`
reads it once; `read_log` is what callers use: it reopens the log after a 502/503/504 or a
dropped connection (three times, one second apart, as the official SDK does), skips the
lines it already delivered, and after a 401 asks once for a new logs token (an expired one
is the usual cause). Failures raise the client's own errors (`Unauthenticated`,
`Unavailable`, `NotFound`, ...), and no message ever holds a token.

What a log holds is not ours to bound, so reading it costs bounded memory whatever it
holds: the URL is checked first (`logurl`: never a loopback, link-local or metadata
address the API's own is not at), the body is read in chunks as they arrive (a
compressed one is inflated a chunk at a time), and a line longer than `MAX_LINE_BYTES`
keeps its start and ends with a marker saying how much was left out (`cut_line`); the
rest of it is counted, never held. An error answer's body is read up to 4 KiB.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Final

import httpx

from ...rules.linecut import cut_line
from .errors import NotFound, OnaError, PermissionDenied, Unauthenticated, Unavailable
from .logurl import Resolve, check, system_resolve

METHOD = "ReadLog"  # the name log reads carry in errors and metrics
RETRIES = 3
RETRY_DELAY = 1.0
_SNIPPET = 160
# The most of one line a reader is handed; the rest of a longer line is only counted.
MAX_LINE_BYTES: Final = 64 * 1024
# The most of an error answer's body that is read (to quote its start).
_ERROR_BODY: Final = 4096
# Inflating a compressed chunk yields at most this much at a time.
_INFLATE_BYTES: Final = 64 * 1024
_EOL: Final = re.compile(rb"\r\n|\r|\n")

Redact = Callable[[str], str]
# Gives the logs token; called with True when the one given before was refused.
TokenSource = Callable[[bool], Awaitable[str]]


# ----------------------------------------------------------------------------- lines


class LineCutter:
    """Splits a byte stream into lines (at `\\n`, `\\r\\n` or `\\r`), holding at most
    `max_line` bytes of the line being read."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._max = max_line
        self._head = bytearray()
        self._dropped = 0
        self._after_cr = False  # the last chunk ended with `\r`: a `\n` next is its pair
        self._open = False  # a line has begun and not ended

    def feed(self, data: bytes) -> list[str]:
        """The lines `data` ends."""
        lines: list[str] = []
        start = 0
        if self._after_cr and data.startswith(b"\n"):
            start = 1
        self._after_cr = False
        while True:
            end = _EOL.search(data, start)
            if end is None:
                self._take(data, start, len(data))
                return lines
            self._take(data, start, end.start())
            lines.append(self._line())
            start = end.end()
            if end.group() == b"\r" and start == len(data):
                self._after_cr = True

    def end(self) -> str | None:
        """The last line, if the stream ended without a line end."""
        return self._line() if self._open else None

    def _take(self, data: bytes, start: int, stop: int) -> None:
        if stop > start:
            self._open = True
            room = self._max - len(self._head)
            if room > 0:
                self._head += data[start : min(stop, start + room)]
            self._dropped += max(0, stop - start - max(room, 0))

    def _line(self) -> str:
        head = bytes(self._head)
        dropped = self._dropped
        self._head.clear()
        self._dropped = 0
        self._open = False
        if not dropped:
            return head.decode("utf-8", errors="replace")
        # The cut may split a character: its first bytes go with the rest of it.
        whole = _whole(head)
        return cut_line(head[:whole].decode("utf-8", errors="replace"), dropped + len(head) - whole)


def _whole(data: bytes) -> int:
    """How much of `data` ends with a whole UTF-8 character (or with bytes that are no
    character's start, which are not ours to mend)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def _inflater(encoding: str) -> Callable[[bytes], Iterator[bytes]]:
    """Content decoding a chunk at a time, `_INFLATE_BYTES` out at most per step."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda chunk: iter((chunk,))
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise OnaError(
            f"the log came with content encoding {encoding[:40]!r}, which is not read",
            method=METHOD,
            code="unimplemented",
        )
    # 32 + MAX_WBITS: a gzip or zlib header, whichever comes.
    inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)

    def decode(chunk: bytes) -> Iterator[bytes]:
        try:
            data = inflate.decompress(chunk, _INFLATE_BYTES)
            while True:
                if data:
                    yield data
                # Input is left over only when the output filled `_INFLATE_BYTES`.
                if not inflate.unconsumed_tail:
                    return
                data = inflate.decompress(inflate.unconsumed_tail, _INFLATE_BYTES)
        except zlib.error as exc:
            raise OnaError(
                f"the log's {encoding} encoding is broken: {exc}", method=METHOD, code="internal"
            ) from None

    return decode


# ----------------------------------------------------------------------------- reading


async def _error(response: httpx.Response, redact: Redact) -> OnaError:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk[: _ERROR_BODY - len(body)]
        if len(body) >= _ERROR_BODY:
            break
    status = response.status_code
    # A compressed error body is not worth inflating: it is only quoted.
    plain = response.headers.get("content-encoding", "identity").lower() in ("", "identity")
    raw = body.decode("utf-8", errors="replace") if plain else ""
    text = " ".join(raw.split())[:_SNIPPET] if raw.strip() else "empty body"
    message = redact(f"HTTP {status} from the log endpoint: {text}")
    if status == 401:
        return Unauthenticated(message, method=METHOD, code="unauthenticated", http_status=status)
    if status == 403:
        return PermissionDenied(
            message, method=METHOD, code="permission_denied", http_status=status
        )
    if status == 404:
        return NotFound(message, method=METHOD, code="not_found", http_status=status)
    if status >= 500 or status == 429:
        return Unavailable(message, method=METHOD, code="unavailable", http_status=status)
    return OnaError(message, method=METHOD, code="unknown", http_status=status)


async def open_log(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    *,
    limits: httpx.Timeout,
    redact: Redact,
    base_url: str,
    resolve: Resolve = system_resolve,
    max_line: int = MAX_LINE_BYTES,
) -> AsyncGenerator[str, None]:
    """Every line of the log from its start, until the server ends the response.

    `base_url` is the API's, which decides the URLs the token may go to (`logurl`);
    a URL refused raises `LogUrlRefused` before anything is sent."""
    target = await check(url, base_url, resolve=resolve)
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "text/plain",
        "Accept-Encoding": "identity",
        "Host": target.host,
        # A connection made for one host name is not lent to another at the same address.
        "Connection": "close",
    }
    extensions = {"sni_hostname": target.sni} if target.sni else None
    try:
        async with http.stream(
            "GET", target.url, headers=headers, timeout=limits, extensions=extensions
        ) as response:
            if not response.is_success:
                raise await _error(response, redact)
            inflate = _inflater(response.headers.get("content-encoding", ""))
            lines = LineCutter(max_line)
            async for chunk in response.aiter_raw():
                for data in inflate(chunk):
                    for line in lines.feed(data):
                        yield line
            last = lines.end()
            if last is not None:
                yield last
    except httpx.RequestError as exc:
        detail = redact(str(exc)) or "no detail"
        raise Unavailable(
            f"reading the log failed: {type(exc).__name__}: {detail}",
            method=METHOD,
            code="deadline_exceeded" if isinstance(exc, httpx.TimeoutException) else "unavailable",
        ) from exc


async def read_log(
    open_stream: Callable[[str], AsyncIterator[str]],
    token: TokenSource,
    *,
    retries: int = RETRIES,
    delay: float = RETRY_DELAY,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[str, None]:
    """Each line of the log once, from the start, until the log ends.

    `open_stream(token)` opens the log from its start (e.g. `OnaClient.open_log` bound to
    the URL). A 401 renews the token once; a transient failure reopens the log up to
    `retries` times in a row, `delay` seconds apart. Other errors are raised as they are.
    """
    delivered = 0
    failures = 0
    renewed = False
    current = await token(False)
    while True:
        seen = 0
        try:
            async for line in open_stream(current):
                seen += 1
                if seen > delivered:
                    delivered = seen
                    failures = 0
                    yield line
            return
        except Unauthenticated:
            if renewed:
                raise
            renewed = True
            current = await token(True)
        except Unavailable:
            failures += 1
            if failures > retries:
                raise
            await sleep(delay)
