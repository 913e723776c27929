"""The soak: TaskRuns churned through create -> final -> delete for a long time against one
operator, its memory sampled in waves, to show whether it holds on to anything per run.

`run_soak(settings, state_dir)` starts the chaos run's stack (a fresh control plane, the
simulator, the operator with its heap traced), then churns `settings.taskruns` TaskRuns
of a realistic mix through it and returns the figures (see docs/performance.md#soak).
"""

from tools.soak.figures import growth, summary
from tools.soak.run import MIX, SoakError, SoakSettings, run_soak

__all__ = ["MIX", "SoakError", "SoakSettings", "growth", "run_soak", "summary"]
