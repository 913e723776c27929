"""The clients and the kubectl plugin stand on their own: importing them brings none of the
controller, its metrics, kopf or prometheus_client. Each import runs in a fresh interpreter,
since this one has long since imported everything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The controller and what only it needs.
CONTROLLER = (
    "kopf",
    "prometheus_client",
    "ona_taskrun.observability.metrics",
    "ona_taskrun.controller.connections",
    "ona_taskrun.controller.reconciler",
    "ona_taskrun.app",
    "ona_taskrun.controller.tracker",
    "ona_taskrun.controller.logtails",
)


def imported_by(module: str) -> set[str]:
    """Every module in sys.modules after importing `module` into a new interpreter."""
    code = (
        "import importlib, json, sys; "
        f"importlib.import_module({module!r}); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "module", ["ona_taskrun.clients.ona", "ona_taskrun.clients.kube", "ona_taskrun.cli.main"]
)
def test_a_client_imports_nothing_of_the_controller(module: str) -> None:
    loaded = imported_by(module)
    assert module in loaded
    assert sorted(loaded & set(CONTROLLER)) == []


def test_the_plugin_imports_the_ona_client_up_front() -> None:
    # No import inside a function: what a command needs is loaded when the plugin starts.
    assert "ona_taskrun.clients.ona.client" in imported_by("ona_taskrun.cli.main")
