"""A connection's own request rate: a token bucket in front of its Ona client.

`spec.limits.requestsPerSecond` of a connection (20 by default) bounds how many requests
its client sends per second, so one connection's burst (a team applying a thousand
TaskRuns) leaves the Ona API's rate limit to the operator's other connections. The bucket
holds one second's worth of requests: a quiet connection may send that many at once, and
after that they leave at the rate. A request waits for its token before it is sent; the
wait is told to the observer, like a throttle's (`throttle.ThrottleObserver.on_waited`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """At most `rate` requests per second, in bursts of at most `burst` (default: one
    second's worth, at least 1)."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("the rate must be above 0")
        self.rate = rate
        self.burst = max(burst if burst is not None else rate, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._at = clock()

    def set_rate(self, rate: float) -> None:
        """A new rate (the connection's spec changed); tokens already held are kept, up to
        the new burst."""
        if rate <= 0:
            raise ValueError("the rate must be above 0")
        self._refill()
        self.rate = rate
        self.burst = max(rate, 1.0)
        self._tokens = min(self._tokens, self.burst)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited. Waiters are served in turn: each
        takes its token (the balance may go below zero) and sleeps until it was due."""
        self._refill()
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        await self._sleep(wait)
        return wait
