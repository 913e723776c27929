"""Chaos runs proving the operator's guarantees: one TaskRun starts at most one execution,
and no run is lost, while the operator is killed, the Ona API fails and the API server
restarts. `python -m tools.chaos` (or `scripts/chaos`) is its command line."""

from tools.chaos.plan import Plan, Settings, make_plan
from tools.chaos.run import ChaosError, run_chaos
from tools.chaos.verify import Planned, Verdict, verify

__all__ = [
    "ChaosError",
    "Plan",
    "Planned",
    "Settings",
    "Verdict",
    "make_plan",
    "run_chaos",
    "verify",
]
