"""`scripts/local-cluster` end to end, as a developer uses it: up, kubectl, status, down,
in a state folder of its own, leaving no process and no listening port behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tools.localcluster.binaries import REPO_ROOT
from tools.localcluster.processes import ProcessRef, is_running, port_is_free

SCRIPT = REPO_ROOT / "scripts" / "local-cluster"


def _run(state_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONA_LOCAL_CLUSTER_DIR": str(state_dir)}
    env.pop("KUBECONFIG", None)
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_down_without_a_cluster_is_harmless(tmp_path: Path) -> None:
    result = _run(tmp_path / "cluster", "down")
    assert result.returncode == 0, result.stderr
    assert "nothing to stop" in result.stderr
    status = _run(tmp_path / "cluster", "status")
    assert status.returncode == 3
    assert "not started" in status.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_up_kubectl_down_leaves_nothing_behind(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        pytest.skip("starts a local control plane, which USE_EXISTING_CLUSTER rules out")
    state_dir = tmp_path / "cluster"
    started = time.monotonic()
    up = _run(state_dir, "up")
    elapsed = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stderr
        admin_kubeconfig = state_dir / "admin.kubeconfig"
        assert up.stdout.strip().splitlines()[-1] == f"export KUBECONFIG={admin_kubeconfig}"
        assert str(state_dir / "operator.kubeconfig") in up.stderr
        # Not a timing assertion (scripts/local-cluster bench measures that): recorded so a
        # slow start shows in the report.
        record_property("up_seconds", round(elapsed, 2))
        print(f"scripts/local-cluster up took {elapsed:.2f} s", file=sys.stderr)

        namespaces = _run(state_dir, "kubectl", "get", "namespaces", "-o", "name")
        assert namespaces.returncode == 0, namespaces.stderr
        assert {"namespace/default", "namespace/ona-system"} <= set(namespaces.stdout.split())

        status = _run(state_dir, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "ready" in status.stdout

        again = _run(state_dir, "up")
        assert again.returncode == 1
        assert "still running" in again.stderr
    finally:
        state = json.loads((state_dir / "state.json").read_text())
        down = _run(state_dir, "down")

    assert down.returncode == 0, down.stderr
    for name in ("etcd", "kube_apiserver"):
        assert not is_running(ProcessRef.from_json(state[name])), f"{name} still runs"
    for key in ("etcd_client_port", "etcd_peer_port", "apiserver_port"):
        assert port_is_free(state[key]), f"{key} {state[key]} still has a listener"
    after = _run(state_dir, "status")
    assert after.returncode == 3
    assert "stopped" in after.stdout
