"""The benchmark's arithmetic, kept pure so it can be read and checked apart from the run:
per-TaskRun latencies from what was timed, API calls by method, and the printed summary.

Times are epoch seconds (float). A latency is only computed for a TaskRun whose two ends
are both known; the count says how many had them.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
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


def latencies(
    starts: Mapping[str, float | None],
    ends: Mapping[str, float | None],
    only: Collection[str] | None = None,
) -> list[float]:
    """`end - start` for every name that has both (and is in `only`, when given)."""
    out: list[float] = []
    for name, start in starts.items():
        if only is not None and name not in only:
            continue
        end = ends.get(name)
        if start is not None and end is not None:
            out.append(end - start)
    return out


def _stream_spans(streams: Iterable[Mapping[str, Any]]) -> list[tuple[str, float, float]]:
    """(environment, opened, closed) of each WatchEvents stream; an open one never closes."""
    spans = []
    for stream in streams:
        opened = parse_time(str(stream.get("openedAt") or ""))
        if opened is None:
            continue
        closed = parse_time(str(stream.get("closedAt") or "")) or math.inf
        spans.append((str(stream.get("environmentId") or ""), opened, closed))
    return spans


def watched_at(
    streams: Iterable[Mapping[str, Any]],
    environment_of: Mapping[str, str],
    moments: Mapping[str, float | None],
) -> set[str]:
    """The names whose environment had a WatchEvents stream open at their moment (for the
    benchmark: when the execution completed); the rest were followed by polling alone."""
    by_environment: dict[str, list[tuple[float, float]]] = {}
    for environment, opened, closed in _stream_spans(streams):
        by_environment.setdefault(environment, []).append((opened, closed))
    watched = set()
    for name, moment in moments.items():
        if moment is None:
            continue
        spans = by_environment.get(environment_of.get(name, ""), [])
        if any(opened <= moment <= closed for opened, closed in spans):
            watched.add(name)
    return watched


def _peak(spans: Sequence[tuple[str, float, float]], until: float, early: float) -> int:
    """Most streams open at once, each counted as closed `early` seconds before its record."""
    moments = sorted(
        [(opened, 1) for _, opened, _ in spans]
        + [(closed - early, -1) for _, _, closed in spans if closed <= until]
    )
    peak = current = 0
    for _, step in moments:  # a close sorts before an open at the same instant
        current += step
        peak = max(peak, current)
    return peak


def stream_figures(
    streams: Iterable[Mapping[str, Any]], until: float, close_seen_within: float = 0.0
) -> dict[str, Any]:
    """How many WatchEvents streams were open at once at most (up to `until`), how many
    environments ever had one, and how many streams were opened in all.

    The simulator notices a stream its client closed within `close_seen_within` seconds,
    so a stream closed and another opened within that time overlap in its record: the
    peak is given as a range, from each close taken that much earlier to each as recorded.
    """
    spans = [span for span in _stream_spans(streams) if span[1] <= until]
    return {
        "opened": len(spans),
        "peak_open": _peak(spans, until, 0.0),
        "peak_open_low": _peak(spans, until, close_seen_within),
        "close_seen_within": close_seen_within,
        "environments_watched": len({environment for environment, _, _ in spans}),
    }


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


WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})


def kube_writes(requests: Mapping[str, int], taskruns: int) -> dict[str, Any]:
    """The writes among `increase(...)`'s requests (verb and resource), by kind: creates of
    TaskRuns, status patches (taskruns/status), metadata patches (any other write of a
    TaskRun: finalizers, annotations; nobody writes its spec), deletes, and Events. Requests
    the API server refused (a 409 on a stale write) are counted: they cost it all the same."""
    kinds = {"creates": 0, "status_patches": 0, "metadata_patches": 0, "deletes": 0, "events": 0}
    for key, count in requests.items():
        verb, _, resource = key.partition(" ")
        if verb not in WRITE_VERBS:
            continue
        if resource.split("/")[0] == "events":
            kinds["events"] += count
        elif resource == "taskruns/status":
            kinds["status_patches"] += count
        elif resource == "taskruns" and verb == "POST":
            kinds["creates"] += count
        elif resource == "taskruns" and verb.startswith("DELETE"):
            kinds["deletes"] += count
        elif resource.split("/")[0] == "taskruns":
            kinds["metadata_patches"] += count
    total = sum(kinds.values())
    return {
        "total": total,
        "by_kind": kinds,
        "per_taskrun": round(total / taskruns, 2) if taskruns else None,
        "per_taskrun_by_kind": {
            kind: round(n / taskruns, 2) if taskruns else None for kind, n in kinds.items()
        },
    }


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
    writes = figures.get("kube_writes") or kube_writes(kube, figures["taskruns"])
    ceiling = figures.get("write_ceiling")
    lines = [
        "",
        f"=== benchmark: {figures.get('contender', 'operator')}, "
        f"{figures.get('workload', 'inline')} workload ===",
        f"TaskRuns:                    {figures['taskruns']} (sim:duration={figures['duration']}, "
        f"ONA_POLL_INTERVAL={figures['poll_interval']}, concurrency {created['concurrency']})",
        f"succeeded:                   {figures['succeeded']} (other final: {figures['failed']}, "
        f"not final: {figures['not_final']})",
        f"creation:                    {created['seconds']:.2f} s, "
        f"{created['rate_per_second']:.1f} TaskRuns/s (retries: {created['retries']})",
        f"first create -> all final:   {_seconds(figures.get('all_final_seconds'))}",
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
        f"kube writes per TaskRun:     {writes['per_taskrun']:.2f} ("
        + ", ".join(f"{kind} {n:.2f}" for kind, n in writes["per_taskrun_by_kind"].items())
        + ")"
        + (
            f"; {figures['kube_writes_after_all_final']} of them after all were final"
            if figures.get("kube_writes_after_all_final")
            else ""
        ),
        f"idle ({idle['seconds']:.0f} s after all final): {idle['calls_per_minute']:.1f} calls/min "
        f"({idle['calls']} calls {idle['by_method']}), "
        f"operator CPU {idle['operator_cpu_seconds']:.2f} s",
        f"operator:                    peak RSS {operator['peak_rss_mib']:.1f} MiB, "
        f"CPU {operator['cpu_seconds']:.1f} s "
        f"({operator['cpu_seconds_until_all_succeeded']:.1f} s until all SUCCEEDED; "
        f"{operator.get('cpu_seconds_first_create_to_all_final', 0.0):.1f} s from the first "
        f"create to all final, {operator.get('cpu_ms_per_taskrun', 0.0):.1f} ms per TaskRun)",
        "CPU of the rest (whole run): "
        + ", ".join(f"{name} {sec:.1f} s" for name, sec in figures["other_cpu_seconds"].items()),
        f"wall time:                   {figures['wall_seconds']:.1f} s",
    ]
    streams = figures.get("watch_streams")
    if streams:
        lines.insert(
            -1,
            f"WatchEvents streams:         at most {streams.get('peak_open_low', '?')}-"
            f"{streams['peak_open']} open at once (closes are seen late by up to "
            f"{streams.get('close_seen_within', 0)} s), "
            f"{streams['opened']} opened, {streams['environments_watched']} of "
            f"{figures.get('environments', 1)} environments watched at some time",
        )
    if "mirror_watched" in lat:
        at = next(i for i, line in enumerate(lines) if line.startswith("mirror latency")) + 1
        lines[at:at] = [
            "  environment watched (a stream open):          "
            + _spread_line(lat["mirror_watched"]),
            "  environment polled (no stream open):          " + _spread_line(lat["mirror_polled"]),
        ]
    machine = figures.get("machine")
    if machine:
        lines.insert(
            -1,
            f"machine, first create -> all final: {machine['busy_cpu_seconds']:.1f} CPU s busy "
            f"on {machine['cores']} cores in {machine['seconds']:.1f} s; other work "
            f"{machine['other_cpu_seconds']:.1f} s (noise in these figures)",
        )
    if ceiling:
        lines.insert(
            -1,
            f"write ceiling (before the run): {ceiling['objects']} creates in "
            f"{ceiling['seconds']:.2f} s, {ceiling['writes_per_second']:.1f} writes/s",
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- side by side


@dataclass(frozen=True)
class Row:
    """One line of the side-by-side table: a figure read from a run's figures."""

    key: str
    label: str
    unit: str
    digits: int
    get: Callable[[Mapping[str, Any]], float | None]


def _at(*path: str) -> Callable[[Mapping[str, Any]], float | None]:
    def get(figures: Mapping[str, Any]) -> float | None:
        value: Any = figures
        for key in path:
            if not isinstance(value, Mapping) or value.get(key) is None:
                return None
            value = value[key]
        return float(value)

    return get


def _writes_at_ceiling(figures: Mapping[str, Any]) -> float | None:
    writes = _at("kube_writes", "total")(figures)
    rate = _at("write_ceiling", "writes_per_second")(figures)
    return writes / rate if writes is not None and rate else None


ROWS: tuple[Row, ...] = (
    Row("all_final_seconds", "first create -> all final", "s", 1, _at("all_final_seconds")),
    Row(
        "start_p50_seconds",
        "start latency p50 (create -> taskExecutionId seen)",
        "s",
        2,
        _at("latency", "start", "median"),
    ),
    Row("start_p95_seconds", "start latency p95", "s", 2, _at("latency", "start", "p95")),
    Row(
        "mirror_p50_seconds",
        "mirror latency p50 (completedAt -> SUCCEEDED seen)",
        "s",
        2,
        _at("latency", "mirror", "median"),
    ),
    Row(
        "kube_writes_per_taskrun",
        "Kubernetes writes per TaskRun (create included)",
        "",
        2,
        _at("kube_writes", "per_taskrun"),
    ),
    Row(
        "creates_per_taskrun",
        "  creates",
        "",
        2,
        _at("kube_writes", "per_taskrun_by_kind", "creates"),
    ),
    Row(
        "status_patches_per_taskrun",
        "  status patches",
        "",
        2,
        _at("kube_writes", "per_taskrun_by_kind", "status_patches"),
    ),
    Row(
        "metadata_patches_per_taskrun",
        "  metadata patches",
        "",
        2,
        _at("kube_writes", "per_taskrun_by_kind", "metadata_patches"),
    ),
    Row(
        "events_per_taskrun", "  Events", "", 2, _at("kube_writes", "per_taskrun_by_kind", "events")
    ),
    Row(
        "cpu_seconds",
        "operator CPU, first create -> all final",
        "s",
        1,
        _at("operator", "cpu_seconds_first_create_to_all_final"),
    ),
    Row("cpu_ms_per_taskrun", "  per TaskRun", "ms", 1, _at("operator", "cpu_ms_per_taskrun")),
    Row(
        "cpu_seconds_process",
        "operator CPU, whole process (start-up, idle)",
        "s",
        1,
        _at("operator", "cpu_seconds"),
    ),
    Row("peak_rss_mib", "peak RSS", "MiB", 0, _at("operator", "peak_rss_mib")),
    Row(
        "ona_calls_per_taskrun",
        "Ona API calls per TaskRun (until all final)",
        "",
        2,
        _at("api_calls", "per_taskrun_total"),
    ),
    Row(
        "idle_calls_per_minute",
        "  calls/min once all final",
        "",
        1,
        _at("idle", "calls_per_minute"),
    ),
    Row(
        "write_ceiling_per_second",
        "API server write ceiling (this stack, creates)",
        "/s",
        0,
        _at("write_ceiling", "writes_per_second"),
    ),
    Row("writes_at_ceiling_seconds", "  all its writes at that rate", "s", 1, _writes_at_ceiling),
    Row(
        "machine_other_cpu_seconds",
        "CPU of other work on the machine meanwhile",
        "s",
        1,
        _at("machine", "other_cpu_seconds"),
    ),
)


def comparison_row(figures: Mapping[str, Any]) -> dict[str, float | None]:
    """Every side-by-side figure of one run, by row key."""
    return {row.key: row.get(figures) for row in ROWS}


def median(values: Iterable[float | None]) -> float | None:
    """The median of the known values (the mean of the middle two for an even count)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def comparison(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per contender, each run's side-by-side figures and their medians; the write
    ceilings of every stack, and their median."""
    contenders: dict[str, Any] = {}
    ceilings: list[float] = []
    for contender, figures_list in runs.items():
        rows = [comparison_row(figures) for figures in figures_list]
        contenders[contender] = {
            "median": {row.key: median(r[row.key] for r in rows) for row in ROWS},
            "runs": rows,
            "all_succeeded": all(f.get("all_succeeded") for f in figures_list),
            "teardown_leftovers": [
                x for f in figures_list for x in f.get("teardown_leftovers", [])
            ],
        }
        ceilings.extend(
            r["write_ceiling_per_second"] for r in rows if r["write_ceiling_per_second"]
        )
    return {
        "contenders": contenders,
        "write_ceiling": {"median_writes_per_second": median(ceilings), "runs": ceilings},
        "ok": bool(contenders)
        and all(c["all_succeeded"] and not c["teardown_leftovers"] for c in contenders.values()),
    }


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def side_by_side(result: Mapping[str, Any], title: str) -> str:
    """The comparison as a table: one column per contender, each cell the median and, with
    several runs, each run's value; a last column operator / baseline when both ran."""
    contenders: Mapping[str, Any] = result["contenders"]
    names = list(contenders)
    ratio = "operator" in contenders and "baseline" in contenders
    header = ["", *names, *(["operator / baseline"] if ratio else [])]
    table: list[list[str]] = [header]
    for row in ROWS:
        cells = [f"{row.label}" + (f" ({row.unit})" if row.unit else "")]
        for name in names:
            data = contenders[name]
            cell = _number(data["median"][row.key], row.digits)
            if len(data["runs"]) > 1:
                cell += (
                    " (" + " / ".join(_number(r[row.key], row.digits) for r in data["runs"]) + ")"
                )
            cells.append(cell)
        if ratio:
            ours = contenders["operator"]["median"][row.key]
            theirs = contenders["baseline"]["median"][row.key]
            cells.append(f"{ours / theirs:.2f}x" if ours is not None and theirs else "")
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["", f"=== {title} ==="]
    if any(len(c["runs"]) > 1 for c in contenders.values()):
        lines.append("each cell: the median (then each run's value, in run order)")
    for line in table:
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    ceiling = result["write_ceiling"]
    if ceiling["runs"]:
        lines.append(
            f"API server write ceiling, all stacks: median "
            f"{_number(ceiling['median_writes_per_second'], 0)} writes/s ("
            + ", ".join(_number(v, 0) for v in ceiling["runs"])
            + ")"
        )
    for name in names:
        data = contenders[name]
        if not data["all_succeeded"] or data["teardown_leftovers"]:
            lines.append(
                f"{name}: not every TaskRun succeeded, or the teardown left something behind; "
                "its figures are not comparable"
            )
    return "\n".join(lines)
