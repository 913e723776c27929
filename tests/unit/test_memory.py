"""Freed memory goes back to the system (controller.memory), not only to the allocator."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from ona_taskrun.controller import memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not memory.give_back(), reason="the C library has no malloc_trim")
def test_freed_blocks_scattered_through_the_heap_are_given_back() -> None:
    # Blocks of 1 KB (past Python's small-object allocator: malloc's), one in twenty kept,
    # as the bodies of TaskRuns come and go: the allocator keeps the pages around the
    # survivors until it is asked to give them back.
    blocks = [bytes(1000 + i % 7) for i in range(150_000)]
    kept = blocks[::20]
    del blocks
    gc.collect()
    before = _rss_mib()
    assert memory.give_back()
    after = _rss_mib()
    assert kept  # still held: only the free pages went
    assert before - after > 60, (before, after)
