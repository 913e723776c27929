"""Giving memory the operator has freed back to the system.

glibc's allocator keeps the blocks Python frees in its heap, and gives pages in the
middle of it back only when asked. Under weeks of churn that was most of the operator's
growth: the resident size rose by about 1 MiB per 1,000 TaskRuns while the traced Python
heap and the C allocator's bytes in use stayed flat (docs/performance.md, "Soak").
`malloc_trim(0)` gives every free page back; once a minute it costs the operator a
millisecond or two (about 25 ms for 200 MiB of scattered free blocks). Where the C
library has none (musl), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from typing import Final

from ..observability import heap

log = logging.getLogger(__name__)

TRIM_EVERY: Final = 60.0


def _malloc_trim() -> Callable[[int], int] | None:
    trim = heap.c_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _malloc_trim()


def give_back() -> bool:
    """Give the C allocator's free pages back to the system now; False where it cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def give_back_forever(every: float = TRIM_EVERY) -> None:
    """`give_back` every `every` seconds, for as long as the operator runs."""
    if _TRIM is None:
        log.debug("this C library cannot give freed memory back (no malloc_trim)")
        return
    while True:
        await asyncio.sleep(every)
        give_back()
