"""End to end: log tails in TaskRun status and the `kubectl ona` plugin, on the local
control plane with the operator as a process and the simulator's streamed logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.test_argocd_health import health
from tests.support.operator_fixtures import (
    OperatorProcess,
    TaskRuns,
    inline_task,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

FAILING = (
    'make # sim:pending=100ms sim:duration=600ms sim:steps=2 sim:log_lines=3 sim:fail="disk full"'
)
SLOW_FAILING = 'make # sim:pending=100ms sim:duration=1500ms sim:fail="disk full"'
SUCCEEDING = "make # sim:pending=100ms sim:duration=300ms sim:log_lines=2"
# Every logs token the simulator hands out starts so; none may leak anywhere.
LOGS_TOKEN_PREFIX = "sim-logs-"


@pytest.fixture
def sim(e2e_simulator: SimulatorHandle) -> Iterator[SimulatorHandle]:
    """The session's simulator, its log faults and logs token lifetime restored after."""
    yield e2e_simulator
    e2e_simulator.control.clear_log_faults()
    e2e_simulator.control.set_logs_token_ttl(3600)


def _no_secrets(sim: SimulatorHandle, *texts: str) -> None:
    for text in texts:
        assert sim.token not in text
        assert LOGS_TOKEN_PREFIX not in text


def _note(taskruns: TaskRuns, name: str) -> str | None:
    cond = taskruns.condition(name, "Succeeded") or {}
    message = str(cond.get("message", ""))
    return message if "(log tail: " in message else None


def test_failed_run_keeps_the_end_of_its_log(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle
) -> None:
    taskruns.apply("fails", {"task": inline_task(FAILING), "logs": {"tailLines": 4}})
    taskruns.apply("passes", {"task": inline_task(SUCCEEDING)})
    taskruns.apply(
        "passes-kept", {"task": inline_task(SUCCEEDING), "logs": {"tailOnSuccess": True}}
    )

    status = wait_for(
        lambda: (s := taskruns.status("fails")).get("logTail") and s,
        what="the failed run's logTail",
    )
    log = sim.control.execution_log(status["taskExecutionId"])
    assert status["logTail"] == "\n".join(log[-4:])
    assert status["logTail"].endswith("] error: disk full")
    assert status["phase"] == "FAILED"

    failed = next(e for e in taskruns.wait_events("fails", "Failed") if e["reason"] == "Failed")
    assert "last log lines:" in failed["message"]
    assert failed["message"].endswith("] error: disk full")
    assert len(failed["message"]) <= 1024

    # The Argo CD health check names the last log line.
    state, message = health(taskruns.get("fails"))
    assert state == "Degraded"
    assert message.endswith("; last log line: " + log[-1])

    kept = wait_for(
        lambda: (s := taskruns.status("passes-kept")).get("logTail") and s,
        what="the tail of a successful run that asked for it",
    )
    assert kept["logTail"].endswith("] done")
    plain = taskruns.wait_phase("passes", "SUCCEEDED")
    assert "logTail" not in taskruns.status("passes")
    assert plain["conditions"]

    everything = json.dumps([taskruns.get(n) for n in ("fails", "passes", "passes-kept")])
    _no_secrets(sim, everything, json.dumps(taskruns.events("fails")), operator.log())


def test_a_failing_log_endpoint_never_blocks_the_status(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle
) -> None:
    expectations = [
        ({"error_502": 1}, "the log could not be read (HTTP 502)"),
        ({"error_401": 1}, "the logs token was refused (HTTP 401)"),
        ({"drop": 1, "drop_after_lines": 2}, "the log could not be read (no response)"),
    ]
    for index, (knobs, note) in enumerate(expectations):
        sim.control.set_log_faults(**knobs)
        name = f"broken-log-{index}"
        taskruns.apply(name, {"task": inline_task(FAILING)})
        first: dict[str, Any] = taskruns.wait_condition(name, "Succeeded", "False", "Failed")
        # The final status came first, without waiting for the log.
        assert "(log tail: " not in first["message"]
        message = wait_for(lambda n=name: _note(taskruns, n), what=f"the note on {name}")
        assert message == f"disk full (log tail: {note})"
        assert "logTail" not in taskruns.status(name)
        assert operator.running
    sim.control.clear_log_faults()
    taskruns.apply("log-back", {"task": inline_task(FAILING)})
    wait_for(lambda: taskruns.status("log-back").get("logTail"), what="a tail once the log works")
    _no_secrets(sim, operator.log())


def test_an_expired_logs_token_is_renewed(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle
) -> None:
    sim.control.set_logs_token_ttl(1.0)
    taskruns.apply("first", {"task": inline_task(FAILING)})
    wait_for(lambda: taskruns.status("first").get("logTail"), what="the first tail")
    issued = sim.control.logs_settings()["tokensIssued"]
    sim.control.clear_calls()
    # The cached token is an hour old for the operator, but the simulator's expire in 1 s:
    # this run ends after it did.
    taskruns.apply("second", {"task": inline_task(SLOW_FAILING)})
    wait_for(lambda: taskruns.status("second").get("logTail"), what="the second tail")
    reads = [(c["httpStatus"], c["code"]) for c in sim.control.calls("ReadLog")]
    assert reads == [(401, "expired"), (200, "")]
    assert sim.control.logs_settings()["tokensIssued"] == issued + 1
