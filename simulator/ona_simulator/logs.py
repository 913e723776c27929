"""Execution logs and logs tokens: what a task execution prints, and who may read it.

Every execution owns an `ExecutionLog`. Its lines come from the command convention: when
a step group starts, each of its steps prints `[<step label>] started`; while the group
runs, each step prints `sim:log_lines` lines spread evenly over the group's time; when the
group ends, each step prints `done`, `error: <failure message>` or `stopped`. Lines that
are due but not yet fixed by a status change are computed from the clock when read, so
the ticker needs no work of its own for them, and what a reader sees only ever grows.
With `sim:long_line=SIZE`, each step also prints one line of SIZE bytes when it starts:
its `[<step label>] ` start is in `lines`, and `filler` says how many `x` the log endpoint
streams after it, so a line of gigabytes costs the simulator nothing to hold.

`LogService` holds the logs tokens `EnvironmentService/CreateEnvironmentLogsToken`
hands out (each bound to one environment and expiring after `token_ttl_s`, one hour by
default) and the fault rule of the log endpoint (502, 401, dropped connections), whose
HTTP side is in `log_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from ona_simulator.faults import apply_knobs, check_knob
from ona_simulator.wire import (
    FAILED,
    JSON,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    ConnectError,
    get_uuid,
    type_name,
)

if TYPE_CHECKING:
    from ona_simulator.auth import Subject
    from ona_simulator.core import CallRecord, Simulator
    from ona_simulator.executions import Execution

DEFAULT_TOKEN_TTL_S: Final = 3600.0
# Steps that run forever print a line this often.
ENDLESS_LINE_INTERVAL_S: Final = 1.0
READ_LOG: Final = "ReadLog"  # the name log reads carry in the call log


class ExecutionLog:
    """The lines one execution has printed so far; they only ever grow."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        # Line index -> bytes of `x` that follow the line's text (its long part).
        self.filler: dict[int, int] = {}
        self.ended = False
        self._opened: set[int] = set()
        self._group: int | None = None  # the group whose steps are printing now
        self._labels: list[str] = []
        self._started = 0.0  # monotonic time the open group started printing
        self._interval = 0.0
        self._count = 0  # progress lines each step of the open group prints
        self._printed = 0  # progress lines per step already fixed in `lines`
        self._endless = False
        self._changed = asyncio.Event()

    # --- reading ------------------------------------------------------------------------

    def view(self, now: float) -> list[str]:
        """Every line printed by `now`."""
        due = self._due(now)
        if due <= self._printed:
            return list(self.lines)
        return [*self.lines, *self._progress(self._printed, due)]

    def next_line_at(self, now: float) -> float | None:
        """When the next progress line is due, if one is planned."""
        if self._group is None or self._printed >= self._count:
            return None
        due = self._due(now)
        if due >= self._count:
            return None
        return self._started + (due + 1) * self._interval

    async def wait_change(self, seconds: float) -> None:
        """Wait for a status change of the execution, at most `seconds`."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), max(seconds, 0.0))

    def _due(self, now: float) -> int:
        if self._group is None or self._count == 0:
            return self._printed
        if self._interval <= 0:
            return self._count
        if now < self._started:
            return 0
        return min(self._count, int((now - self._started) / self._interval))

    def _progress(self, after: int, upto: int) -> list[str]:
        total = "" if self._endless else f" of {self._count}"
        return [
            f"[{label}] output line {index}{total}"
            for index in range(after + 1, upto + 1)
            for label in self._labels
        ]

    # --- writing (on every status change of the execution) --------------------------

    def commit(self, execution: Execution, now: float) -> None:
        """Fix the lines a status change prints: the end of the open group, the start of
        the next one, and a last word when the execution ends."""
        if self._group is not None:
            self._close_group(execution, now)
        group = execution.next_group
        if (
            execution.phase == RUNNING
            and group not in self._opened
            and group < len(execution.groups)
            and all(
                execution.steps.get(step.id) is not None
                and execution.steps[step.id].phase == RUNNING
                for step in execution.groups[group]
            )
        ):
            self._open_group(execution, group, now)
        if execution.is_final and not self.ended:
            self.ended = True
            if execution.phase == FAILED and not self._opened:
                self.lines.append(f"error: {execution.failure_message or 'task failed'}")
        self._changed.set()
        self._changed = asyncio.Event()

    def _open_group(self, execution: Execution, group: int, now: float) -> None:
        steps = execution.groups[group]
        self._opened.add(group)
        self._group = group
        self._labels = [step.label for step in steps]
        self._started = now
        plan = execution.plan
        self._endless = math.isinf(plan.group_duration_s)
        if self._endless:
            # An endless step keeps printing until it is stopped.
            self._interval = ENDLESS_LINE_INTERVAL_S
            self._count = 10**9 if plan.log_lines else 0
        else:
            self._count = plan.log_lines
            self._interval = plan.group_duration_s / (self._count + 1)
        self._printed = 0
        self.lines.extend(f"[{label}] started" for label in self._labels)
        if plan.long_line:
            for label in self._labels:
                self.filler[len(self.lines)] = plan.long_line
                self.lines.append(f"[{label}] ")

    def _close_group(self, execution: Execution, now: float) -> None:
        group = self._group
        assert group is not None
        states = [execution.steps.get(step.id) for step in execution.groups[group]]
        if any(state is not None and state.phase == RUNNING for state in states):
            return  # still running (e.g. a stop was only requested)
        # A group that ran its planned time printed everything; a stopped or forced one
        # printed what was due.
        ran_out = execution.automatic and execution.phase != STOPPED and not self._endless
        upto = self._count if ran_out else self._due(now)
        self.lines.extend(self._progress(self._printed, upto))
        for label, state in zip(self._labels, states, strict=True):
            phase = state.phase if state is not None else STOPPED
            if phase == SUCCEEDED:
                self.lines.append(f"[{label}] done")
            elif phase == FAILED:
                message = (state.failure_message if state else "") or "failed"
                self.lines.append(f"[{label}] error: {message}")
            else:
                self.lines.append(f"[{label}] stopped")
        self._group = None
        self._printed = 0
        self._count = 0


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class LogsToken:
    environment_id: str
    expires_at: float  # monotonic


@dataclass
class LogFaultRule:
    """Faults of the log endpoint: shares of reads answered 502 or 401 instead of the
    log, or whose connection is dropped after `drop_after_lines` lines; `count` limits
    how many faults the rule may still inject (None: no limit)."""

    error_502: float = 0.0
    error_401: float = 0.0
    drop: float = 0.0
    drop_after_lines: int = 0
    count: int | None = None

    def to_json(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_json(cls, knobs: Mapping[str, Any]) -> LogFaultRule:
        shares = ("error_502", "error_401", "drop")
        return apply_knobs(
            cls(),
            knobs,
            what="log fault knob",
            summed=shares,
            check=lambda name, value: check_knob(name, value, shares=shares),
        )


class LogService:
    """Logs tokens and the log endpoint's faults; `reset` returns to the startup state."""

    def __init__(self, token_ttl_s: float = DEFAULT_TOKEN_TTL_S, seed: int = 0) -> None:
        if not token_ttl_s > 0:
            raise ValueError("the logs token lifetime must be positive")
        self._initial_ttl = token_ttl_s
        self.token_ttl_s = token_ttl_s
        self._tokens: dict[str, LogsToken] = {}
        self.faults: LogFaultRule | None = None
        self._rng = random.Random(seed)
        self.issued = 0

    def reset(self) -> None:
        self.token_ttl_s = self._initial_ttl
        self._tokens.clear()
        self.issued = 0
        self.faults = None
        self._rng = random.Random(0)

    def issue(self, environment_id: str) -> str:
        token = "sim-logs-" + secrets.token_urlsafe(24)
        self._tokens[token] = LogsToken(environment_id, time.monotonic() + self.token_ttl_s)
        self.issued += 1
        return token

    def check(self, token: str, environment_id: str) -> str:
        """Why the token may not read this environment's logs ("" when it may)."""
        found = self._tokens.get(token)
        if found is None:
            return "the logs token is invalid"
        if time.monotonic() >= found.expires_at:
            return "the logs token has expired"
        if found.environment_id != environment_id:
            return "the logs token is for another environment"
        return ""

    def settings(self) -> JSON:
        return {"tokenTtlSeconds": self.token_ttl_s, "tokensIssued": self.issued}

    def set_ttl(self, seconds: Any) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ConnectError(
                "invalid_argument",
                f"tokenTtlSeconds: expected a positive number, got {type_name(seconds)}",
            )
        self.token_ttl_s = float(seconds)

    def draw_fault(self) -> str | None:
        """ "502", "401", "drop" or None: what happens to this read instead of (or to) it."""
        rule = self.faults
        if rule is None or rule.count == 0:
            return None
        shares = (("502", rule.error_502), ("401", rule.error_401), ("drop", rule.drop))
        if not any(share for _, share in shares):
            return None
        point = self._rng.random()
        for fault, share in shares:
            if point < share:
                if rule.count is not None:
                    rule.count -= 1
                return fault
            point -= share
        return None


def create_environment_logs_token(
    sim: Simulator, body: JSON, subject: Subject, query: Mapping[str, str], call: CallRecord
) -> JSON:
    """gitpod.v1.EnvironmentService/CreateEnvironmentLogsToken: a read-only token for
    the logs of one environment's executions, valid `token_ttl_s` seconds."""
    environment_id = get_uuid(body, "environmentId")
    call.request_id = environment_id
    return {"accessToken": sim.logs.issue(environment_id)}
