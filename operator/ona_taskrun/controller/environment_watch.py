"""Wake TaskRuns waiting for their environment when it changes, instead of at the next poll.

While a run waits for its environment (CREATING, STARTING, STOPPING), the reconciler asks
this watch, one per connection, to follow that environment: one WatchEvents stream per
environment waited on, closed when no run waits on it any more. An environment event (or
a reconnect, after which anything may have changed) queues the waiting TaskRuns, which
then read the environment again. The poll (`ENVIRONMENT_POLL_SECONDS`) stays as the safety
net: a stream that cannot be opened only makes waits slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ..clients.ona import OnaClient, errors
from ..clients.ona.watch import Resync

log = logging.getLogger(__name__)
RESOURCE_TYPE_ENVIRONMENT = "RESOURCE_TYPE_ENVIRONMENT"


class EnvironmentWatch:
    def __init__(
        self, client: OnaClient, notify: Callable[[str], None], *, max_streams: int = 50
    ) -> None:
        self._client = client
        self._notify = notify
        self._max_streams = max_streams
        self._waiting: dict[str, set[str]] = {}  # environment id -> TaskRun keys
        self._environment_of: dict[str, str] = {}  # TaskRun key -> environment id
        self._streams: dict[str, asyncio.Task[None]] = {}

    @property
    def streams(self) -> int:
        return len(self._streams)

    @property
    def waiting(self) -> int:
        """TaskRuns that wait for an environment here."""
        return len(self._environment_of)

    def wait(self, environment_id: str, key: str) -> None:
        """The TaskRun `key` waits for `environment_id` to change."""
        if self._environment_of.get(key) == environment_id:
            return
        self.done(key)
        self._environment_of[key] = environment_id
        self._waiting.setdefault(environment_id, set()).add(key)
        if environment_id not in self._streams and len(self._streams) < self._max_streams:
            self._streams[environment_id] = asyncio.create_task(
                self._follow(environment_id), name=f"environment-watch-{environment_id}"
            )

    def done(self, key: str) -> None:
        """The TaskRun `key` waits no more (it goes on, ended, or is gone)."""
        environment_id = self._environment_of.pop(key, None)
        if environment_id is None:
            return
        keys = self._waiting.get(environment_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._waiting[environment_id]
                stream = self._streams.pop(environment_id, None)
                if stream is not None:
                    stream.cancel()

    async def close(self) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.cancel()
        for stream in streams:
            with contextlib.suppress(asyncio.CancelledError):
                await stream

    def _wake(self, environment_id: str) -> None:
        for key in sorted(self._waiting.get(environment_id, ())):
            self._notify(key)

    async def _follow(self, environment_id: str) -> None:
        try:
            async for item in self._client.watch_events(environment_id):
                if isinstance(item, Resync):
                    # Open (again): what changed before it may have been missed.
                    self._wake(environment_id)
                elif (
                    item.resource_type == RESOURCE_TYPE_ENVIRONMENT
                    and item.resource_id == environment_id
                ):
                    self._wake(environment_id)
        except errors.OnaError as exc:
            # Polling goes on; the next wait on this environment tries a stream again.
            log.info("watching environment %s failed (%s); polling it", environment_id, exc.code)
        finally:
            if self._streams.get(environment_id) is asyncio.current_task():
                del self._streams[environment_id]
