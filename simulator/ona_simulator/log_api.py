"""The HTTP side of execution logs: the log endpoint `status.logUrl` points to, the
CreateEnvironmentLogsToken route, and the control endpoints for logs.

`GET {base}/logs/task-executions/{id}` with `Authorization: Bearer <logs token>` answers
`text/plain` with chunked encoding: every line printed so far, then each new line as it is
printed, one per `\\n`, until the execution has ended. A missing, wrong, expired or
other-environment token gets 401 before anything else. The fault rule (see
`logs.LogFaultRule`) may answer 502 or 401 instead, or drop the connection after some lines.
Every read is in the call log as method `ReadLog` (no token in it). A long line
(`sim:long_line`) is written a MiB at a time, each write waiting for the reader to keep
up, so the simulator holds one MiB of it however long it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from ona_simulator.api import SIMULATOR_KEY, error_response, json_response, unary
from ona_simulator.control import PREFIX
from ona_simulator.core import CallRecord, Simulator
from ona_simulator.logs import READ_LOG, ExecutionLog, LogFaultRule
from ona_simulator.wire import JSON, ConnectError, parse_body

ENVIRONMENT_SERVICE: Final = "gitpod.v1.EnvironmentService"
LOG_PATH: Final = "/logs/task-executions"
# How long a follower sleeps at most between looks, whatever it waits for.
_POLL_S: Final = 0.5
_FILLER: Final = b"x" * (1 << 20)


def _text(status: int, text: str, content_type: str = "text/plain") -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type=content_type)


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def read_log(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR_KEY]
    call = sim.begin_call(READ_LOG)
    execution_id = request.match_info["id"]
    call.request_id = execution_id
    fault = sim.logs.draw_fault()
    if fault is not None:
        call.fault = fault
    if fault == "502":
        call.finish(502, "bad_gateway")
        return _text(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
    if fault == "401":
        call.finish(401, "unauthenticated")
        return _text(401, "unauthorized (simulated)")
    rule = sim.logs.faults
    drop_after = rule.drop_after_lines if fault == "drop" and rule is not None else None
    if drop_after == 0:
        return _drop(request, call)

    token = _bearer(request)
    execution = sim.store.executions.get(execution_id)
    environment_id = execution.environment_id if execution is not None else ""
    refusal = sim.logs.check(token, environment_id) if token else "missing logs token"
    if execution is None and refusal == "the logs token is for another environment":
        refusal = ""  # a good token: say the execution is unknown
    if refusal:
        call.finish(401, "expired" if "expired" in refusal else "unauthenticated")
        return _text(401, refusal)
    if execution is None:
        call.finish(404, "not_found")
        return _text(404, f"task execution {execution_id} not found")

    response = web.StreamResponse(status=200)
    response.content_type = "text/plain"
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    call.finish(200)
    log = execution.log
    sent = 0
    try:
        await response.prepare(request)
        while True:
            lines = log.view(time.monotonic())
            fresh = lines[sent:]
            if drop_after is not None and sent + len(fresh) >= drop_after:
                fresh = fresh[: drop_after - sent]
                await _write_lines(response, log, fresh, sent)
                call.fault = f"drop after {drop_after} lines"
                _abort(request)
                return response
            if fresh:
                await _write_lines(response, log, fresh, sent)
                sent = len(lines)
            if log.ended and sent >= len(log.lines):
                break
            if sim.closing or sim.store.executions.get(execution_id) is not execution:
                break
            next_at = log.next_line_at(time.monotonic())
            wait = _POLL_S if next_at is None else min(_POLL_S, next_at - time.monotonic())
            await log.wait_change(wait)
        await response.write_eof()
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        pass
    return response


async def _write_lines(
    response: web.StreamResponse, log: ExecutionLog, lines: list[str], first: int
) -> None:
    """Write `lines`, the first of them line number `first` of the log."""
    text: list[str] = []
    for index, line in enumerate(lines, start=first):
        filler = log.filler.get(index, 0)
        if not filler:
            text.append(f"{line}\n")
            continue
        text.append(line)
        await response.write("".join(text).encode())
        text = ["\n"]
        while filler > 0:
            size = min(filler, len(_FILLER))
            await response.write(_FILLER if size == len(_FILLER) else _FILLER[:size])
            filler -= size
    if text:
        await response.write("".join(text).encode())


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _drop(request: web.Request, call: CallRecord) -> web.StreamResponse:
    _abort(request)
    call.finish(0, "dropped")
    return web.Response(status=200)


ControlHandler = Callable[[Simulator, web.Request, JSON], JSON]


def _control(handler: ControlHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        sim = request.app[SIMULATOR_KEY]
        try:
            body = parse_body(await request.read()) if request.can_read_body else {}
            return json_response(handler(sim, request, body))
        except ConnectError as error:
            return error_response(error)

    return wrapped


def get_settings(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return sim.logs.settings()


def put_settings(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    if "tokenTtlSeconds" in body:
        sim.logs.set_ttl(body["tokenTtlSeconds"])
    return sim.logs.settings()


def get_faults(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    return {"rule": sim.logs.faults.to_json() if sim.logs.faults else None}


def put_faults(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    sim.logs.faults = LogFaultRule.from_json(body)
    return {"rule": sim.logs.faults.to_json()}


def clear_faults(sim: Simulator, request: web.Request, body: JSON) -> JSON:
    sim.logs.faults = None
    return {"rule": None}


def add_routes(app: web.Application) -> None:
    app.router.add_get(LOG_PATH + "/{id}", read_log)
    for prefix in ("", "/api"):
        app.router.add_post(f"{prefix}/{ENVIRONMENT_SERVICE}/CreateEnvironmentLogsToken", unary)
    for verb, path, handler in (
        ("GET", "/log-settings", get_settings),
        ("PUT", "/log-settings", put_settings),
        ("GET", "/log-faults", get_faults),
        ("PUT", "/log-faults", put_faults),
        ("DELETE", "/log-faults", clear_faults),
    ):
        app.router.add_route(verb, PREFIX + path, _control(handler))
