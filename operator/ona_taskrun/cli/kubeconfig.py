"""The user's kubeconfig, read as kubectl reads it, for `kubectl ona`.

Which file: `--kubeconfig`, else every file in `KUBECONFIG` (merged, the first to name a
cluster, user or context wins, as kubectl merges), else `~/.kube/config`. Which context:
`--context`, else `current-context`. From it: the server, its CA (`certificate-authority`
or `-data`, or `insecure-skip-tls-verify`), and the user's credentials: a bearer `token`
or `tokenFile`, a client certificate and key (files or `-data`), `username`/`password`,
or an `exec` credential plugin (its `ExecCredential` token or certificate). Relative paths
are relative to the kubeconfig file, as kubectl resolves them.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class KubeTarget:
    server: str
    context: str
    namespace: str
    verify: ssl.SSLContext | bool
    headers: Mapping[str, str] = field(default_factory=dict)


def _files(explicit: str | None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _named(items: Any, kind: str, path: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in items or ():
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            body = item.get(kind)
            if isinstance(body, Mapping):
                found[item["name"]] = {**body, "_dir": str(path.parent)}
    return found


def load(kubeconfig: str | None = None, context: str | None = None) -> KubeTarget:
    """The API server and credentials of a context; KubeconfigError when unusable."""
    clusters: dict[str, dict[str, Any]] = {}
    users: dict[str, dict[str, Any]] = {}
    contexts: dict[str, dict[str, Any]] = {}
    current = ""
    files = _files(kubeconfig)
    read_any = False
    for path in files:
        if not path.is_file():
            if kubeconfig:
                raise KubeconfigError(f"kubeconfig {path} does not exist")
            continue
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise KubeconfigError(f"cannot read kubeconfig {path}: {exc}") from exc
        if not isinstance(document, Mapping):
            raise KubeconfigError(f"kubeconfig {path} is not a mapping")
        read_any = True
        for target, kind, key in (
            (clusters, "cluster", "clusters"),
            (users, "user", "users"),
            (contexts, "context", "contexts"),
        ):
            for name, body in _named(document.get(key), kind, path).items():
                target.setdefault(name, body)
        current = current or str(document.get("current-context") or "")
    if not read_any:
        raise KubeconfigError(
            f"no kubeconfig found (looked at {', '.join(str(f) for f in files)}); "
            "set KUBECONFIG or pass --kubeconfig"
        )
    name = context or current
    if not name:
        raise KubeconfigError("the kubeconfig has no current-context; pass --context")
    if name not in contexts:
        raise KubeconfigError(f"context {name!r} is not in the kubeconfig")
    ctx = contexts[name]
    cluster = clusters.get(str(ctx.get("cluster", "")))
    if cluster is None or not cluster.get("server"):
        raise KubeconfigError(f"context {name!r} names no cluster with a server")
    if not _is_http_url(str(cluster["server"])):
        raise KubeconfigError(
            f"the server of context {name!r}, {str(cluster['server'])!r}, "
            "is not an https:// or http:// URL"
        )
    user = users.get(str(ctx.get("user", "")), {})
    verify = _ssl_context(cluster, user)
    return KubeTarget(
        server=str(cluster["server"]).rstrip("/"),
        context=name,
        namespace=str(ctx.get("namespace") or "default"),
        verify=verify,
        headers=_auth_headers(user),
    )


def _is_http_url(text: str) -> bool:
    try:
        url = urlsplit(text)
        _ = url.port  # read to be checked: a port that is not a number raises
    except ValueError:
        return False
    return url.scheme in ("https", "http") and bool(url.hostname)


def _path(entry: Mapping[str, Any], key: str) -> Path | None:
    value = entry.get(key)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else Path(entry["_dir"]) / path


def _data(entry: Mapping[str, Any], key: str) -> bytes | None:
    """`key-data` (base64) or the file `key` names."""
    raw = entry.get(f"{key}-data")
    if raw:
        try:
            return base64.b64decode(str(raw), validate=True)
        except ValueError as exc:
            raise KubeconfigError(f"{key}-data is not base64") from exc
    path = _path(entry, key)
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KubeconfigError(f"cannot read {key} {path}: {exc}") from exc


def _ssl_context(cluster: Mapping[str, Any], user: Mapping[str, Any]) -> ssl.SSLContext | bool:
    server = str(cluster["server"])
    if not server.startswith("https://"):
        return False
    if cluster.get("insecure-skip-tls-verify") is True:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        ca = _data(cluster, "certificate-authority")
        try:
            context = ssl.create_default_context(cadata=ca.decode() if ca else None)
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise KubeconfigError(
                f"the cluster's certificate-authority is not a PEM certificate: {exc}"
            ) from exc
    cert, key = _client_certificate(user)
    if cert and key:
        _load_chain(context, cert, key)
    return context


def _client_certificate(user: Mapping[str, Any]) -> tuple[bytes | None, bytes | None]:
    cert = _data(user, "client-certificate")
    key = _data(user, "client-key")
    if cert is None and isinstance(user.get("exec"), Mapping):
        status = _exec_credential(user)
        cert_text, key_text = status.get("clientCertificateData"), status.get("clientKeyData")
        if cert_text and key_text:
            return str(cert_text).encode(), str(key_text).encode()
    return cert, key


def _load_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads certificates from files only: write them where only this user can read.
    with tempfile.TemporaryDirectory(prefix="kubectl-ona-") as folder:
        cert_path, key_path = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        for path, content in ((cert_path, cert), (key_path, key)):
            path.touch(mode=0o600)
            path.write_bytes(content)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise KubeconfigError(f"the client certificate or key cannot be used: {exc}") from exc


def _auth_headers(user: Mapping[str, Any]) -> dict[str, str]:
    token = user.get("token")
    token_file = _path(user, "tokenFile")
    if not token and token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise KubeconfigError(f"cannot read tokenFile {token_file}: {exc}") from exc
    if not token and isinstance(user.get("exec"), Mapping) and not user.get("client-certificate"):
        token = _exec_credential(user).get("token")
    if token:
        return {"Authorization": f"Bearer {_header_safe(str(token), 'token')}"}
    if user.get("username") and user.get("password"):
        pair = f"{user['username']}:{user['password']}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def _header_safe(value: str, what: str) -> str:
    # It goes into an HTTP header, where a newline would be refused (or worse); and a
    # credential is never printed, not even a broken one.
    if not value.isascii() or not value.isprintable():
        raise KubeconfigError(f"the user's {what} holds control or non-ASCII characters")
    return value


_EXEC_CACHE: dict[str, dict[str, Any]] = {}


def _exec_credential(user: Mapping[str, Any]) -> dict[str, Any]:
    """Run the user's credential plugin once and return its ExecCredential status."""
    spec = user["exec"]
    argv = [str(spec.get("command", "")), *(str(a) for a in spec.get("args") or ())]
    cache_key = json.dumps(argv)
    if cache_key in _EXEC_CACHE:
        return _EXEC_CACHE[cache_key]
    env = dict(os.environ)
    for item in spec.get("env") or ():
        if isinstance(item, Mapping):
            env[str(item.get("name"))] = str(item.get("value", ""))
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeconfigError(f"the credential plugin {argv[0]!r} failed: {exc}") from exc
    if done.returncode != 0:
        raise KubeconfigError(
            f"the credential plugin {argv[0]!r} exited with {done.returncode}: "
            f"{done.stderr.strip()[:300]}"
        )
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError) as exc:
        raise KubeconfigError(
            f"the credential plugin {argv[0]!r} did not print an ExecCredential"
        ) from exc
    if not isinstance(status, Mapping):
        raise KubeconfigError(f"the credential plugin {argv[0]!r} printed no status object")
    _EXEC_CACHE[cache_key] = dict(status)
    return _EXEC_CACHE[cache_key]
