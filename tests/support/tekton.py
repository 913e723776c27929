"""The real Tekton Pipelines controller, run against the test control plane.

Opt-in: a test (or a directory's conftest.py) imports the `tekton` fixture from here. The
session fixture applies Tekton's CRDs, creates its system namespace and ConfigMaps, and runs
the `controller` binary that scripts/build-tekton builds from the Go module proxy and caches
(CI runs the script before the tests; a developer's first run here waits for the build).
`TEKTON_DIR` names a folder laid out as that script lays it out, to skip the build.

What runs, and what cannot: only the controller. Its PipelineRun reconciler creates and
cancels CustomRuns, which is all a custom task needs. Tekton's own Tasks need pods, and this
control plane has no kubelet or scheduler to run one, so a TaskRun of a Tekton Task would
stay pending for ever; no test here creates one. Tekton's webhook is not run either: see
`_without_conversion_webhook` for the CRDs, and the admission webhooks (defaulting and
validation) are simply absent, which the controller covers by defaulting and validating
each run itself when it reconciles it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from tools.localcluster import processes
from tools.localcluster.cluster import log_tail

from tests.support.cluster_fixtures import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-tekton"
SYSTEM_NAMESPACE = "tekton-pipelines"
START_TIMEOUT = 120.0
LOG_TAIL_LINES = 60
# The controller puts these images into the pods of Tekton's own Tasks. No pod runs here, so
# any reference does; the flags are required all the same.
_IMAGE_FLAGS = (
    "entrypoint-image",
    "nop-image",
    "sidecarlogresults-image",
    "workingdirinit-image",
    "shell-image",
    "shell-image-win",
)
T = TypeVar("T")


class TektonError(RuntimeError):
    """Tekton could not be built, installed or started, or its controller died."""


@dataclass
class Tekton:
    """The running Tekton controller and how to read its log."""

    folder: Path
    log_path: Path
    plane: ControlPlane
    process: subprocess.Popen[bytes]
    ref: processes.ProcessRef

    @property
    def version(self) -> str:
        return self.folder.name

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def assert_running(self) -> None:
        """Fail, with the end of its log, when the controller has exited."""
        self.process.poll()
        if not processes.is_running(self.ref):
            raise TektonError(
                f"the Tekton controller exited (code {self.process.returncode}); "
                f"{self.log_path}:\n{self.log_tail()}"
            )

    def wait_for(self, probe: Callable[[], T | None], *, what: str, timeout: float = 60.0) -> T:
        """Poll `probe` until it returns something truthy, failing at once if the controller
        dies and with its log tail at the deadline."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while True:
            self.assert_running()
            last = probe()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; last seen: {last!r}\n"
                    f"Tekton controller log, last {LOG_TAIL_LINES} lines ({self.log_path}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)


def tekton_folder() -> Path:
    """The folder holding the controller and the release's config (see scripts/build-tekton)."""
    override = os.environ.get("TEKTON_DIR")
    if override:
        folder = Path(override)
    else:
        # The build's progress goes to our stderr: a cold build takes minutes.
        result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise TektonError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
        folder = Path(lines[-1])
    controller = folder / "controller"
    if not (controller.is_file() and os.access(controller, os.X_OK)):
        raise TektonError(f"{controller} is not an executable Tekton controller")
    for sub in ("crds", "system"):
        if not any((folder / "config" / sub).glob("*.yaml")):
            raise TektonError(f"no YAML files in {folder / 'config' / sub}")
    return folder


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _without_conversion_webhook(crd: dict[str, Any]) -> dict[str, Any]:
    """Tekton's CRDs ask the API server to convert between their versions (v1beta1 and v1)
    by calling Tekton's webhook through the Service `tekton-pipelines-webhook`. Nothing
    serves that here: the webhook is not run, and this control plane could not route to it
    anyway (a Service needs endpoints, and with no kube-proxy and no pod network the API
    server has no address to send a conversion to). With strategy None the API server
    serves each object at the version it was written in and only rewrites `apiVersion`, so
    every object must be written and read at one version: v1 for PipelineRuns, Pipelines,
    Tasks and TaskRuns (what the controller reads), v1beta1 for CustomRuns (their only
    version)."""
    if crd.get("kind") == "CustomResourceDefinition":
        crd["spec"]["conversion"] = {"strategy": "None"}
    return crd


def _apply(plane: ControlPlane, documents: list[dict[str, Any]]) -> list[str]:
    # Server-side: the larger CRDs (taskruns, pipelineruns) would not fit in the
    # last-applied annotation a client-side apply writes (256 KiB at most).
    result = plane.kubectl_run(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=ona-taskrun-tests",
        "-o",
        "name",
        "-f",
        "-",
        input=yaml.safe_dump_all(documents),
    )
    return result.stdout.split()


def install(plane: ControlPlane, folder: Path) -> None:
    """Apply the release's CRDs (without conversion webhooks) and its system namespace and
    ConfigMaps, adjusted for a controller that runs outside the cluster."""
    crds = [
        _without_conversion_webhook(doc)
        for path in sorted((folder / "config" / "crds").glob("*.yaml"))
        for doc in _documents(path)
    ]
    names = _apply(plane, crds)
    plane.kubectl_run(
        "wait", "--for=condition=Established", f"--timeout={int(START_TIMEOUT)}s", *names
    )
    system = [
        doc
        for path in sorted((folder / "config" / "system").glob("*.yaml"))
        for doc in _documents(path)
    ]
    for doc in system:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "config-observability":
            # The release exports metrics through a Prometheus server on a fixed port
            # (9090); the tests read none, and a fixed port would clash with anything else
            # on the machine.
            doc["data"] = {"metrics-protocol": "none", "tracing-protocol": "none"}
    # The namespace first: the ConfigMaps go into it.
    system.sort(key=lambda doc: doc.get("kind") != "Namespace")
    _apply(plane, system)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel kills the controller when the test process exits, even
    # when pytest itself is killed and the fixture's teardown never runs.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _spawn(
    argv: list[str], env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[bytes], processes.ProcessRef]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_parent,
        )
    ticks = processes.start_ticks(process.pid)
    if ticks is None:
        process.wait()
        raise TektonError(
            f"the Tekton controller exited at once; {log_path}:\n{log_tail(log_path, 40)}"
        )
    return process, processes.ProcessRef(process.pid, ticks)


def start_controller(plane: ControlPlane, folder: Path, log_path: Path) -> Tekton:
    argv = [
        str(folder / "controller"),
        f"--kubeconfig={plane.admin_kubeconfig}",
        # One replica: no leader election, so no Leases to wait for and none left behind.
        "--disable-ha",
        *(f"--{flag}=example.invalid/ona-taskrun-tests/{flag}" for flag in _IMAGE_FLAGS),
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        # Where it reads its ConfigMaps (in a cluster, the pod's own namespace).
        "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
        "METRICS_DOMAIN": "tekton.dev/pipeline",
        # Its own probe server and knative's profiling server default to 8080 and 8008:
        # any free port instead, so several runs can share the machine. (knative's shared
        # main also serves health probes on 8080 and takes no setting for it; when 8080 is
        # taken that server alone fails, and the controller runs on without it, as it does
        # in a release's own pod, where the probe server above holds 8080 first.)
        "PROBES_PORT": str(processes.free_port()),
        "PROFILING_PORT": str(processes.free_port()),
    }
    process, ref = _spawn(argv, env, log_path)
    tekton = Tekton(folder=folder, log_path=log_path, plane=plane, process=process, ref=ref)
    # Started once every reconciler has synced its informers and started its workers.
    tekton.wait_for(
        lambda: _started(log_path.read_text(errors="replace")),
        what="the Tekton controller to start its reconcilers",
        timeout=START_TIMEOUT,
    )
    return tekton


def _started(log: str) -> bool:
    registered = re.search(r"Registering (\d+) controllers", log)
    if registered is None:
        return False
    return log.count('"message":"Started workers"') >= int(registered.group(1))


@pytest.fixture(scope="session")
def tekton(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tekton]:
    """Tekton's CRDs on the control plane and its controller running against it."""
    if control_plane.existing:
        pytest.skip(
            "the Tekton fixture installs and runs its own controller: only on the local "
            "control plane, not an existing cluster (USE_EXISTING_CLUSTER)"
        )
    folder = tekton_folder()
    install(control_plane, folder)
    log_path = tmp_path_factory.mktemp("tekton") / "controller.log"
    tekton = start_controller(control_plane, folder, log_path)
    try:
        yield tekton
    finally:
        processes.stop(tekton.ref, process=tekton.process, timeout=15)
