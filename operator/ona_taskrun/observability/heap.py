"""An opt-in view of the operator's Python heap, for finding leaks (`scripts/soak`).

Off by default. With `ONA_TASKRUN_DEBUG_HEAP` set to a number of frames (1 to 25; `true`
is 1), tracemalloc traces every allocation from the operator's start, keeping that many
stack frames of each, and the metrics server also answers `GET /debug/heap` with JSON:
the size of the traced heap, the number of objects the garbage collector tracks, what the
controller remembers for TaskRuns, and the largest allocation sites by file and line
(or by stack, `?group=traceback`). What it shows is file names, line numbers, counts and
sizes: never an object's contents, so no token can be in it. It answers only requests
from the pod itself (a loopback address; `kubectl port-forward` arrives as one), since a
report collects garbage and walks every traced block, which is work a stranger must not
be able to ask for. Tracing costs memory and CPU (roughly a third more of each), so it is
for measurements, not for production.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import ipaddress
import os
import sys
import tracemalloc
from collections.abc import Callable, Mapping
from typing import Any, Final

ENV: Final = "ONA_TASKRUN_DEBUG_HEAP"
PATH: Final = "/debug/heap"
MAX_FRAMES: Final = 25
GROUPS: Final = ("lineno", "filename", "traceback")
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100_000  # 0 asks for every site; more than this is refused


class HeapSettingError(ValueError):
    """ONA_TASKRUN_DEBUG_HEAP holds something that is not a number of frames."""


def frames_from(env: Mapping[str, str]) -> int:
    """How many frames to trace per allocation: 0 when the debug mode is off."""
    raw = env.get(ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return 0
    if raw in ("true", "yes", "on"):
        return 1
    if raw.isdigit() and 1 <= int(raw) <= MAX_FRAMES:
        return int(raw)
    raise HeapSettingError(
        f"{ENV}={raw!r} is not a number of frames from 1 to {MAX_FRAMES} "
        "(or true/false); unset it to leave the heap untraced"
    )


class QueryError(ValueError):
    """A /debug/heap query parameter that cannot be used."""


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) > MAX_LIMIT:
        raise QueryError(f"limit must be a whole number from 0 (every site) to {MAX_LIMIT}")
    return int(raw)


def _group(raw: str | None) -> str:
    group = raw or "lineno"
    if group not in GROUPS:
        raise QueryError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
    return group


def _collect(raw: str | None) -> bool:
    if raw is None or raw in ("1", "true"):
        return True
    if raw in ("0", "false"):
        return False
    raise QueryError("collect must be true or false")


def loopback(peer: str | None) -> bool:
    """Whether a request came from this host (IPv4 or IPv6 loopback)."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _short(filename: str) -> str:
    """A file name relative to the import path it was found on: `aiohttp/client.py`
    rather than the folder the venv happens to live in."""
    best = ""
    for entry in sys.path:
        if entry and filename.startswith(entry.rstrip(os.sep) + os.sep) and len(entry) > len(best):
            best = entry.rstrip(os.sep) + os.sep
    return filename[len(best) :] if best else filename


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def c_function(name: str) -> Any:
    """A function of the C library (glibc's allocator's, say), or None where the library
    or the function is missing (musl has neither mallinfo2 nor malloc_trim)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def malloc_figures() -> dict[str, int]:
    """What the C allocator holds (glibc's mallinfo2, main arena and mmaps): in use, and
    free but not given back to the system. Tells a resident size that grows while the
    traced heap does not apart: C allocations (not traced), or fragmentation. Empty where
    the C library has no mallinfo2 (musl, glibc before 2.33)."""
    mallinfo2 = c_function("mallinfo2")
    if mallinfo2 is None:
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {
        "in_use_bytes": int(info.uordblks + info.hblkhd),
        "free_bytes": int(info.fordblks),
        "mmap_bytes": int(info.hblkhd),
        "arena_bytes": int(info.arena),
    }


class HeapDebug:
    """tracemalloc, started on request, and the report `/debug/heap` serves."""

    def __init__(
        self, frames: int, remembered: Callable[[], Mapping[str, int]] | None = None
    ) -> None:
        self.frames = frames
        self.remembered = remembered

    @property
    def enabled(self) -> bool:
        return self.frames > 0

    def start(self) -> None:
        if self.enabled and not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)

    def report(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The report for one request's query (`limit`, `group`, `collect`)."""
        limit = _limit(query.get("limit"))
        group = _group(query.get("group"))
        collect = _collect(query.get("collect"))
        unknown = sorted(set(query) - {"limit", "group", "collect"})
        if unknown:
            raise QueryError(f"unknown parameter {unknown[0]!r}: use limit, group or collect")
        if not tracemalloc.is_tracing():
            raise QueryError(f"the heap is not traced (set {ENV} before the operator starts)")
        collected = gc.collect() if collect else 0
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        stats = snapshot.statistics(group)
        current, peak = tracemalloc.get_traced_memory()
        top = stats if limit == 0 else stats[:limit]
        remembered = dict(self.remembered()) if self.remembered is not None else {}
        return {
            "frames": tracemalloc.get_traceback_limit(),
            "traced_bytes": current,
            "traced_peak_bytes": peak,
            "tracing_overhead_bytes": tracemalloc.get_tracemalloc_memory(),
            "gc_objects": len(gc.get_objects()),
            "gc_collected": collected,
            "malloc": malloc_figures(),
            "remembered": remembered,
            "group": group,
            "sites": len(stats),
            "top": [
                {
                    "where": [f"{_short(f.filename)}:{f.lineno}" for f in stat.traceback],
                    "bytes": stat.size,
                    "count": stat.count,
                }
                for stat in top
            ],
        }
