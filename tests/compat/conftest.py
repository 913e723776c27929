"""The compatibility tier: the same admission tests and one end-to-end run, on older
Kubernetes versions (tests/compat/versions.py says which and why).

`control_plane` is overridden here, per version (package scope, one control plane at a
time), together with the session fixtures built on it; every other fixture
(`namespace`, `taskruns`, `operator_factory`, ...) is the suite's own and so talks to the
version under test. Each version's binaries come from scripts/build-control-plane with
K8S_VERSION set (built once and cached; CI builds them before the tests).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from tools.localcluster import Binaries, LocalCluster, log_tail
from tools.localcluster.binaries import BUILD_SCRIPT

from tests.compat.versions import COMPAT_VERSIONS
from tests.support.cluster_fixtures import LOG_TAIL_LINES, START_TIMEOUT, ControlPlane

# The API server log of each version's control plane, for the reports of failed tests.
_LOGS: dict[str, Path] = {}


def build(version: str) -> Binaries:
    """etcd, kube-apiserver and kubectl of `version`, built or from the cache."""
    # The build's progress stays on our stderr: a cold build takes many minutes.
    result = subprocess.run(
        [str(BUILD_SCRIPT)],
        env={**os.environ, "K8S_VERSION": version},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"K8S_VERSION={version} {BUILD_SCRIPT} failed ({result.returncode})")
    binaries = Binaries(Path(lines[-1]))
    if binaries.missing():
        raise RuntimeError(f"{binaries.folder} lacks {', '.join(binaries.missing())}")
    return binaries


@pytest.fixture(scope="package", params=COMPAT_VERSIONS)
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    version: str = request.param
    cluster = LocalCluster(tmp_path_factory.mktemp(f"control-plane-{version}"))
    # up() applies the namespace, RBAC and CRDs and waits for the CRDs to be Established:
    # a CRD this version refuses fails here.
    info = cluster.up(binaries=build(version), timeout=START_TIMEOUT, tied_to_caller=True)
    _LOGS[version] = info.apiserver_log
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


@pytest.fixture(scope="package")
def k8s_admin(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.admin_kubeconfig)
    )
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="package")
def operator_kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.operator_kubeconfig


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    callspec = getattr(item, "callspec", None)
    version = callspec.params.get("control_plane") if callspec is not None else None
    if report.failed and version in _LOGS:
        report.sections.append(
            (
                f"kube-apiserver {version} log, last {LOG_TAIL_LINES} lines",
                log_tail(_LOGS[version], LOG_TAIL_LINES),
            )
        )
    return report
