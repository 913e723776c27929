"""`kubectl ona` and hostile text: what a TaskRun's author or the remote writes reaches the
reader's terminal without a single control sequence, and machine output stays exact."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import yaml

from ona_taskrun.cli.main import document
from ona_taskrun.cli.render import describe
from ona_taskrun.rules.terminal import clean, clean_tree, one_line

NOW = dt.datetime(2026, 11, 30, 9, 0, 0, tzinfo=dt.UTC)

# What a hostile task may print or write, each with what the reader must see instead.
HOSTILE = [
    pytest.param("\x1b[2Jcleared", "cleared", id="CSI erase screen"),
    pytest.param("\x1b[?1049halternate", "alternate", id="CSI private mode"),
    pytest.param("\x1b[31;1mred\x1b[0m", "red", id="SGR colour"),
    pytest.param("\x1b]52;c;cm0gLXJmIH4=\x07copied", "copied", id="OSC 52 clipboard, BEL"),
    pytest.param("\x1b]52;c;cm0gLXJmIH4=\x1b\\copied", "copied", id="OSC 52 clipboard, ST"),
    pytest.param("\x1b]0;title\x07text", "text", id="OSC window title"),
    pytest.param("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "link", id="OSC 8"),
    pytest.param("\x1b]0;never ended\nnext line", "\nnext line", id="OSC left open"),
    pytest.param("\x1bP+q544e\x1b\\after", "after", id="DCS query"),
    pytest.param("\x1b_app\x1b\\after", "after", id="APC"),
    pytest.param("\x1bc reset", " reset", id="ESC c full reset"),
    pytest.param("\x1b#8filled", "filled", id="ESC # 8 fill screen"),
    pytest.param("\x1b(0graphics", "graphics", id="charset switch"),
    pytest.param("\x1b7saved\x1b8", "saved", id="save and restore cursor"),
    pytest.param("lone \x1b", "lone ", id="lone ESC"),
    pytest.param("\x9b2Jeight-bit", "eight-bit", id="C1 CSI"),
    pytest.param("\x9d0;title\x9ctext", "text", id="C1 OSC and ST"),
    pytest.param("\x90qdata\x9cafter", "after", id="C1 DCS"),
    pytest.param("all good\rEVIL OVERWRITE", "all goodEVIL OVERWRITE", id="carriage return"),
    pytest.param("passed\x08\x08\x08\x08\x08\x08failed", "passedfailed", id="backspaces"),
    pytest.param("ding\x07", "ding", id="BEL"),
    pytest.param("nul\x00del\x7fvt\x0bff\x0c", "nuldelvtff", id="NUL DEL VT FF"),
    pytest.param("\x85next line\x8dreverse index", "next linereverse index", id="other C1"),
]

# Every character a terminal may act on: C0 but newline and tab, DEL, C1.
CONTROLS = {chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} - {"\n", "\t"}


def has_controls(text: str) -> bool:
    return any(ch in CONTROLS for ch in text)


@pytest.mark.parametrize(("hostile", "shown"), HOSTILE)
def test_control_sequences_are_removed_whole(hostile: str, shown: str) -> None:
    assert clean(hostile) == shown
    assert not has_controls(clean(hostile))


@pytest.mark.parametrize(
    "text",
    [
        "[build (step 1/2)] output line 1 of 3",
        "tabs\tstay\nand newlines too",
        "héllo ✓ 日本語 — über [brackets] ]0; ;c;",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert clean(text) == text


def test_every_control_character_is_removed() -> None:
    for ch in CONTROLS:
        assert clean(f"{ch}\n{ch}") == "\n", repr(ch)
    assert not has_controls(clean("".join(sorted(CONTROLS)) + "kept"))


def test_one_line_keeps_a_field_on_its_line() -> None:
    assert one_line("disk\nfull\r\n\tagain  \x1b[2J") == "disk full again"


def test_clean_tree_cleans_keys_and_values_at_any_depth() -> None:
    tree = {"a\x1b[2J": ["\x9b2Jx", {"k\x07": "v\r"}, 3, None, True]}
    assert clean_tree(tree) == {"a": ["x", {"k": "v"}, 3, None, True]}


# ------------------------------------------------------------------ describe

EVIL = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x1b]0;owned\x07\x9b31m"


def hostile_run() -> dict[str, Any]:
    """A TaskRun whose author and remote put control sequences in every text field."""
    return {
        "metadata": {
            "name": "build",
            "namespace": "team-a",
            "creationTimestamp": "2026-11-30T08:58:00Z",
        },
        "spec": {
            "task": {"environmentId": f"env{EVIL}", "name": f"build{EVIL}", "command": "make"},
            "connectionRef": {"name": f"conn{EVIL}", "kind": f"Kind{EVIL}"},
            "timeout": f"30m{EVIL}",
        },
        "status": {
            "phase": f"FAILED{EVIL}",
            "taskId": f"task{EVIL}",
            "taskExecutionId": f"exec{EVIL}",
            "startedAt": "2026-11-30T08:58:10Z",
            "failureMessage": f"disk{EVIL}\rfull",
            "logUrl": f"https://logs.example/{EVIL}",
            "logTail": f"[build] ok\n[build] all tests passed\r{EVIL}FAILED" + "\x08" * 6,
            "steps": [
                {
                    "id": f"s1{EVIL}",
                    "label": f"build{EVIL}\n  s2  deploy  SUCCEEDED",
                    "phase": "FAILED",
                    "failureMessage": f"oops{EVIL}",
                    "output": {f"report{EVIL}": f"https://r/1{EVIL}\nforged: line"},
                },
                {"id": "s2", "label": "test", "phase": "SUCCEEDED"},
            ],
            "attempts": [{"attempt": 1, f"note{EVIL}": f"retried{EVIL}"}],
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "False",
                    "reason": f"Failed{EVIL}",
                    "message": f"disk full{EVIL}",
                }
            ],
        },
    }


def test_describe_shows_no_control_sequence_and_keeps_its_layout() -> None:
    events = [
        {
            "type": "Warning",
            "reason": f"Failed{EVIL}",
            "message": f"execution failed{EVIL}\nsecond line",
            "lastTimestamp": "2026-11-30T08:59:30Z",
        }
    ]
    text = describe(hostile_run(), events, NOW)
    assert not has_controls(text)
    assert "owned" not in text  # the window title is gone with its sequence
    lines = text.splitlines()
    assert f"{'Phase:':<17}FAILED" in lines
    assert f"{'Failure Message:':<17}diskfull" in lines
    # A newline in a label does not forge a row: the step is one row, the columns aligned.
    steps = lines[lines.index("Steps:") + 1 : lines.index("Attempts:")]
    assert steps == [
        "  ID  Label                      Phase      Failure",
        "  --  -----                      -----      -------",
        "  s1  build s2 deploy SUCCEEDED  FAILED     oops",
        "  s2  test                       SUCCEEDED",
        "  Outputs of build s2 deploy SUCCEEDED:",
        "    report: https://r/1 forged: line",
    ]
    tail = lines[lines.index("Log Tail:") + 1 : lines.index("Events:")]
    assert tail == ["  [build] ok", "  [build] all tests passedFAILED"]
    assert lines[-1].split()[:2] == ["Warning", "Failed"]
    assert lines[-1].endswith("execution failed second line")


# ------------------------------------------------------------------ -o json / yaml


def test_machine_output_stays_exact_and_inert() -> None:
    """`-o json` and `-o yaml` are not cleaned: their escaping writes every control
    character as an escape, so the document holds none and reads back exactly."""
    obj = {"taskRun": hostile_run(), "events": [{"message": "".join(sorted(CONTROLS))}]}
    for output, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        text = document(obj, output)
        assert not has_controls(text), output
        assert parse(text) == obj, output
