"""One TaskRun end to end on each compatibility version: the operator, under its own RBAC
identity, starts it in the simulator, follows it to SUCCEEDED with its steps, and starts
exactly one execution."""

from __future__ import annotations

import pytest

from tests.support.operator_fixtures import OperatorProcess, TaskRuns, inline_task
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e


def test_a_taskrun_runs_once_to_success(
    operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    taskruns.apply("hello", {"task": inline_task("make # sim:duration=1s sim:steps=2")})
    status = taskruns.wait_phase("hello", "SUCCEEDED", timeout=90)
    assert [step["phase"] for step in status["steps"]] == ["SUCCEEDED", "SUCCEEDED"]
    cond = taskruns.condition("hello", "Succeeded")
    assert cond is not None
    assert cond["status"] == "True"
    executions = [
        item.get("execution", item)
        for item in e2e_simulator.control.executions()
        if item.get("execution", item)["metadata"]["taskId"] == status["taskId"]
    ]
    assert [e["id"] for e in executions] == [status["taskExecutionId"]]
    assert operator.running
