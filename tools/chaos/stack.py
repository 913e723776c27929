"""The whole stack a chaos run or a benchmark needs, started in its own state folder and torn
down after: a fresh local control plane, the Ona API simulator and the operator as processes,
and a namespace of its own.

Every child is tied to this process (PR_SET_PDEATHSIG), so even a harness killed hard leaves
no process or port behind; `close()` stops them properly on the ordinary and Ctrl-C paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kubernetes import client, config

from tools.localcluster import ClusterInfo, LocalCluster
from tools.localcluster.processes import LOOPBACK, port_is_free

GROUP, VERSION, CONNECTION_PLURAL = "automation.ona.com", "v1alpha1", "onaconnections"
CONNECTION_SECRET_KEY = "token"
LISTENING_PREFIX = "ona-simulator listening on "
FAST_TIMINGS = {
    "ONA_POLL_INTERVAL": "1",
    "ONA_REQUEST_TIMEOUT": "2",
    "ONA_START_SETTLE": "4",
    # Retrying TaskRuns wait 1 s, 2 s, 4 s between attempts instead of 10 s, 20 s, 40 s.
    "RETRY_BACKOFF_BASE_SECONDS": "1",
    "ENVIRONMENT_POLL_SECONDS": "1",
    "ENVIRONMENT_KEEPALIVE_SECONDS": "5",
    # A stop recorded by an operator that died before making it is asked again after 5 s.
    "ONA_STOP_RESEND_SECONDS": "5",
}

Log = Callable[[str], None]


class StackError(RuntimeError):
    """Part of the stack could not be started."""


def _die_with_parent() -> None:
    # SIGKILL when the harness dies: a chaos run aborted hard must not leave an operator
    # starting tasks against a simulator nobody watches.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


REPO_ROOT = Path(__file__).resolve().parents[2]


def _venv_bin(name: str) -> Path:
    return Path(sys.executable).parent / name


@dataclass
class OperatorRun:
    """One incarnation of the operator process."""

    index: int
    process: subprocess.Popen[bytes]
    log_path: Path
    crash_point: str
    started_at: float
    ended_at: float | None = None
    end: str = ""  # "sigkill", "crash-point", "stopped", "exited N"

    @property
    def running(self) -> bool:
        return self.process.poll() is None


@dataclass
class Stack:
    state_dir: Path
    log: Log
    seed: int = 0
    # The operator's timing variables; other harnesses (the benchmark) run it with its
    # real defaults instead of the chaos run's fast ones.
    timings: Mapping[str, str] = field(default_factory=lambda: dict(FAST_TIMINGS))
    namespace_prefix: str = "chaos"
    cluster: LocalCluster | None = None
    info: ClusterInfo | None = None
    namespace: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    simulator: subprocess.Popen[str] | None = None
    base_url: str = ""
    operators: list[OperatorRun] = field(default_factory=list)
    api: client.ApiClient | None = None
    _sim_out: IO[str] | None = None

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_simulator"

    @property
    def operator(self) -> OperatorRun | None:
        return self.operators[-1] if self.operators else None

    # ---------------------------------------------------------------- start

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.cluster = LocalCluster(self.state_dir / "cluster")
        self.info = self.cluster.up(tied_to_caller=True, progress=lambda m: None)
        self.log(f"control plane ready at {self.info.server} in {time.monotonic() - started:.1f} s")
        self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.info.admin_kubeconfig)
        )
        self.namespace = f"{self.namespace_prefix}-{self.seed}-{secrets.token_hex(3)}"
        client.CoreV1Api(self.api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )
        self._start_simulator()
        self.log(f"simulator at {self.base_url}; namespace {self.namespace}")

    def _start_simulator(self) -> None:
        stderr = (self.state_dir / "simulator.log").open("ab")
        self.simulator = subprocess.Popen(
            [
                str(_venv_bin("ona-simulator")),
                "--host",
                LOOPBACK,
                "--port",
                "0",
                f"--token={self.token}",  # a random token may begin with "-"
                "--seed",
                str(self.seed),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )
        stderr.close()
        assert self.simulator.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=_pump, args=(self.simulator.stdout, lines), daemon=True, name="sim-stdout"
        ).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.simulator.poll() is not None:
                    break
                continue
            if line.startswith(LISTENING_PREFIX):
                self.base_url = line[len(LISTENING_PREFIX) :].strip()
                return
        raise StackError(f"the simulator did not start; see {self.state_dir / 'simulator.log'}")

    def start_operator(self, *, crash_point: str = "") -> OperatorRun:
        assert self.info is not None
        index = len(self.operators)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ONA_", "KUBE"))},
            **self.timings,
            "KUBECONFIG": str(self.info.operator_kubeconfig),
            "ONA_BASE_URL": self.base_url,
            "ONA_API_TOKEN": self.token,
            "WATCH_NAMESPACES": self.namespace,
            "DEFAULT_CONNECTION_NAMESPACE_SELECTOR": "*",
            "LOG_LEVEL": "INFO",
            # Any free port: a restarted operator may overlap the one it replaces.
            "METRICS_PORT": "0",
        }
        command = [str(_venv_bin("taskrun-operator"))]
        if crash_point:
            # The crash harness: the operator itself has no crash setting.
            env["ONA_TASKRUN_CRASH_POINT"] = crash_point
            env["PYTHONPATH"] = str(REPO_ROOT)
            command = [str(_venv_bin("python")), "-m", "tools.crashing_operator"]
        log_path = self.state_dir / f"operator-{index:02d}.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        run = OperatorRun(index, process, log_path, crash_point, time.monotonic())
        self.operators.append(run)
        return run

    def kill_operator(self) -> OperatorRun | None:
        """SIGKILL the running operator: no chance to finish a write or a call."""
        run = self.operator
        if run is None or not run.running:
            return None
        run.process.send_signal(signal.SIGKILL)
        run.process.wait(timeout=10)
        run.ended_at = time.monotonic()
        run.end = "sigkill"
        return run

    def note_exit(self, run: OperatorRun) -> None:
        code = run.process.poll()
        if code is None or run.end:
            return
        run.ended_at = time.monotonic()
        if code == -signal.SIGKILL and run.crash_point:
            run.end = "crash-point"
        else:
            run.end = f"exited {code}"

    # ---------------------------------------------------------------- stop

    def close(self) -> None:
        """Stop everything this stack started; safe to call more than once."""
        for run in self.operators:
            if run.running:
                run.process.send_signal(signal.SIGTERM)
                try:
                    run.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    run.process.kill()
                    run.process.wait(timeout=10)
                run.ended_at = time.monotonic()
                run.end = run.end or "stopped"
        if self.simulator is not None and self.simulator.poll() is None:
            self.simulator.send_signal(signal.SIGTERM)
            try:
                self.simulator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.simulator.kill()
                self.simulator.wait(timeout=10)
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.close()  # type: ignore[no-untyped-call]
            self.api = None
        if self.cluster is not None:
            self.cluster.down(quiet=True)

    def leftovers(self) -> list[str]:
        """Processes or ports still alive after close(); empty when the teardown was clean."""
        left: list[str] = []
        for run in self.operators:
            if run.running:
                left.append(f"operator pid {run.process.pid}")
        if self.simulator is not None and self.simulator.poll() is None:
            left.append(f"simulator pid {self.simulator.pid}")
        if self.base_url:
            port = int(self.base_url.rsplit(":", 1)[1])
            if not port_is_free(port):
                left.append(f"simulator port {port}")
        if self.info is not None:
            left.extend(f"control-plane port {p}" for p in self.info.ports if not port_is_free(p))
        return left

    # ---------------------------------------------------------------- kube

    def custom(self) -> client.CustomObjectsApi:
        assert self.api is not None
        return client.CustomObjectsApi(self.api)

    def add_connection(
        self,
        name: str,
        token: str,
        *,
        environment_ids: Sequence[str] = (),
        project_ids: Sequence[str] = (),
        max_concurrent_runs: int | None = None,
    ) -> None:
        """An OnaConnection `name` in the stack's namespace, pointing at the simulator, with
        `token` in a Secret of the same name (key `token`)."""
        assert self.api is not None
        client.CoreV1Api(self.api).create_namespaced_secret(
            self.namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=name, namespace=self.namespace),
                string_data={CONNECTION_SECRET_KEY: token},
            ),
        )
        spec: dict[str, Any] = {
            "baseUrl": self.base_url,
            "tokenSecretRef": {"name": name, "key": CONNECTION_SECRET_KEY},
        }
        if environment_ids:
            spec["policy"] = {"environmentIds": list(environment_ids)}
        if project_ids:
            spec.setdefault("policy", {})["projectIds"] = list(project_ids)
        if max_concurrent_runs is not None:
            spec["limits"] = {"maxConcurrentRuns": max_concurrent_runs}
        self.custom().create_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            CONNECTION_PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "OnaConnection",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": spec,
            },
        )

    def wait_connection_ready(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the operator says the connection's token authenticates (Ready=True);
        returns its status."""
        api = self.custom()
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while True:
            body: Any = api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, CONNECTION_PLURAL, name
            )
            status = dict(body.get("status") or {})
            ready = next(
                (c for c in status.get("conditions") or () if c.get("type") == "Ready"), None
            )
            if ready is not None and ready.get("status") == "True":
                return status
            if time.monotonic() >= deadline:
                raise StackError(
                    f"OnaConnection {name} is not Ready after {timeout:.0f} s: "
                    f"{ready or 'no Ready condition'}"
                )
            time.sleep(0.2)


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    # Keep reading after the first line, so the child never blocks on a full pipe.
    for line in stream:
        lines.put(line)
