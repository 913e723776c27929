"""Fixtures that run the local control plane (etcd and kube-apiserver) for tests.

One control plane per test session, in a temporary state folder, with the project's
namespace, RBAC and CRDs applied. `USE_EXISTING_CLUSTER=true` (with `KUBECONFIG`) uses that
cluster instead and starts nothing; the operator identity is then unavailable and tests
that need it are skipped. A failing test that used the control plane gets the API server's
log tail in its report.

A test that needs the API server to run otherwise (other flags, such as a low
`--max-requests-inflight`) starts a control plane of its own with
`dedicated_control_plane`, leaving the session's one as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from tools.localcluster import LocalCluster, log_tail, resolve_binaries
from tools.localcluster.cluster import apply_project_manifests

# Generous: two cores shared with other work; a start takes about 4 s when idle.
START_TIMEOUT = 90.0
LOG_TAIL_LINES = 80


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call that failed, with what it said (CalledProcessError's text omits it)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


@dataclass(frozen=True)
class ControlPlane:
    """The API server tests talk to, and how to reach it as admin or as the operator."""

    admin_kubeconfig: Path
    kubectl: Path
    server: str
    # None when using an existing cluster: there is no log of ours, and no way to hold the
    # operator's identity without its credentials.
    log_path: Path | None
    ca_cert: Path | None
    existing: bool
    _operator_kubeconfig: Path | None

    @property
    def operator_kubeconfig(self) -> Path:
        if self._operator_kubeconfig is None:
            pytest.skip("no operator identity on an existing cluster (USE_EXISTING_CLUSTER)")
        return self._operator_kubeconfig

    def kubectl_run(
        self,
        *args: str,
        kubeconfig: Path | str | None = None,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl, as admin unless `kubeconfig` says otherwise."""
        argv = [str(self.kubectl), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result


_CONTROL_PLANE = pytest.StashKey[ControlPlane]()


def _use_existing_cluster() -> bool:
    return os.environ.get("USE_EXISTING_CLUSTER", "").strip().lower() == "true"


def _existing_cluster() -> ControlPlane:
    kubeconfig_env = os.environ.get("KUBECONFIG", "")
    if not kubeconfig_env or os.pathsep in kubeconfig_env:
        raise pytest.UsageError("USE_EXISTING_CLUSTER=true needs KUBECONFIG set to one file")
    kubeconfig = Path(kubeconfig_env).expanduser().resolve()
    document = yaml.safe_load(kubeconfig.read_text())
    context = next(
        c["context"] for c in document["contexts"] if c["name"] == document["current-context"]
    )
    server = next(
        c["cluster"]["server"] for c in document["clusters"] if c["name"] == context["cluster"]
    )
    found = shutil.which("kubectl")
    kubectl = (
        Path(found)
        if found and not os.environ.get("KUBEBUILDER_ASSETS")
        else resolve_binaries().kubectl
    )
    return ControlPlane(
        admin_kubeconfig=kubeconfig,
        kubectl=kubectl,
        server=server,
        log_path=None,
        ca_cert=None,
        existing=True,
        _operator_kubeconfig=None,
    )


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    if _use_existing_cluster():
        plane = _existing_cluster()
        # The tests need the project's CRDs and RBAC; applying is idempotent.
        apply_project_manifests(
            plane.kubectl, plane.admin_kubeconfig, deadline=time.monotonic() + START_TIMEOUT
        )
        request.config.stash[_CONTROL_PLANE] = plane
        yield plane
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("control-plane"))
    info = cluster.up(timeout=START_TIMEOUT, tied_to_caller=True)
    plane = ControlPlane(
        admin_kubeconfig=info.admin_kubeconfig,
        kubectl=info.binaries.kubectl,
        server=info.server,
        log_path=info.apiserver_log,
        ca_cert=info.ca_cert,
        existing=False,
        _operator_kubeconfig=info.operator_kubeconfig,
    )
    request.config.stash[_CONTROL_PLANE] = plane
    try:
        yield plane
    finally:
        del request.config.stash[_CONTROL_PLANE]
        cluster.down()


@contextlib.contextmanager
def dedicated_control_plane(
    state_dir: Path, *, apiserver_flags: Sequence[str] = ()
) -> Iterator[ControlPlane]:
    """A control plane of its own in `state_dir`, with `apiserver_flags` added to the API
    server's command line (a later flag wins over an earlier one of the same name), and
    the project's manifests applied; stopped when the block ends. Not on an existing
    cluster (USE_EXISTING_CLUSTER): its flags are not ours to set.

    LocalCluster starts the API server with its usual flags; with `apiserver_flags` it
    is then restarted once with them (a restart runs the command line recorded in the
    state file, so the recorded one is extended first)."""
    if _use_existing_cluster():
        pytest.skip("a dedicated control plane is not started on an existing cluster")
    cluster = LocalCluster(state_dir)
    info = cluster.up(timeout=START_TIMEOUT, tied_to_caller=True)
    try:
        if apiserver_flags:
            flagged = replace(info, apiserver_argv=(*info.apiserver_argv, *apiserver_flags))
            cluster.state_file.write_text(json.dumps(flagged.to_json(), indent=2) + "\n")
            info = cluster.restart_apiserver(timeout=START_TIMEOUT).info
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


@pytest.fixture(scope="session")
def k8s_admin(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.admin_kubeconfig)
    )
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.operator_kubeconfig


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s_admin: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test. Without a controller-manager a deleted namespace stays
    Terminating for ever, so deletion is only requested, never awaited."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())
    name = f"t-{stem.strip('-')[:45].strip('-')}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(k8s_admin)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"ona-taskrun/test": "true"})
        )
    )
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "control_plane" in getattr(item, "fixturenames", ()):
        plane = item.config.stash.get(_CONTROL_PLANE, None)
        if plane is not None and plane.log_path is not None:
            report.sections.append(
                (
                    f"kube-apiserver log, last {LOG_TAIL_LINES} lines ({plane.log_path})",
                    log_tail(plane.log_path, LOG_TAIL_LINES),
                )
            )
    return report
