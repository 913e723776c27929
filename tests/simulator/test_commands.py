"""The command convention, read without any server."""

from __future__ import annotations

import math

import pytest

from ona_taskrun.simulator.commands import RunPlan, parse_command
from ona_taskrun.simulator.wire import ConnectError


def test_plain_command_runs_the_default_plan() -> None:
    assert parse_command("make build") == RunPlan()


def test_directives_are_read_anywhere_in_the_command() -> None:
    plan = parse_command(
        "make test # sim:pending=250ms sim:duration=2s sim:steps=3 sim:parallel=2 "
        'sim:fail="it \\"broke\\"" sim:fail_step=2 sim:output.url=http://x sim:stop_delay=1m'
    )
    assert plan.pending_s == pytest.approx(0.25)
    assert plan.duration_s == 2
    assert plan.groups == 3
    assert plan.parallel == 2
    assert plan.failure_message == 'it "broke"'
    assert plan.fail_group == 1
    assert plan.outputs == {"url": "http://x"}
    assert plan.stop_delay_s == 60


def test_hang_and_infinite_durations() -> None:
    assert math.isinf(parse_command("serve sim:hang").duration_s)
    assert math.isinf(parse_command("sim:pending=inf").pending_s)


def test_fail_step_alone_implies_a_failure() -> None:
    plan = parse_command("sim:steps=2 sim:fail_step=1")
    assert plan.fails
    assert plan.failure_message == "step 1 failed"


@pytest.mark.parametrize(
    "command",
    [
        "sim:duration=soon",
        "sim:steps=0",
        "sim:fail_step=3 sim:steps=2",
        "sim:colour=red",
        "sim:fail",
    ],
)
def test_malformed_directives_are_refused(command: str) -> None:
    with pytest.raises(ConnectError) as raised:
        parse_command(command)
    assert raised.value.code == "invalid_argument"
