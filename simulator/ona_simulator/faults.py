"""Fault injection: per-method rules drawn from one seeded random generator.

A rule for a method (or `*` for every method without its own rule) may add latency,
answer 429/500/503 instead of handling the call, drop the connection without an answer,
or handle the call and then lose the response ("lost response": the side effect happens,
the client sees an error, a dropped connection or a hang). Draws come from one
`random.Random(seed)`, so the same seed and the same sequence of calls give the same faults.

Apart from the rules, named methods (`service/method`) can be switched to answer
`unimplemented`, as a server that does not serve them would, on every call.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, TypeVar, cast

from ona_simulator.wire import JSON, ConnectError, type_name

WILDCARD: Final = "*"
API_METHODS: Final = (
    "CreateTask",
    "GetTask",
    "ListTasks",
    "DeleteTask",
    "StartTask",
    "GetTaskExecution",
    "ListTaskExecutions",
    "StopTaskExecution",
    "WatchEvents",
    "GetEnvironment",
    "ListEnvironments",
    "StartEnvironment",
    "StopEnvironment",
    "DeleteEnvironment",
    "MarkEnvironmentActive",
    "CreateEnvironmentFromProject",
)
# The services whose methods the switch below can take away (`service/method` names).
SERVICES: Final = (
    "gitpod.v1.EnvironmentAutomationService",
    "gitpod.v1.EnvironmentService",
    "gitpod.v1.EventService",
    "gitpod.v1.IdentityService",
)
SWITCHABLE_METHODS: Final = (*API_METHODS, "GetAuthenticatedIdentity", "CreateEnvironmentLogsToken")
LOST_RESPONSE_MODES: Final = ("500", "503", "hang", "drop")
DEFAULT_SEED: Final = 0


class Fault(enum.Enum):
    DROP = "drop"
    ERROR_429 = "429"
    ERROR_500 = "500"
    ERROR_503 = "503"


@dataclass
class FaultRule:
    latency_ms: int = 0
    error_429: float = 0.0
    error_500: float = 0.0
    error_503: float = 0.0
    drop: float = 0.0
    lost_response: float = 0.0
    lost_response_mode: str = "503"
    hang_ms: int = 30_000
    retry_after_s: int = 1
    # How many faults this rule may still inject (latency not counted); None: no limit.
    count: int | None = None

    def to_json(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_json(cls, knobs: JSON) -> FaultRule:
        shares = ("error_429", "error_500", "error_503", "drop")
        return apply_knobs(
            cls(),
            knobs,
            what="fault knob",
            summed=shares,
            check=lambda name, value: check_knob(
                name,
                value,
                shares=(*shares, "lost_response"),
                choices={"lost_response_mode": LOST_RESPONSE_MODES},
            ),
        )


R = TypeVar("R")


def apply_knobs(
    rule: R,
    knobs: Mapping[str, Any],
    *,
    what: str,
    summed: tuple[str, ...],
    check: Callable[[str, Any], Any],
) -> R:
    """Set a fault rule's knobs (a dataclass's fields) from JSON, each checked; the shares
    in `summed` are of one draw, so together they may not exceed 1."""
    known = {item.name for item in fields(cast(Any, rule))}
    for name, value in knobs.items():
        if name not in known:
            raise ConnectError(
                "invalid_argument", f"unknown {what} {name!r}; known: {', '.join(sorted(known))}"
            )
        setattr(rule, name, check(name, value))
    total = sum(getattr(rule, name) for name in summed)
    if total > 1.0 + 1e-9:
        raise ConnectError(
            "invalid_argument", f"{' + '.join(summed)} must be at most 1, got {total:g}"
        )
    return rule


def check_knob(
    name: str,
    value: Any,
    *,
    shares: tuple[str, ...],
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> Any:
    """A knob's value: a share between 0 and 1, one of its choices, `count` (a
    non-negative integer or null), or else a non-negative integer."""

    def fail(expected: str) -> ConnectError:
        return ConnectError(
            "invalid_argument", f"{name}: expected {expected}, got {type_name(value)} {value!r}"
        )

    if name in shares:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise fail("a share between 0 and 1")
        return float(value)
    if choices and name in choices:
        if value not in choices[name]:
            raise fail(f"one of {', '.join(choices[name])}")
        return value
    if name == "count" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail("a non-negative integer" + (" or null" if name == "count" else ""))
    return value


class FaultInjector:
    def __init__(self, seed: int = DEFAULT_SEED) -> None:
        self.rules: dict[str, FaultRule] = {}
        self.unimplemented: set[str] = set()  # full names: service/method
        self.seed = seed
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def reset(self) -> None:
        self.rules.clear()
        self.unimplemented.clear()
        self.reseed(DEFAULT_SEED)

    def set_rule(self, method: str, knobs: JSON) -> FaultRule:
        if method != WILDCARD and method not in API_METHODS:
            raise ConnectError(
                "invalid_argument",
                f"unknown method {method!r}; use one of {', '.join(API_METHODS)} or '*'",
            )
        rule = FaultRule.from_json(knobs)
        self.rules[method] = rule
        return rule

    def clear(self, method: str | None = None) -> None:
        """Drop one method's rule, or every rule and every method switched off."""
        if method is None:
            self.rules.clear()
            self.unimplemented.clear()
        else:
            self.rules.pop(method, None)

    def set_unimplemented(self, name: str) -> None:
        """Make `service/method` answer `unimplemented` until cleared."""
        service, _, method = name.partition("/")
        if service not in SERVICES or method not in SWITCHABLE_METHODS:
            raise ConnectError(
                "invalid_argument",
                f"method: expected service/method with a service of {', '.join(SERVICES)} "
                f"and a method of {', '.join(SWITCHABLE_METHODS)}, got {name!r}",
            )
        self.unimplemented.add(name)

    def clear_unimplemented(self, name: str | None = None) -> None:
        if name is None:
            self.unimplemented.clear()
        else:
            self.unimplemented.discard(name)

    def is_unimplemented(self, service: str, method: str) -> bool:
        return f"{service}/{method}" in self.unimplemented

    def rule_for(self, method: str) -> FaultRule | None:
        return self.rules.get(method) or self.rules.get(WILDCARD)

    def draw_before(self, rule: FaultRule) -> Fault | None:
        """Decide whether the call is answered by a fault instead of being handled."""
        shares = (
            (Fault.DROP, rule.drop),
            (Fault.ERROR_429, rule.error_429),
            (Fault.ERROR_500, rule.error_500),
            (Fault.ERROR_503, rule.error_503),
        )
        if not any(share for _, share in shares) or rule.count == 0:
            return None
        point = self._rng.random()
        for fault, share in shares:
            if point < share:
                self._spend(rule)
                return fault
            point -= share
        return None

    def draw_lost_response(self, rule: FaultRule) -> str | None:
        """After handling: the lost-response mode to apply, or None to answer normally."""
        if not rule.lost_response or rule.count == 0:
            return None
        if self._rng.random() < rule.lost_response:
            self._spend(rule)
            return rule.lost_response_mode
        return None

    @staticmethod
    def _spend(rule: FaultRule) -> None:
        if rule.count is not None:
            rule.count -= 1

    def to_json(self) -> JSON:
        return {
            "seed": self.seed,
            "rules": {method: rule.to_json() for method, rule in self.rules.items()},
            "unimplemented": sorted(self.unimplemented),
        }
