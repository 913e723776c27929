"""Fixtures that run `taskrun-operator` as a real process under its own RBAC identity,
against the local control plane and the simulator, plus helpers to drive TaskRuns the
way a user does (kubectl and the official Kubernetes client).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client

from ona_simulator.control_client import SimulatorControl
from tests.support.cluster_fixtures import ControlPlane
from tests.support.scrape import try_scrape
from tests.support.simulator_fixtures import SimulatorHandle, SimulatorProcess

GROUP, VERSION, PLURAL = "automation.ona.com", "v1alpha1", "taskruns"
REPO_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT_ID = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"
# Short timings so the suite stays quick; the settle time must exceed the request timeout.
FAST_ENV = {
    "ONA_POLL_INTERVAL": "0.5",
    "ONA_REQUEST_TIMEOUT": "2",
    "ONA_START_SETTLE": "3",
    "ONA_RESYNC_SECONDS": "5",
    "LOG_LEVEL": "DEBUG",
    # Any free port: several operators may run at once.
    "METRICS_PORT": "0",
    # Each test's namespace is its own; the operator-level token serves it (a fresh
    # install serves none until told).
    "DEFAULT_CONNECTION_NAMESPACE_SELECTOR": "*",
}
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


@dataclass
class OperatorProcess:
    """One `taskrun-operator` process; its log is kept in a file for failure reports."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class OperatorFactory:
    control_plane: ControlPlane
    simulator: SimulatorProcess
    workdir: Path
    started: list[OperatorProcess] = field(default_factory=list)

    def __call__(
        self,
        namespace: str,
        *,
        token: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> OperatorProcess:
        exe = Path(sys.executable).parent / "taskrun-operator"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ONA_", "KUBE"))},
            **FAST_ENV,
            "KUBECONFIG": str(self.control_plane.operator_kubeconfig),
            "ONA_BASE_URL": self.simulator.base_url,
            "ONA_API_TOKEN": token if token is not None else self.simulator.token,
            "WATCH_NAMESPACES": namespace,
            **(extra_env or {}),
        }
        command = [str(exe)]
        if env.get("ONA_TASKRUN_CRASH_POINT"):
            # The crash harness: the operator itself has no crash setting.
            command = [sys.executable, "-m", "tools.crashing_operator"]
            paths = [str(REPO_ROOT), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        index = len(self.started)
        proc = OperatorProcess(command, env, self.workdir / f"operator-{index}.log")
        self.started.append(proc)
        return proc.start() if start else proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop()


_FACTORY = pytest.StashKey[OperatorFactory]()


def report_logs_of(item: pytest.Item, factory: OperatorFactory) -> None:
    """Attach the logs of `factory`'s operators to `item`'s report if it fails (for
    operators that a module-scoped fixture started)."""
    item.stash[_FACTORY] = factory


@pytest.fixture
def e2e_simulator(ona_simulator_process: SimulatorProcess) -> Iterator[SimulatorHandle]:
    """The session's simulator without a reset: operators of other tests may be using it."""
    with SimulatorControl(ona_simulator_process.control_url) as control:
        control.clear_faults()
        yield SimulatorHandle(
            base_url=ona_simulator_process.base_url,
            token=ona_simulator_process.token,
            readonly_token=ona_simulator_process.readonly_token,
            control=control,
        )
        control.clear_faults()


@pytest.fixture
def operator_factory(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    ona_simulator_process: SimulatorProcess,
    tmp_path: Path,
) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(control_plane, ona_simulator_process, tmp_path)
    request.node.stash[_FACTORY] = factory
    yield factory
    factory.stop_all()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def metrics_port(operator_factory: OperatorFactory, namespace: str) -> int:
    """An operator for this namespace serving /metrics on a port of its own; its port."""
    port = free_port()
    operator_factory(
        namespace, extra_env={"METRICS_PORT": str(port), "METRICS_BIND_ADDRESS": "127.0.0.1"}
    )
    wait_for(lambda: try_scrape(port), timeout=60, what=f"/metrics on port {port}")
    return port


@pytest.fixture
def operator(operator_factory: OperatorFactory, namespace: str) -> OperatorProcess:
    """An operator watching only this test's namespace, as its own RBAC identity."""
    return operator_factory(namespace)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    factory = item.stash.get(_FACTORY, None)
    if report.failed and factory is not None:
        for index, proc in enumerate(factory.started):
            tail = "\n".join(proc.log().splitlines()[-60:])
            report.sections.append((f"taskrun-operator #{index} log, last 60 lines", tail))
    return report


# --------------------------------------------------------------------- TaskRuns


@dataclass
class TaskRuns:
    """Create and read TaskRuns as a user would."""

    control_plane: ControlPlane
    api: client.CustomObjectsApi
    namespace: str

    def manifest(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskRun",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": dict(spec),
        }

    def apply(self, name: str, spec: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        doc = yaml.safe_dump(self.manifest(name, spec))
        return self.control_plane.kubectl_run("apply", "-f", "-", input=doc)

    def try_apply(self, name: str, spec: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        doc = yaml.safe_dump(self.manifest(name, spec))
        return self.control_plane.kubectl_run("apply", "-f", "-", input=doc, check=False)

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return obj

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for cond in self.status(name).get("conditions") or ():
            if cond.get("type") == type_:
                return dict(cond)
        return None

    def wait_phase(self, name: str, phase: str, timeout: float = 30.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") == phase else None

        return wait_for(probe, timeout=timeout, what=f"TaskRun {name} phase {phase}")

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cond = self.condition(name, type_)
            matches = cond is not None and cond.get("status") == status
            if matches and (reason is None or cond.get("reason") == reason):  # type: ignore[union-attr]
                return cond
            return None

        what = f"TaskRun {name} condition {type_}={status}" + (f" ({reason})" if reason else "")
        return wait_for(probe, timeout=timeout, what=what)

    def patch_spec(self, name: str, spec: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl_run(
            "-n",
            self.namespace,
            "patch",
            "taskrun",
            name,
            "--type=merge",
            "-p",
            json.dumps({"spec": dict(spec)}),
            check=False,
        )

    @contextlib.contextmanager
    def edited(self, name: str) -> Iterator[Callable[[], int]]:
        """Another writer: annotates the TaskRun again and again, as fast as the API server
        takes it, in a thread, until the block ends. The operator's writes, which carry
        the resourceVersion they read, then meet 409 Conflict. Yields how many edits
        have been made."""
        stop = threading.Event()
        made = 0

        def edit() -> None:
            nonlocal made
            while not stop.is_set():
                with contextlib.suppress(client.ApiException):
                    self.api.patch_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, name,
                        {"metadata": {"annotations": {"example.com/edit": str(made)}}},
                    )  # fmt: skip
                    made += 1

        editor = threading.Thread(target=edit, name=f"editing {name}", daemon=True)
        editor.start()
        try:
            yield lambda: made
        finally:
            stop.set()
            editor.join(timeout=10)

    def wait_events(self, name: str, *reasons: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until Events with all these reasons exist: they are posted after the status
        write that a test usually waits for."""

        def probe() -> list[dict[str, Any]] | None:
            events = self.events(name)
            return events if set(reasons) <= {e["reason"] for e in events} else None

        return wait_for(probe, timeout=timeout, what=f"events {reasons} on TaskRun {name}")

    def events(self, name: str) -> list[dict[str, Any]]:
        core = client.CoreV1Api(self.api.api_client)
        found = core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return [{"reason": e.reason, "type": e.type, "message": e.message} for e in found.items]


@pytest.fixture
def taskruns(control_plane: ControlPlane, k8s_admin: client.ApiClient, namespace: str) -> TaskRuns:
    return TaskRuns(control_plane, client.CustomObjectsApi(k8s_admin), namespace)


def inline_task(command: str, name: str = "demo-task") -> dict[str, Any]:
    return {"environmentId": ENVIRONMENT_ID, "name": name, "command": command}


def unique_reference() -> str:
    return f"ref-{uuid.uuid4().hex[:10]}"
