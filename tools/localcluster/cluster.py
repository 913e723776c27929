"""One local control plane (etcd and kube-apiserver on loopback) kept in a state folder.

`LocalCluster(state_dir).up()` creates fresh certificates, kubeconfigs and etcd data, starts
both processes, waits until the API server is ready and the `default` namespace exists,
then applies the project's namespace, RBAC and CRDs. `down()` stops both processes, waits
for them to exit and checks their ports are free. The processes are detached, so a cluster
started by one command is stopped by another through `state.json`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tools.localcluster import processes
from tools.localcluster.binaries import REPO_ROOT, Binaries, resolve_binaries
from tools.localcluster.kubeconfig import write_kubeconfig
from tools.localcluster.pki import Identity, Pki, create_pki, issue_client_certificate
from tools.localcluster.processes import LOOPBACK, ProcessRef

STATE_DIR_ENV = "ONA_LOCAL_CLUSTER_DIR"
DEFAULT_STATE_DIR = REPO_ROOT / ".local" / "cluster"

ADMIN = Identity(user="ona-admin", groups=("system:masters",))
OPERATOR_NAMESPACE = "ona-system"
OPERATOR_SERVICE_ACCOUNT = "ona-taskrun-operator"
# Exactly what the API server would give a token of that ServiceAccount, so RBAC bound to
# the ServiceAccount (manifests/rbac) applies to this certificate unchanged.
OPERATOR = Identity(
    user=f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}",
    groups=("system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}"),
)

_POLL_INTERVAL = 0.1
_PORT_ATTEMPTS = 3

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class ClusterError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


@dataclass(frozen=True)
class ClusterInfo:
    """A running control plane as recorded in state.json."""

    state_dir: Path
    server: str
    binaries: Binaries
    etcd_client_port: int
    etcd_peer_port: int
    apiserver_port: int
    etcd: ProcessRef
    kube_apiserver: ProcessRef
    # The API server's exact command line, so a restart reuses the same flags, port,
    # certificates and etcd. Empty in state written before restarts existed.
    apiserver_argv: tuple[str, ...] = ()

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.state_dir / "operator.kubeconfig"

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def apiserver_log(self) -> Path:
        return self.state_dir / "logs" / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.state_dir / "logs" / "etcd.log"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.etcd_client_port, self.etcd_peer_port, self.apiserver_port)

    def to_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "binaries": str(self.binaries.folder),
            "etcd_client_port": self.etcd_client_port,
            "etcd_peer_port": self.etcd_peer_port,
            "apiserver_port": self.apiserver_port,
            "etcd": self.etcd.to_json(),
            "kube_apiserver": self.kube_apiserver.to_json(),
            "apiserver_argv": list(self.apiserver_argv),
        }

    @classmethod
    def from_json(cls, state_dir: Path, data: dict[str, object]) -> ClusterInfo:
        def port(key: str) -> int:
            value = data[key]
            if not isinstance(value, int):
                raise ClusterError(f"{state_dir / 'state.json'}: {key} is not a port")
            return value

        def ref(key: str) -> ProcessRef:
            value = data[key]
            if not isinstance(value, dict):
                raise ClusterError(f"{state_dir / 'state.json'}: {key} is not a process")
            return ProcessRef.from_json(value)

        argv = data.get("apiserver_argv", [])
        if not isinstance(argv, list):
            raise ClusterError(f"{state_dir / 'state.json'}: apiserver_argv is not a list")
        return cls(
            state_dir=state_dir,
            server=str(data["server"]),
            binaries=Binaries(Path(str(data["binaries"]))),
            etcd_client_port=port("etcd_client_port"),
            etcd_peer_port=port("etcd_peer_port"),
            apiserver_port=port("apiserver_port"),
            etcd=ref("etcd"),
            kube_apiserver=ref("kube_apiserver"),
            apiserver_argv=tuple(str(arg) for arg in argv),
        )


@dataclass(frozen=True)
class ApiserverRestart:
    """How a restart of kube-apiserver went: the new process and the time each part took."""

    info: ClusterInfo
    stop_seconds: float
    ready_seconds: float

    @property
    def total_seconds(self) -> float:
        return self.stop_seconds + self.ready_seconds


@dataclass
class Status:
    info: ClusterInfo | None
    running: dict[str, bool] = field(default_factory=dict)
    ready: bool = False

    @property
    def any_running(self) -> bool:
        return any(self.running.values())


def default_state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else DEFAULT_STATE_DIR


def tls_context(state_dir: Path, client: str | None) -> ssl.SSLContext:
    """A TLS context trusting only the cluster's CA, presenting `client`'s certificate
    (`"admin"`, `"operator"`) or none (an anonymous caller)."""
    context = ssl.create_default_context(cafile=str(state_dir / "pki" / "ca.crt"))
    if client is not None:
        pki_dir = state_dir / "pki"
        context.load_cert_chain(pki_dir / f"{client}.crt", pki_dir / f"{client}.key")
    return context


def https_get(
    port: int, path: str, context: ssl.SSLContext, *, timeout: float = 5.0
) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class LocalCluster:
    """The control plane whose state lives in `state_dir`."""

    def __init__(self, state_dir: Path | None = None, *, repo_root: Path = REPO_ROOT) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.repo_root = repo_root
        # Our own children, when this object started them: lets stop() reap them.
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # Whether up() tied the processes to the caller; a restart does the same.
        self._tied_to_caller = False

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def load(self) -> ClusterInfo | None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        return ClusterInfo.from_json(self.state_dir, data)

    def status(self) -> Status:
        info = self.load()
        if info is None:
            return Status(info=None)
        running = {
            "etcd": processes.is_running(info.etcd),
            "kube-apiserver": processes.is_running(info.kube_apiserver),
        }
        ready = False
        if all(running.values()):
            with contextlib.suppress(OSError):
                code, _ = https_get(
                    info.apiserver_port, "/readyz", tls_context(self.state_dir, "admin")
                )
                ready = code == 200
        return Status(info=info, running=running, ready=ready)

    # --- up -------------------------------------------------------------------------------

    def up(
        self,
        *,
        binaries: Binaries | None = None,
        timeout: float = 60.0,
        apply_manifests: bool = True,
        tied_to_caller: bool = False,
        progress: Progress = _quiet,
    ) -> ClusterInfo:
        """Start a fresh control plane; return once it is ready and the manifests applied.

        `tied_to_caller` makes the processes exit when the calling process dies (a test run
        killed hard leaves nothing behind); without it they outlive the caller, as `up` needs.
        """
        current = self.status()
        if current.any_running:
            raise ClusterError(
                f"a control plane from {self.state_dir} is still running; run `down` first"
            )
        binaries = binaries or resolve_binaries()
        started = time.monotonic()
        self._tied_to_caller = tied_to_caller
        self._prepare_state_dir()
        progress(f"state in {self.state_dir}, binaries from {binaries.folder}")
        pki = create_pki(self.state_dir / "pki")
        admin = issue_client_certificate(pki, ADMIN, "admin")
        operator = issue_client_certificate(pki, OPERATOR, "operator")

        for attempt in range(1, _PORT_ATTEMPTS + 1):
            info = self._start_processes(binaries, pki, tied_to_caller)
            write_kubeconfig(
                info.admin_kubeconfig,
                server=info.server,
                ca_cert=pki.ca_cert,
                credentials=admin,
                user=ADMIN.user,
            )
            write_kubeconfig(
                info.operator_kubeconfig,
                server=info.server,
                ca_cert=pki.ca_cert,
                credentials=operator,
                user=OPERATOR_SERVICE_ACCOUNT,
            )
            try:
                self._wait_ready(info, started + timeout, progress)
                break
            except _PortTaken:
                self.down(quiet=True)
                if attempt == _PORT_ATTEMPTS:
                    raise ClusterError("no free loopback ports after several attempts") from None
                progress("a chosen port was taken meanwhile; retrying with new ports")
            except BaseException:
                self.down(quiet=True)
                raise
        progress(f"API server ready at {info.server} after {time.monotonic() - started:.1f} s")
        if apply_manifests:
            try:
                apply_project_manifests(
                    info.binaries.kubectl,
                    info.admin_kubeconfig,
                    repo_root=self.repo_root,
                    deadline=started + timeout,
                    progress=progress,
                )
            except BaseException:
                self.down(quiet=True)
                raise
        progress(f"control plane up in {time.monotonic() - started:.1f} s")
        return info

    def _prepare_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A fresh cluster each time: old etcd data and certificates would not match.
        for stale in ("pki", "etcd-data", "logs"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        for stale_file in ("state.json", "admin.kubeconfig", "operator.kubeconfig"):
            (self.state_dir / stale_file).unlink(missing_ok=True)
        (self.state_dir / "logs").mkdir()

    def _start_processes(self, binaries: Binaries, pki: Pki, tied_to_caller: bool) -> ClusterInfo:
        etcd_client, etcd_peer, apiserver = (processes.free_port() for _ in range(3))
        data_dir = self.state_dir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        client_url = f"http://{LOOPBACK}:{etcd_client}"
        peer_url = f"http://{LOOPBACK}:{etcd_peer}"
        server = f"https://{LOOPBACK}:{apiserver}"
        logs = self.state_dir / "logs"
        etcd_process, etcd_ref = processes.spawn(
            [
                str(binaries.etcd),
                "--name=ona-local",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=ona-local={peer_url}",
                # A throwaway store: durability buys nothing and fsync costs seconds.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs / "etcd.log",
            tied_to_caller=tied_to_caller,
        )
        self._children[etcd_ref.pid] = etcd_process
        # Started at once, without waiting for etcd: the API server retries its connection,
        # and the two start-ups overlap.
        apiserver_argv = [
            str(binaries.kube_apiserver),
            f"--etcd-servers={client_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={apiserver}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            # No controller-manager makes the tokens this plugin would wait for.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # Endpoints may not hold a loopback address; with nothing to route to,
            # the `kubernetes` Service needs none.
            "--endpoint-reconciler-type=none",
        ]
        try:
            apiserver_process, apiserver_ref = processes.spawn(
                apiserver_argv, logs / "kube-apiserver.log", tied_to_caller=tied_to_caller
            )
        except BaseException:
            processes.stop(etcd_ref, process=etcd_process, timeout=10)
            raise
        self._children[apiserver_ref.pid] = apiserver_process
        info = ClusterInfo(
            state_dir=self.state_dir,
            server=server,
            binaries=binaries,
            etcd_client_port=etcd_client,
            etcd_peer_port=etcd_peer,
            apiserver_port=apiserver,
            etcd=etcd_ref,
            kube_apiserver=apiserver_ref,
            apiserver_argv=tuple(apiserver_argv),
        )
        self.state_file.write_text(json.dumps(info.to_json(), indent=2) + "\n")
        return info

    def _wait_ready(self, info: ClusterInfo, deadline: float, progress: Progress) -> None:
        context = tls_context(self.state_dir, "admin")
        progress("waiting for /readyz and the default namespace")
        last = "no answer yet"
        while True:
            for name, ref, log in (
                ("etcd", info.etcd, info.etcd_log),
                ("kube-apiserver", info.kube_apiserver, info.apiserver_log),
            ):
                if not processes.is_running(ref):
                    tail = log_tail(log, 40)
                    if "address already in use" in tail:
                        raise _PortTaken
                    raise ClusterError(f"{name} exited during start-up; {log}:\n{tail}")
            try:
                code, body = https_get(info.apiserver_port, "/readyz", context, timeout=2)
                if code == 200:
                    code, body = https_get(
                        info.apiserver_port, "/api/v1/namespaces/default", context, timeout=2
                    )
                    if code == 200:
                        return
                    last = f"default namespace: HTTP {code}"
                else:
                    last = f"/readyz: HTTP {code} {body.decode(errors='replace')[-300:]}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"API server not ready in time (last: {last}); "
                    f"{info.apiserver_log}:\n{log_tail(info.apiserver_log, 40)}"
                )
            time.sleep(_POLL_INTERVAL)

    # --- restart ----------------------------------------------------------------------------

    def restart_apiserver(
        self,
        *,
        timeout: float = 60.0,
        stop_timeout: float = 15.0,
        tied_to_caller: bool | None = None,
        progress: Progress = _quiet,
    ) -> ApiserverRestart:
        """Stop kube-apiserver alone (SIGTERM, SIGKILL after `stop_timeout`) and start it
        again with the same command line: same port, certificates and etcd, whose data is
        kept. Returns once /readyz answers, so clients holding the old kubeconfigs carry on.

        `tied_to_caller` defaults to what `up()` on this object used (False otherwise): a
        restart from `scripts/local-cluster` must outlive the command.
        """
        info = self.load()
        if info is None:
            raise ClusterError(f"no control plane in {self.state_dir}; run `up` first")
        if not info.apiserver_argv:
            raise ClusterError(
                f"{self.state_file} does not record the API server's command line; "
                "start the control plane again (`down`, then `up`) to be able to restart it"
            )
        if not processes.is_running(info.etcd):
            raise ClusterError("etcd is not running: a restarted API server would have no data")
        tied = self._tied_to_caller if tied_to_caller is None else tied_to_caller
        started = time.monotonic()
        progress(f"stopping kube-apiserver (pid {info.kube_apiserver.pid})")
        processes.stop(
            info.kube_apiserver,
            process=self._children.pop(info.kube_apiserver.pid, None),
            timeout=stop_timeout,
        )
        # The port must be free again: the kubeconfigs name it, so another one will not do.
        free_by = time.monotonic() + stop_timeout
        while not processes.port_is_free(info.apiserver_port):
            if time.monotonic() >= free_by:
                raise ClusterError(f"port {info.apiserver_port} still in use after the stop")
            time.sleep(_POLL_INTERVAL)
        stopped = time.monotonic()
        with info.apiserver_log.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"\n--- kube-apiserver restarted by local-cluster at {stamp} ---\n".encode())
        process, ref = processes.spawn(
            list(info.apiserver_argv), info.apiserver_log, tied_to_caller=tied, append=True
        )
        self._children[ref.pid] = process
        restarted = replace(info, kube_apiserver=ref)
        self.state_file.write_text(json.dumps(restarted.to_json(), indent=2) + "\n")
        try:
            self._wait_ready(restarted, stopped + timeout, progress)
        except _PortTaken:
            raise ClusterError(
                f"port {info.apiserver_port} was taken by another process during the restart"
            ) from None
        ready = time.monotonic()
        progress(
            f"kube-apiserver restarted (pid {ref.pid}): stopped in {stopped - started:.2f} s, "
            f"ready {ready - stopped:.2f} s later"
        )
        return ApiserverRestart(
            info=restarted, stop_seconds=stopped - started, ready_seconds=ready - stopped
        )

    # --- down -----------------------------------------------------------------------------

    def down(self, *, timeout: float = 30.0, quiet: bool = False) -> ClusterInfo | None:
        """Stop the processes, wait for them to exit and for their ports to be free."""
        info = self.load()
        if info is None:
            return None
        # The API server first, so it does not spend its last seconds retrying etcd.
        for ref in (info.kube_apiserver, info.etcd):
            processes.stop(ref, process=self._children.pop(ref.pid, None), timeout=timeout)
        deadline = time.monotonic() + timeout
        busy = list(info.ports)
        while busy:
            busy = [port for port in busy if not processes.port_is_free(port)]
            if busy and time.monotonic() >= deadline:
                if quiet:
                    break
                raise ClusterError(f"ports still in use after stopping: {busy}")
            if busy:
                time.sleep(_POLL_INTERVAL)
        return info


class _PortTaken(Exception):
    """Another process bound one of the chosen ports between choosing and binding it."""


def apply_project_manifests(
    kubectl: Path,
    kubeconfig: Path,
    *,
    repo_root: Path = REPO_ROOT,
    deadline: float,
    progress: Progress = _quiet,
) -> None:
    """Apply manifests/namespace.yaml, manifests/rbac and crds/ as `kubeconfig`'s user, and
    wait until the CRDs are Established, so the operator identity holds exactly what the
    project's manifests grant."""

    def run(args: Sequence[str]) -> str:
        result = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in (result.stdout + result.stderr).splitlines():
            progress(f"  {line}")
        if result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode})")
        return result.stdout

    manifests = repo_root / "manifests"
    progress("applying manifests/namespace.yaml and manifests/rbac")
    run(["apply", "-f", str(manifests / "namespace.yaml")])
    run(["apply", "-k", str(manifests / "rbac")])
    crds = repo_root / "crds"
    if (crds / "kustomization.yaml").is_file():
        source = ["-k", str(crds)]
    else:
        source = list(_file_args(sorted(crds.glob("*.yaml"))))
    if not source:
        return
    progress("applying crds/")
    names = run(["apply", *source, "-o", "name"]).split()
    if names:
        remaining = max(1, int(deadline - time.monotonic()))
        progress("waiting for the CRDs to be Established")
        run(["wait", "--for=condition=Established", f"--timeout={remaining}s", *names])


def _file_args(files: Sequence[Path]) -> Iterator[str]:
    for path in files:
        yield "-f"
        yield str(path)


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - 256 * 1024))
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])
