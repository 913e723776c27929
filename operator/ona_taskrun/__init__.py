"""The Ona TaskRun operator: runs Ona automation tasks from Kubernetes TaskRun resources."""

from importlib import metadata

# The one place of the version is pyproject.toml's [project] version; the installed
# distribution's metadata carries it here (tests/release/test_version.py checks that the
# chart, the manifests and the changelog agree with it).
try:
    __version__ = metadata.version("ona-taskrun-operator")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
