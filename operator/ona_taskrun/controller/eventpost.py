"""Events go out after the TaskRuns' own writes.

An Event is a write to the API server like a status patch, but nothing waits on it: the
TaskRun's status already says what the Event says. Posted at once, the outcome Events of a
burst of runs competed with start claims and status writes for the same API server (on
2 cores the API server, not the operator, is what a burst waits for). So Events queue
here: while TaskRuns wait in the reconcile queue, an Event waits up to `busy_delay`
seconds, then goes out with one in flight at a time (so a queue that never empties does
not hold Events back for ever); once no TaskRun waits, up to `idle_in_flight` at a time.
The queue is bounded; past the bound the oldest Event is dropped (Events are best
effort) and the drop is logged.

A queued Event keeps only what names its object (`reference`), not the object: under a
long burst the queue may hold thousands, and a TaskRun's body is kilobytes (its spec, its
status, a log tail), where the reference is a few hundred bytes.

An Event's message may quote what came from outside (a failure message, log lines): it is
scrubbed of every token the operator holds (`logs.scrub`) as it is queued, so no token
waits in the queue or reaches the API server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any

from ..observability import logs
from ..rules.model import Event

log = logging.getLogger(__name__)

Post = Callable[[Mapping[str, Any], Event], Coroutine[Any, Any, None]]


class EventPoster:
    def __init__(
        self,
        post: Post,
        busy: Callable[[], bool],
        *,
        limit: int = 10_000,
        busy_in_flight: int = 1,
        idle_in_flight: int = 8,
        busy_delay: float = 10.0,
        recheck: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or busy_in_flight < 1 or idle_in_flight < busy_in_flight:
            raise ValueError("need limit >= 1 and 1 <= busy_in_flight <= idle_in_flight")
        self._post = post
        self._busy = busy
        self._limit = limit
        self._busy_in_flight = busy_in_flight
        self._idle_in_flight = idle_in_flight
        self._busy_delay = busy_delay
        self._clock = clock
        # While busy, how often to look whether the reconcile queue has emptied.
        self._recheck = recheck
        # (when it was queued, the object, the Event), oldest first.
        self._waiting: collections.deque[tuple[float, Mapping[str, Any], Event]] = (
            collections.deque()
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.dropped = 0
        self.posted = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def pending(self) -> int:
        """Events not posted yet: waiting, or on their way."""
        return len(self._waiting) + len(self._in_flight)

    def submit(self, body: Mapping[str, Any], event: Event) -> None:
        message = logs.scrub(event.message)
        if message != event.message:
            event = replace(event, message=message)
        self._waiting.append((self._clock(), reference(body), event))
        if len(self._waiting) > self._limit:
            _, _, gone = self._waiting.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "%d Events dropped so far, the oldest first (more than %d waiting); "
                    "last dropped: %s",
                    self.dropped,
                    self._limit,
                    gone.reason,
                )
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._start_some()
            self._wake.clear()
            # Woken by a new Event or a finished post; while Events wait, also look again
            # now and then: the reconcile queue emptying is not announced.
            timeout = self._recheck if self._waiting else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def flush(self, within: float) -> None:
        """Post what is waiting, for at most `within` seconds, then give up on the rest
        (at shutdown, once `run` is cancelled)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._waiting or self._in_flight:
                    while self._waiting and len(self._in_flight) < self._idle_in_flight:
                        self._start(*self._waiting.popleft()[1:])
                    await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
        left = len(self._waiting) + len(self._in_flight)
        stuck = list(self._in_flight)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        if left:
            log.warning("%d Events not posted at shutdown", left)

    def _start_some(self) -> None:
        if not self._waiting:
            return
        if not self._busy():
            room = self._idle_in_flight
        elif self._clock() - self._waiting[0][0] >= self._busy_delay:
            room = self._busy_in_flight
        else:
            return  # TaskRuns wait, and no Event has waited long enough
        while self._waiting and len(self._in_flight) < room:
            self._start(*self._waiting.popleft()[1:])

    def _start(self, body: Mapping[str, Any], event: Event) -> None:
        task = asyncio.create_task(self._post(body, event))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled():
            if task.exception() is not None:
                log.warning("could not post an Event: %s", task.exception())
            else:
                self.posted += 1
        self._wake.set()


def reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an Event needs of its object (its involvedObject): kind, name, namespace, uid
    and resourceVersion, without the spec and status."""
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    ref: dict[str, Any] = {k: body[k] for k in ("apiVersion", "kind") if k in body}
    ref["metadata"] = kept
    return ref
