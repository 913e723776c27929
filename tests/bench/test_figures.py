"""The benchmark's arithmetic, without a cluster: writes by kind, medians, the side-by-side
table."""

from __future__ import annotations

from typing import Any

from tools.bench import figures as fig
from tools.bench.compare import run_order


def _figures(writes: dict[str, int], *, final: float, rss: float, n: int = 10) -> dict[str, Any]:
    return {
        "taskruns": n,
        "all_succeeded": True,
        "teardown_leftovers": [],
        "all_final_seconds": final,
        "latency": {
            "start": {"count": n, "median": 1.0, "p95": 2.0, "max": 3.0},
            "mirror": {"count": n, "median": 0.1, "p95": 0.2, "max": 0.3},
        },
        "kube_writes": fig.kube_writes(writes, n),
        "operator": {
            "cpu_seconds_first_create_to_all_final": 1.0,
            "cpu_ms_per_taskrun": 100.0,
            "cpu_seconds": 2.0,
            "peak_rss_mib": rss,
        },
        "api_calls": {"per_taskrun_total": 2.0},
        "idle": {"calls_per_minute": 0.0},
        "write_ceiling": {"writes_per_second": 100.0},
    }


def test_writes_are_split_by_kind_and_reads_are_left_out() -> None:
    requests = {
        "PATCH taskruns/status": 70,
        "POST events": 20,
        "PATCH events": 5,
        "PATCH taskruns": 10,
        "POST taskruns": 10,
        "DELETE taskruns": 1,
        "WATCH taskruns": 3,
        "LIST taskruns": 2,
        "GET taskruns": 4,
    }
    writes = fig.kube_writes(requests, 10)
    assert writes["by_kind"] == {
        "creates": 10,
        "status_patches": 70,
        "metadata_patches": 10,
        "deletes": 1,
        "events": 25,
    }
    assert writes["total"] == 116
    assert writes["per_taskrun"] == 11.6
    assert writes["per_taskrun_by_kind"]["status_patches"] == 7.0


def test_median_ignores_unknown_values() -> None:
    assert fig.median([3.0, None, 1.0, 2.0]) == 2.0
    assert fig.median([1.0, 2.0]) == 1.5
    assert fig.median([None]) is None


def test_comparison_takes_medians_per_contender_and_prints_each_run() -> None:
    ours = [
        _figures({"POST taskruns": 10, "PATCH taskruns/status": 70}, final=60.0, rss=90.0),
        _figures({"POST taskruns": 10, "PATCH taskruns/status": 90}, final=40.0, rss=100.0),
        _figures({"POST taskruns": 10, "PATCH taskruns/status": 80}, final=50.0, rss=95.0),
    ]
    theirs = [
        _figures({"POST taskruns": 10, "PATCH taskruns/status": 30}, final=25.0, rss=280.0),
        _figures({"POST taskruns": 10, "PATCH taskruns/status": 30}, final=20.0, rss=290.0),
        _figures({"POST taskruns": 10, "PATCH taskruns/status": 30}, final=30.0, rss=285.0),
    ]
    result = fig.comparison({"operator": ours, "baseline": theirs})
    assert result["ok"] is True
    median = result["contenders"]["operator"]["median"]
    assert median["all_final_seconds"] == 50.0
    assert median["kube_writes_per_taskrun"] == 9.0
    assert median["status_patches_per_taskrun"] == 8.0
    assert median["writes_at_ceiling_seconds"] == 0.9  # 90 writes at 100/s
    assert [r["all_final_seconds"] for r in result["contenders"]["operator"]["runs"]] == [
        60.0,
        40.0,
        50.0,
    ]
    assert result["write_ceiling"]["median_writes_per_second"] == 100.0
    assert len(result["write_ceiling"]["runs"]) == 6

    text = fig.side_by_side(result, "title")
    line = next(x for x in text.splitlines() if x.startswith("first create -> all final"))
    assert "50.0 (60.0 / 40.0 / 50.0)" in line
    assert "25.0 (25.0 / 20.0 / 30.0)" in line
    assert line.endswith("2.00x")
    assert "median 100 writes/s" in text


def test_a_failed_run_makes_the_comparison_not_ok() -> None:
    bad = _figures({"POST taskruns": 10}, final=10.0, rss=1.0)
    bad["all_succeeded"] = False
    result = fig.comparison({"baseline": [bad]})
    assert result["ok"] is False
    assert "not comparable" in fig.side_by_side(result, "title")


def test_contenders_swap_order_every_other_run() -> None:
    assert run_order(["operator", "baseline"], 0) == ["operator", "baseline"]
    assert run_order(["operator", "baseline"], 1) == ["baseline", "operator"]
    assert run_order(["baseline"], 1) == ["baseline"]


STREAMS = [
    # env-a watched from 100 s to 110 s, then again from 120 s on (still open).
    {
        "environmentId": "env-a",
        "openedAt": "1970-01-01T00:01:40Z",
        "closedAt": "1970-01-01T00:01:50Z",
    },
    {"environmentId": "env-a", "openedAt": "1970-01-01T00:02:00Z", "closedAt": None},
    # env-b watched from 105 s to 130 s.
    {
        "environmentId": "env-b",
        "openedAt": "1970-01-01T00:01:45Z",
        "closedAt": "1970-01-01T00:02:10Z",
    },
]


def test_a_run_counts_as_watched_only_while_its_environment_had_a_stream_open() -> None:
    environment_of = {"a1": "env-a", "a2": "env-a", "a3": "env-a", "b1": "env-b", "c1": "env-c"}
    completed = {"a1": 105.0, "a2": 115.0, "a3": 500.0, "b1": 131.0, "c1": 105.0}
    assert fig.watched_at(STREAMS, environment_of, completed) == {"a1", "a3"}
    assert fig.watched_at(STREAMS, environment_of, {"a1": None}) == set()


def test_stream_figures_count_streams_open_at_once() -> None:
    assert fig.stream_figures(STREAMS, until=1000.0) == {
        "opened": 3,
        "peak_open": 2,
        "peak_open_low": 2,
        "close_seen_within": 0.0,
        "environments_watched": 2,
    }
    # env-b's stream (closed at 130 s in the record) and a stream opened at 129.95 s: seen
    # late by up to 0.1 s, the close may have come first.
    late = [*STREAMS, {"environmentId": "env-c", "openedAt": "1970-01-01T00:02:09.950Z"}]
    figures = fig.stream_figures(late, until=1000.0, close_seen_within=0.1)
    assert (figures["peak_open_low"], figures["peak_open"]) == (2, 3)
    # Up to 102 s only the first stream had opened.
    assert fig.stream_figures(STREAMS, until=102.0)["opened"] == 1


def test_latencies_can_be_limited_to_some_names() -> None:
    starts = {"a": 1.0, "b": 2.0, "c": None}
    ends = {"a": 1.5, "b": 4.0, "c": 9.0}
    assert fig.latencies(starts, ends) == [0.5, 2.0]
    assert fig.latencies(starts, ends, only={"b", "c"}) == [2.0]
