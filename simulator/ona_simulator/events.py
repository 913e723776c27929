"""Watchers of WatchEvents and the fan-out of change events to them.

Each stream owns a queue. Publishing never blocks: an event is put on the queue of every
stream watching the environment it belongs to. Closing a stream (reset, shutdown, or the
control API's disconnect) puts a sentinel on its queue so the handler ends the stream.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from ona_simulator.wire import JSON, rfc3339, utcnow

# Streams kept in the history after they close: enough for a benchmark's 500 environments
# opened and closed many times over, bounded so a long-running simulator stays small.
HISTORY_LIMIT = 20_000


@dataclass(eq=False)
class Watcher:
    environment_id: str  # empty for the organization scope
    queue: asyncio.Queue[JSON | None] = field(default_factory=asyncio.Queue)
    closed_reason: str = ""
    opened_at: str = field(default_factory=lambda: rfc3339(utcnow()))
    ended_at: str = ""

    def record(self) -> JSON:
        return {
            "environmentId": self.environment_id,
            "openedAt": self.opened_at,
            "closedAt": self.ended_at or None,
        }

    def close(self, reason: str) -> None:
        if not self.closed_reason:
            self.closed_reason = reason
            self.queue.put_nowait(None)


class EventBus:
    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()
        self.published = 0
        # Streams that have ended, oldest first, so a client can tell which environments
        # were watched when (the benchmark splits its mirror latency by it).
        self._ended: collections.deque[Watcher] = collections.deque(maxlen=HISTORY_LIMIT)

    def subscribe(self, environment_id: str) -> Watcher:
        watcher = Watcher(environment_id=environment_id)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.discard(watcher)
            watcher.ended_at = rfc3339(utcnow())
            self._ended.append(watcher)

    def history(self) -> list[JSON]:
        """Every stream still open and the most recent ones that ended, oldest first."""
        streams = [*self._ended, *sorted(self._watchers, key=lambda w: w.opened_at)]
        return [watcher.record() for watcher in streams]

    def publish(
        self, environment_id: str, operation: str, resource_type: str, resource_id: str
    ) -> None:
        """Tell environment-scoped watchers; task events never reach the organization scope."""
        self.published += 1
        message: JSON = {
            "operation": operation,
            "resourceType": resource_type,
            "resourceId": resource_id,
        }
        for watcher in self._watchers:
            if watcher.environment_id == environment_id and not watcher.closed_reason:
                watcher.queue.put_nowait(message)

    def close_all(self, reason: str) -> int:
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.close(reason)
        return len(watchers)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
