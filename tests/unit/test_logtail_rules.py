"""Log tails, the pure rules: when a tail is wanted, its bounds, status, Event and tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ona_taskrun.rules.logtail import (
    MAX_TAIL_BYTES,
    NOTE_MARK,
    CachedToken,
    LogSettings,
    TailOutcome,
    apply_outcome,
    event_message,
    has_note,
    last_line,
    outcome_of,
    parse_log_settings,
    renew_margin,
    tail_text,
    usable,
    wants_tail,
)
from ona_taskrun.rules.model import Condition, Status

NOW = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ended(
    phase: str,
    reason: str,
    *,
    ok: bool = False,
    log_url: str = "https://logs.example/x",
    log_tail: str = "",
    message: str = "the task execution failed",
    seconds_ago: float = 1,
) -> Status:
    succeeded = "True" if ok else "False"
    return Status(
        phase=phase,
        log_url=log_url,
        log_tail=log_tail,
        conditions=(
            Condition("Succeeded", succeeded, reason, message, stamp(seconds_ago)),
            Condition("Stalled", "False" if ok else "True", reason, message, stamp(seconds_ago)),
        ),
    )


RUNNING = Status(
    phase="RUNNING",
    log_url="https://logs.example/x",
    conditions=(Condition("Succeeded", "Unknown", "Running", "running", stamp(1)),),
)

WANTS: list[tuple[str, Status, LogSettings, bool]] = [
    ("a failed run", ended("FAILED", "Failed"), LogSettings(), True),
    ("a run that timed out", ended("STOPPED", "TimedOut"), LogSettings(), True),
    ("a succeeded run", ended("SUCCEEDED", "Succeeded", ok=True), LogSettings(), False),
    (
        "a succeeded run that asks",
        ended("SUCCEEDED", "Succeeded", ok=True),
        LogSettings(tail_on_success=True),
        True,
    ),
    ("a run stopped on request", ended("STOPPED", "Stopped"), LogSettings(), False),
    ("tails turned off", ended("FAILED", "Failed"), LogSettings(tail_lines=0), False),
    ("a run still going", RUNNING, LogSettings(), False),
    (
        "a failed run that never had a log",
        ended("FAILED", "Failed", log_url=""),
        LogSettings(),
        False,
    ),
    ("a tail already written", ended("FAILED", "Failed", log_tail="x"), LogSettings(), False),
    (
        "a note already written",
        ended("FAILED", "Failed", message=f"boom {NOTE_MARK}the log is empty)"),
        LogSettings(),
        False,
    ),
    (
        "a run that ended long ago",
        ended("FAILED", "Failed", seconds_ago=3600),
        LogSettings(),
        False,
    ),
    (
        "a run that ended 10 minutes ago",
        ended("FAILED", "Failed", seconds_ago=600),
        LogSettings(),
        True,
    ),
]


@pytest.mark.parametrize(
    ("status", "settings", "expected"),
    [
        pytest.param(status, settings, expected, id=name)
        for name, status, settings, expected in WANTS
    ],
)
def test_wants_tail(status: Status, settings: LogSettings, expected: bool) -> None:
    assert wants_tail(status, settings, NOW) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, LogSettings(20, False)),
        ({}, LogSettings(20, False)),
        ({"tailLines": 0}, LogSettings(0, False)),
        ({"tailLines": 5, "tailOnSuccess": True}, LogSettings(5, True)),
        ({"tailLines": 500}, LogSettings(100, False)),
        ({"tailLines": -3}, LogSettings(0, False)),
        ({"tailLines": "7", "tailOnSuccess": "yes"}, LogSettings(20, False)),
        ({"tailLines": True}, LogSettings(20, False)),
        ("junk", LogSettings(20, False)),
    ],
)
def test_parse_log_settings(raw: Any, expected: LogSettings) -> None:
    assert parse_log_settings(raw) == expected


LINES = [f"line {i}" for i in range(1, 31)]


@pytest.mark.parametrize(
    ("lines", "max_lines", "max_bytes", "expected"),
    [
        (LINES, 20, MAX_TAIL_BYTES, "\n".join(LINES[-20:])),
        (LINES, 3, MAX_TAIL_BYTES, "line 28\nline 29\nline 30"),
        (LINES[:2], 20, MAX_TAIL_BYTES, "line 1\nline 2"),
        ([], 20, MAX_TAIL_BYTES, ""),
        (LINES, 0, MAX_TAIL_BYTES, ""),
        # whole lines are dropped from the front to fit the byte budget
        (LINES, 20, 15, "line 29\nline 30"),
        (LINES, 20, 14, "line 30"),
        # a last line longer than the budget keeps its end
        (["a" * 10 + "END"], 5, 8, "...aaEND"),
        # multi-byte characters are never split (each "é" is two bytes)
        (["é" * 10], 5, 8, "...éé"),
    ],
)
def test_tail_text(lines: list[str], max_lines: int, max_bytes: int, expected: str) -> None:
    text = tail_text(lines, max_lines, max_bytes)
    assert text == expected
    assert len(text.encode()) <= max_bytes


def test_tail_of_a_huge_log_stays_within_4_kib() -> None:
    lines = ["x" * 1000 + f" {i}" for i in range(50)]
    text = tail_text(lines, 20)
    assert len(text.encode()) <= MAX_TAIL_BYTES
    assert text.endswith(" 49")
    assert text.count("\n") == 3  # four whole lines of 1003 bytes fit


def test_outcome_of_empty_or_blank_log_is_a_problem() -> None:
    assert outcome_of([], LogSettings()) == TailOutcome(problem="the log is empty")
    assert outcome_of(["", "  "], LogSettings()) == TailOutcome(problem="the log is empty")
    assert outcome_of(["a", "b"], LogSettings(tail_lines=1)) == TailOutcome(tail="b")


def test_apply_outcome_writes_the_tail_or_a_note() -> None:
    failed = ended("FAILED", "Failed", message="disk full")
    with_tail = apply_outcome(failed, TailOutcome(tail="a\nb"))
    assert with_tail.log_tail == "a\nb"
    assert with_tail.conditions == failed.conditions

    noted = apply_outcome(failed, TailOutcome(problem="the logs token was refused (HTTP 401)"))
    assert noted.log_tail == ""
    succeeded = noted.condition("Succeeded")
    assert succeeded is not None
    assert succeeded.message == "disk full (log tail: the logs token was refused (HTTP 401))"
    # the transition time is kept: the run did not change
    assert succeeded.last_transition_time == failed.conditions[0].last_transition_time
    assert noted.condition("Stalled") == failed.condition("Stalled")
    assert has_note(noted)
    # once written, never again
    assert apply_outcome(noted, TailOutcome(problem="other")) == noted
    assert apply_outcome(with_tail, TailOutcome(tail="c")) == with_tail
    # a run not over is never touched
    assert apply_outcome(RUNNING, TailOutcome(tail="c")) == RUNNING


@pytest.mark.parametrize(
    ("message", "tail", "limit", "expected"),
    [
        ("execution e failed: boom", "", 1024, "execution e failed: boom"),
        (
            "execution e failed: boom",
            "1\n2\n3\n4",
            1024,
            "execution e failed: boom; last log lines:\n2\n3\n4",
        ),
        ("m" * 100, "x\ny", 40, "m" * 16 + "...; last log lines:\nx\ny"),
    ],
)
def test_event_message(message: str, tail: str, limit: int, expected: str) -> None:
    text = event_message(message, tail, limit)
    assert text == expected
    assert len(text) <= limit


def test_event_message_of_long_lines_stays_bounded() -> None:
    text = event_message("f" * 2000, "\n".join("z" * 900 for _ in range(5)))
    assert len(text) <= 1024
    assert text.endswith("z" * 300)


def test_last_line() -> None:
    assert last_line("a\nb\n\n  \n") == "b"
    assert last_line("") == ""


@pytest.mark.parametrize(
    ("cached", "now", "expected"),
    [
        (None, 0.0, False),
        (CachedToken("t", obtained_at=0.0), 10.0, True),
        (CachedToken("t", obtained_at=0.0), 3299.0, True),
        # five minutes before the hour is up, it is renewed
        (CachedToken("t", obtained_at=0.0), 3300.0, False),
        (CachedToken("t", obtained_at=0.0), 4000.0, False),
        # a short-lived token is renewed a tenth of its life early
        (CachedToken("t", obtained_at=100.0, lifetime=60.0), 153.0, True),
        (CachedToken("t", obtained_at=100.0, lifetime=60.0), 154.0, False),
    ],
)
def test_token_usable(cached: CachedToken | None, now: float, expected: bool) -> None:
    assert usable(cached, now) is expected


def test_renew_margin_and_token_repr() -> None:
    assert renew_margin(3600.0) == 300.0
    assert renew_margin(60.0) == 6.0
    assert "secret" not in repr(CachedToken("secret", 1.0))
