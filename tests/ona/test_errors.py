"""Every Connect code, odd bodies and transport failures surface as the right error."""

from __future__ import annotations

import httpx
import pytest

from ona_taskrun.clients.ona import (
    Conflict,
    InvalidArgument,
    NotFound,
    OnaError,
    OutcomeUnknown,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

from .fakes import FakeSleep, Recorder, client, connect_error, policy

# (code, HTTP status, error for a read call, error for StartTask)
CODES: list[tuple[str, int, type[OnaError], type[OnaError]]] = [
    ("invalid_argument", 400, InvalidArgument, InvalidArgument),
    ("failed_precondition", 400, InvalidArgument, InvalidArgument),
    ("out_of_range", 400, InvalidArgument, InvalidArgument),
    ("unauthenticated", 401, Unauthenticated, Unauthenticated),
    ("permission_denied", 403, PermissionDenied, PermissionDenied),
    ("not_found", 404, NotFound, NotFound),
    ("already_exists", 409, Conflict, Conflict),
    ("aborted", 409, Conflict, Conflict),
    ("resource_exhausted", 429, RateLimited, RateLimited),
    ("canceled", 499, Unavailable, OutcomeUnknown),
    ("unknown", 500, Unavailable, OutcomeUnknown),
    ("internal", 500, Unavailable, OutcomeUnknown),
    ("data_loss", 500, Unavailable, OutcomeUnknown),
    ("unimplemented", 501, Unimplemented, Unimplemented),
    ("unavailable", 503, Unavailable, OutcomeUnknown),
    ("deadline_exceeded", 504, Unavailable, OutcomeUnknown),
]


@pytest.mark.parametrize(("code", "status", "read_error", "start_error"), CODES)
async def test_every_connect_code_maps_to_its_error(
    code: str, status: int, read_error: type[OnaError], start_error: type[OnaError]
) -> None:
    server = Recorder([connect_error(status, code, f"the server says {code}")])
    async with client(server, retry=policy(FakeSleep(), max_attempts=1)) as ona:
        with pytest.raises(OnaError) as caught:
            await ona.get_task_execution("x1")
        with pytest.raises(OnaError) as caught_start:
            await ona.start_task("t1")
    error = caught.value
    assert type(error) is read_error
    assert (error.code, error.http_status, error.method) == (code, status, "GetTaskExecution")
    assert error.message == f"the server says {code}"
    assert f"the server says {code}" in str(error)
    assert type(caught_start.value) is start_error
    assert caught_start.value.code == code
    assert caught_start.value.method == "StartTask"


async def test_code_in_the_body_wins_over_the_http_status() -> None:
    server = Recorder([connect_error(400, "not_found", "no such execution")])
    async with client(server) as ona:
        with pytest.raises(NotFound):
            await ona.get_task_execution("x1")


@pytest.mark.parametrize(
    ("response", "expected", "code", "fragment"),
    [
        (
            httpx.Response(
                502, text="<html><b>Bad Gateway</b></html>", headers={"content-type": "text/html"}
            ),
            Unavailable,
            "unavailable",
            "HTTP 502 without a Connect error body (text/html): <html><b>Bad Gateway</b></html>",
        ),
        (
            httpx.Response(404, text="404 page not found"),
            Unimplemented,
            "unimplemented",
            "is the base URL right?",
        ),
        (httpx.Response(401), Unauthenticated, "unauthenticated", "empty body"),
        (httpx.Response(403, text="forbidden"), PermissionDenied, "permission_denied", "forbidden"),
        (
            httpx.Response(400, json=["not", "an", "error"]),
            InvalidArgument,
            "invalid_argument",
            "HTTP 400",
        ),
        (httpx.Response(429, text="slow down"), RateLimited, "resource_exhausted", "slow down"),
        (httpx.Response(418, text="teapot"), OnaError, "unknown", "HTTP 418"),
        (httpx.Response(507, text="full"), Unavailable, "unavailable", "HTTP 507"),
    ],
)
async def test_non_connect_error_bodies_still_give_a_clear_error(
    response: httpx.Response, expected: type[OnaError], code: str, fragment: str
) -> None:
    server = Recorder([response])
    async with client(server, retry=policy(FakeSleep(), max_attempts=1)) as ona:
        with pytest.raises(OnaError) as caught:
            await ona.get_task("t1")
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.http_status == response.status_code
    assert fragment in str(caught.value)


async def test_long_html_bodies_are_cut_short() -> None:
    server = Recorder([httpx.Response(503, text="<p>" + "x" * 5000 + "</p>")])
    async with client(server, retry=policy(FakeSleep(), max_attempts=1)) as ona:
        with pytest.raises(Unavailable) as caught:
            await ona.get_task("t1")
    assert len(str(caught.value)) < 400


async def test_unreadable_success_body() -> None:
    server = Recorder([httpx.Response(200, text="<html>login</html>")])
    async with client(server) as ona:
        with pytest.raises(OnaError) as read:
            await ona.get_task("t1")
        with pytest.raises(OutcomeUnknown) as start:
            await ona.start_task("t1")
    assert type(read.value) is OnaError
    assert read.value.code == "internal"
    assert "not a JSON object" in str(read.value)
    assert "may have taken effect" in str(start.value)


async def test_start_task_reply_without_an_execution_is_outcome_unknown() -> None:
    server = Recorder([httpx.Response(200, json={})])
    async with client(server) as ona:
        with pytest.raises(OutcomeUnknown):
            await ona.start_task("t1")


async def test_get_reply_without_an_execution_is_an_error() -> None:
    server = Recorder([httpx.Response(200, json={"taskExecution": {"noId": 1}})])
    async with client(server) as ona:
        with pytest.raises(OnaError) as caught:
            await ona.get_task_execution("x")
    assert caught.value.code == "internal"
    assert "TaskExecution" in str(caught.value)


@pytest.mark.parametrize(
    ("failure", "code", "sent"),
    [
        (httpx.ConnectError("connection refused"), "unavailable", False),
        (httpx.ConnectTimeout("connect timed out"), "deadline_exceeded", False),
        (httpx.PoolTimeout("no free connection"), "deadline_exceeded", False),
        (httpx.ReadTimeout("read timed out"), "deadline_exceeded", True),
        (httpx.WriteTimeout("write timed out"), "deadline_exceeded", True),
        (httpx.ReadError("connection reset"), "unavailable", True),
        (httpx.RemoteProtocolError("server disconnected"), "unavailable", True),
    ],
)
async def test_transport_failures_on_reads_are_unavailable(
    failure: Exception, code: str, sent: bool
) -> None:
    server = Recorder([failure])
    async with client(server, retry=policy(FakeSleep(), max_attempts=1)) as ona:
        with pytest.raises(Unavailable) as caught:
            await ona.list_tasks()
    assert caught.value.code == code
    assert caught.value.request_sent is sent
    assert caught.value.http_status is None
    assert caught.value.__cause__ is failure
    assert type(failure).__name__ in str(caught.value)
