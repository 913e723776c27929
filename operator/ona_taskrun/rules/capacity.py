"""Sharing a connection's capacity: its limits, the fair order of the runs waiting for it,
and whether one run may start now.

A connection's `spec.limits` caps the runs it has started and not yet seen end
(`maxConcurrentRuns`), and, on a ClusterOnaConnection, those of any one namespace
(`maxConcurrentRunsPerNamespace`). A run over a limit is not started: it waits, and its
place in line is decided here. Within a namespace, first created is first started; across
namespaces, a run's turn is its namespace's running runs plus the runs ahead of it in its
namespace, so one namespace's backlog cannot starve another's (round-robin by namespace).

Everything here is computed from what the cluster holds (which runs are claimed or
started, when each was created), so the order is the same after a restart or a change of
leader. No I/O.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import Queued

# The default request rate of a connection: above what the operator makes at a thousand
# TaskRuns at once (about 25 calls a second), so it slows nothing down by itself; a
# platform team lowers it per connection when the API's own limit is known.
DEFAULT_REQUESTS_PER_SECOND = 100.0
MAX_REQUESTS_PER_SECOND = 1000.0
MAX_CONCURRENT = 100_000


@dataclass(frozen=True)
class Limits:
    """A connection's `spec.limits`; None: no limit."""

    max_concurrent: int | None = None
    max_per_namespace: int | None = None
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND

    @property
    def limited(self) -> bool:
        return self.max_concurrent is not None or self.max_per_namespace is not None


NO_LIMITS = Limits()


class InvalidLimits(ValueError):
    """A connection's spec.limits the schema let through but the operator cannot use."""


def _count(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLimits(f"spec.limits.{name} {value!r} is not a whole number")
    if not 1 <= value <= MAX_CONCURRENT:
        raise InvalidLimits(f"spec.limits.{name} {value} must be from 1 to {MAX_CONCURRENT}")
    return value


def parse_limits(raw: Any, *, cluster: bool) -> Limits:
    """Read `spec.limits` of a connection; InvalidSpec says what is wrong."""
    if raw is None:
        return NO_LIMITS
    if not isinstance(raw, Mapping):
        raise InvalidLimits("spec.limits must be an object")
    per_namespace = _count(raw, "maxConcurrentRunsPerNamespace")
    if per_namespace is not None and not cluster:
        raise InvalidLimits(
            "spec.limits.maxConcurrentRunsPerNamespace is for a ClusterOnaConnection: an "
            "OnaConnection serves one namespace (use maxConcurrentRuns)"
        )
    rate = raw.get("requestsPerSecond", DEFAULT_REQUESTS_PER_SECOND)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise InvalidLimits(f"spec.limits.requestsPerSecond {rate!r} is not a number")
    if not 0 < rate <= MAX_REQUESTS_PER_SECOND:
        raise InvalidLimits(
            f"spec.limits.requestsPerSecond {rate} must be above 0 and at most "
            f"{MAX_REQUESTS_PER_SECOND:g}"
        )
    return Limits(_count(raw, "maxConcurrentRuns"), per_namespace, float(rate))


@dataclass(frozen=True, order=True)
class Waiter:
    """A run waiting for a start: sorted by when it was created, then by its name."""

    created: str  # RFC 3339 in UTC, as the API server writes it: sorts as time does
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def fair_order(waiting: Iterable[Waiter], running: Mapping[str, int]) -> list[Waiter]:
    """The order in which waiting runs start: by turn (the namespace's running runs plus
    the runs ahead in its namespace), then by creation."""
    by_namespace: dict[str, list[Waiter]] = {}
    for waiter in sorted(waiting):
        by_namespace.setdefault(waiter.namespace, []).append(waiter)
    turns = [
        (running.get(namespace, 0) + place, waiter)
        for namespace, line in by_namespace.items()
        for place, waiter in enumerate(line)
    ]
    return [waiter for _, waiter in sorted(turns)]


@dataclass(frozen=True)
class _Place:
    waiter: Waiter
    starts: bool  # a free slot goes to it now
    namespace_full: bool  # passed over: its namespace is at its own limit
    position: int  # 1: next in line (for a run that does not start)
    namespace_running: int  # its namespace's runs, counting those let in ahead of it


def _walk(limits: Limits, running: Mapping[str, int], waiting: Iterable[Waiter]) -> list[_Place]:
    """The one walk of the fair order: the free slots go to the first runs whose namespace
    is not at its own limit; a run passed over holds no place in front."""
    free = (
        math.inf if limits.max_concurrent is None else limits.max_concurrent - sum(running.values())
    )
    taken: Counter[str] = Counter(running)
    position = 0
    places = []
    for waiter in fair_order(waiting, running):
        full = (
            limits.max_per_namespace is not None
            and taken[waiter.namespace] >= limits.max_per_namespace
        )
        starts = not full and free > 0
        places.append(_Place(waiter, starts, full, position + 1, taken[waiter.namespace]))
        if full:
            continue
        if starts:
            free -= 1
            taken[waiter.namespace] += 1
        else:
            position += 1
    return places


def let_in(limits: Limits, running: Mapping[str, int], waiting: Iterable[Waiter]) -> list[Waiter]:
    """The waiting runs the free slots go to now, in fair order."""
    if not limits.limited:
        return list(waiting)
    return [place.waiter for place in _walk(limits, running, waiting) if place.starts]


def turn(
    waiter: Waiter,
    limits: Limits,
    running: Mapping[str, int],
    waiting: Iterable[Waiter],
    connection: str,
) -> Queued | None:
    """None when `waiter` may start now, else its place in line, given the runs `running`
    per namespace (claimed or started and not final, including those just let in) and the
    runs `waiting` with it: it may when the walk of the fair order gives it a free slot."""
    if not limits.limited:
        return None
    place = next((p for p in _walk(limits, running, waiting) if p.waiter == waiter), None)
    if place is None or place.starts:
        return None  # not waiting after all, or let in: nothing holds it back
    if place.namespace_full:
        return Queued(
            position=place.position,
            message=(
                f"queued: {connection} allows {limits.max_per_namespace} concurrent "
                f"runs per namespace and {place.namespace_running} of namespace "
                f"{waiter.namespace} are running"
            ),
        )
    return Queued(
        position=place.position,
        message=(
            f"queued: {connection} allows {limits.max_concurrent} concurrent runs "
            f"and {sum(running.values())} were running; it was {place.position} in line"
        ),
    )
