"""Which log URLs the logs token may be sent to.

`status.logUrl` comes from the API's answer, and whoever writes an OnaConnection chooses
the API: a URL taken on trust would let them send the logs token, and read the answer
back in `status.logTail`, wherever they like, the cloud metadata service included. So a
log URL is read only if

- its scheme is `https`, or `http` when the connection's own base URL is `http`;
- it holds no user name or password;
- neither its host name nor any address that name resolves to is a loopback (127/8,
  ::1, 0.0.0.0, ::), link-local (169.254/16, fe80::/10) or metadata address (e.g.
  169.254.169.254, fd00:ec2::254, metadata.google.internal), unless the base URL's own
  addresses are of the same kind (the simulator on 127.0.0.1 serves its logs there too).

`check` returns the address the request must go to: the one that was checked, so a name
that resolves to another address a moment later (DNS rebinding) is not asked again. The
request keeps the host name in its `Host` header and in TLS (SNI and certificate check).
Through a proxy (`HTTPS_PROXY`, ...), the proxy picks the address: the name's addresses
are checked when it resolves here, and the request names the host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

import httpx

from ._unary import proxy_for
from .errors import OnaError, Unavailable

METHOD: Final = "ReadLog"
RESOLVE_TIMEOUT: Final = 10.0
# Names of metadata services that are not addresses of a kind refused anyway.
METADATA_NAMES: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)

# (host, port) -> the addresses the host resolves to
Resolve = Callable[[str, int], Awaitable[list[str]]]


class LogUrlRefused(OnaError):
    """The log URL breaks the rule above; nothing was sent to it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"log URL refused: {reason}", method=METHOD, code="refused")


class Kind(Enum):
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    METADATA = "metadata"


@dataclass(frozen=True)
class Target:
    """Where to send the request for a checked log URL."""

    url: httpx.URL  # the log URL with its host replaced by the checked address
    host: str  # the `Host` header: the URL's own host (and port, if it has one)
    sni: str | None  # the name TLS must verify, when the host is a name over https


async def system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except TimeoutError:
        raise Unavailable(
            f"resolving the log host {host} took over {RESOLVE_TIMEOUT:.0f}s",
            method=METHOD,
            code="deadline_exceeded",
        ) from None
    except OSError as exc:
        raise Unavailable(
            f"the log host {host} does not resolve: {exc.strerror or exc}",
            method=METHOD,
            code="unavailable",
        ) from None
    return [str(info[4][0]) for info in infos]


def kinds_of(address: str) -> frozenset[Kind]:
    """The refused kinds an address is of (none for an ordinary one)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 reaches 169.254.169.254
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    found: set[Kind] = set()
    # Linux answers the unspecified address on loopback.
    if ip.is_loopback or ip.is_unspecified:
        found.add(Kind.LOOPBACK)
    if ip.is_link_local:
        found.add(Kind.LINK_LOCAL)
    if ip in METADATA_ADDRESSES:
        found.add(Kind.METADATA)
    return frozenset(found)


def _name(host: str) -> str:
    return host.rstrip(".").lower()


async def _allowed(base_url: str, resolve: Resolve) -> frozenset[Kind]:
    """The kinds of address the connection's base URL is itself at."""
    base = httpx.URL(base_url)
    kinds: set[Kind] = set()
    if _name(base.host) in METADATA_NAMES:
        kinds.add(Kind.METADATA)
    try:
        addresses = await resolve(base.host, base.port or _default_port(base.scheme))
    except OnaError:
        addresses = []  # an API we cannot resolve now vouches for nothing
    for address in addresses:
        kinds |= kinds_of(address)
    return frozenset(kinds)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


async def check(
    url: str, base_url: str, *, resolve: Resolve = system_resolve, proxied: bool | None = None
) -> Target:
    """Where to read `url` from, if the rule allows it; `LogUrlRefused` if not.

    `proxied` (default: whether the environment names a proxy for the URL, as
    `_unary.proxy_for` reads it): the proxy resolves the name and picks the address, so
    the addresses are checked when the name resolves here too, and the request goes to
    the name."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise LogUrlRefused("not a URL") from None
    base = httpx.URL(base_url)
    allowed_schemes = ("https", "http") if base.scheme == "http" else ("https",)
    if parsed.scheme not in allowed_schemes:
        only = "https or http" if base.scheme == "http" else "https only"
        raise LogUrlRefused(f"scheme {parsed.scheme or 'none'!r} is not allowed ({only})")
    if not parsed.host:
        raise LogUrlRefused("no host")
    if parsed.userinfo:
        raise LogUrlRefused(f"credentials in the URL of host {parsed.host}")
    allowed = await _allowed(base_url, resolve)
    host = parsed.host
    if _name(host) in METADATA_NAMES and Kind.METADATA not in allowed:
        raise LogUrlRefused(f"host {host} is a metadata service")
    if proxied is None:
        proxied = proxy_for(str(parsed)) is not None
    try:
        addresses = await resolve(host, parsed.port or _default_port(parsed.scheme))
    except Unavailable:
        if not proxied:
            raise
        addresses = []  # behind a proxy, names outside need not resolve here
    for address in addresses:
        refused = kinds_of(address) - allowed
        if refused:
            kinds = " and ".join(sorted(k.value for k in refused))
            shown = host if address == host else f"{host} ({address})"
            raise LogUrlRefused(f"host {shown} is a {kinds} address")
    netloc = parsed.netloc.decode("ascii")
    if proxied:
        return Target(url=parsed, host=netloc, sni=None)
    if not addresses:
        raise LogUrlRefused(f"host {host} resolves to no address")
    is_name = not _is_address(host)
    return Target(
        url=parsed.copy_with(host=addresses[0]),
        host=netloc,
        sni=host if is_name and parsed.scheme == "https" else None,
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
