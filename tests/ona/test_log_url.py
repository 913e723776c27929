"""Which log URLs the logs token may be sent to (`ona.logurl`), and that `open_log` and the
client send nothing to one that is refused."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from ona_taskrun.clients.ona import OnaClient, Unavailable
from ona_taskrun.clients.ona.logs import open_log
from ona_taskrun.clients.ona.logurl import LogUrlRefused, check, system_resolve
from tests.support.simulator_fixtures import SimulatorHandle

PUBLIC = "203.0.113.7"  # TEST-NET-3: an ordinary address, never dialled here
API = "https://api.example.com"
TOKEN = "logs-token-" + "q" * 24

# What each name resolves to in these tests.
NAMES = {
    "api.example.com": [PUBLIC],
    "logs.example.com": [PUBLIC, "2001:db8::7"],
    "api.local": ["127.0.0.1"],
    "rebind.example.com": [PUBLIC, "169.254.169.254"],
    "sneaky.example.com": ["::ffff:169.254.169.254"],
    "home.example.com": ["127.0.0.1"],
    "metadata.google.internal": [PUBLIC],  # named for what it is, whatever it resolves to
}


async def resolve(host: str, port: int) -> list[str]:
    # Other hosts here are addresses: the system resolves them without a lookup.
    return NAMES.get(host) or await system_resolve(host, port)


@pytest.mark.parametrize(
    ("url", "base", "reason"),
    [
        ("http://logs.example.com/x", API, "scheme 'http' is not allowed (https only)"),
        ("ftp://logs.example.com/x", "http://api.local", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", API, "scheme 'file' is not allowed"),
        ("/relative/path", API, "scheme 'none' is not allowed"),
        ("https://user:pw@logs.example.com/x", API, "credentials in the URL"),
        ("https://169.254.169.254/latest", API, "is a link-local and metadata address"),
        ("https://169.254.10.1/x", API, "host 169.254.10.1 is a link-local address"),
        ("https://[fe80::1]/x", API, "is a link-local address"),
        ("https://[fd00:ec2::254]/x", API, "is a metadata address"),
        ("https://100.100.100.200/x", API, "is a metadata address"),
        ("https://metadata.google.internal/x", API, "host metadata.google.internal is a meta"),
        ("https://METADATA.google.internal./x", API, "is a metadata service"),
        ("https://127.0.0.1:8080/x", API, "host 127.0.0.1 is a loopback address"),
        ("https://[::1]/x", API, "is a loopback address"),
        ("https://0.0.0.0/x", API, "is a loopback address"),
        ("https://[::ffff:127.0.0.1]/x", API, "is a loopback address"),
        ("https://home.example.com/x", API, "home.example.com (127.0.0.1) is a loopback"),
        ("https://rebind.example.com/x", API, "(169.254.169.254) is a link-local and metadata"),
        ("https://sneaky.example.com/x", API, "is a link-local and metadata address"),
        # A loopback API vouches for loopback logs, nothing more.
        ("http://169.254.169.254/x", "http://127.0.0.1:9", "is a link-local and metadata"),
        ("http://[fe80::1]/x", "http://api.local", "is a link-local address"),
    ],
)
async def test_refused(url: str, base: str, reason: str) -> None:
    with pytest.raises(LogUrlRefused) as refused:
        await check(url, base, resolve=resolve, proxied=False)
    assert reason in str(refused.value)
    assert refused.value.message.startswith("log URL refused: ")
    assert refused.value.code == "refused"
    assert "pw" not in refused.value.message


@pytest.mark.parametrize(
    ("url", "base", "sent_to", "host", "sni"),
    [
        # Pinned to the address that was checked, the name kept for Host and TLS.
        (
            "https://logs.example.com/logs/e1?x=1",
            API,
            f"https://{PUBLIC}/logs/e1?x=1",
            "logs.example.com",
            "logs.example.com",
        ),
        (
            "https://logs.example.com:8443/e",
            API,
            f"https://{PUBLIC}:8443/e",
            "logs.example.com:8443",
            "logs.example.com",
        ),
        ("https://203.0.113.9/e", API, "https://203.0.113.9/e", "203.0.113.9", None),
        (
            "http://logs.example.com/e",
            "http://api.local",
            f"http://{PUBLIC}/e",
            "logs.example.com",
            None,
        ),
        # The simulator: API and logs on loopback.
        (
            "http://127.0.0.1:7000/logs/e",
            "http://127.0.0.1:7000",
            "http://127.0.0.1:7000/logs/e",
            "127.0.0.1:7000",
            None,
        ),
        (
            "http://api.local:7000/logs/e",
            "http://api.local:7000",
            "http://127.0.0.1:7000/logs/e",
            "api.local:7000",
            None,
        ),
        # A metadata API (a test double at that address) vouches for its own kind.
        (
            "http://169.254.169.254/e",
            "http://169.254.169.254",
            "http://169.254.169.254/e",
            "169.254.169.254",
            None,
        ),
    ],
)
async def test_allowed(url: str, base: str, sent_to: str, host: str, sni: str | None) -> None:
    target = await check(url, base, resolve=resolve, proxied=False)
    assert str(target.url) == sent_to
    assert target.host == host
    assert target.sni == sni


async def test_a_name_is_resolved_by_the_system() -> None:
    # `localhost` is a name, not a literal: refused for what it resolves to.
    with pytest.raises(LogUrlRefused, match=r"host localhost \((127\.0\.0\.1|::1)\) is a loopback"):
        await check("https://localhost/x", f"https://{PUBLIC}", proxied=False)


async def test_behind_a_proxy_the_proxy_resolves_names_outside() -> None:
    async def offline(host: str, port: int) -> list[str]:
        if host == "api.example.com":
            return [PUBLIC]
        raise Unavailable(f"the log host {host} does not resolve", method="ReadLog")

    target = await check("https://logs.example.com/e", API, resolve=offline, proxied=True)
    assert str(target.url) == "https://logs.example.com/e"  # the proxy is asked for the name
    with pytest.raises(Unavailable):
        await check("https://logs.example.com/e", API, resolve=offline, proxied=False)
    # A name that resolves here is still checked.
    with pytest.raises(LogUrlRefused):
        await check("https://rebind.example.com/e", API, resolve=resolve, proxied=True)


async def test_open_log_sends_nothing_to_a_refused_url() -> None:
    asked: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"secret metadata\n"))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        for url in ("http://169.254.169.254/latest/meta-data", "https://rebind.example.com/x"):
            with pytest.raises(LogUrlRefused) as refused:
                async for _ in open_log(
                    http,
                    url,
                    TOKEN,
                    limits=httpx.Timeout(5.0),
                    redact=str,
                    base_url=API,
                    resolve=resolve,
                ):
                    pass
            assert TOKEN not in str(refused.value)
        # An allowed one goes to the checked address, named in Host and for TLS.
        lines = [
            line
            async for line in open_log(
                http,
                "https://logs.example.com/x",
                TOKEN,
                limits=httpx.Timeout(5.0),
                redact=str,
                base_url=API,
                resolve=resolve,
            )
        ]
    assert lines == ["secret metadata"]
    assert len(asked) == 1
    assert asked[0].url.host == PUBLIC
    assert asked[0].headers["host"] == "logs.example.com"
    assert asked[0].extensions["sni_hostname"] == "logs.example.com"
    assert asked[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_the_client_refuses_a_log_url_its_base_url_does_not_vouch_for(
    simulator: SimulatorHandle,
) -> None:
    environment = str(uuid.uuid4())
    async with OnaClient(simulator.base_url, simulator.token, timeout=5) as ona:
        token = await ona.create_environment_logs_token(environment)
        started = time.monotonic()
        with pytest.raises(LogUrlRefused, match="link-local and metadata address"):
            async for _ in ona.open_log("http://169.254.169.254/latest/meta-data", token):
                pass
        assert time.monotonic() - started < 1.0  # refused, not tried and timed out
