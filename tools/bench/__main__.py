"""Command line of the benchmark: `scripts/bench-operator [--contender both] [--runs K] ...`.

Exit code 0 when, in every run of every contender, every TaskRun succeeded within the
deadline and the teardown left nothing behind; 1 otherwise; 2 when a run could not be
carried out; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tools.bench import restart
from tools.bench.compare import run_comparison
from tools.bench.run import CONTENDERS, WORKLOADS, BenchError, BenchSettings
from tools.localcluster.binaries import REPO_ROOT


def _log(message: str) -> None:
    print(message, flush=True)


def _interrupt(signum: int, _: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C, so the stack is torn down either way.
    raise KeyboardInterrupt(f"signal {signum}")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench-operator",
        description="Create N TaskRuns against a fresh control plane, simulator and "
        "contender (this operator, and/or a minimal kopf baseline); print them side by side "
        "with the API server's raw write ceiling: throughput, latencies, Kubernetes writes and "
        "Ona API calls per TaskRun, CPU and memory.",
    )
    parser.add_argument("--taskruns", type=int, default=1000, help="TaskRuns to create (1000)")
    parser.add_argument(
        "--contender",
        choices=(*CONTENDERS, "both"),
        default="both",
        help="this operator, the kopf baseline of tools/bench/baseline.py, or both (both)",
    )
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="taskref",
        help="taskref: TaskRuns name tasks seeded in the simulator first; inline: spec.task "
        "(taskref)",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of each contender, each on a fresh stack (1)"
    )
    parser.add_argument(
        "--ceiling-objects",
        type=int,
        default=None,
        help="TaskRuns created on each stack, before its contender starts, to measure the API "
        "server's raw write ceiling (--taskruns; 0 skips it)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="threads creating TaskRuns (16)"
    )
    parser.add_argument(
        "--environments",
        type=int,
        default=1,
        help="environments the TaskRuns are spread over, round-robin (1); the operator opens "
        "at most ONA_MAX_WATCH_STREAMS WatchEvents streams (100) and polls the rest",
    )
    parser.add_argument("--duration", default="2s", help="sim:duration of each execution (2s)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        help="the operator's ONA_POLL_INTERVAL and the baseline's timer interval, in seconds "
        "(5, the operator's default)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=1200.0,
        help="seconds from the first create until every TaskRun must be final (1200)",
    )
    parser.add_argument(
        "--idle-window",
        type=float,
        default=30.0,
        help="seconds of counting calls once every TaskRun is final (30)",
    )
    parser.add_argument(
        "--operator-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator, e.g. RECONCILE_WORKERS=16 (repeatable)",
    )
    parser.add_argument(
        "--baseline-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the baseline, e.g. BASELINE_KOPF_FINALIZER=1 (repeatable)",
    )
    group = parser.add_argument_group(
        "restarts at scale",
        "--restart-scale: fill the cluster with finished and running TaskRuns through one "
        "operator, stop it, start another, and measure its time to ready, its Ona calls and "
        "writes for finished TaskRuns, the mirror latency of the running ones and its memory",
    )
    group.add_argument(
        "--restart-scale", action="store_true", help="run the restart benchmark instead"
    )
    group.add_argument(
        "--finished", type=int, default=10_000, help="finished TaskRuns present (10000)"
    )
    group.add_argument("--running", type=int, default=500, help="running TaskRuns present (500)")
    group.add_argument(
        "--stop",
        choices=restart.STOPS,
        default="term",
        help="how the first operator is stopped: SIGTERM, as a rollout or a drain does, or "
        "SIGKILL (term)",
    )
    group.add_argument(
        "--no-leader-election",
        action="store_true",
        help="run the operators without leader election (it is on by default, as with "
        "more than one replica)",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="(.local/bench/<time>)")
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep etcd data, certificates and kubeconfigs (logs and figures are always kept)",
    )
    args = parser.parse_args(argv)
    if args.restart_scale:
        return _restart(parser, args)
    if args.taskruns < 1 or args.concurrency < 1 or args.poll_interval <= 0:
        parser.error("need --taskruns >= 1, --concurrency >= 1 and a positive --poll-interval")
    if args.environments < 1:
        parser.error("need --environments >= 1")
    if args.deadline <= 0 or args.idle_window <= 0:
        parser.error("need a positive --deadline and --idle-window")
    if args.runs < 1 or (args.ceiling_objects is not None and args.ceiling_objects < 0):
        parser.error("need --runs >= 1 and --ceiling-objects >= 0")
    contenders = list(CONTENDERS) if args.contender == "both" else [args.contender]
    state_dir = args.state_dir or (
        REPO_ROOT / ".local" / "bench" / time.strftime("run-%Y%m%d-%H%M%S")
    )
    settings = BenchSettings(
        taskruns=args.taskruns,
        concurrency=args.concurrency,
        duration=args.duration,
        poll_interval=args.poll_interval,
        deadline=args.deadline,
        idle_window=args.idle_window,
        operator_env=dict(args.operator_env),
        workload=args.workload,
        ceiling_objects=(args.taskruns if args.ceiling_objects is None else args.ceiling_objects),
        baseline_env=dict(args.baseline_env),
        environments=args.environments,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    _log(f"bench-operator: state in {state_dir}")
    try:
        result = run_comparison(
            settings,
            state_dir.resolve(),
            contenders=contenders,
            runs=args.runs,
            log=_log,
            keep_state=args.keep_state,
        )
    except BenchError as exc:
        _log(f"bench-operator: could not carry out the run: {exc}")
        return 2
    except KeyboardInterrupt:
        _log("bench-operator: interrupted; everything was stopped")
        return 130
    return 0 if result["ok"] else 1


def _restart(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.finished < 1 or args.running < 1 or args.concurrency < 1:
        parser.error("need --finished >= 1, --running >= 1 and --concurrency >= 1")
    if args.poll_interval <= 0:
        parser.error("need a positive --poll-interval")
    settings = restart.RestartSettings(
        finished=args.finished,
        running=args.running,
        concurrency=args.concurrency,
        stop=args.stop,
        leader_election=not args.no_leader_election,
        poll_interval=args.poll_interval,
        operator_env=dict(args.operator_env),
    )
    state_dir = args.state_dir or (
        REPO_ROOT / ".local" / "bench" / time.strftime("restart-%Y%m%d-%H%M%S")
    )
    signal.signal(signal.SIGTERM, _interrupt)
    _log(f"bench-operator --restart-scale: state in {state_dir}")
    try:
        figures = restart.run_restart(
            settings, state_dir.resolve(), log=_log, keep_state=args.keep_state
        )
    except BenchError as exc:
        _log(f"bench-operator: could not carry out the run: {exc}")
        return 2
    except KeyboardInterrupt:
        _log("bench-operator: interrupted; everything was stopped")
        return 130
    met = restart.ok(figures)
    _log(f"restart targets {'met' if met else 'NOT met'} (see docs/performance.md, Restarts)")
    return 0 if met and not figures.get("teardown_leftovers") else 1


if __name__ == "__main__":
    sys.exit(main())
