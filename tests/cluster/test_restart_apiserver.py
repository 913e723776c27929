"""Restarting kube-apiserver alone, as the chaos run does: objects survive (etcd keeps its
data), the same port, CA and client certificates keep working, and the old process is gone.
Runs its own control plane, because a restart would disturb the session's other tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from tools.localcluster import ClusterError, ClusterInfo, LocalCluster
from tools.localcluster.binaries import REPO_ROOT
from tools.localcluster.processes import is_running

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = REPO_ROOT / "scripts" / "local-cluster"


def _api(kubeconfig: Path) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, ClusterInfo]]:
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        pytest.skip("restarts a local API server, which USE_EXISTING_CLUSTER rules out")
    cluster = LocalCluster(tmp_path / "cluster")
    info = cluster.up(tied_to_caller=True)
    try:
        yield cluster, info
    finally:
        cluster.down(quiet=True)


def _script(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONA_LOCAL_CLUSTER_DIR": str(state_dir)}
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_objects_and_old_kubeconfigs_survive_a_restart(
    own_cluster: tuple[LocalCluster, ClusterInfo],
    record_property: Callable[[str, object], None],
) -> None:
    cluster, info = own_cluster
    admin = _api(info.admin_kubeconfig)
    operator = _api(info.operator_kubeconfig)
    try:
        core = client.CoreV1Api(admin)
        core.create_namespaced_config_map(
            "default",
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="survivor"), data={"k": "v"}),
        )
        started = time.monotonic()
        restart = cluster.restart_apiserver()
        elapsed = time.monotonic() - started
        record_property("restart_seconds", round(elapsed, 2))
        print(
            f"restart: stop {restart.stop_seconds:.2f} s, ready {restart.ready_seconds:.2f} s",
            file=sys.stderr,
        )

        assert restart.info.server == info.server
        assert restart.info.apiserver_port == info.apiserver_port
        assert restart.info.kube_apiserver.pid != info.kube_apiserver.pid
        assert not is_running(info.kube_apiserver), "the old API server still runs"
        assert is_running(restart.info.kube_apiserver)
        assert restart.info.etcd == info.etcd, "etcd must not be restarted"
        # state.json names the new process, so `status` and `down` find it.
        loaded = cluster.load()
        assert loaded is not None
        assert loaded.kube_apiserver == restart.info.kube_apiserver
        assert cluster.status().ready

        # The same clients, built before the restart, carry on.
        kept = core.read_namespaced_config_map("survivor", "default")
        assert kept.data == {"k": "v"}
        taskruns = client.CustomObjectsApi(operator).list_cluster_custom_object(
            "automation.ona.com", "v1alpha1", "taskruns"
        )
        assert taskruns["items"] == []
        # ... and so does the operator identity's RBAC: it still may not read Secrets.
        with pytest.raises(client.ApiException) as refused:
            client.CoreV1Api(operator).list_namespaced_secret("default")
        assert refused.value.status == 403
    finally:
        admin.close()  # type: ignore[no-untyped-call]
        operator.close()  # type: ignore[no-untyped-call]


def test_script_restarts_the_api_server_and_reports_the_time(
    own_cluster: tuple[LocalCluster, ClusterInfo],
) -> None:
    cluster, info = own_cluster
    result = _script(cluster.state_dir, "restart-apiserver")
    assert result.returncode == 0, result.stderr
    assert f"same server {info.server}" in result.stderr
    assert "restarted in" in result.stderr
    status = _script(cluster.state_dir, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    loaded = cluster.load()
    assert loaded is not None
    assert loaded.kube_apiserver != info.kube_apiserver
    got = _script(
        cluster.state_dir,
        "kubectl",
        f"--kubeconfig={info.operator_kubeconfig}",
        "get",
        "taskruns",
        "-A",
    )
    assert got.returncode == 0, got.stderr
    # down stops the process the restart started, not the one recorded at `up`.
    cluster.down()
    assert not is_running(loaded.kube_apiserver)


def test_restart_without_a_cluster_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="run `up` first"):
        LocalCluster(tmp_path / "none").restart_apiserver()
    result = _script(tmp_path / "none", "restart-apiserver")
    assert result.returncode == 1
    assert "run `up` first" in result.stderr
