"""How a unary Connect call goes over the wire: one POST, its whole answer read.

At a thousand TaskRuns the unary calls (StartTask above all) are most of the operator's
HTTP, and the HTTP client's own CPU per request is what they cost: aiohttp's is a small
fraction of httpx's (about 0.05 ms against 1.7 ms per request on loopback, measured with
32 calls in flight; httpx's connection pool checks every pooled connection for each
request). Unary calls therefore go through aiohttp. Streams and log reads, a handful at a
time, stay on httpx.

Both senders report a failure to get an answer as `SendError`, which says whether any
byte of the request may have left: the client decides from that whether a call that must
not be repeated (StartTask) can be tried again. A sender built on an httpx transport is
kept for tests that script the server (`httpx.MockTransport`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import certifi
import httpx


@dataclass(frozen=True)
class Reply:
    """An answer as the client reads it: status, headers (the client's own case-insensitive
    mapping), body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class SendError(Exception):
    """No answer came. `sent`: the request may have reached the server (False only when
    it provably did not: no connection could be made); `timed_out`: a deadline ended it."""

    def __init__(self, kind: str, detail: str, *, sent: bool, timed_out: bool) -> None:
        super().__init__(f"{kind}: {detail or 'no detail'}")
        self.kind = kind
        self.detail = detail
        self.sent = sent
        self.timed_out = timed_out


class UnarySender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply: ...

    async def aclose(self) -> None: ...


def trusted_cas(env: Mapping[str, str] = os.environ) -> ssl.SSLContext:
    """The CAs a TLS connection to the Ona API trusts, as the streams' httpx client does:
    `SSL_CERT_FILE` or `SSL_CERT_DIR` when set (a company's TLS-intercepting proxy),
    otherwise certifi's bundle (an image needs no system CA store)."""
    if env.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    if env.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=env["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


def proxy_for(url: str, env: Mapping[str, str] = os.environ) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `HTTP_PROXY`,
    `ALL_PROXY`, in either case, and `NO_PROXY`), as the streams' httpx client uses it.
    aiohttp's own reading of the environment would also add ~/.netrc credentials, which
    clash with the token's Authorization header, so the proxy is looked up here."""
    lowered = {k.lower(): v for k, v in env.items() if v}
    parts = urlsplit(url)
    host = parts.hostname or ""
    no_proxy = lowered.get("no_proxy", "")
    if no_proxy:
        if no_proxy.strip() == "*":
            return None
        for entry in (e.strip().lower() for e in no_proxy.split(",")):
            entry = entry.split(":", 1)[0].lstrip(".")  # ".ona.com" and "ona.com:443" alike
            if entry and (host == entry or host.endswith("." + entry)):
                return None
    return lowered.get(f"{parts.scheme}_proxy") or lowered.get("all_proxy")


class AiohttpSender:
    """Unary POSTs over one aiohttp session, made on first use (a session belongs to the
    event loop it is made in). `timeout` bounds the wait for each read of the answer (as
    httpx's read timeout does) and the wait for a pooled connection; `connect_timeout` the
    TCP/TLS connect; `proxy` the proxy to go through (`proxy_for` the API's base URL). TLS
    trust and proxies follow the environment as httpx's do (`trusted_cas`, `proxy_for`),
    so that streams and unary calls take the same way."""

    def __init__(
        self, *, timeout: float, connect_timeout: float, proxy: str | None, pool: int = 100
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeout + connect_timeout,
            sock_connect=connect_timeout,
            sock_read=timeout,
        )
        self._proxy = proxy
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._pool, limit_per_host=self._pool, ssl=trusted_cas()
                ),
                timeout=self._timeout,
                # No ~/.netrc credentials on a request that carries the token; the
                # proxy comes from proxy_for.
                trust_env=False,
                auto_decompress=True,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        session = self._open()
        try:
            async with session.post(
                url,
                data=body,
                headers=dict(headers),
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                return Reply(response.status, response.headers, await response.read())
        except aiohttp.ClientConnectorError as exc:
            # Connection refused, unreachable, a failed TLS handshake, a refused proxy:
            # nothing was sent.
            raise SendError(type(exc).__name__, str(exc), sent=False, timed_out=False) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            # No connection (or no free one in the pool) within the deadline.
            raise SendError(type(exc).__name__, str(exc), sent=False, timed_out=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Dropped, reset, malformed or too slow once the request could have gone out
            # (TimeoutError is an OSError: a read deadline lands here).
            timed_out = isinstance(exc, TimeoutError)
            raise SendError(type(exc).__name__, str(exc), sent=True, timed_out=timed_out) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# A failure that raises one of these happened before any byte of the request was sent.
_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


def httpx_send_error(exc: httpx.RequestError) -> SendError:
    """An httpx failure to get an answer (a unary call's or a stream's), told as SendError."""
    return SendError(
        type(exc).__name__,
        str(exc),
        sent=not isinstance(exc, _HTTPX_NOT_SENT),
        timed_out=isinstance(exc, httpx.TimeoutException),
    )


class HttpxSender:
    """Unary POSTs over an httpx client that its owner closes: tests script a server with
    httpx.MockTransport."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            response = await self._http.post(url, content=body, headers=dict(headers))
        except httpx.RequestError as exc:
            raise httpx_send_error(exc) from exc
        return Reply(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        return None  # the client is its owner's (OnaClient closes it)
