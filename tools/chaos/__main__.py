"""Command line of the chaos run: `scripts/chaos [--taskruns N] [--kills K] ...`.

Exit code 0 only when no TaskRun started twice, none was lost, every finished one carries
its execution's final status, nothing was done with the other connection's token, and all
settled within the budget; 1 otherwise; 2 when the run itself could not be carried out.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tools.chaos.plan import Settings
from tools.chaos.run import ChaosError, run_chaos
from tools.localcluster.binaries import REPO_ROOT


def _log(message: str) -> None:
    print(message, flush=True)


def _interrupt(signum: int, _: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C, so the stack is torn down either way.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaos",
        description="Kill the operator, break the Ona API and restart the API server while "
        "TaskRuns run; then count duplicate starts and lost runs from the simulator's records.",
    )
    parser.add_argument("--taskruns", type=int, default=200, help="TaskRuns to create (200)")
    parser.add_argument("--kills", type=int, default=5, help="operator SIGKILLs (5)")
    parser.add_argument(
        "--duration-budget",
        type=float,
        default=1500.0,
        help="seconds for the whole run, settling included (1500)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the plan and the faults")
    parser.add_argument(
        "--fault-window", type=float, default=10.0, help="seconds each fault kind is on (10)"
    )
    parser.add_argument(
        "--outage", type=float, default=45.0, help="seconds of the full outage (45)"
    )
    parser.add_argument(
        "--no-schedule",
        action="store_true",
        help="leave out the every-minute TaskRunSchedule and the check of its slots",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="(.local/chaos/<time>)")
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep etcd data, certificates and kubeconfigs (logs and figures are always kept)",
    )
    args = parser.parse_args(argv)
    if args.taskruns < 10 or args.kills < 0 or args.fault_window <= 0 or args.outage <= 0:
        parser.error("need --taskruns >= 10, --kills >= 0 and positive windows")
    state_dir = args.state_dir or (
        REPO_ROOT / ".local" / "chaos" / time.strftime("run-%Y%m%d-%H%M%S")
    )
    settings = Settings(
        taskruns=args.taskruns,
        kills=args.kills,
        seed=args.seed,
        duration_budget=args.duration_budget,
        fault_window=args.fault_window,
        outage=args.outage,
        schedule=not args.no_schedule,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    _log(f"chaos: state in {state_dir}")
    try:
        figures = run_chaos(settings, state_dir.resolve(), log=_log, keep_state=args.keep_state)
    except ChaosError as exc:
        _log(f"chaos: could not carry out the run: {exc}")
        return 2
    except KeyboardInterrupt:
        _log("chaos: interrupted; everything was stopped")
        return 130
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
