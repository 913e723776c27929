"""Watchers of WatchEvents and the fan-out of change events to them.

Each stream owns a queue. Publishing never blocks: an event is put on the queue of every
stream watching the environment it belongs to. Closing a stream (reset, shutdown, or the
control API's disconnect) puts a sentinel on its queue so the handler ends the stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ona_taskrun.simulator.wire import JSON


@dataclass(eq=False)
class Watcher:
    environment_id: str  # empty for the organization scope
    queue: asyncio.Queue[JSON | None] = field(default_factory=asyncio.Queue)
    closed_reason: str = ""

    def close(self, reason: str) -> None:
        if not self.closed_reason:
            self.closed_reason = reason
            self.queue.put_nowait(None)


class EventBus:
    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()
        self.published = 0

    def subscribe(self, environment_id: str) -> Watcher:
        watcher = Watcher(environment_id=environment_id)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

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
