"""A local Kubernetes control plane (etcd and kube-apiserver, no controllers) for the
operator's tests and the local demo; `python -m tools.localcluster` is its command line."""

from tools.localcluster.binaries import Binaries, BinariesError, resolve_binaries
from tools.localcluster.cluster import (
    ADMIN,
    OPERATOR,
    ApiserverRestart,
    ClusterError,
    ClusterInfo,
    LocalCluster,
    Status,
    default_state_dir,
    https_get,
    log_tail,
    tls_context,
)
from tools.localcluster.pki import Identity

__all__ = [
    "ADMIN",
    "OPERATOR",
    "ApiserverRestart",
    "Binaries",
    "BinariesError",
    "ClusterError",
    "ClusterInfo",
    "Identity",
    "LocalCluster",
    "Status",
    "default_state_dir",
    "https_get",
    "log_tail",
    "resolve_binaries",
    "tls_context",
]
