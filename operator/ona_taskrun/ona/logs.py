"""Reading a task execution's log: `status.logUrl` with a logs token.

The log is plain text streamed with chunked encoding, one line per `\\n`, growing while the
execution runs; the server ends the response once the execution has ended. `open_log`
reads it once; `read_log` is what callers use: it reopens the log after a 502/503/504 or a
dropped connection (three times, one second apart, as the official SDK does), skips the
lines it already delivered, and after a 401 asks once for a new logs token (an expired one
is the usual cause). Failures raise the client's own errors (`Unauthenticated`,
`Unavailable`, `NotFound`, ...), and no message ever holds a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import httpx

from .errors import NotFound, OnaError, PermissionDenied, Unauthenticated, Unavailable

METHOD = "ReadLog"  # the name log reads carry in errors and metrics
RETRIES = 3
RETRY_DELAY = 1.0
_SNIPPET = 160

Redact = Callable[[str], str]
# Gives the logs token; called with True when the one given before was refused.
TokenSource = Callable[[bool], Awaitable[str]]


def _error(response: httpx.Response, redact: Redact) -> OnaError:
    status = response.status_code
    text = " ".join(response.text.split())[:_SNIPPET] if response.content else "empty body"
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
) -> AsyncGenerator[str, None]:
    """Every line of the log from its start, until the server ends the response."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/plain"}
    try:
        async with http.stream("GET", url, headers=headers, timeout=limits) as response:
            if not response.is_success:
                await response.aread()
                raise _error(response, redact)
            async for line in response.aiter_lines():
                yield line
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
