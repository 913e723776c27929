"""One component that follows every running execution, instead of a timer per TaskRun.

It polls in batches (ListTaskExecutions by task ids, 25 ids per filter, 100 per page),
and watches each environment with WatchEvents so a change is re-read at once; polling
is the fallback, and slows down while every environment's watch is healthy. It keeps
the newest status seen of each execution (by statusVersion, compared as integers) and
tells the reconciler which TaskRun to look at when one changes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..clients.ona import OnaClient, errors
from ..clients.ona.watch import Resync
from ..rules.backoff import exponential, spread
from ..rules.model import RemoteExecution, RemoteFailure
from .remote import to_failure, to_remote

log = logging.getLogger(__name__)


@dataclass
class _Tracked:
    key: str
    task_id: str
    environment_id: str


class ExecutionTracker:
    def __init__(
        self,
        client: OnaClient,
        notify: Callable[[str], None],
        *,
        poll_interval: float = 5.0,
        watched_poll_interval: float | None = None,
        max_backoff: float = 60.0,
        watch: bool = True,
        on_unauthenticated: Callable[[], None] | None = None,
        news_delay: float = 0.1,
        max_watches: int = 100,
        on_watch_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._notify = notify
        # Told when the token is refused, so a rotated one can be read at once.
        self._on_unauthenticated = on_unauthenticated
        self._poll_interval = poll_interval
        # While every environment is watched, polling is only the safety net (and the way
        # an outage that leaves the streams open is noticed), so it may slow down.
        self._watched_poll_interval = watched_poll_interval or poll_interval * 3
        self._max_backoff = max_backoff
        self._watch = watch
        # WatchEvents streams are one per environment; past this many, environments are
        # followed by the batched poll alone (a stream opens as another closes).
        self._max_watches = max_watches
        # Told each time a stream is opened again after the previous one ended (metrics).
        self._on_watch_reconnect = on_watch_reconnect
        self._tracked: dict[str, _Tracked] = {}
        # How many tracked executions each environment has: its stream closes at zero.
        self._per_environment: collections.Counter[str] = collections.Counter()
        self._latest: dict[str, RemoteExecution] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._healthy_watches: set[str] = set()
        self._wake = asyncio.Event()
        # Executions a watch said changed, read together in batched lists rather than
        # one GetTaskExecution each: news of many runs arrives within moments.
        self._news: set[str] = set()
        self._news_delay = news_delay
        self._news_reader: asyncio.Task[None] | None = None
        self._failures = 0
        self.failure: RemoteFailure | None = None

    # ------------------------------------------------------------------ interface

    def track(self, execution_id: str, key: str, task_id: str, environment_id: str) -> None:
        if execution_id in self._tracked:
            return
        held = self._latest.get(execution_id)
        # A TaskRun naming its task by id does not know the environment: the execution does.
        environment_id = environment_id or (held.environment_id if held else "")
        self._tracked[execution_id] = _Tracked(key, task_id, environment_id)
        self._per_environment[environment_id] += 1
        self._watch_for(environment_id)
        # No immediate poll: a started execution's first status came with StartTask, and
        # waking on every start re-listed everything tracked, ~3 lists per TaskRun.
        if not environment_id:
            # Neither the TaskRun nor a status held names its environment (a run naming
            # its task by id, after a restart): read it with the next batch of news, so
            # its environment's stream opens now rather than after the next poll.
            self._heard(execution_id)

    def _watch_for(self, environment_id: str) -> None:
        if not self._watch or not environment_id or environment_id in self._watchers:
            return
        if len(self._watchers) >= self._max_watches:
            return
        self._watchers[environment_id] = asyncio.create_task(
            self._watch_environment(environment_id), name=f"watch-{environment_id}"
        )

    @property
    def watched(self) -> int:
        """WatchEvents streams open (or reconnecting)."""
        return len(self._watchers)

    def untrack(self, execution_id: str) -> None:
        gone = self._tracked.pop(execution_id, None)
        self._latest.pop(execution_id, None)
        if gone is None:
            return
        self._per_environment[gone.environment_id] -= 1
        if self._per_environment[gone.environment_id] <= 0:
            del self._per_environment[gone.environment_id]
            watcher = self._watchers.pop(gone.environment_id, None)
            if watcher is not None:
                watcher.cancel()
                # A stream is free: give it to an environment followed by polling alone.
                for environment_id in list(self._per_environment):
                    if len(self._watchers) >= self._max_watches:
                        break
                    self._watch_for(environment_id)

    @property
    def tracked(self) -> int:
        return len(self._tracked)

    def execution_ids(self) -> set[str]:
        """Every execution something is held for: tracked, or its latest status kept."""
        return self._tracked.keys() | self._latest.keys()

    @property
    def streams(self) -> int:
        """Environments whose WatchEvents stream is open."""
        return len(self._healthy_watches)

    def latest(self, execution_id: str) -> RemoteExecution | None:
        return self._latest.get(execution_id)

    def observe(self, execution: RemoteExecution) -> bool:
        """Keep an execution's status if it is newer than the one held; True if it was."""
        held = self._latest.get(execution.id)
        if held is not None and held.status_version >= execution.status_version:
            return False
        self._latest[execution.id] = execution
        return True

    # ---------------------------------------------------------------------- loops

    async def run(self) -> None:
        try:
            while True:
                delay = await self.poll_once()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            tasks = [*self._watchers.values(), *([self._news_reader] if self._news_reader else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def poll_once(self) -> float:
        """Refresh every tracked execution; return the seconds until the next poll."""
        if not self._tracked:
            return self._poll_interval
        try:
            await self._read(dict(self._tracked))
        except errors.OnaError as exc:
            return self._failed(exc)
        if self.failure is not None:
            log.info("the Ona API answers again; %d executions tracked", len(self._tracked))
            self.failure = None
            self._failures = 0
            self._notify_all()
        envs = {t.environment_id for t in self._tracked.values()}
        if self._watch and envs and envs <= self._healthy_watches:
            return self._watched_poll_interval
        return self._poll_interval

    def _failed(self, exc: errors.OnaError) -> float:
        failure = to_failure(exc)
        if isinstance(exc, errors.Unauthenticated) and self._on_unauthenticated is not None:
            self._on_unauthenticated()
        changed = self.failure is None or self.failure.kind != failure.kind
        self.failure = failure
        self._failures += 1
        if changed:
            log.warning("cannot refresh executions: %s", failure.message)
            self._notify_all()
        # Capped exponential backoff with jitter; the server's Retry-After wins if longer.
        doublings = min(self._failures, 10)
        delay = exponential(
            self._poll_interval, doublings, self._max_backoff, jitter=random.random()
        )
        return max(delay, float(failure.retry_after or 0.0))

    async def _read(self, tracked: dict[str, _Tracked]) -> None:
        """Read these executions in batched lists by task; one by one those not listed."""
        found = await self._client.list_task_executions_by_task_ids(
            {t.task_id for t in tracked.values()}
        )
        seen = set()
        for execution in found:
            if execution.id in tracked:
                seen.add(execution.id)
                self._update(to_remote(execution))
        for missing in set(tracked) - seen:
            await self._refresh(missing)

    async def _refresh(self, execution_id: str) -> None:
        try:
            execution = await self._client.get_task_execution(execution_id)
        except errors.NotFound:
            # Gone remotely; the TaskRun keeps its last status and says so on next look.
            log.warning("execution %s no longer exists in Ona", execution_id)
            return
        self._update(to_remote(execution))

    def _update(self, execution: RemoteExecution) -> None:
        tracked = self._tracked.get(execution.id)
        if tracked is None:
            return
        if not tracked.environment_id and execution.environment_id:
            self._per_environment[""] -= 1
            if self._per_environment[""] <= 0:
                del self._per_environment[""]
            tracked.environment_id = execution.environment_id
            self._per_environment[execution.environment_id] += 1
            self._watch_for(execution.environment_id)
        if self.observe(execution):
            self._notify(tracked.key)

    def _heard(self, execution_id: str) -> None:
        self._news.add(execution_id)
        if self._news_reader is None or self._news_reader.done():
            self._news_reader = asyncio.create_task(self._read_news(), name="tracker-news")

    async def _read_news(self) -> None:
        """Read the executions a watch named, in batches by task, until no news is left."""
        await asyncio.sleep(self._news_delay)
        while self._news:
            heard = {i: self._tracked[i] for i in self._news if i in self._tracked}
            self._news.clear()
            if not heard:
                return
            try:
                await self._read(heard)
            except errors.OnaError as exc:
                # The next poll reads them; its back-off handles an API in trouble.
                log.info("reading executions after watch news failed: %s", exc)
                self._wake.set()
                return

    def _notify_all(self) -> None:
        for key in {t.key for t in self._tracked.values()}:
            self._notify(key)

    async def _watch_environment(self, environment_id: str) -> None:
        # Runs until untrack() cancels it with the environment's last execution.
        try:
            while True:
                try:
                    async for item in self._client.watch_events(environment_id):
                        if isinstance(item, Resync):
                            if item.reconnect and self._on_watch_reconnect is not None:
                                self._on_watch_reconnect()
                            self._healthy_watches.add(environment_id)
                            self._wake.set()  # no resume cursor: re-list
                        elif item.is_task_execution and item.resource_id in self._tracked:
                            self._heard(item.resource_id)
                except errors.OnaError as exc:
                    log.info(
                        "watching environment %s failed (%s); polling instead",
                        environment_id,
                        exc.code,
                    )
                self._healthy_watches.discard(environment_id)
                await asyncio.sleep(spread(self._max_backoff, random.random()))
        finally:
            self._healthy_watches.discard(environment_id)
