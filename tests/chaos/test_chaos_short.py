"""A short chaos run in the test suite: 24 TaskRuns of every form (two of them retrying
failed executions), a third of each through a second connection (an OnaConnection with a
token of its own), while the operator is SIGKILLed twice (once through a crash point),
every fault kind and a 15 s outage hit the Ona API, and kube-apiserver restarts; a
TaskRunSchedule makes a run every minute throughout. Nothing may start twice (for a
retrying run: twice in one attempt), no run may make more attempts than allowed, nothing
may be lost, nothing may be done with the other connection's token, and no minute slot may
go without its one run, counted from the simulator's own records and the TaskRuns. Runs
its own control plane, simulator and operator, because restarting the API server would
disturb the session's other tests."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tools.chaos import Settings, run_chaos

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(480)
def test_short_chaos_run_starts_nothing_twice_and_loses_nothing(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        pytest.skip("restarts its own local API server, which USE_EXISTING_CLUSTER rules out")
    settings = Settings(
        taskruns=24, kills=2, seed=7, fault_window=3.0, outage=15.0, duration_budget=300.0
    )
    figures = run_chaos(settings, tmp_path / "chaos", log=lambda line: print(line, file=sys.stderr))
    for key in (
        "wall_seconds",
        "converge_seconds_after_last_fault",
        "outage",
        "quiet",
        "connections",
    ):
        record_property(key, json.dumps(figures[key]))
    details = json.dumps({k: figures[k] for k in figures if k.endswith("_detail")}, indent=1)

    assert figures["duplicate_starts"] == 0, details
    assert figures["lost_runs"] == 0, details
    assert figures["status_mismatches"] == 0, details
    assert figures["not_converged"] == 0, details
    assert figures["wrong_connection_calls"] == 0, details
    assert figures["excess_attempts"] == 0, details
    # Runs that create their environment: one each, none left behind.
    assert figures["environments_checked"] >= 1
    assert figures["duplicate_environments"] == 0, details
    assert figures["leaked_environments"] == 0, details
    assert figures["taskruns"] >= 24
    # The every-minute schedule made exactly one TaskRun for each slot while it was on
    # (through kills, the API server restart and the outage), judged like the rest.
    assert figures["schedule_slots"] >= 1
    assert figures["missed_slots"] == 0, details
    assert figures["unexpected_slots"] == 0, details
    assert figures["scheduled_runs"] >= figures["schedule_slots"]
    assert figures["taskruns_by_form"]["scheduled"] == figures["scheduled_runs"]
    # Retrying TaskRuns were judged attempt by attempt, and really retried.
    assert figures["retrying_taskruns"] >= 2
    assert figures["retry_attempts_judged"] > figures["retrying_taskruns"]

    # Both connections really carried TaskRuns, and the check had something to judge.
    connections = figures["connections"]
    assert set(connections) == {"default", "chaos-team"}
    assert connections["chaos-team"] >= figures["taskruns"] // 4
    assert figures["start_task_calls_by_connection"].get("chaos-team", 0) > 0
    assert figures["start_task_calls_by_connection"].get("default", 0) > 0
    assert figures["connection_checked"]["calls"] > 0
    # The team connection's limit held through the chaos, with runs at once under it.
    assert figures["connection_limit_exceeded"] == 0, details
    assert 1 < figures["connection_limit_most_at_once"] <= figures["connection_limit"]

    # The chaos really happened, as planned.
    assert figures["kills"] == 2
    assert figures["crash_point_kills"] == 1
    assert figures["unexpected_operator_exits"] == []
    assert figures["apiserver_restarts"] == 1
    outage = figures["outage"]
    assert outage is not None
    assert outage["calls"] > 0, "the operator made no call during the outage"
    assert figures["faults_injected"].get("503", 0) >= outage["calls"]
    assert sum(figures["faults_injected"].values()) > outage["calls"]
    assert figures["teardown_leftovers"] == []
