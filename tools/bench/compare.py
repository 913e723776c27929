"""Contenders side by side: the operator and the kopf baseline, each run K times.

Every (run, contender) pair gets a stack of its own: a fresh control plane, simulator and
namespace, the contender's process, and (unless `ceiling_objects` is 0) a measurement of the
API server's raw write ceiling on that same stack before the contender starts. Nothing one
contender leaves in etcd or the simulator weighs on the other, and each column's ceiling
comes from the control plane its figures come from. The contenders run one after the other
on the same machine, never at once; from one run to the next their order is swapped, so a
drift of the machine's speed during the invocation does not always favour the same one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.bench import figures as fig
from tools.bench.run import BenchSettings, Log, run_bench


def run_order(contenders: Sequence[str], run: int) -> list[str]:
    """The contenders in the order run `run` (0-based) starts them: as given, then reversed
    on every other run."""
    return list(contenders) if run % 2 == 0 else list(reversed(contenders))


def run_comparison(
    settings: BenchSettings,
    state_dir: Path,
    *,
    contenders: Sequence[str],
    runs: int = 1,
    log: Log = print,
    keep_state: bool = False,
) -> dict[str, Any]:
    """Run every contender `runs` times, each on a fresh stack in `state_dir/run-I-NAME`;
    print and return the side-by-side figures (also `state_dir/figures.json`)."""
    if runs < 1 or not contenders:
        raise ValueError("need at least one run and one contender")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    folders: dict[str, list[str]] = {name: [] for name in contenders}
    for run in range(runs):
        for contender in run_order(contenders, run):
            log(f"--- run {run + 1} of {runs}: {contender} ---")
            folder = state_dir / f"run-{run + 1}-{contender}"
            figures = run_bench(
                dataclasses.replace(settings, contender=contender),
                folder,
                log=log,
                keep_state=keep_state,
            )
            results[contender].append(figures)
            folders[contender].append(str(folder))
    result = fig.comparison(results)
    title = (
        f"side by side: {settings.taskruns} {settings.workload} TaskRuns, "
        f"sim:duration={settings.duration}, poll interval {settings.poll_interval:g} s, "
        f"{settings.concurrency} client threads, {runs} run(s) each"
    )
    combined: dict[str, Any] = {
        "settings": {
            "taskruns": settings.taskruns,
            "workload": settings.workload,
            "duration": settings.duration,
            "poll_interval": settings.poll_interval,
            "concurrency": settings.concurrency,
            "ceiling_objects": settings.ceiling_objects,
            "operator_env": dict(settings.operator_env),
            "baseline_env": dict(settings.baseline_env),
            "runs": runs,
            "contenders": list(contenders),
        },
        **result,
        "state_dirs": folders,
        # Every run's full figures, as each run's own figures.json has them.
        "figures": results,
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "figures.json").write_text(json.dumps(combined, indent=2) + "\n")
    log(fig.side_by_side(result, title))
    log(f"figures written to {state_dir / 'figures.json'}")
    return combined
