"""A short soak in the test suite: 300 TaskRuns of the full mix (quick runs deleted by hand
and by their TTL, failures with a log tail, retries, deletes mid-run, fromProject
environments, runs naming a seeded task through a second connection, a TaskRunSchedule
every minute) through one operator restarted halfway, in waves of 100 with the heap
sampled after each. 300 is what fits in about three minutes on 2 shared cores (the full
soak, `scripts/soak`, runs 50,000 or as many as there is time for). Once every TaskRun is
gone, the operator must remember nothing for any of them: `ona_taskrun_remembered` is 0
for every kind. The heap figures are printed, not judged: 300 runs are too few to tell a
leak of a hundred bytes per run from warm-up (docs/performance.md#soak has the long run's).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tools.soak import SoakSettings, run_soak, summary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(420)
def test_a_short_soak_leaves_nothing_remembered(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        pytest.skip("runs its own local control plane and restarts its own operator")
    settings = SoakSettings(taskruns=300, concurrency=32, sample_every=100, warmup=100)
    figures = run_soak(settings, tmp_path / "soak", log=lambda line: print(line, file=sys.stderr))
    print(summary(figures))
    for key in ("growth", "final_remembered", "outcomes", "wall_seconds"):
        record_property(key, json.dumps(figures[key]))

    assert figures["taskruns"] == 300
    assert figures["stuck_count"] == 0, figures["stuck"]
    assert figures["restarted_at_run"] == 150
    # Every kind of the mix went through, each to the end its kind waits for.
    outcomes = figures["outcomes"]
    for kind, count in figures["by_kind"].items():
        assert count > 0, kind
    assert outcomes.get("failing:FAILED", 0) == figures["by_kind"]["failing"], outcomes
    assert outcomes.get("retry:SUCCEEDED", 0) == figures["by_kind"]["retry"], outcomes
    assert outcomes.get("ttl:ttl", 0) == figures["by_kind"]["ttl"], outcomes
    # What the operator holds once every TaskRun is gone: nothing, of any kind.
    remembered = figures["final_remembered"]
    assert {"taskruns", "executions", "environments", "timers", "log_tails"} <= set(remembered)
    assert not any(remembered.values()), remembered
    assert figures["teardown_leftovers"] == []
    # The heap was sampled after every wave, by both operators.
    assert len(figures["samples"]) == 1 + 3 + 1
    assert {s["incarnation"] for s in figures["samples"]} == {0, 1}
    assert all(s["heap_bytes"] > 0 for s in figures["samples"])
