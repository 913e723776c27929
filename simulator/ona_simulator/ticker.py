"""Moves simulated things on at their due times, with one task and no timer per thing.

A heap of (due, seq, key) in `time.monotonic()` seconds; the task sleeps until the
earliest entry and is woken early when an earlier one is scheduled. Each entry that comes
due is handed to `advance(key, due, now)`. Entries go stale when a thing's schedule moves
(a stop, the control API): `advance` compares `due` with the thing's own and skips those.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable

Advance = Callable[[str, float, float], None]


class Ticker:
    def __init__(self, advance: Advance) -> None:
        self._advance = advance
        self._heap: list[tuple[float, int, str]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def schedule(self, due: float | None, seq: int, key: str) -> None:
        if due is None:
            return
        wake = not self._heap or due < self._heap[0][0]
        heapq.heappush(self._heap, (due, seq, key))
        if wake:
            self._wake.set()

    def tick(self, now: float) -> None:
        """Hand every entry due by `now` to `advance`, earliest first."""
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            self._advance(key, due, now)

    def clear(self) -> None:
        self._heap.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            self.tick(time.monotonic())
            timeout = self._heap[0][0] - time.monotonic() if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
