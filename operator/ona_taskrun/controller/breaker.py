"""One circuit breaker for the Ona calls of every TaskRun of a connection.

Each TaskRun backs off on its own, but a thousand TaskRuns backing off on their own
still make a thousand calls into an outage. After a few outage failures in a row (from
any TaskRun), remote calls pause for a growing, capped time; then a single call probes
whether the API is back, and only an answer lets everyone through again. What counts as
an outage is decided in one place, `remote.is_outage`: an answer about one request (a
refusal, a method the server does not serve) is an answer, and never opens the breaker.

A 429 (rate limited) is not an outage: the API answered, and asked for fewer calls. The
connection's client slows down for it (its `Throttle`: Retry-After, back-off, fewer calls
at once), and the breaker says so to the TaskRuns: while the throttle holds calls back,
`wait_time` is the time left (so a TaskRun is requeued instead of a worker waiting), and
while its window of calls in flight is full, a short wait. Only when the API has answered
nothing but 429s for `Throttle.persistent`'s time (two minutes) does a 429 count as an
outage failure (`Remote.failed`), and the breaker may open as for any outage.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ..clients.throttle import Throttle
from ..rules.backoff import exponential


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 3,
        base: float = 1.0,
        cap: float = 30.0,
        probe_timeout: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        throttle: Throttle | None = None,
    ) -> None:
        self._throttle = throttle
        self._threshold = threshold
        self._base = base
        self._cap = cap
        self._probe_timeout = probe_timeout
        self._clock = clock
        self._rand = rand
        self._failures = 0
        self._open_until = 0.0
        self._probe_at: float | None = None
        self.opened = 0  # how many times it opened: for logs and tests

    @property
    def open(self) -> bool:
        return self._failures >= self._threshold

    def wait_time(self) -> float:
        """Seconds a remote call must wait; 0 means go ahead (perhaps as the probe). The
        connection's rate limit comes first: the throttle's hold, with up to a second more
        so that the TaskRuns it held back do not all come back at once."""
        throttle = self._throttle
        if throttle is not None:
            held = throttle.remaining()
            if held > 0:
                return held + self._rand()
            if throttle.busy:
                return exponential(self._base, 0, self._cap, jitter=self._rand())
        if not self.open:
            return 0.0
        now = self._clock()
        if now < self._open_until:
            return self._open_until - now + self._rand()
        if self._probe_at is not None and now - self._probe_at < self._probe_timeout:
            return 1.0 + 2.0 * self._rand()  # a probe is out; its answer decides
        self._probe_at = now
        return 0.0

    def record(self, *, ok: bool) -> None:
        """The outcome of a remote call: ok means the API answered (even with a refusal);
        not ok, an outage (`remote.is_outage`)."""
        self._probe_at = None
        if ok:
            self._failures = 0
            self._open_until = 0.0
            return
        self._failures += 1
        if self._failures >= self._threshold:
            if self._failures == self._threshold:
                self.opened += 1
            exponent = min(self._failures - self._threshold, 16)
            pause = exponential(self._base, exponent, self._cap, jitter=self._rand())
            self._open_until = self._clock() + pause
