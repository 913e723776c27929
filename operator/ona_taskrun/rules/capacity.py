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

import bisect
import heapq
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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


class Line:
    """The runs waiting for one connection: each namespace's in creation order.

    Kept sorted as runs join and leave (a bisect each), so that a run's turn and the runs
    a freed slot goes to are found by merging the namespaces' lines up to where the
    answer is, not by sorting every waiting run at each look: with thousands in line
    that sort was most of a limited connection's CPU."""

    def __init__(self, waiters: Iterable[Waiter] = ()) -> None:
        self._waiters: dict[str, Waiter] = {}
        self._by_namespace: dict[str, list[Waiter]] = {}
        for waiter in waiters:
            self.add(waiter)

    def __len__(self) -> int:
        return len(self._waiters)

    def __contains__(self, key: object) -> bool:
        return key in self._waiters

    def __iter__(self) -> Iterator[Waiter]:
        return iter(self._waiters.values())

    def get(self, key: str) -> Waiter | None:
        return self._waiters.get(key)

    def add(self, waiter: Waiter) -> None:
        if self._waiters.get(waiter.key) == waiter:
            return
        self.discard(waiter.key)
        self._waiters[waiter.key] = waiter
        bisect.insort(self._by_namespace.setdefault(waiter.namespace, []), waiter)

    def discard(self, key: str) -> Waiter | None:
        waiter = self._waiters.pop(key, None)
        if waiter is None:
            return None
        line = self._by_namespace[waiter.namespace]
        del line[bisect.bisect_left(line, waiter)]
        if not line:
            del self._by_namespace[waiter.namespace]
        return waiter

    def order(
        self, running: Mapping[str, int], leave: Callable[[str], bool] = lambda namespace: False
    ) -> Iterator[Waiter]:
        """The waiting runs in fair order, lazily: by turn (the namespace's running runs
        plus the runs ahead in its namespace), then by creation. A namespace for which
        `leave` says True (asked before its first run, and after each run yielded) yields
        no more runs."""
        heap = [
            (running.get(namespace, 0), line[0], 0, line)
            for namespace, line in self._by_namespace.items()
            if not leave(namespace)
        ]
        heapq.heapify(heap)
        while heap:
            turn, waiter, place, line = heap[0]
            yield waiter
            if place + 1 < len(line) and not leave(waiter.namespace):
                heapq.heapreplace(heap, (turn + 1, line[place + 1], place + 1, line))
            else:
                heapq.heappop(heap)

    def index(self, waiter: Waiter) -> int:
        """How many runs of its namespace are ahead of `waiter` (one waiting)."""
        return bisect.bisect_left(self._by_namespace[waiter.namespace], waiter)

    def ahead(self, waiter: Waiter, running: Mapping[str, int], namespaces: Iterable[str]) -> int:
        """How many runs of `namespaces` come before `waiter` (one waiting) in fair order."""
        mine = (running.get(waiter.namespace, 0) + self.index(waiter), waiter)
        count = 0
        for namespace in namespaces:
            other = self._by_namespace.get(namespace)
            if not other:
                continue
            # A namespace's turns rise one a run: the runs before `waiter` are a prefix.
            first_not_before = mine[0] - running.get(namespace, 0)
            if first_not_before <= 0:
                count += first_not_before == 0 and other[0] < waiter
                continue
            if first_not_before >= len(other):
                count += len(other)
                continue
            count += first_not_before + (other[first_not_before] < waiter)
        return count

    def lines(self) -> Iterable[tuple[str, list[Waiter]]]:
        """Each namespace's waiting runs, first created first (not to be changed)."""
        return self._by_namespace.items()


def fair_order(waiting: Iterable[Waiter], running: Mapping[str, int]) -> list[Waiter]:
    """The order in which waiting runs start: by turn (the namespace's running runs plus
    the runs ahead in its namespace), then by creation."""
    return list(Line(waiting).order(running))


@dataclass
class _Walk:
    """The walk of the fair order while free slots last: the free slots go to the first
    runs whose namespace is not at its own limit; a run passed over holds no place in
    front. Once no slot is left nothing changes any more, so the walk stops there, and a
    namespace stops being walked once it is at its own limit (it stays there)."""

    limits: Limits
    taken: Counter[str]  # each namespace's runs, counting those the walk let in
    started: list[Waiter] = field(default_factory=list)

    def full(self, namespace: str) -> bool:
        limit = self.limits.max_per_namespace
        return limit is not None and self.taken[namespace] >= limit


def _walk(
    limits: Limits, running: Mapping[str, int], line: Line, until: Waiter | None = None
) -> _Walk:
    """Walk `line` in fair order, letting runs in while slots are free (up to `until`)."""
    walk = _Walk(limits, Counter(running))
    free = (
        math.inf if limits.max_concurrent is None else limits.max_concurrent - sum(running.values())
    )
    if free <= 0:
        return walk
    for waiter in line.order(running, leave=walk.full):
        walk.started.append(waiter)
        walk.taken[waiter.namespace] += 1
        free -= 1
        if free <= 0 or waiter == until:
            break
    return walk


def _line(waiting: Line | Iterable[Waiter]) -> Line:
    return waiting if isinstance(waiting, Line) else Line(waiting)


def let_in(
    limits: Limits, running: Mapping[str, int], waiting: Line | Iterable[Waiter]
) -> list[Waiter]:
    """The waiting runs the free slots go to now, in fair order."""
    line = _line(waiting)
    if not limits.limited:
        return list(line.order(running))
    return _walk(limits, running, line).started


def turn(
    waiter: Waiter,
    limits: Limits,
    running: Mapping[str, int],
    waiting: Line | Iterable[Waiter],
    connection: str,
) -> Queued | None:
    """None when `waiter` may start now, else its place in line, given the runs `running`
    per namespace (claimed or started and not final, including those just let in) and the
    runs `waiting` with it: it may when the walk of the fair order gives it a free slot."""
    if not limits.limited:
        return None
    line = _line(waiting)
    if line.get(waiter.key) != waiter:
        return None  # not waiting after all: nothing holds it back
    walk = _walk(limits, running, line, until=waiter)
    if walk.started and walk.started[-1] == waiter:
        return None  # let in
    # Its place: the runs before it in fair order that neither start now nor are passed
    # over (their namespace at its own limit); those that start are all let in by the walk.
    open_namespaces = [namespace for namespace, _ in line.lines() if not walk.full(namespace)]
    mine = _fair_key(line, running, waiter)
    position = (
        1
        + line.ahead(waiter, running, open_namespaces)
        - sum(
            1
            for other in walk.started
            if not walk.full(other.namespace) and _fair_key(line, running, other) < mine
        )
    )
    if walk.full(waiter.namespace):
        return Queued(
            position=position,
            message=(
                f"queued: {connection} allows {limits.max_per_namespace} concurrent "
                f"runs per namespace and {walk.taken[waiter.namespace]} of namespace "
                f"{waiter.namespace} are running"
            ),
        )
    return Queued(
        position=position,
        message=(
            f"queued: {connection} allows {limits.max_concurrent} concurrent runs "
            f"and {sum(running.values())} were running; it was {position} in line"
        ),
    )


def _fair_key(line: Line, running: Mapping[str, int], waiter: Waiter) -> tuple[int, Waiter]:
    return (running.get(waiter.namespace, 0) + line.index(waiter), waiter)
