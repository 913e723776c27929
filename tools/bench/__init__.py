"""A benchmark of the operator at scale, side by side with a minimal kopf baseline: N
TaskRuns through a fresh stack per contender, with throughput, start and mirror latencies,
Kubernetes writes and Ona API calls per TaskRun, CPU and memory, and the API server's raw
write ceiling. `python -m tools.bench` (or `scripts/bench-operator`) is its command line;
`tools.bench.baseline` is the baseline (unsafe on purpose, not shipped)."""

from tools.bench.compare import run_comparison
from tools.bench.run import BenchError, BenchSettings, run_bench

__all__ = ["BenchError", "BenchSettings", "run_bench", "run_comparison"]
