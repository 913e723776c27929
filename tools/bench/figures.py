"""The benchmark's arithmetic, kept pure so it can be read and checked apart from the run:
per-TaskRun latencies from what was timed, API calls by method, and the printed summary.

Times are epoch seconds (float). A latency is only computed for a TaskRun whose two ends
are both known; the count says how many had them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any


def parse_time(text: str) -> float | None:
    """An RFC 3339 time (with `Z` and any fraction) as epoch seconds; None if absent."""
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    if "." in text:
        # fromisoformat takes at most microseconds; the API may send nanoseconds.
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{(digits + '000000')[:6]}{zone}"
    return datetime.fromisoformat(text).timestamp()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of them at or
    below it (the median of an even count is the lower middle one)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Count, median, p95 and max of latencies in seconds (None when there are none)."""
    if not values:
        return {"count": 0, "median": None, "p95": None, "max": None}
    return {
        "count": len(values),
        "median": round(percentile(values, 0.5), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
    }


def latencies(starts: Mapping[str, float | None], ends: Mapping[str, float | None]) -> list[float]:
    """`end - start` for every name that has both."""
    out: list[float] = []
    for name, start in starts.items():
        end = ends.get(name)
        if start is not None and end is not None:
            out.append(end - start)
    return out


def calls_by_method(calls: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(c.get("method", "")) for c in calls).most_common())


def per_run(counts: Mapping[str, int], runs: int) -> dict[str, float]:
    return {method: round(n / runs, 2) for method, n in counts.items()} if runs else {}


def in_window(
    calls: Iterable[Mapping[str, Any]], start: float, end: float
) -> list[Mapping[str, Any]]:
    return [c for c in calls if start <= (parse_time(str(c.get("time", ""))) or 0.0) < end]


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def apiserver_requests(metrics: str) -> Counter[str]:
    """kube-apiserver's `apiserver_request_total` summed by verb and resource, as
    `"PATCH taskruns/status"`, from its Prometheus text."""
    counts: Counter[str] = Counter()
    for line in metrics.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("}")
        labels = dict(_LABEL.findall(labels_text))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels.get('verb', '')} {resource}"] += int(float(value.split()[0]))
    return counts


def increase(
    before: Counter[str], after: Counter[str], *, resources: Iterable[str]
) -> dict[str, int]:
    """What grew between two readings, for the resources named (subresources included)."""
    wanted = tuple(resources)
    grown = {
        key: after[key] - before.get(key, 0)
        for key in after
        if key.split(" ", 1)[-1].split("/")[0] in wanted and after[key] > before.get(key, 0)
    }
    return dict(sorted(grown.items(), key=lambda item: -item[1]))


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _spread_line(data: Mapping[str, Any]) -> str:
    if not data["count"]:
        return "n/a"
    return (
        f"median {_seconds(data['median'])}, p95 {_seconds(data['p95'])}, "
        f"max {_seconds(data['max'])} (n={data['count']})"
    )


def summary(figures: Mapping[str, Any]) -> str:
    """The human-readable block printed at the end of a run."""
    created = figures["creation"]
    calls = figures["api_calls"]
    per = calls["per_taskrun"]
    idle = figures["idle"]
    operator = figures["operator"]
    lat = figures["latency"]
    kube = figures["kube_requests"]
    lines = [
        "",
        "=== operator benchmark ===",
        f"TaskRuns:                    {figures['taskruns']} (sim:duration={figures['duration']}, "
        f"ONA_POLL_INTERVAL={figures['poll_interval']}, concurrency {created['concurrency']})",
        f"succeeded:                   {figures['succeeded']} (other final: {figures['failed']}, "
        f"not final: {figures['not_final']})",
        f"creation:                    {created['seconds']:.2f} s, "
        f"{created['rate_per_second']:.1f} TaskRuns/s (retries: {created['retries']})",
        f"first create -> all SUCCEEDED: {_seconds(figures['all_succeeded_seconds'])}, "
        f"{figures['runs_per_second'] or 0:.1f} runs/s",
        f"first create -> all started:   {_seconds(figures['all_started_seconds'])}",
        f"start latency (create -> taskExecutionId seen): {_spread_line(lat['start'])}",
        f"  create -> StartTask served (simulator):        {_spread_line(lat['start_remote'])}",
        f"mirror latency (completedAt -> SUCCEEDED seen): {_spread_line(lat['mirror'])}",
        f"end to end (create -> SUCCEEDED seen):          {_spread_line(lat['end_to_end'])}",
        f"Ona API calls until all SUCCEEDED: {calls['total']} "
        f"({calls['per_taskrun_total']:.2f} per TaskRun)",
        "  per TaskRun by method:     "
        + ", ".join(f"{method} {n:.2f}" for method, n in per.items()),
        f"  GetTaskExecution per run:  {per.get('GetTaskExecution', 0.0):.2f}, "
        f"ListTaskExecutions per run: {per.get('ListTaskExecutions', 0.0):.2f}",
        "kube API requests per TaskRun (the operator's, and the benchmark's POST/LIST/WATCH): "
        + ", ".join(f"{key} {n / figures['taskruns']:.2f}" for key, n in kube.items()),
        f"idle ({idle['seconds']:.0f} s after all final): {idle['calls_per_minute']:.1f} calls/min "
        f"({idle['calls']} calls {idle['by_method']}), "
        f"operator CPU {idle['operator_cpu_seconds']:.2f} s",
        f"operator:                    peak RSS {operator['peak_rss_mib']:.1f} MiB, "
        f"CPU {operator['cpu_seconds']:.1f} s "
        f"({operator['cpu_seconds_until_all_succeeded']:.1f} s until all SUCCEEDED)",
        "CPU of the rest (whole run): "
        + ", ".join(f"{name} {sec:.1f} s" for name, sec in figures["other_cpu_seconds"].items()),
        f"wall time:                   {figures['wall_seconds']:.1f} s",
    ]
    return "\n".join(lines)
