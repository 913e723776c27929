"""What a failed Ona call means for a connection's circuit breaker: every Connect code, bare
HTTP answers and transport failures, as the client raises them, either count as an outage
or concern the one request. Answers about one request (a method the server does not
serve above all) never open the breaker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from ona_taskrun.clients.ona import OnaClient, OnaError
from ona_taskrun.controller.remote import METHOD_NOT_SERVED, is_outage, to_failure, unserved_method
from ona_taskrun.rules.model import FailureKind
from tests.ona.fakes import FakeSleep, Recorder, client, connect_error, offline_remote, policy

Call = Callable[[OnaClient], Awaitable[object]]


async def _read(ona: OnaClient) -> object:
    return await ona.list_environments(project_ids=["p1"])


async def _start(ona: OnaClient) -> object:
    return await ona.start_task("t1")  # never repeated: its errors are OutcomeUnknown


async def failure_of(reply: httpx.Response | Exception, call: Call = _read) -> OnaError:
    """The error the client raises for this answer (no retries)."""
    async with client(Recorder([reply]), retry=policy(FakeSleep(), max_attempts=1)) as ona:
        with pytest.raises(OnaError) as caught:
            await call(ona)
    return caught.value


# Every Connect code, with the HTTP status a Connect server sends it with.
CONNECT_CODES: list[tuple[str, int, bool]] = [
    ("canceled", 499, False),
    ("unknown", 500, True),
    ("invalid_argument", 400, False),
    ("deadline_exceeded", 504, True),
    ("not_found", 404, False),
    ("already_exists", 409, False),
    ("permission_denied", 403, False),
    ("resource_exhausted", 429, True),
    ("failed_precondition", 400, False),
    ("aborted", 409, False),
    ("out_of_range", 400, False),
    ("unimplemented", 501, False),
    ("internal", 500, True),
    ("unavailable", 503, True),
    ("data_loss", 500, True),
    ("unauthenticated", 401, False),
]


@pytest.mark.parametrize(("code", "status", "outage"), CONNECT_CODES)
@pytest.mark.parametrize("call", [_read, _start], ids=["read", "StartTask"])
async def test_every_connect_code(code: str, status: int, outage: bool, call: Call) -> None:
    error = await failure_of(connect_error(status, code), call)
    assert error.code == code
    assert is_outage(error) is outage


def test_the_table_holds_every_connect_code() -> None:
    # The 16 codes of the Connect protocol: a new one must be given a verdict here.
    assert len({code for code, _, _ in CONNECT_CODES}) == 16


@pytest.mark.parametrize(
    ("reply", "outage"),
    [
        # `unknown` counts only when the server failed (5xx).
        pytest.param(connect_error(400, "unknown"), False, id="unknown-with-400"),
        pytest.param(connect_error(502, "unknown"), True, id="unknown-with-502"),
        # A code this client does not know: the HTTP status decides.
        pytest.param(connect_error(503, "brand_new_code"), True, id="new-code-with-503"),
        pytest.param(connect_error(422, "brand_new_code"), False, id="new-code-with-422"),
        # A request-specific code stays one whatever status carries it.
        pytest.param(connect_error(500, "unimplemented"), False, id="unimplemented-with-500"),
        # Answers without a Connect body: proxies, load balancers, a wrong route.
        pytest.param(httpx.Response(500, text="oops"), True, id="bare-500"),
        pytest.param(httpx.Response(502, text="<html>bad gateway"), True, id="bare-502"),
        pytest.param(httpx.Response(503), True, id="bare-503"),
        pytest.param(httpx.Response(504), True, id="bare-504"),
        pytest.param(httpx.Response(507), True, id="bare-507"),
        pytest.param(httpx.Response(429, headers={"Retry-After": "2"}), True, id="bare-429"),
        pytest.param(httpx.Response(408), True, id="bare-408"),
        pytest.param(httpx.Response(404, text="no route"), False, id="bare-404"),
        pytest.param(httpx.Response(501), False, id="bare-501"),
        pytest.param(httpx.Response(400), False, id="bare-400"),
        pytest.param(httpx.Response(401), False, id="bare-401"),
        pytest.param(httpx.Response(403), False, id="bare-403"),
        pytest.param(httpx.Response(409), False, id="bare-409"),
        pytest.param(httpx.Response(418), False, id="bare-418"),
        pytest.param(httpx.Response(200, text="<html>portal"), True, id="unreadable-200"),
        # No answer at all.
        pytest.param(httpx.ConnectError("connection refused"), True, id="connect-error"),
        pytest.param(httpx.ConnectTimeout("connect timed out"), True, id="connect-timeout"),
        pytest.param(httpx.ReadTimeout("read timed out"), True, id="read-timeout"),
        pytest.param(httpx.PoolTimeout("no free connection"), True, id="pool-timeout"),
        pytest.param(httpx.RemoteProtocolError("server disconnected"), True, id="reset"),
        pytest.param(httpx.ReadError("connection reset by peer"), True, id="read-error"),
        pytest.param(httpx.ProxyError("proxy refused"), True, id="proxy-error"),
    ],
)
@pytest.mark.parametrize("call", [_read, _start], ids=["read", "StartTask"])
async def test_bare_answers_and_transport_failures(
    reply: httpx.Response | Exception, outage: bool, call: Call
) -> None:
    assert is_outage(await failure_of(reply, call)) is outage


@pytest.mark.parametrize(
    ("reply", "call", "method"),
    [
        (
            connect_error(501, "unimplemented"),
            _read,
            "gitpod.v1.EnvironmentService/ListEnvironments",
        ),
        (
            httpx.Response(404, text="no route"),
            _start,
            "gitpod.v1.EnvironmentAutomationService/StartTask",
        ),
    ],
)
async def test_an_unserved_method_is_named_and_final(
    reply: httpx.Response, call: Call, method: str
) -> None:
    error = await failure_of(reply, call)
    assert unserved_method(error) == method
    failure = to_failure(error)
    assert failure.reason == METHOD_NOT_SERVED
    assert not failure.transient  # told to the run, not retried without end
    assert failure.message.startswith(f"the Ona API does not serve {method} (unimplemented, HTTP")


@pytest.mark.parametrize(
    "reply", [connect_error(404, "not_found"), connect_error(503, "unavailable")]
)
async def test_other_failures_name_no_method(reply: httpx.Response) -> None:
    error = await failure_of(reply)
    assert unserved_method(error) == ""
    assert to_failure(error).reason != METHOD_NOT_SERVED


# ------------------------------------------------------------- through the connection


async def test_unserved_answers_leave_the_breaker_closed_and_are_told_once() -> None:
    told: list[str] = []
    remote = offline_remote(on_unserved=told.append)
    try:
        unserved = await failure_of(connect_error(501, "unimplemented"))
        refused = await failure_of(connect_error(403, "permission_denied"))
        for _ in range(38):
            failure = remote.failed(unserved)
            assert failure.kind is FailureKind.INVALID_ARGUMENT
        remote.failed(refused)
        assert not remote.breaker.open
        assert remote.breaker.opened == 0
        assert told == ["gitpod.v1.EnvironmentService/ListEnvironments"]
        assert remote.unserved == {"gitpod.v1.EnvironmentService/ListEnvironments"}

        # Outages still open it, and an answer of any kind closes it again.
        outage = await failure_of(connect_error(503, "unavailable"))
        for _ in range(3):
            remote.failed(outage)
        assert remote.breaker.open
        assert remote.breaker.opened == 1
        remote.failed(unserved)  # the API answered: it is up
        assert not remote.breaker.open
    finally:
        await remote.close()


async def test_failures_in_a_row_without_answers_between_open_the_breaker() -> None:
    remote = offline_remote()
    try:
        timeout = await failure_of(httpx.ReadTimeout("read timed out"))
        remote.failed(timeout)
        remote.answered()
        remote.failed(timeout)
        remote.failed(timeout)
        assert not remote.breaker.open
        remote.failed(timeout)
        assert remote.breaker.open
    finally:
        await remote.close()
