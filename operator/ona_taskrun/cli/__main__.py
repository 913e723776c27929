"""`python -m ona_taskrun.cli`: the same as the `kubectl-ona` console script."""

from ona_taskrun.cli.main import console

console()
