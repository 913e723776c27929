"""The kopf baseline in miniature, through the comparison's own entry point: a handful of
taskRef TaskRuns on a fresh stack, after the API server's write ceiling on a small N. The
figures must be real: every TaskRun final, each started once, the writes counted and of
the kinds the baseline makes (one create, kopf's annotation, status patches; no
finalizer, no Event), no call once all are final. Nothing here asserts on timings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from tools.bench import BenchSettings, run_comparison

pytestmark = [pytest.mark.e2e]

TASKRUNS = 6
CEILING = 40


@pytest.mark.timeout(180)
def test_baseline_runs_taskref_taskruns_and_the_write_ceiling_is_measured(
    tmp_path: Path,
) -> None:
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        pytest.skip("starts its own local API server, which USE_EXISTING_CLUSTER rules out")
    settings = BenchSettings(
        taskruns=TASKRUNS,
        concurrency=4,
        duration="2s",
        poll_interval=1.0,
        deadline=90.0,
        idle_window=3.0,
        workload="taskref",
        ceiling_objects=CEILING,
    )
    state_dir = tmp_path / "bench"
    result = run_comparison(
        settings,
        state_dir,
        contenders=["baseline"],
        runs=1,
        log=lambda line: print(line, file=sys.stderr),
    )

    assert json.loads((state_dir / "figures.json").read_text()) == result
    assert result["ok"] is True, result
    (figures,) = result["figures"]["baseline"]
    assert figures["contender"] == "baseline"
    assert figures["workload"] == "taskref"
    assert json.loads((state_dir / "run-1-baseline" / "figures.json").read_text()) == figures
    assert figures["succeeded"] == TASKRUNS, figures
    assert figures["all_final_seconds"] is not None
    assert figures["executions_in_simulator"] == TASKRUNS
    assert figures["latency"]["start"]["count"] == TASKRUNS

    calls = figures["api_calls"]["by_method"]
    assert calls["StartTask"] == TASKRUNS  # each task started once
    assert "CreateTask" not in calls  # taskRef: the tasks were seeded, not created
    assert calls["GetTaskExecution"] >= TASKRUNS  # the timer polled each one
    assert figures["idle"]["calls"] == 0, figures["idle"]  # the timers stop when final

    writes = figures["kube_writes"]["by_kind"]
    assert writes["creates"] == TASKRUNS
    assert writes["status_patches"] >= TASKRUNS
    # kopf's last-handled-configuration annotation, once each; a finalizer would be another.
    assert writes["metadata_patches"] == TASKRUNS
    assert writes["events"] == 0
    assert figures["kube_writes"]["total"] == sum(writes.values())

    ceiling = figures["write_ceiling"]
    assert ceiling["objects"] == CEILING
    assert ceiling["writes_per_second"] > 0
    assert result["write_ceiling"]["runs"] == [ceiling["writes_per_second"]]

    machine = figures["machine"]
    assert machine["busy_cpu_seconds"] > 0
    assert machine["run_cpu_seconds"]["contender"] > 0
    assert machine["other_cpu_seconds"] >= 0

    row = result["contenders"]["baseline"]["median"]
    assert row["kube_writes_per_taskrun"] == figures["kube_writes"]["per_taskrun"]
    assert row["events_per_taskrun"] == 0
    assert row["peak_rss_mib"] is not None
    assert row["peak_rss_mib"] > 0
    assert figures["teardown_leftovers"] == []
