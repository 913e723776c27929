"""Kubeconfig files for the local control plane: self-contained (CA and client credentials
embedded), so a copy keeps working and TLS is always verified against the cluster's CA."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from tools.localcluster.pki import ClientCredentials

CLUSTER_NAME = "ona-local"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_kubeconfig(
    path: Path, *, server: str, ca_cert: Path, credentials: ClientCredentials, user: str
) -> None:
    context = f"{user}@{CLUSTER_NAME}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(credentials.cert_path),
                    "client-key-data": _b64(credentials.key_path),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
