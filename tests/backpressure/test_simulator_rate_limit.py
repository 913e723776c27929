"""The simulator's rate limit switch: token buckets per token or for the whole API,
answering HTTP 429 `resource_exhausted` with or without Retry-After, with a Connect error
body or bare as a gateway would, before the call has any effect."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ona_simulator.control_client import SimulatorControlError
from ona_simulator.ratelimit import RateLimiter, RateLimitRule
from tests.support.simulator_fixtures import SimulatorHandle

SERVICE = "gitpod.v1.EnvironmentAutomationService"
EVENTS = "gitpod.v1.EventService/WatchEvents"
ENVIRONMENT = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"


@pytest.fixture
def http(simulator: SimulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.base_url, timeout=10.0) as client:
        yield client
    simulator.control.clear_rate_limit()


def call(
    http: httpx.Client, token: str, method: str = "ListTasks", body: dict[str, Any] | None = None
) -> httpx.Response:
    return http.post(
        f"/{SERVICE}/{method}",
        json=body or {},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_a_global_limit_refuses_past_the_burst_with_retry_after(
    simulator: SimulatorHandle, http: httpx.Client
) -> None:
    simulator.control.set_rate_limit(0.5, burst=2)
    answers = [call(http, simulator.token) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.json()["code"] == "resource_exhausted"
    assert "0.5 requests per second" in refused.json()["message"]
    # The bucket gains one token in 2 s: told in whole seconds.
    assert refused.headers["Retry-After"] == "2"
    # Another token is limited too: the limit is the API's.
    assert call(http, simulator.readonly_token).status_code == 429
    state = simulator.control.rate_limit()
    assert (state["admitted"], state["refused"]) == (2, 2)
    [*_, last] = simulator.control.calls("ListTasks")
    assert last["fault"] == "rate_limit"
    assert (last["httpStatus"], last["code"]) == (429, "resource_exhausted")
    # The refused call's subject is recorded (never the token).
    assert last["subjectId"] == simulator.control.subject_of(simulator.readonly_token)


def test_the_bucket_refills_at_the_rate(simulator: SimulatorHandle, http: httpx.Client) -> None:
    simulator.control.set_rate_limit(20, burst=1)
    assert call(http, simulator.token).status_code == 200
    refused = call(http, simulator.token)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"  # at least a second: whole seconds only
    deadline = time.monotonic() + 5
    while call(http, simulator.token).status_code == 429:  # a token comes within 50 ms
        assert time.monotonic() < deadline, "the bucket never refilled"


def test_a_per_token_limit_holds_back_that_token_only(
    simulator: SimulatorHandle, http: httpx.Client
) -> None:
    other = "second-connection-token"
    simulator.control.add_token(other)
    simulator.control.set_rate_limit(0.2, burst=1, scope="token")
    assert call(http, simulator.token).status_code == 200
    assert call(http, simulator.token).status_code == 429
    assert call(http, other).status_code == 200, "another token has a bucket of its own"
    assert call(http, other).status_code == 429
    assert "per token" in call(http, other).json()["message"]


@pytest.mark.parametrize(
    ("retry_after", "header"), [("none", None), (7, "7"), (0, "0"), ("computed", "5")]
)
def test_retry_after_is_computed_fixed_or_left_out(
    simulator: SimulatorHandle, http: httpx.Client, retry_after: str | int, header: str | None
) -> None:
    simulator.control.set_rate_limit(0.2, burst=1, retry_after=retry_after)
    call(http, simulator.token)
    refused = call(http, simulator.token)
    assert refused.status_code == 429
    assert refused.headers.get("Retry-After") == header


def test_a_gateway_refuses_without_a_connect_body(
    simulator: SimulatorHandle, http: httpx.Client
) -> None:
    simulator.control.set_rate_limit(0.2, burst=1, answer="bare")
    call(http, simulator.token)
    refused = call(http, simulator.token)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/plain")
    assert "code" not in refused.text
    assert refused.headers["Retry-After"] == "5"


def test_a_refused_call_has_no_effect(simulator: SimulatorHandle, http: httpx.Client) -> None:
    task = simulator.control.seed_task(reference="limited", command="make")
    simulator.control.set_rate_limit(0.1, burst=1, methods=["StartTask"])
    # Only StartTask is limited: other methods go as before.
    for _ in range(3):
        assert call(http, simulator.token, "ListTasks").status_code == 200
    assert call(http, simulator.token, "StartTask", {"id": task["id"]}).status_code == 200
    refused = call(http, simulator.token, "StartTask", {"id": task["id"]})
    assert refused.status_code == 429
    assert len(simulator.control.executions()) == 1, "a refused StartTask started nothing"
    started = simulator.control.calls("StartTask")
    assert [c["resultId"] is not None for c in started] == [True, False]


def _frames(raw: bytes) -> list[tuple[int, dict[str, Any]]]:
    frames = []
    while raw:
        flags, length = struct.unpack(">BI", raw[:5])
        frames.append((flags, json.loads(raw[5 : 5 + length])))
        raw = raw[5 + length :]
    return frames


@pytest.mark.parametrize("answer", ["connect", "bare"])
def test_watch_events_is_limited_like_any_call(
    simulator: SimulatorHandle, http: httpx.Client, answer: str
) -> None:
    simulator.control.set_rate_limit(0.2, burst=1, answer=answer)
    call(http, simulator.token)
    response = http.post(
        f"/{EVENTS}",
        content=json.dumps({"environmentId": ENVIRONMENT}).encode(),
        headers={
            "Authorization": f"Bearer {simulator.token}",
            "Content-Type": "application/connect+json",
        },
    )
    assert response.headers["Retry-After"] == "5"
    if answer == "bare":
        assert response.status_code == 429
        return
    # A Connect stream reports the error in its end frame, with HTTP 200.
    assert response.status_code == 200
    [(flags, end)] = _frames(response.content)
    assert flags == 0x02
    assert end["error"]["code"] == "resource_exhausted"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "requestsPerSecond: required"),
        ({"requestsPerSecond": 0}, "requestsPerSecond: expected a number above 0"),
        ({"requestsPerSecond": True}, "requestsPerSecond: expected"),
        ({"requestsPerSecond": 1, "burst": 0}, "burst: expected an integer from 1"),
        ({"requestsPerSecond": 1, "scope": "user"}, "scope: expected one of global, token"),
        ({"requestsPerSecond": 1, "answer": "html"}, "answer: expected one of connect, bare"),
        ({"requestsPerSecond": 1, "retryAfter": "soon"}, "retryAfter: expected"),
        ({"requestsPerSecond": 1, "retryAfter": -1}, "retryAfter: expected"),
        ({"requestsPerSecond": 1, "methods": ["Nope"]}, "methods: unknown method 'Nope'"),
        ({"requestsPerSecond": 1, "perMinute": 3}, "unknown rate limit field 'perMinute'"),
    ],
)
def test_bad_settings_are_refused_by_name(
    simulator: SimulatorHandle, http: httpx.Client, body: dict[str, Any], message: str
) -> None:
    response = http.put("/_simulator/rate-limit", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"
    assert message in response.json()["message"]
    assert simulator.control.rate_limit()["rule"] is None


def test_clear_and_reset_lift_the_limit(simulator: SimulatorHandle, http: httpx.Client) -> None:
    state = simulator.control.set_rate_limit(0.1, burst=1)
    assert state["rule"] == {
        "requestsPerSecond": 0.1,
        "burst": 1,
        "scope": "global",
        "retryAfter": "computed",
        "answer": "connect",
        "methods": [],
    }
    call(http, simulator.token)
    assert call(http, simulator.token).status_code == 429
    simulator.control.clear_rate_limit()
    assert call(http, simulator.token).status_code == 200
    simulator.control.set_rate_limit(0.1, burst=1)
    call(http, simulator.token)
    simulator.control.reset()
    assert call(http, simulator.token).status_code == 200
    assert simulator.control.rate_limit() == {"rule": None, "admitted": 0, "refused": 0}


def test_the_control_client_says_why_a_setting_is_refused(simulator: SimulatorHandle) -> None:
    with pytest.raises(SimulatorControlError, match="burst: expected an integer from 1"):
        simulator.control.set_rate_limit(1, burst=0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_buckets_hold_burst_tokens_and_refill_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.set(RateLimitRule.from_json({"requestsPerSecond": 4, "burst": 3}, ["ListTasks"]))
    headers = {"Authorization": "Bearer t"}
    assert [limiter.check("ListTasks", headers) for _ in range(3)] == [None] * 3
    refusal = limiter.check("ListTasks", headers)
    assert refusal is not None
    assert refusal.retry_after == 1
    clock.now += 0.25  # one token
    assert limiter.check("ListTasks", headers) is None
    assert limiter.check("ListTasks", headers) is not None
    clock.now += 60  # never more than the burst
    assert [limiter.check("ListTasks", headers) is None for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert (limiter.admitted, limiter.refused) == (7, 3)
