"""The command convention, read without any server."""

from __future__ import annotations

import math

import pytest

from ona_simulator.commands import RunPlan, parse_command
from ona_simulator.wire import ConnectError


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
        "sim:fail_first=0",
        "sim:fail_first=two",
        "sim:colour=red",
        "sim:fail",
    ],
)
def test_malformed_directives_are_refused(command: str) -> None:
    with pytest.raises(ConnectError) as raised:
        parse_command(command)
    assert raised.value.code == "invalid_argument"


def test_fail_first_fails_only_the_first_executions() -> None:
    plan = parse_command("make sim:fail_first=2 sim:steps=3")
    assert not plan.fails  # the plan as written: later executions succeed
    first, second, third = (plan.for_execution(i) for i in range(3))
    assert first.failure_message == "execution 1 of 2 failed (sim:fail_first)"
    assert second.failure_message == "execution 2 of 2 failed (sim:fail_first)"
    assert (first.fail_group, third.fails, third.last_group) == (2, False, 2)


def test_fail_first_takes_the_message_and_step_of_fail() -> None:
    plan = parse_command('sim:fail_first=1 sim:fail="flaky" sim:steps=2 sim:fail_step=1')
    assert (plan.for_execution(0).failure_message, plan.for_execution(0).fail_group) == ("flaky", 0)
    assert not plan.for_execution(1).fails


def test_without_fail_first_every_execution_follows_the_plan() -> None:
    plan = parse_command('sim:fail="always"')
    assert all(plan.for_execution(i).failure_message == "always" for i in range(3))
