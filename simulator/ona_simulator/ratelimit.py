"""A rate limit in front of the API, as a gateway would apply one: token buckets.

Ona publishes no rate limits, but its API answers `resource_exhausted` (HTTP 429) and a
careful client honours `Retry-After` (ona-api.md). The limit is off until a test sets it
(`PUT /_simulator/rate-limit`). Then every API call, unary or WatchEvents, takes one
token from a bucket that holds at most `burst` tokens and gains `requestsPerSecond` a
second: the one bucket of the whole API (`scope: "global"`) or one per bearer token
(`scope: "token"`, as a per-user limit; a call without a token shares the bucket of
calls without one). A call that finds the bucket empty is refused before anything else
is done (no latency, fault, authentication or effect), and takes no token.

A refusal answers HTTP 429 with
- `answer: "connect"`: a Connect error body `{"code": "resource_exhausted", ...}` (for
  WatchEvents with Connect framing: HTTP 200 and an end frame, as any Connect error);
- `answer: "bare"`: a plain-text body without a Connect error, as a proxy or gateway
  that limits before the API would (WatchEvents too);
and a `Retry-After` header per `retryAfter`: `"computed"` (the whole seconds until the
bucket has a token again, at least 1), `"none"` (no header), or a number of seconds.

Tokens are keys of a private map here, as in `auth`, and never appear in any answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ona_simulator.wire import JSON, ConnectError, type_name

SCOPES: Final = ("global", "token")
ANSWERS: Final = ("connect", "bare")
RETRY_AFTER_WORDS: Final = ("computed", "none")
_KNOBS: Final = ("requestsPerSecond", "burst", "scope", "retryAfter", "answer", "methods")


@dataclass
class RateLimitRule:
    requests_per_second: float
    burst: int
    scope: str = "global"
    retry_after: str | int = "computed"
    answer: str = "connect"
    methods: tuple[str, ...] = ()  # none: every method

    def to_json(self) -> JSON:
        return {
            "requestsPerSecond": self.requests_per_second,
            "burst": self.burst,
            "scope": self.scope,
            "retryAfter": self.retry_after,
            "answer": self.answer,
            "methods": list(self.methods),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any], known_methods: Iterable[str]) -> RateLimitRule:
        unknown = sorted(set(body) - set(_KNOBS))
        if unknown:
            raise ConnectError(
                "invalid_argument",
                f"unknown rate limit field {unknown[0]!r}; known: {', '.join(_KNOBS)}",
            )
        if "requestsPerSecond" not in body:
            raise ConnectError("invalid_argument", "requestsPerSecond: required")
        rate = body["requestsPerSecond"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1e6:
            raise _bad("requestsPerSecond", "a number above 0 (at most 1000000)", rate)
        burst = body.get("burst", max(math.ceil(rate), 1))
        if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 1_000_000:
            raise _bad("burst", "an integer from 1 to 1000000", burst)
        scope = body.get("scope", "global")
        if scope not in SCOPES:
            raise _bad("scope", f"one of {', '.join(SCOPES)}", scope)
        answer = body.get("answer", "connect")
        if answer not in ANSWERS:
            raise _bad("answer", f"one of {', '.join(ANSWERS)}", answer)
        retry_after = body.get("retryAfter", "computed")
        if isinstance(retry_after, bool) or not (
            retry_after in RETRY_AFTER_WORDS
            or (isinstance(retry_after, int) and 0 <= retry_after <= 86_400)
        ):
            raise _bad("retryAfter", '"computed", "none" or whole seconds (0..86400)', retry_after)
        methods = body.get("methods") or []
        known = set(known_methods)
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise _bad("methods", "a list of method names", methods)
        for method in methods:
            if method not in known:
                raise ConnectError(
                    "invalid_argument",
                    f"methods: unknown method {method!r}; use some of {', '.join(sorted(known))}",
                )
        return cls(float(rate), burst, scope, retry_after, answer, tuple(methods))


def _bad(name: str, expected: str, value: object) -> ConnectError:
    return ConnectError(
        "invalid_argument", f"{name}: expected {expected}, got {type_name(value)} {value!r}"
    )


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True)
class Refusal:
    """A call the limit refused: how to answer it."""

    retry_after: int | None  # the Retry-After header, seconds; None: no header
    answer: str  # "connect" or "bare"
    message: str


@dataclass
class RateLimiter:
    clock: Callable[[], float] = time.monotonic
    rule: RateLimitRule | None = None
    admitted: int = 0
    refused: int = 0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def set(self, rule: RateLimitRule | None) -> None:
        """A new rule (None: no limit) with full buckets and fresh counts."""
        self.rule = rule
        self._buckets.clear()
        self.admitted = self.refused = 0

    def check(self, method: str, headers: Mapping[str, str]) -> Refusal | None:
        """Take a token for this call; the refusal when there is none."""
        rule = self.rule
        if rule is None or (rule.methods and method not in rule.methods):
            return None
        key = bearer_token(headers) if rule.scope == "token" else ""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(rule.burst), now)
        rate = rule.requests_per_second
        bucket.tokens = min(float(rule.burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self.admitted += 1
            return None
        self.refused += 1
        if rule.retry_after == "none":
            retry_after = None
        elif rule.retry_after == "computed":
            retry_after = max(math.ceil((1.0 - bucket.tokens) / rate), 1)
        else:
            retry_after = int(rule.retry_after)
        per = "per token" if rule.scope == "token" else "in all"
        message = f"rate limit exceeded: {rate:g} requests per second {per} (simulated)"
        return Refusal(retry_after, rule.answer, message)

    def to_json(self) -> JSON:
        return {
            "rule": self.rule.to_json() if self.rule is not None else None,
            "admitted": self.admitted,
            "refused": self.refused,
        }


def bearer_token(headers: Mapping[str, str]) -> str:
    """The bearer token of a request, "" without one."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
