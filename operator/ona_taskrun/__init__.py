"""The Ona TaskRun operator: runs Ona automation tasks from Kubernetes TaskRun resources."""

__version__ = "0.1.0"
