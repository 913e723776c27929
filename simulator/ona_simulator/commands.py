"""The command convention: `sim:` directives in a task's command decide how its executions run.

A task's `spec.command` is an ordinary shell command to the real service. The simulator
reads `sim:` directives anywhere in it (for example `make test # sim:duration=2s sim:steps=3`)
and ignores everything else, so the same task definition stays meaningful to humans.

Directives (durations take `ms`, `s` or `m` suffixes, a bare number is seconds, and
`inf` means "until stopped"):

- `sim:pending=DUR`    time spent PENDING before running (default 0.3s)
- `sim:duration=DUR`   time spent RUNNING, shared evenly by the step groups (default 1s)
- `sim:steps=N`        number of step groups, run one after another (default 1)
- `sim:parallel=M`     steps in each group, run at the same time (default 1)
- `sim:fail="MSG"`     the execution fails with this message (default: it succeeds)
- `sim:fail_step=K`    the 1-based group whose first step fails (default: the last group);
                       on its own it implies `sim:fail="step K failed"`
- `sim:fail_first=N`   only the task's first N executions fail (with `sim:fail`'s message,
                       or "execution K of N failed (sim:fail_first)"); later ones succeed
- `sim:output.KEY=VAL` an output of the last step that runs, set when that step ends
- `sim:hang`           run until stopped (same as `sim:duration=inf`)
- `sim:stop_delay=DUR` time from StopTaskExecution to phase STOPPED (default 0.1s)
- `sim:log_lines=N`    lines each step prints to the execution's log while it runs,
                       spread evenly over its time (0..1000, default 2; see `logs`)
- `sim:long_line=SIZE` each step also prints one line of SIZE bytes when it starts
                       (`K`, `M`, `G` or `KiB`, `MiB`, `GiB`: powers of 1024; up to 4G),
                       streamed by the log endpoint, never held (default: none)

Values may be quoted with double quotes (backslash escapes `"` and `\\`) or single quotes.
A directive the simulator does not understand is an error at CreateTask, so a typo in a
test does not silently turn into the default run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Final

from ona_simulator.wire import invalid

DEFAULT_PENDING_S: Final = 0.3
DEFAULT_DURATION_S: Final = 1.0
DEFAULT_STOP_DELAY_S: Final = 0.1
DEFAULT_LOG_LINES: Final = 2
MAX_LOG_LINES: Final = 1000
MAX_STEPS: Final = 50
MAX_OUTPUT_VALUE: Final = 4096
MAX_LONG_LINE: Final = 4 << 30

_DIRECTIVE_RE: Final = re.compile(
    r"""sim:(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)
        (?:=(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s]*))?""",
    re.VERBOSE,
)
_DURATION_RE: Final = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m)?$")
_SIZE_RE: Final = re.compile(r"^(?P<number>\d+)(?:(?P<unit>[KMG])(?:iB)?)?$")


@dataclass(frozen=True)
class RunPlan:
    """How an execution of a task behaves, decided once when the execution starts."""

    pending_s: float = DEFAULT_PENDING_S
    duration_s: float = DEFAULT_DURATION_S
    groups: int = 1
    parallel: int = 1
    failure_message: str = ""
    fail_group: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    stop_delay_s: float = DEFAULT_STOP_DELAY_S
    # Only the task's first N executions fail; 0: every execution follows the plan.
    fail_first: int = 0
    log_lines: int = DEFAULT_LOG_LINES
    # Bytes of the one long line each step prints when it starts (0: none).
    long_line: int = 0

    def for_execution(self, index: int) -> RunPlan:
        """The plan of the task's execution number `index` (0-based, in start order)."""
        if not self.fail_first:
            return self
        if index >= self.fail_first:
            return replace(self, failure_message="", fail_group=self.groups - 1)
        message = (
            self.failure_message
            or f"execution {index + 1} of {self.fail_first} failed (sim:fail_first)"
        )
        return replace(self, failure_message=message)

    @property
    def fails(self) -> bool:
        return bool(self.failure_message)

    @property
    def last_group(self) -> int:
        """Index of the last group that runs: the failing one, or the final one."""
        return self.fail_group if self.fails else self.groups - 1

    @property
    def group_duration_s(self) -> float:
        return self.duration_s / self.groups


def parse_duration(text: str, where: str) -> float:
    if text in ("inf", "forever"):
        return math.inf
    match = _DURATION_RE.match(text)
    if not match:
        raise invalid(f"spec.command: simulator directive {where}={text!r} is not a duration")
    number = float(match["number"])
    unit = match["unit"] or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def parse_size(text: str, where: str) -> int:
    match = _SIZE_RE.match(text)
    if match:
        size = int(match["number"]) << {None: 0, "K": 10, "M": 20, "G": 30}[match["unit"]]
        if size <= MAX_LONG_LINE:
            return size
    raise invalid(
        f"spec.command: simulator directive {where}={text!r} must be a size of 0..4G bytes"
    )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


def _count(text: str, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_STEPS:
        raise invalid(f"spec.command: simulator directive {where}={text!r} must be 1..{MAX_STEPS}")
    return int(text)


def parse_command(command: str) -> RunPlan:
    """Read the `sim:` directives of a command; raise invalid_argument on a malformed one."""
    pending = DEFAULT_PENDING_S
    duration = DEFAULT_DURATION_S
    stop_delay = DEFAULT_STOP_DELAY_S
    groups = 1
    parallel = 1
    failure = ""
    fail_step = 0
    fail_first = 0
    outputs: dict[str, str] = {}
    log_lines = DEFAULT_LOG_LINES
    long_line = 0
    for match in _DIRECTIVE_RE.finditer(command):
        key = match["key"]
        raw = match["value"]
        value = _unquote(raw) if raw is not None else None
        where = f"sim:{key}"
        if key == "hang" and value is None:
            duration = math.inf
        elif value is None:
            raise invalid(f"spec.command: simulator directive {where} needs a value")
        elif key == "pending":
            pending = parse_duration(value, where)
        elif key == "duration":
            duration = parse_duration(value, where)
        elif key == "stop_delay":
            stop_delay = parse_duration(value, where)
        elif key == "steps":
            groups = _count(value, where)
        elif key == "parallel":
            parallel = _count(value, where)
        elif key == "fail":
            failure = value or "task failed"
        elif key == "fail_step":
            fail_step = _count(value, where)
        elif key == "fail_first":
            fail_first = _count(value, where)
        elif key == "log_lines":
            if not value.isdigit() or int(value) > MAX_LOG_LINES:
                raise invalid(
                    f"spec.command: simulator directive {where}={value!r} must be "
                    f"0..{MAX_LOG_LINES}"
                )
            log_lines = int(value)
        elif key == "long_line":
            long_line = parse_size(value, where)
        elif key.startswith("output.") and len(key) > len("output."):
            if len(value) > MAX_OUTPUT_VALUE:
                raise invalid(
                    f"spec.command: simulator directive {where} value is longer than "
                    f"{MAX_OUTPUT_VALUE} characters"
                )
            outputs[key[len("output.") :]] = value
        else:
            raise invalid(f"spec.command: unknown simulator directive {where}")
    if fail_step > groups:
        raise invalid(
            f"spec.command: simulator directive sim:fail_step={fail_step} exceeds "
            f"sim:steps={groups}"
        )
    if fail_step and not failure:
        failure = f"step {fail_step} failed"
    if math.isinf(stop_delay):
        raise invalid("spec.command: simulator directive sim:stop_delay must be finite")
    return RunPlan(
        pending_s=pending,
        duration_s=duration,
        groups=groups,
        parallel=parallel,
        failure_message=failure,
        fail_group=(fail_step or groups) - 1,
        outputs=outputs,
        stop_delay_s=stop_delay,
        fail_first=fail_first,
        log_lines=log_lines,
        long_line=long_line,
    )
