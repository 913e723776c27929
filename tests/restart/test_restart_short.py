"""The restart benchmark in miniature: 300 finished and 20 running TaskRuns, the operator
stopped (SIGTERM) and another started. The new one must make no Ona call and no write for
the finished TaskRuns, follow and mirror the running ones, and lead at once: with a Lease
of 60 s, it could not be ready in time had the first one not given its Lease up.

`scripts/bench-operator --restart-scale` is the full size (10,000 and 500).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from tools.bench.restart import RestartSettings, run_restart

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_a_restart_leaves_finished_taskruns_alone_and_follows_the_running(
    tmp_path: Path,
) -> None:
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        pytest.skip("starts its own local API server, which USE_EXISTING_CLUSTER rules out")
    settings = RestartSettings(
        finished=300,
        running=20,
        concurrency=8,
        operator_env={"LEASE_DURATION": "60"},
        fill_deadline=150.0,
        ready_deadline=40.0,
        mirror_deadline=40.0,
        quiet=3.0,
        idle_window=3.0,
    )
    state_dir = tmp_path / "restart"
    figures = run_restart(settings, state_dir, log=lambda line: print(line, file=sys.stderr))

    assert json.loads((state_dir / "figures.json").read_text()) == figures
    finished = figures["finished"]
    assert finished["taskruns"] == 300
    assert finished["ona_calls"] == 0, finished
    assert finished["watch_streams"] == 0, finished
    assert finished["writes"] == 0, finished
    assert finished["events"] == 0, finished
    running = figures["running"]
    assert running["mirrored"] == 20, running
    assert running["mirror_latency"]["count"] == 20
    followed = running["tracked_executions_max"]
    assert followed is None or followed <= 20, running
    # Led well within the Lease's 60 s: the first operator gave it up on its way out.
    assert figures["restart"]["ready_seconds"] < 30, figures["restart"]
    assert "320 TaskRuns listed" in figures["restart"]["ready_line"]
    assert figures["teardown_leftovers"] == []
