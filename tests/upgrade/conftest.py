"""A control plane of its own for each upgrade test: these tests install older CRDs, so
they cannot share the session's, which has today's applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tools.localcluster import LocalCluster

from tests.support.cluster_fixtures import START_TIMEOUT, ControlPlane


@pytest.fixture
def bare_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver with nothing applied: no namespace, RBAC or CRD of ours."""
    cluster = LocalCluster(tmp_path / "control-plane")
    info = cluster.up(timeout=START_TIMEOUT, apply_manifests=False, tied_to_caller=True)
    try:
        yield ControlPlane(
            admin_kubeconfig=info.admin_kubeconfig,
            kubectl=info.binaries.kubectl,
            server=info.server,
            log_path=info.apiserver_log,
            ca_cert=info.ca_cert,
            existing=False,
            _operator_kubeconfig=info.operator_kubeconfig,
        )
    finally:
        cluster.down()
