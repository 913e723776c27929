"""Command line of the soak: `scripts/soak [--taskruns 50000] [--concurrency 24] ...`.

Exit code 0 when every TaskRun went through, the teardown left nothing behind and every
remembered count was 0 once every TaskRun was gone; 1 otherwise; 2 when the soak could not
be carried out; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tools.localcluster.binaries import REPO_ROOT
from tools.soak.run import SoakError, SoakSettings, run_soak


def _log(message: str) -> None:
    print(message, flush=True)


def _interrupt(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="soak",
        description="Churn TaskRuns through create -> final -> delete against a fresh control "
        "plane, simulator and operator (heap traced), sampling its memory after every wave; "
        "print the curve, the growth per run after warm-up and what it remembers at the end.",
    )
    parser.add_argument("--taskruns", type=int, default=50_000, help="TaskRuns in all (50000)")
    parser.add_argument(
        "--concurrency", type=int, default=24, help="TaskRuns going through at once (24)"
    )
    parser.add_argument(
        "--sample-every", type=int, default=1000, help="runs per wave, one sample each (1000)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="runs of each operator incarnation left out of the growth fit "
        "(default: a fifth of it, at least one wave)",
    )
    parser.add_argument("--no-restart", action="store_true", help="no operator restart midway")
    parser.add_argument("--no-schedule", action="store_true", help="no every-minute schedule")
    parser.add_argument(
        "--heap-frames",
        type=int,
        default=1,
        help="stack frames traced per allocation (1); more tells where a growing site is "
        "called from, at more cost",
    )
    parser.add_argument("--plot", type=Path, default=None, help="also write the curve here (PNG)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="folder for logs and figures (default .state/soak/<time>)",
    )
    parser.add_argument(
        "--keep-state", action="store_true", help="keep the cluster's data and keys afterwards"
    )
    args = parser.parse_args(argv)
    try:
        settings = SoakSettings(
            taskruns=args.taskruns,
            concurrency=args.concurrency,
            sample_every=args.sample_every,
            warmup=args.warmup,
            restart=not args.no_restart,
            schedule=not args.no_schedule,
            heap_frames=args.heap_frames,
            plot=args.plot,
        )
    except ValueError as exc:
        parser.error(str(exc))
    state_dir = args.state_dir or REPO_ROOT / ".state" / "soak" / time.strftime("%Y%m%d-%H%M%S")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        figures = run_soak(settings, state_dir, log=_log, keep_state=args.keep_state)
    except KeyboardInterrupt:
        _log("interrupted; the stack was torn down")
        return 130
    except SoakError as exc:
        _log(f"soak failed: {exc}")
        return 2
    ok = (
        figures["taskruns"] == settings.taskruns
        and figures["stuck_count"] == 0
        and not figures["teardown_leftovers"]
        and bool(figures["final_remembered"])
        and not any(figures["final_remembered"].values())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
