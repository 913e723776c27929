"""Back-pressure: how a client slows down when a server answers 429 (too many requests).

Each client has one `Throttle`. The operator's Kubernetes client has one for all of its
requests (the API server's 429s, from API Priority and Fairness or its max-in-flight
limit, concern the whole operator), and each Ona connection's client has its own, so one
connection's rate limit never holds back another's.

A 429 does two things to the client's later requests:

- It holds them back: for the server's `Retry-After` when it sent one (at most
  `max_retry_after`), else for the project's back-off (`rules.backoff.exponential`,
  doubled for each round of 429s in a row, spread by a random draw). The hold is a floor:
  no request leaves sooner.
- It halves how many requests may be in flight at once (never below one). Answers that
  are not 429s widen that window again, by one request for each `grow_every` seconds
  they keep coming without a 429, and once no 429 has come for `recovery` seconds the
  window is lifted. A server that limits concurrent requests (API Priority and Fairness
  gives each priority level a few seats) is then met with about as many requests as it
  takes; one that limits requests per second sees at most one window of refused
  requests per hold.

Requests sent before a 429 came back are of the same round: their 429s may lengthen the
hold to their own Retry-After, but they neither double the back-off nor halve the window
again, so however many requests were in flight a round costs one step.

The throttle does no I/O: it makes requests wait (with the sleep it is given) and tells
its observer each 429 and each wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from ..rules.backoff import after, exponential

__all__ = [
    "NO_THROTTLE_OBSERVER",
    "Held",
    "Throttle",
    "ThrottleObserver",
    "parse_retry_after",
]

# Defaults: the back-off without Retry-After, the longest Retry-After honoured as given,
# how long without a 429 lifts the window, and how long of nothing but 429s makes them
# persistent (see `Throttle.persistent`).
BASE_DELAY = 0.5
MAX_DELAY = 30.0
MAX_RETRY_AFTER = 60.0
RECOVERY = 30.0
GROW_EVERY = 1.0
PERSIST = 120.0
# A window this wide is as good as none.
_WIDEST = 256


class ThrottleObserver(Protocol):
    def on_throttled(self, name: str, hold: float) -> None:
        """The server answered 429 to a request of the client called `name`; its requests
        are held back for `hold` seconds. Quick, and must not raise."""

    def on_waited(self, name: str, seconds: float) -> None:
        """A request of the client called `name` waited `seconds` before it was sent,
        held back by earlier 429s. Quick, and must not raise."""


class _NoObserver:
    def on_throttled(self, name: str, hold: float) -> None:
        return None

    def on_waited(self, name: str, seconds: float) -> None:
        return None


NO_THROTTLE_OBSERVER = _NoObserver()


def _default_sleep(delay: float) -> Awaitable[None]:
    return asyncio.sleep(delay)


class Held(Exception):
    """The client's requests are held back for longer than the caller may wait: nothing
    was sent. `remaining` is how long the hold still lasts."""

    def __init__(self, remaining: float) -> None:
        super().__init__(f"held back for {remaining:.1f}s more by the server's 429s")
        self.remaining = remaining


class Throttle:
    def __init__(
        self,
        name: str = "",
        observer: ThrottleObserver = NO_THROTTLE_OBSERVER,
        *,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        max_retry_after: float = MAX_RETRY_AFTER,
        recovery: float = RECOVERY,
        grow_every: float = GROW_EVERY,
        persist: float = PERSIST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = _default_sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if min(base_delay, max_delay, max_retry_after, recovery, grow_every, persist) <= 0:
            raise ValueError("the throttle's delays must be positive")
        self.name = name
        self._observer = observer
        self._base = base_delay
        self._cap = max_delay
        self._max_retry_after = max_retry_after
        self._recovery = recovery
        self._grow_every = grow_every
        self._persist = persist
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._until = 0.0  # no request leaves before this
        self.hold_id = 0  # changes whenever the hold is lengthened
        self._window: int | None = None  # requests in flight at once; None: no limit
        self._grown_at = 0.0  # when the window last changed
        self._in_flight = 0
        self._reserved = 0  # places kept for queued requests that are about to go
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._streak = 0  # rounds of 429s with no other answer in between
        self._round_at = float("-inf")  # when the current round's first 429 came
        self._last_refused = float("-inf")
        self._refused_since: float | None = None  # first 429 since the last other answer
        self.throttled = 0  # 429s answered, for logs and tests
        self.waited = 0.0  # seconds requests waited

    # ---------------------------------------------------------------- what it says

    def remaining(self) -> float:
        """Seconds the hold still lasts (0 when requests may go)."""
        return max(self._until - self._clock(), 0.0)

    @property
    def window(self) -> int | None:
        """How many requests may be in flight at once; None when there is no limit."""
        self._recover()
        return self._window

    @property
    def busy(self) -> bool:
        """Whether a request would now wait for another to end (the window is full)."""
        self._recover()
        return self._free() <= 0 or bool(self._waiters)

    @property
    def persistent(self) -> bool:
        """Whether the server has answered nothing but 429s for `persist` seconds: no
        longer a request to slow down but, for the caller, as good as an outage."""
        since = self._refused_since
        return since is not None and self._clock() - since >= self._persist

    # ---------------------------------------------------------------- requests

    @contextlib.asynccontextmanager
    async def request(self, *, max_wait: float | None = None) -> AsyncIterator[float]:
        """Wait for the hold and for room in the window, then hold a place in it for the
        request; yields when it was let go (for `refused` and `answered`)."""
        sent_at = await self.admit(max_wait=max_wait)
        try:
            yield sent_at
        finally:
            self.release()

    async def admit(
        self, *, max_wait: float | None = None, slot: bool = True, waited_out: int = -1
    ) -> float:
        """Wait until a request may go; returns the moment it was let go. `slot`: it takes
        a place in the window (`release` it when its answer came); a stream that stays
        open takes none. `max_wait`: raise `Held` rather than wait out a longer hold.
        `waited_out`: a `hold_id` the caller has already slept through."""
        started = self._clock()
        slept_for = waited_out
        reserved = False  # a place in the window was kept for this request
        held = False  # it waited for a hold or for a place
        try:
            while True:
                self._recover()
                remaining = self._until - self._clock()
                if remaining > 0 and slept_for != self.hold_id:
                    if max_wait is not None and remaining > max_wait:
                        raise Held(remaining)
                    # Once per hold: a hold lengthened meanwhile is slept through again.
                    slept_for = self.hold_id
                    held = True
                    await self._sleep(remaining)
                    continue
                if not slot or reserved or (self._free() > 0 and not self._waiters):
                    break
                held = True
                await self._queue()
                reserved = True
        except BaseException:
            if reserved:
                self._reserved -= 1
                self._wake()
            raise
        finally:
            if held:
                self.note_waited(max(self._clock() - started, 0.0))
        if reserved:
            self._reserved -= 1
        if slot:
            self._in_flight += 1
        return self._clock()

    def release(self) -> None:
        """A request's place in the window is free again."""
        self._in_flight = max(self._in_flight - 1, 0)
        self._recover()
        self._wake()

    def refused(self, sent_at: float, retry_after: float | None) -> float:
        """The server answered 429 to a request let go at `sent_at`, with its Retry-After
        (seconds) if it sent one. Returns how long requests are now held back."""
        now = self._clock()
        self.throttled += 1
        self._last_refused = now
        if self._refused_since is None:
            self._refused_since = now
        if sent_at > self._round_at:
            # Sent after the last round was known: a new round.
            self._streak += 1
            self._round_at = now
            current = self._in_flight
            if self._window is not None:
                current = min(current, self._window)
            self._window = max(current // 2, 1)
            self._grown_at = now
        backoff = exponential(self._base, self._streak - 1, self._cap, jitter=self._rand())
        asked = min(retry_after, self._max_retry_after) if retry_after is not None else None
        hold = after(asked, backoff)
        if now + hold > self._until:
            self._until = now + hold
            self.hold_id += 1
        self._observer.on_throttled(self.name, hold)
        return hold

    def answered(self, sent_at: float) -> None:
        """The server answered a request let go at `sent_at` with something else than a
        429: the 429s so far are no longer in a row, and the window widens by one if it
        has not changed for `grow_every` seconds."""
        if sent_at > self._round_at:
            self._streak = 0
            self._refused_since = None
        now = self._clock()
        if self._window is not None and now - self._grown_at >= self._grow_every:
            self._window += 1
            self._grown_at = now
            if self._window >= _WIDEST:
                self._window = None
            self._wake()

    def note_waited(self, seconds: float) -> None:
        """A request waited this long for the hold (counted and told)."""
        self.waited += seconds
        self._observer.on_waited(self.name, seconds)

    # ---------------------------------------------------------------- the window

    def _recover(self) -> None:
        if self._window is not None and self._clock() - self._last_refused >= self._recovery:
            self._window = None
            self._wake()

    def _free(self) -> int:
        """Places free in the window (many when there is no window)."""
        if self._window is None:
            return len(self._waiters) + 1
        return self._window - self._in_flight - self._reserved

    async def _queue(self) -> None:
        """Wait in line until `_wake` keeps a place in the window for this request."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._reserved -= 1  # kept for it just before: give it to the next
                self._wake()
            raise

    def _wake(self) -> None:
        """Keep places for queued requests, oldest first, as far as there is room."""
        while self._waiters and self._free() > 0:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._reserved += 1


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds < 0:  # NaN or negative: ignore the header
            return None
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)
