"""Waiting for a condition inside an async test: poll it, fail at the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(probe: Callable[[], object], what: str, within: float = 15.0) -> None:
    """Poll `probe` every 50 ms until it is truthy; fail naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
