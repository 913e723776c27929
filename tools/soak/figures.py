"""The soak's figures from its samples: growth per run after warm-up, the largest growing
heap sites, the printed curve and its plot."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.soak.run import SoakSettings

MIB = 1024 * 1024


def incarnation_length(settings: SoakSettings) -> int:
    return settings.taskruns // 2 if settings.restart else settings.taskruns


def warmup_length(settings: SoakSettings) -> int:
    """Runs of each operator incarnation left out of the growth fit."""
    if settings.warmup is not None:
        return settings.warmup
    return max(settings.sample_every, incarnation_length(settings) // 5)


def warmup_runs(settings: SoakSettings, start: int, runs: int) -> bool:
    """Whether a sample taken at `runs` is past the warm-up of an incarnation begun at
    `start`."""
    return runs - start >= warmup_length(settings)


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx


def growth(
    samples: Sequence[Mapping[str, Any]], settings: SoakSettings, restarted_at: int | None
) -> list[dict[str, Any]]:
    """Per operator incarnation, over its samples past the warm-up (the last one, taken
    once every TaskRun was gone, left out: it is at the same count as the wave before):
    the Python heap's and the object count's growth per run (least squares), and the
    resident size between the first and the last of those samples."""
    out: list[dict[str, Any]] = []
    for index in sorted({int(s["incarnation"]) for s in samples}):
        start = restarted_at if index > 0 and restarted_at is not None else 0
        mine = [s for s in samples if s["incarnation"] == index and not s.get("final")]
        warm = [s for s in mine if warmup_runs(settings, start, int(s["runs"]))]
        entry: dict[str, Any] = {
            "incarnation": index,
            "from_run": start,
            "samples": len(mine),
            "warm_samples": len(warm),
        }
        if len(warm) >= 2:
            first, last = warm[0], warm[-1]
            heap = slope([(s["runs"], s["heap_bytes"]) for s in warm])
            objects = slope([(s["runs"], s["gc_objects"]) for s in warm])
            entry.update(
                {
                    "fit_from_run": first["runs"],
                    "fit_to_run": last["runs"],
                    "heap_bytes_per_run": round(heap, 1) if heap is not None else None,
                    "heap_bytes_per_run_endpoints": round(
                        (last["heap_bytes"] - first["heap_bytes"]) / (last["runs"] - first["runs"]),
                        1,
                    ),
                    "gc_objects_per_run": round(objects, 4) if objects is not None else None,
                    "rss_mib_from": first["rss_mib"],
                    "rss_mib_to": last["rss_mib"],
                    "rss_mib_growth": round(last["rss_mib"] - first["rss_mib"], 2),
                }
            )
        out.append(entry)
    return out


def site_growth(
    before: Mapping[str, int], after: Mapping[str, int], top: int = 10
) -> list[tuple[str, int]]:
    """The heap sites (file:line, or a stack) that grew most between two reports."""
    deltas = {where: after.get(where, 0) - before.get(where, 0) for where in {*before, *after}}
    grown = sorted(((d, w) for w, d in deltas.items() if d > 0), reverse=True)
    return [(where, delta) for delta, where in grown[:top]]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, p95 and max of some durations (seconds)."""
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max": ordered[-1],
    }


def log_problems(paths: Iterable[Path]) -> dict[str, int]:
    """ERROR lines and tracebacks in the operator's logs."""
    counts = {"error_lines": 0, "tracebacks": 0}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or "[ERROR" in line:
                counts["error_lines"] += 1
            if line.startswith("Traceback"):
                counts["tracebacks"] += 1
    return counts


def curve(samples: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        f"{'runs':>7} {'s':>7} {'op':>3} {'RSS MiB':>8} {'heap MiB':>9} {'objects':>9} "
        f"{'C used':>7} {'C free':>7} {'sim RSS':>8}  remembered"
    ]
    for s in samples:
        remembered = ",".join(f"{k}={v:g}" for k, v in sorted(s["remembered"].items()))
        rows.append(
            f"{s['runs']:>7} {s['seconds']:>7.0f} {s['incarnation']:>3} {s['rss_mib']:>8.1f} "
            f"{s['heap_bytes'] / MIB:>9.2f} {s['gc_objects']:>9} "
            f"{_or_dash(s.get('malloc_in_use_mib'))} {_or_dash(s.get('malloc_free_mib'))} "
            f"{s.get('simulator_rss_mib') or 0:>8.0f}  {remembered}"
            + ("  (all gone)" if s.get("final") else "")
            + ("  <- warm-up over" if s.get("warm") else "")
        )
    return "\n".join(rows)


def _or_dash(value: float | None) -> str:
    return f"{value:>7.1f}" if value is not None else f"{'-':>7}"


def summary(figures: Mapping[str, Any]) -> str:
    samples = figures["samples"]
    lines = [f"=== soak: {figures['taskruns']} TaskRuns ({figures['namespace']}) ==="]
    seconds = samples[-1]["seconds"] if samples else 0
    if seconds:
        lines.append(f"rate: {figures['taskruns'] / seconds:.1f} TaskRuns/s over {seconds:.0f} s")
    lines.append(f"by kind: {figures['by_kind']}")
    lines.append(f"outcomes: {figures['outcomes']}")
    lines.append(
        f"stuck or not gone: {figures['stuck_count']}; operator restarted at run "
        f"{figures['restarted_at_run']}; kube retries {figures['kube_retries']}; "
        f"operator log: {figures['operator_log_problems']}"
    )
    for kind, wanted in figures.get("seconds_to_wanted", {}).items():
        gone = figures.get("seconds_to_gone", {}).get(kind, {})
        lines.append(
            f"  {kind:>8}: create -> waited-for p50 {wanted.get('p50', 0):.2f} s "
            f"(p95 {wanted.get('p95', 0):.2f}), then -> gone p50 {gone.get('p50', 0):.2f} s "
            f"(p95 {gone.get('p95', 0):.2f})"
        )
    lines.append(curve(samples))
    for entry in figures["growth"]:
        if "heap_bytes_per_run" not in entry:
            lines.append(
                f"operator {entry['incarnation']}: too few samples past warm-up to fit "
                f"({entry['warm_samples']})"
            )
            continue
        lines.append(
            f"operator {entry['incarnation']} (runs {entry['fit_from_run']}-"
            f"{entry['fit_to_run']}, after warm-up): heap {entry['heap_bytes_per_run']:+.1f} "
            f"B/run (end points {entry['heap_bytes_per_run_endpoints']:+.1f}), objects "
            f"{entry['gc_objects_per_run']:+.4f}/run, RSS {entry['rss_mib_from']:.1f} -> "
            f"{entry['rss_mib_to']:.1f} MiB ({entry['rss_mib_growth']:+.2f})"
        )
    for index, sites in figures.get("site_growth_since_warmup", {}).items():
        if sites:
            lines.append(f"largest heap growth of operator {index} since its warm-up:")
            lines.extend(f"  {delta:+10d} B  {where}" for where, delta in sites[:10])
    lines.append(f"remembered once every TaskRun was gone: {figures['final_remembered']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Plotted:
    reason: str = ""

    def __bool__(self) -> bool:
        return not self.reason


def plot(figures: Mapping[str, Any], target: Path) -> Plotted:
    """The curve as a PNG: resident size and traced heap over runs, the restart marked."""
    try:
        # Imported by name: matplotlib is a tool of the soak, not a dependency of the project.
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return Plotted("matplotlib is not installed: pip install -e '.[bench]'")
    samples = [s for s in figures["samples"] if not s.get("final")]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6), dpi=100)
    for index in sorted({s["incarnation"] for s in samples}):
        mine = [s for s in samples if s["incarnation"] == index]
        xs = [s["runs"] for s in mine]
        label = f"operator {index + 1}"
        top.plot(xs, [s["rss_mib"] for s in mine], marker=".", label=label)
        bottom.plot(xs, [s["heap_bytes"] / MIB for s in mine], marker=".", label=label)
    restart = figures.get("restarted_at_run")
    for axis in (top, bottom):
        if restart is not None:
            axis.axvline(restart, color="grey", linestyle="--", linewidth=1)
        axis.grid(True, alpha=0.3)
        axis.set_ylim(bottom=0)
    top.set_ylabel("resident size (MiB)")
    bottom.set_ylabel("traced Python heap (MiB)")
    bottom.set_xlabel("TaskRuns created, run and deleted")
    top.legend(loc="lower right")
    top.set_title(
        f"Soak: {figures['taskruns']} TaskRuns through one operator"
        + (f", restarted at {restart}" if restart is not None else "")
    )
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)
    return Plotted()
