"""The optional NetworkPolicy of the monitoring kit (manifests/monitoring/networkpolicy):
only Prometheus reaches the operator's metrics port, the kubelet still reaches its health
port, and the policy stays out of an overlay that does not ask for it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_manifests import find_kubectl

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = REPO_ROOT / "manifests" / "monitoring"
NETWORK_POLICY = MONITORING / "networkpolicy"


def render(overlay: Path, components: list[Path]) -> list[dict[str, Any]]:
    """manifests/ with these components, as a user's overlay renders it."""
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl: run scripts/build-control-plane (or put kubectl on PATH)")
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(REPO_ROOT / "manifests", overlay)],
                "components": [os.path.relpath(c, overlay) for c in components],
            }
        )
    )
    result = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("locked") / "overlay", [MONITORING, NETWORK_POLICY])


def test_the_monitoring_component_alone_adds_no_network_policy(tmp_path: Path) -> None:
    """Opt-in: a policy whose Prometheus selector does not fit would stop the scrapes."""
    objects = render(tmp_path / "overlay", [MONITORING])
    assert [o for o in objects if o["kind"] == "NetworkPolicy"] == []


def test_the_policy_selects_the_operator_pods(locked: list[dict[str, Any]]) -> None:
    policy, deployment = one(locked, "NetworkPolicy"), one(locked, "Deployment")
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # Not the bare app name alone: the policy is about the operator's own pods.
    assert selector["app.kubernetes.io/component"] == "operator"
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_only_prometheus_reaches_the_metrics_port_and_the_probes_reach_health(
    locked: list[dict[str, Any]],
) -> None:
    policy, deployment = one(locked, "NetworkPolicy"), one(locked, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {container[probe]["httpGet"]["port"] for probe in ("startupProbe", "livenessProbe")}
    assert probes == {"health"}
    ingress = policy["spec"]["ingress"]
    metrics = {"port": ports["metrics"], "protocol": "TCP"}
    to_metrics = [rule for rule in ingress if metrics in rule["ports"]]
    assert to_metrics == [
        {
            # One peer with both selectors: Prometheus's pods, in Prometheus's namespace.
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    },
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
            "ports": [metrics],
        }
    ]
    assert [rule for rule in ingress if rule not in to_metrics] == [
        {"ports": [{"port": ports["health"], "protocol": "TCP"}]}
    ]
    # The ServiceMonitor scrapes through the Service onto that same port.
    service = one(locked, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
