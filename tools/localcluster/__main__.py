"""Command line of the local control plane: up, down, restart-apiserver, status, kubectl, bin,
bench.

Progress goes to stderr; `up` prints `export KUBECONFIG=...` as its last stdout line, so
`eval "$(scripts/local-cluster up)"` points the shell at the new cluster.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tools.localcluster.binaries import BinariesError, resolve_binaries
from tools.localcluster.cluster import ClusterError, LocalCluster, default_state_dir


def _progress(message: str) -> None:
    print(f"local-cluster: {message}", file=sys.stderr, flush=True)


def _up(cluster: LocalCluster, args: argparse.Namespace) -> int:
    info = cluster.up(
        timeout=args.timeout, apply_manifests=not args.no_manifests, progress=_progress
    )
    _progress(f"operator identity: {info.operator_kubeconfig}")
    _progress(f"logs: {info.apiserver_log.parent}")
    print(f"export KUBECONFIG={shlex.quote(str(info.admin_kubeconfig))}", flush=True)
    return 0


def _down(cluster: LocalCluster, args: argparse.Namespace) -> int:
    info = cluster.down(timeout=args.timeout)
    if info is None:
        _progress(f"nothing to stop in {cluster.state_dir}")
    else:
        _progress(f"stopped; ports {', '.join(map(str, info.ports))} are free")
    return 0


def _restart_apiserver(cluster: LocalCluster, args: argparse.Namespace) -> int:
    restart = cluster.restart_apiserver(
        timeout=args.timeout, stop_timeout=args.stop_timeout, progress=_progress
    )
    _progress(
        f"restarted in {restart.total_seconds:.2f} s "
        f"(stop {restart.stop_seconds:.2f} s, ready {restart.ready_seconds:.2f} s); "
        f"same server {restart.info.server}"
    )
    return 0


def _status(cluster: LocalCluster, _: argparse.Namespace) -> int:
    status = cluster.status()
    if status.info is None:
        print(f"not started (no state in {cluster.state_dir})")
        return 3
    info = status.info
    for name, running in status.running.items():
        ref = info.etcd if name == "etcd" else info.kube_apiserver
        print(f"{name}: {'running' if running else 'stopped'} (pid {ref.pid})")
    print(f"server: {info.server} ({'ready' if status.ready else 'not ready'})")
    print(f"admin kubeconfig: {info.admin_kubeconfig}")
    print(f"operator kubeconfig: {info.operator_kubeconfig}")
    print(f"logs: {info.apiserver_log.parent}")
    # Exit codes in the spirit of LSB status: 0 running and ready, 3 not running.
    if status.ready:
        return 0
    return 1 if status.any_running else 3


def _kubectl(cluster: LocalCluster, args: argparse.Namespace) -> int:
    info = cluster.load()
    if info is None:
        _progress(f"no control plane in {cluster.state_dir}; run `up` first")
        return 1
    kubectl = str(info.binaries.kubectl)
    # KUBECONFIG rather than --kubeconfig: a --kubeconfig given by the caller still wins.
    os.environ["KUBECONFIG"] = str(info.admin_kubeconfig)
    os.execv(kubectl, [kubectl, *args.kubectl_args])


def _bin(_: LocalCluster, __: argparse.Namespace) -> int:
    print(resolve_binaries().folder)
    return 0


def _bench(_: LocalCluster, args: argparse.Namespace) -> int:
    binaries = resolve_binaries()
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ona-local-cluster-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            try:
                cluster.up(binaries=binaries, timeout=args.timeout)
                times.append(time.monotonic() - started)
            finally:
                cluster.down()
            _progress(f"run {run}: up and ready (manifests applied) in {times[-1]:.2f} s")
    print(
        f"warm start over {len(times)} runs: median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local-cluster", description="A local etcd and kube-apiserver for tests and demos."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"state folder (default: $ONA_LOCAL_CLUSTER_DIR or {default_state_dir()})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a fresh control plane and wait until ready")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to become ready")
    up.add_argument(
        "--no-manifests",
        action="store_true",
        help="skip applying manifests/namespace.yaml, manifests/rbac and crds/",
    )
    up.set_defaults(run=_up)
    down = commands.add_parser("down", help="stop the control plane and free its ports")
    down.add_argument("--timeout", type=float, default=30.0)
    down.set_defaults(run=_down)
    restart = commands.add_parser(
        "restart-apiserver",
        help="stop kube-apiserver alone and start it again (same port, certificates, etcd)",
    )
    restart.add_argument("--timeout", type=float, default=60.0, help="seconds to become ready")
    restart.add_argument(
        "--stop-timeout", type=float, default=15.0, help="seconds after SIGTERM before SIGKILL"
    )
    restart.set_defaults(run=_restart_apiserver)
    commands.add_parser("status", help="show whether it runs and is ready").set_defaults(
        run=_status
    )
    kubectl = commands.add_parser(
        "kubectl", help="run the matching kubectl as admin", add_help=False
    )
    kubectl.set_defaults(run=_kubectl)
    commands.add_parser("bin", help="print the folder holding the binaries").set_defaults(run=_bin)
    bench = commands.add_parser("bench", help="measure warm starts in a temporary state dir")
    bench.add_argument("--runs", type=int, default=5)
    bench.add_argument("--timeout", type=float, default=60.0)
    bench.set_defaults(run=_bench)

    # Everything after `kubectl` belongs to kubectl, options included (argparse would try to
    # read `--kubeconfig` and the like as its own).
    argv = sys.argv[1:] if argv is None else argv
    passthrough: list[str] = []
    if "kubectl" in argv:
        split = argv.index("kubectl") + 1
        argv, passthrough = argv[:split], argv[split:]
    args = parser.parse_args(argv)
    if args.command == "kubectl":
        args.kubectl_args = passthrough
    cluster = LocalCluster(args.state_dir)
    try:
        code: int = args.run(cluster, args)
    except (ClusterError, BinariesError) as exc:
        _progress(f"error: {exc}")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
