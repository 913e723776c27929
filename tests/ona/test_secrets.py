"""The API token never shows in an error, a repr, a traceback or a log line."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable

import httpx
import pytest

from ona_taskrun.clients.ona import (
    Conflict,
    InvalidArgument,
    NotFound,
    OnaClient,
    OnaError,
    OutcomeUnknown,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from ona_taskrun.observability import logs

from .fakes import TOKEN, FakeSleep, Recorder, client, connect_error, policy


def echo(status: int, code: str) -> Callable[[httpx.Request], httpx.Response]:
    """A careless server that quotes the Authorization header back in its message."""

    def serve(request: httpx.Request) -> httpx.Response:
        header = request.headers["authorization"]
        return connect_error(status, code, f"bad credentials {header!r}")

    return serve


Call = Callable[[OnaClient], Awaitable[object]]


async def _get(ona: OnaClient) -> object:
    return await ona.get_task_execution("x1")


async def _start(ona: OnaClient) -> object:
    return await ona.start_task("t1")


CASES: list[
    tuple[type[OnaError], httpx.Response | Exception | Callable[..., httpx.Response], Call]
] = [
    (Unauthenticated, echo(401, "unauthenticated"), _get),
    (PermissionDenied, echo(403, "permission_denied"), _start),
    (NotFound, echo(404, "not_found"), _get),
    (InvalidArgument, echo(400, "invalid_argument"), _get),
    (Conflict, echo(409, "already_exists"), _start),
    (Unimplemented, httpx.Response(404, text=f"no route; Authorization: Bearer {TOKEN}"), _get),
    (RateLimited, echo(429, "resource_exhausted"), _get),
    (Unavailable, httpx.ConnectError(f"refused (sent Bearer {TOKEN})"), _get),
    (Unavailable, echo(503, "unavailable"), _get),
    (OutcomeUnknown, httpx.ReadTimeout("timed out"), _start),
    (OutcomeUnknown, echo(500, "internal"), _start),
    (OnaError, httpx.Response(200, text=f"<html>{TOKEN}</html>"), _get),
]


@pytest.mark.parametrize(("expected", "reply", "call"), CASES)
async def test_token_absent_from_errors_tracebacks_and_logs(
    expected: type[OnaError],
    reply: httpx.Response | Exception | Callable[..., httpx.Response],
    call: Call,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = Recorder([reply])
    async with client(server, retry=policy(FakeSleep(), max_attempts=3)) as ona:
        with pytest.raises(OnaError) as caught:
            await call(ona)
        client_repr = repr(ona)
    error = caught.value
    assert type(error) is expected
    # The server did see the token: the test would be meaningless otherwise.
    assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in client_repr
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error)
    assert TOKEN not in "".join(traceback.format_exception(error))
    chained: BaseException | None = error
    while chained is not None:
        assert TOKEN not in str(chained)
        assert TOKEN not in repr(chained)
        chained = chained.__cause__ or chained.__context__
    assert TOKEN not in caplog.text
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_rotated_token_is_sent_and_both_tokens_stay_redacted() -> None:
    rotated = "ona_pat_rotated_Qw8e7r6t"
    server = Recorder([echo(401, "unauthenticated"), echo(401, "unauthenticated")])
    async with client(server, retry=policy(FakeSleep(), max_attempts=1)) as ona:
        with pytest.raises(Unauthenticated):
            await ona.get_task_execution("x1")
        assert ona.set_token(rotated) is True
        assert ona.set_token(rotated) is False  # the same token again changes nothing
        with pytest.raises(Unauthenticated) as caught:
            await ona.get_task_execution("x1")
    assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert server.requests[1].headers["authorization"] == f"Bearer {rotated}"
    text = "".join(traceback.format_exception(caught.value))
    assert rotated not in text
    assert TOKEN not in text


def test_tokens_read_at_run_time_are_hidden_in_log_records() -> None:
    secret = "ona_pat_from_a_connection_Secret_9z"
    logs.protect(secret)
    guard = logs.RedactFilter("operator-token")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent %s", (secret,), None)
    assert guard.filter(record)
    assert secret not in record.getMessage()
    assert "***" in record.getMessage()
