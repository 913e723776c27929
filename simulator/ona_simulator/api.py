"""The HTTP face of the Ona API: Connect unary calls, the WatchEvents stream, and faults.

Every call goes through the same steps, in the order a real gateway would apply them:
a method switched off (answered `unimplemented`), the rate limit (`ratelimit`: 429
`resource_exhausted` when its bucket is empty), injected latency, an injected answer
(drop, 429, 500, 503) instead of handling, Connect header checks, authentication,
permission, body decoding, the method itself, and finally an optional "lost response"
after the method has had its effect.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Final

from aiohttp import web

from ona_simulator.core import CallRecord, Simulator
from ona_simulator.faults import Fault, FaultRule
from ona_simulator.methods import METHODS, MUTATING
from ona_simulator.ratelimit import bearer_token
from ona_simulator.wire import (
    JSON,
    ConnectError,
    get_bool,
    get_uuid,
    invalid,
    parse_body,
)

AUTOMATION_SERVICE: Final = "gitpod.v1.EnvironmentAutomationService"
EVENT_SERVICE: Final = "gitpod.v1.EventService"
ENVIRONMENT_SERVICE: Final = "gitpod.v1.EnvironmentService"
IDENTITY_SERVICE: Final = "gitpod.v1.IdentityService"
SIMULATOR_KEY: Final = web.AppKey("simulator", Simulator)
CONNECT_JSON_STREAM: Final = "application/connect+json"
END_STREAM_FLAG: Final = 0x02
_TIMEOUT_RE: Final = re.compile(r"^\d{1,10}$")


class Dropped(Exception):
    """The connection was closed on purpose without an answer."""


def json_response(
    message: JSON, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(message, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(error: ConnectError) -> web.Response:
    return json_response(error.body(), status=error.http_status, headers=error.headers)


def drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise Dropped


def check_connect_headers(request: web.Request) -> None:
    timeout = request.headers.get("Connect-Timeout-Ms")
    if timeout is not None and not _TIMEOUT_RE.match(timeout.strip()):
        raise invalid(f"Connect-Timeout-Ms: {timeout!r} is not 1 to 10 digits")


def check_served(sim: Simulator, request: web.Request, call: CallRecord, method: str) -> None:
    """A method switched off (`/_simulator/unimplemented`) is answered as by a server that
    has no such route: before latency, faults and authentication."""
    service = request.path.rstrip("/").rsplit("/", 2)[-2]
    if sim.faults.is_unimplemented(service, method):
        call.fault = "unimplemented"
        raise ConnectError("unimplemented", f"{service}/{method} is not implemented (simulated)")


def check_rate_limit(
    sim: Simulator, request: web.Request, call: CallRecord, method: str
) -> web.Response | None:
    """The rate limit's refusal, before anything else is done: a Connect error raised, or
    (a gateway's answer) a bare 429 returned, the call finished."""
    refusal = sim.ratelimit.check(method, request.headers)
    if refusal is None:
        return None
    call.fault = "rate_limit"
    subject = sim.tokens.lookup(bearer_token(request.headers))
    call.subject_id = subject.id if subject is not None else None
    headers = {} if refusal.retry_after is None else {"Retry-After": str(refusal.retry_after)}
    if refusal.answer == "bare":
        call.finish(429, "resource_exhausted")
        return web.Response(status=429, text="Too Many Requests\n", headers=headers)
    raise ConnectError("resource_exhausted", refusal.message, headers=headers)


async def before_handling(
    sim: Simulator, request: web.Request, call: CallRecord, rule: FaultRule | None
) -> None:
    """Latency and injected answers that replace handling the call."""
    if rule is None:
        return
    await sim.pause(rule.latency_ms / 1000)
    fault = sim.faults.draw_before(rule)
    if fault is None:
        return
    call.fault = fault.value
    if fault is Fault.DROP:
        drop_connection(request)
    if fault is Fault.ERROR_429:
        raise ConnectError(
            "resource_exhausted",
            "rate limit exceeded (simulated)",
            headers={"Retry-After": str(rule.retry_after_s)},
        )
    if fault is Fault.ERROR_500:
        raise ConnectError("internal", "internal error (simulated)")
    raise ConnectError("unavailable", "service unavailable (simulated)")


async def unary(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR_KEY]
    method = request.match_info.get("method") or request.path.rsplit("/", 1)[-1]
    call = sim.begin_call(method)
    handler = METHODS.get(method)
    try:
        if handler is None:
            raise ConnectError("unimplemented", f"{AUTOMATION_SERVICE}/{method} is not implemented")
        check_served(sim, request, call, method)
        limited = check_rate_limit(sim, request, call, method)
        if limited is not None:
            return limited
        rule = sim.faults.rule_for(method)
        await before_handling(sim, request, call, rule)
        check_connect_headers(request)
        subject = sim.tokens.authenticate(request.headers)
        call.subject_id = subject.id
        body = parse_body(await request.read())
        if isinstance(body.get("id"), str):
            call.request_id = body["id"]
        if method in MUTATING and subject.read_only:
            raise ConnectError("permission_denied", f"a read-only token may not call {method}")
        result = handler(sim, body, subject, request.query, call)
        lost = sim.faults.draw_lost_response(rule) if rule is not None else None
        if lost is not None:
            call.fault = f"lost_response:{lost}"
            await lose_response(sim, request, lost, rule)
        call.finish(200)
        return json_response(result)
    except ConnectError as error:
        call.finish(error.http_status, error.code)
        return error_response(error)
    except Dropped:
        call.finish(0, "dropped")
        return web.Response(status=200)


async def lose_response(
    sim: Simulator, request: web.Request, mode: str, rule: FaultRule | None
) -> None:
    if mode == "drop":
        drop_connection(request)
    if mode == "hang":
        # Past a client's timeout nobody reads this, but a patient client gets the answer.
        await sim.pause((rule.hang_ms if rule else 0) / 1000)
        return
    if mode == "500":
        raise ConnectError("internal", "internal error (simulated, after the call took effect)")
    raise ConnectError("unavailable", "service unavailable (simulated, after the call took effect)")


def _decode_stream_request(raw: bytes, enveloped: bool) -> JSON:
    """A Connect streaming request is one enveloped message; be lenient about bare JSON."""
    if enveloped and len(raw) >= 5 and raw[0] in (0, 1):
        length = int.from_bytes(raw[1:5], "big")
        if length == len(raw) - 5:
            if raw[0] & 0x01:
                raise ConnectError("unimplemented", "compressed messages are not supported")
            raw = raw[5:]
    return parse_body(raw)


# How often a quiet WatchEvents stream checks whether its client has gone.
STREAM_CHECK_SECONDS: Final = 0.1


def frame(payload: JSON, flags: int = 0) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    return bytes([flags]) + len(data).to_bytes(4, "big") + data


async def watch_events(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR_KEY]
    call = sim.begin_call("WatchEvents")
    connect = request.content_type == CONNECT_JSON_STREAM
    try:
        check_served(sim, request, call, "WatchEvents")
        limited = check_rate_limit(sim, request, call, "WatchEvents")
        if limited is not None:
            return limited
        await before_handling(sim, request, call, sim.faults.rule_for("WatchEvents"))
        check_connect_headers(request)
        subject = sim.tokens.authenticate(request.headers)
        call.subject_id = subject.id
        body = _decode_stream_request(await request.read(), connect)
        environment_id = get_uuid(body, "environmentId", required=False)
        organization = get_bool(body, "organization")
        if environment_id and organization:
            raise invalid("scope: set either environmentId or organization, not both")
        if environment_id and body.get("resourceTypeFilters"):
            raise invalid("resourceTypeFilters: not supported for environment-scoped streams")
        call.request_id = environment_id or None
    except Dropped:
        call.finish(0, "dropped")
        return web.Response(status=200)
    except ConnectError as error:
        call.finish(error.http_status if not connect else 200, error.code)
        if not connect:
            return error_response(error)
        # Connect streams report errors in the end-of-stream frame with HTTP 200.
        return web.Response(
            status=200,
            body=frame({"error": error.body()}, END_STREAM_FLAG),
            content_type=CONNECT_JSON_STREAM,
            headers=error.headers,
        )

    watcher = sim.store.events.subscribe(environment_id)
    response = web.StreamResponse(status=200)
    response.content_type = CONNECT_JSON_STREAM if connect else "application/jsonl"
    call.finish(200)
    try:
        await response.prepare(request)
        while True:
            try:
                message = await asyncio.wait_for(watcher.queue.get(), STREAM_CHECK_SECONDS)
            except TimeoutError:
                # aiohttp does not cancel a handler whose client went away: look, so a
                # stream the client closed ends here too and is no longer counted as open.
                if request.transport is None or request.transport.is_closing():
                    break
                continue
            if message is None:
                break
            if connect:
                await response.write(frame(message))
            else:
                await response.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        if connect:
            await response.write(
                frame(
                    {"error": {"code": "unavailable", "message": watcher.closed_reason}},
                    END_STREAM_FLAG,
                )
            )
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        sim.store.events.unsubscribe(watcher)
    return response


def add_routes(app: web.Application) -> None:
    for prefix in ("", "/api"):
        app.router.add_post(f"{prefix}/{AUTOMATION_SERVICE}/{{method}}", unary)
        app.router.add_post(f"{prefix}/{IDENTITY_SERVICE}/GetAuthenticatedIdentity", unary)
        app.router.add_post(f"{prefix}/{ENVIRONMENT_SERVICE}/{{method}}", unary)
        app.router.add_post(f"{prefix}/{EVENT_SERVICE}/WatchEvents", watch_events)
