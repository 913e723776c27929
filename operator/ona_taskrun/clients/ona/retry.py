"""When and how long the Ona client waits before repeating a call.

Capped exponential backoff with full jitter: before retry n (n = 1 for the first retry)
the client sleeps a uniformly random time in [0, min(max_delay, base_delay * 2**(n-1))].
A Retry-After from the server is a floor: the client never comes back sooner than asked.
When the server asks for more than `max_delay`, the client stops retrying and raises, so
the caller can schedule the retry itself instead of a coroutine sleeping for minutes.

A 429 is waited out through the client's throttle (`clients.throttle`): a read retried
after one waits at least as long as the throttle holds every call of the client back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ...rules.backoff import exponential
from ..throttle import parse_retry_after

__all__ = ["RetryPolicy", "parse_retry_after"]


def _default_sleep(delay: float) -> Awaitable[None]:
    return asyncio.sleep(delay)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how far apart repeatable calls are tried.

    `max_attempts` counts the first try, so 1 disables retries. `sleep` and `random` are
    injectable so tests can record delays instead of waiting.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 10.0
    sleep: Callable[[float], Awaitable[None]] = field(default=_default_sleep, repr=False)
    random: Callable[[], float] = field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry: int) -> float:
        """The jittered delay before retry number `retry` (1-based), ignoring Retry-After."""
        ceiling = exponential(self.base_delay, retry - 1, self.max_delay)
        return ceiling * self.random()

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """The delay before retry `retry`, or None when the server asked for too long a wait."""
        jittered = self.backoff(retry)
        if retry_after is None:
            return jittered
        if retry_after > self.max_delay:
            return None
        return max(jittered, retry_after)
