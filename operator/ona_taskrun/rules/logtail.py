"""Log tails, the pure part: whether a run's log tail is wanted, the ring that keeps the
end of a log as it streams by, how the tail is cut to its bounds, what it adds to the
status and to the run's Event, and when a cached logs token must be renewed.

No I/O: `logtail` (the edge) reads the log and calls these. Every rule is a row in
`tests/unit/test_logtail_rules.py`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from .linecut import cut_line, split_cut
from .model import SUCCEEDED, Condition, Phase, Status, parse_time

DEFAULT_TAIL_LINES: Final = 20
MAX_TAIL_LINES: Final = 100  # the CRD's bound on spec.logs.tailLines
MAX_TAIL_BYTES: Final = 4096  # status.logTail, UTF-8
# The run's Event carries this much of the tail.
EVENT_LINES: Final = 3
EVENT_TAIL_CHARS: Final = 400
EVENT_MAX_CHARS: Final = 1024  # what the operator's Events hold at most
# After a restart, runs that ended longer ago than this get no tail: their logs token
# would be fetched for history nobody is watching, at the cost of a burst of calls.
RECENT: Final = timedelta(minutes=15)
# Marks the Succeeded message of a run whose tail was tried: never tried again.
NOTE_MARK: Final = "(log tail: "
TRUNCATED: Final = "..."
# A line in the tail keeps at most this much of its start (UTF-8), so that a long line
# leaves room in `MAX_TAIL_BYTES` for the lines around it, its cut marker included.
TAIL_LINE_BYTES: Final = 1024
# What the ring holds at most, whatever the log: the last lines that fit, each already cut.
RING_BYTES: Final = 2 * MAX_TAIL_BYTES


@dataclass(frozen=True)
class LogSettings:
    """`spec.logs`."""

    tail_lines: int = DEFAULT_TAIL_LINES
    tail_on_success: bool = False


def parse_log_settings(raw: Any) -> LogSettings:
    """Read `spec.logs`; the CRD validates it, so anything odd falls back to defaults."""
    if not isinstance(raw, Mapping):
        return LogSettings()
    lines = raw.get("tailLines", DEFAULT_TAIL_LINES)
    if isinstance(lines, bool) or not isinstance(lines, int):
        lines = DEFAULT_TAIL_LINES
    return LogSettings(
        tail_lines=max(0, min(lines, MAX_TAIL_LINES)),
        tail_on_success=raw.get("tailOnSuccess") is True,
    )


def has_note(status: Status) -> bool:
    cond = status.condition(SUCCEEDED)
    return cond is not None and NOTE_MARK in cond.message


def wants_tail(status: Status, settings: LogSettings, now: datetime) -> bool:
    """Whether the log tail of this run should be read now."""
    if settings.tail_lines <= 0 or not status.finished or not status.log_url:
        return False
    if status.log_tail or has_note(status):
        return False
    cond = status.condition(SUCCEEDED)
    ended = parse_time(cond.last_transition_time) if cond is not None else None
    if ended is not None and now - ended > RECENT:
        return False
    phase = Phase.from_remote(status.phase) if status.phase else None
    if phase is Phase.FAILED or (cond is not None and cond.reason == "TimedOut"):
        return True
    return phase is Phase.SUCCEEDED and settings.tail_on_success


class Scrub(Protocol):
    def __call__(self, text: str, *, cut: bool = False) -> str: ...


def _unscrubbed(text: str, *, cut: bool = False) -> str:
    return text


class TailRing:
    """The last lines of a log as it streams by, in bounded memory: at most `max_lines`
    lines and `max_bytes` of UTF-8 (the newest line is always kept), each line scrubbed
    of secrets, then cut to its first `line_bytes` with a marker saying how much of it
    was left out (lines a reader already cut keep their marker, its count grown)."""

    def __init__(
        self,
        max_lines: int,
        *,
        max_bytes: int = RING_BYTES,
        line_bytes: int = TAIL_LINE_BYTES,
        scrub: Scrub = _unscrubbed,
    ) -> None:
        self._max_lines = max(0, max_lines)
        self._max_bytes = max_bytes
        self._line_bytes = line_bytes
        self._scrub = scrub
        self._lines: deque[tuple[str, int]] = deque()  # (line, its size in bytes)
        self._size = 0

    def push(self, line: str) -> None:
        if self._max_lines == 0:
            return
        head, dropped = split_cut(line)
        # Scrubbed before it is cut: a secret across the cut is masked whole.
        head = self._scrub(head, cut=dropped > 0)
        raw = head.encode()
        if len(raw) > self._line_bytes:
            dropped += len(raw) - self._line_bytes
            head = raw[: self._line_bytes].decode(errors="ignore")
        kept = cut_line(head, dropped) if dropped else head
        size = len(kept.encode())
        self._lines.append((kept, size))
        self._size += size
        while len(self._lines) > 1 and (
            len(self._lines) > self._max_lines or self._size > self._max_bytes
        ):
            self._size -= self._lines.popleft()[1]

    def lines(self) -> list[str]:
        return [line for line, _ in self._lines]

    @property
    def size(self) -> int:
        """The bytes of UTF-8 the ring holds."""
        return self._size


def tail_text(lines: Sequence[str], max_lines: int, max_bytes: int = MAX_TAIL_BYTES) -> str:
    """The last `max_lines` lines, joined with newlines, in at most `max_bytes` of UTF-8.

    Whole lines are dropped from the front first; a last line longer than the budget
    keeps its end, marked with a leading "...". Characters are never split.
    """
    if max_lines <= 0 or max_bytes <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for line in reversed(lines[-max_lines:]):
        size = len(line.encode()) + (1 if kept else 0)
        if used + size > max_bytes:
            if not kept:
                kept.append(_keep_end(line, max_bytes))
            break
        kept.append(line)
        used += size
    return "\n".join(reversed(kept))


def _keep_end(line: str, max_bytes: int) -> str:
    budget = max_bytes - len(TRUNCATED)
    if budget <= 0:
        return TRUNCATED[:max_bytes]
    end = line.encode()[-budget:].decode(errors="ignore")
    return TRUNCATED + end


def last_line(tail: str) -> str:
    lines = [line for line in tail.split("\n") if line.strip()]
    return lines[-1] if lines else ""


def event_message(message: str, tail: str, limit: int = EVENT_MAX_CHARS) -> str:
    """An Event message followed by the last few lines of the log, within `limit`
    characters: the message is shortened before the lines are."""
    lines = tail_text(tail.split("\n"), EVENT_LINES, EVENT_TAIL_CHARS) if tail else ""
    if not lines:
        return message[:limit]
    suffix = "; last log lines:\n" + lines
    room = limit - len(suffix)
    if room < len(message):
        message = message[: max(room - len(TRUNCATED), 0)] + TRUNCATED
    return (message + suffix)[:limit]


@dataclass(frozen=True)
class TailOutcome:
    """What reading the log gave: the tail, or why there is none."""

    tail: str = ""
    problem: str = ""  # a short note for the condition message; never a token


def outcome_of(lines: Sequence[str], settings: LogSettings) -> TailOutcome:
    tail = tail_text(lines, settings.tail_lines)
    return TailOutcome(tail=tail) if tail.strip() else TailOutcome(problem="the log is empty")


def apply_outcome(status: Status, outcome: TailOutcome) -> Status:
    """The status with the tail in `logTail`, or with a short note in the Succeeded
    condition's message when the log could not be read (the run is not touched else)."""
    if not status.finished or status.log_tail or has_note(status):
        return status
    if outcome.tail:
        return replace(status, log_tail=outcome.tail)
    note = f"{NOTE_MARK}{outcome.problem or 'not read'})"
    conditions: list[Condition] = []
    for cond in status.conditions:
        if cond.type == SUCCEEDED:
            message = f"{cond.message} {note}" if cond.message else note
            cond = replace(cond, message=message)
        conditions.append(cond)
    return replace(status, conditions=tuple(conditions))


# ------------------------------------------------------------------- logs tokens

TOKEN_LIFETIME: Final = 3600.0  # what the API documents; the answer carries no expiry
MAX_RENEW_MARGIN: Final = 300.0


@dataclass(frozen=True)
class CachedToken:
    token: str
    obtained_at: float  # monotonic seconds
    lifetime: float = TOKEN_LIFETIME

    def __repr__(self) -> str:  # never the token
        return f"CachedToken(obtained_at={self.obtained_at}, lifetime={self.lifetime})"


def renew_margin(lifetime: float) -> float:
    """How long before its expiry a token is no longer used: a tenth of its life, at
    most five minutes, so a read that starts with it does not outlive it."""
    return min(MAX_RENEW_MARGIN, lifetime / 10)


def usable(cached: CachedToken | None, now: float) -> bool:
    if cached is None:
        return False
    return now < cached.obtained_at + cached.lifetime - renew_margin(cached.lifetime)
