"""`kubectl ona`, the kubectl plugin for TaskRuns (console script `kubectl-ona`)."""
