"""The benchmark in miniature: 10 inline TaskRuns through its own control plane, simulator and
operator. The figures must be there, every run must succeed, and the remote reads must be
batched: with executions running 8 s and a 1 s poll interval, polling each execution on its
own would cost about 8 GetTaskExecution calls per TaskRun."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from tools.bench import BenchSettings, run_bench

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A status change seen on the environment's watch is re-read at once (about two per run:
# RUNNING, SUCCEEDED); anything near duration / poll interval would be per-run polling.
MAX_GET_PER_TASKRUN = 4.0


@pytest.mark.timeout(300)
def test_ten_taskruns_succeed_with_batched_reads(tmp_path: Path) -> None:
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        pytest.skip("starts its own local API server, which USE_EXISTING_CLUSTER rules out")
    settings = BenchSettings(
        workload="inline",
        taskruns=10,
        concurrency=4,
        duration="8s",
        poll_interval=1.0,
        deadline=120.0,
        idle_window=5.0,
    )
    state_dir = tmp_path / "bench"
    figures = run_bench(settings, state_dir, log=lambda line: print(line, file=sys.stderr))

    assert json.loads((state_dir / "figures.json").read_text()) == figures
    assert figures["taskruns"] == 10
    assert figures["succeeded"] == 10, figures
    assert figures["all_succeeded"] is True
    assert figures["executions_in_simulator"] == 10
    assert figures["creation"]["rate_per_second"] > 0
    assert figures["all_succeeded_seconds"] >= 8.0  # no run can end before its 8 s
    for kind in ("start", "start_remote", "mirror", "end_to_end"):
        assert figures["latency"][kind]["count"] == 10, kind
        assert figures["latency"][kind]["median"] <= figures["latency"][kind]["p95"]
    assert figures["operator"]["peak_rss_mib"] > 0
    assert figures["operator"]["cpu_seconds"] > 0
    assert figures["kube_requests"]["POST taskruns"] == 10

    calls = figures["api_calls"]
    assert calls["by_method"]["StartTask"] == 10
    assert calls["by_method"].get("ListTaskExecutions", 0) > 0, "no batched poll at all"
    assert calls["get_task_execution_per_taskrun"] <= MAX_GET_PER_TASKRUN, calls
    assert figures["idle"]["calls"] == 0, figures["idle"]
    assert figures["teardown_leftovers"] == []
