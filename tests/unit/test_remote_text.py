"""A task's own text (failure messages, step labels, outputs) as it reaches a TaskRun's
status: a hostile task cannot drive a reader's terminal, leak a token the operator holds,
or grow the object without bound."""

from __future__ import annotations

from ona_taskrun.clients.ona.models import TaskExecution
from ona_taskrun.controller.remote import (
    LABEL_LIMIT,
    MESSAGE_LIMIT,
    OUTPUT_LIMIT,
    OUTPUTS_PER_STEP,
    shown,
    to_remote,
)
from ona_taskrun.observability import logs

TOKEN = "ona_pat_remote-text-test-0123456789"
HOSTILE = "boom\x1b[2J\x1b]52;c;Zm9v\x07\x9b31m\rover\x08 " + TOKEN


def test_control_characters_and_tokens_never_reach_the_status() -> None:
    logs.protect(TOKEN)
    text = shown(HOSTILE + "\nnext\tline")
    assert not any(ch in text for ch in "\x1b\x07\x9b\r\x08")
    assert TOKEN not in text
    assert "***" in text
    assert text.endswith("\nnext\tline")


def test_over_long_text_is_cut_and_says_so() -> None:
    text = shown("x" * 1_000_000)
    assert len(text) <= MESSAGE_LIMIT
    assert text.endswith("[cut: 1000000 characters in all]")
    assert shown("short") == "short"


def test_a_token_cut_in_half_is_masked_too() -> None:
    logs.protect(TOKEN)
    text = shown("y" * (MESSAGE_LIMIT - 40) + TOKEN * 3)
    assert TOKEN[:8] not in text


def test_an_execution_is_read_with_its_text_made_safe() -> None:
    logs.protect(TOKEN)
    execution = TaskExecution.model_validate(
        {
            "id": "e-1",
            "metadata": {"taskId": "t-1"},
            "spec": {"plan": [{"steps": [{"id": "s-1", "label": "\x1b[31m" + "L" * 5000}]}]},
            "status": {
                "phase": "TASK_EXECUTION_PHASE_FAILED",
                "failureMessage": HOSTILE,
                "steps": [
                    {
                        "id": "s-1",
                        "phase": "TASK_EXECUTION_PHASE_FAILED",
                        "failureMessage": HOSTILE,
                        "output": {f"k{i:03}": "v" * 10_000 for i in range(200)},
                    }
                ],
            },
        }
    )
    remote = to_remote(execution)
    assert TOKEN not in remote.failure_message
    assert "\x1b" not in remote.failure_message
    (step,) = remote.steps
    assert "\x1b" not in step.label
    assert step.label.startswith("LLL")
    assert len(step.label) <= LABEL_LIMIT
    assert TOKEN not in step.failure_message
    assert len(step.output) == OUTPUTS_PER_STEP
    assert all(len(v) <= OUTPUT_LIMIT for v in step.output.values())
