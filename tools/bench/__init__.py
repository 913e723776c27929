"""A benchmark of the operator at scale: N inline TaskRuns through a fresh stack, with the
creation rate, throughput, start and mirror latencies, Ona API calls per TaskRun, and the
operator's CPU and memory. `python -m tools.bench` (or `scripts/bench-operator`) is its
command line."""

from tools.bench.run import BenchError, BenchSettings, run_bench

__all__ = ["BenchError", "BenchSettings", "run_bench"]
