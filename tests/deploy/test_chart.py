"""The Helm chart: `helm lint` and `helm template` accept it, its values do what they say,
and it renders the same RBAC rules and the same hardened pod as `kubectl kustomize
manifests/` (and the monitoring objects as manifests/monitoring), from copies that
scripts/sync-monitoring keeps in step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_manifests import MANIFESTS, objects, rendered  # noqa: F401 - fixtures
from tests.support import tools
from tests.support.cluster_fixtures import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "ona-taskrun-operator"
MONITORING_ON = [
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboard.enabled=true",
]


def template(*sets: str, namespace: str = "ona-system") -> list[dict[str, Any]]:
    args = ["template", "ona-taskrun-operator", str(CHART), "--namespace", namespace]
    for value in sets:
        args += ["--set", value]
    result = tools.run("helm", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind]
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return found


def env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


@pytest.mark.parametrize("sets", [[], [*MONITORING_ON, "leaderElection.enabled=true"]])
def test_helm_lint_accepts_the_chart(sets: list[str]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in sets:
        args += ["--set", value]
    result = tools.run("helm", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_lint_refuses_a_broken_chart(tmp_path: Path) -> None:
    """The lint can fail: a template that does not parse is reported."""
    broken = tmp_path / "ona-taskrun-operator"
    broken.mkdir()
    for path in ("Chart.yaml", "values.yaml"):
        (broken / path).write_text((CHART / path).read_text())
    (broken / "templates").mkdir()
    (broken / "templates" / "bad.yaml").write_text("kind: {{ .Values.missing.field }\n")
    result = tools.run("helm", "lint", "--strict", str(broken))
    assert result.returncode != 0


def test_defaults_render_what_the_manifests_install_but_the_namespace() -> None:
    kinds = sorted(o["kind"] for o in template())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]


def test_the_chart_grants_exactly_the_manifests_rbac(objects: list[dict[str, Any]]) -> None:  # noqa: F811
    chart = template()
    assert one(chart, "ClusterRole")["rules"] == one(objects, "ClusterRole")["rules"]
    binding = one(chart, "ClusterRoleBinding")
    account = one(chart, "ServiceAccount")
    assert binding["roleRef"]["name"] == one(chart, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ona-system"}
    ]
    assert (
        one(chart, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )


def test_the_chart_runs_the_same_hardened_pod(objects: list[dict[str, Any]]) -> None:  # noqa: F811
    ours, theirs = one(template(), "Deployment"), one(objects, "Deployment")
    pod, manifest_pod = ours["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
    assert pod["securityContext"] == manifest_pod["securityContext"]
    assert pod["volumes"] == manifest_pod["volumes"]
    mine, manifest = container(ours), container(theirs)
    for key in (
        "securityContext",
        "resources",
        "args",
        "ports",
        "startupProbe",
        "livenessProbe",
        "volumeMounts",
        "image",
        "imagePullPolicy",
    ):
        assert mine[key] == manifest[key], key
    assert ours["spec"]["strategy"] == theirs["spec"]["strategy"]
    assert ours["spec"]["replicas"] == theirs["spec"]["replicas"]
    # Every setting the manifests give, the chart gives the same way.
    assert env(theirs).items() <= env(ours).items()


def test_values_for_image_token_namespaces_leader_election_and_metrics() -> None:
    deployment = one(
        template(
            "image.repository=registry.example.com/ona/operator",
            "image.tag=1.2.3",
            "ona.tokenSecret.name=team-token",
            "ona.tokenSecret.key=pat",
            "watchNamespaces={team-a,team-b}",
            "leaderElection.enabled=true",
            "replicaCount=2",
            "metrics.port=9200",
            "resources.limits.memory=1Gi",
        ),
        "Deployment",
    )
    main = container(deployment)
    assert main["image"] == "registry.example.com/ona/operator:1.2.3"
    settings = env(deployment)
    assert settings["WATCH_NAMESPACES"] == "team-a,team-b"
    assert settings["LEADER_ELECTION"] == "true"
    assert settings["LEASE_NAMESPACE"] == "ona-system"
    assert settings["METRICS_PORT"] == "9200"
    assert {"name": "metrics", "containerPort": 9200, "protocol": "TCP"} in main["ports"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert main["resources"]["limits"]["memory"] == "1Gi"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "team-token"
    assert volume["secret"]["items"] == [{"key": "pat", "path": "token"}]


def test_no_token_secret_means_no_default_connection() -> None:
    deployment = one(template("ona.tokenSecret.name="), "Deployment")
    assert "ONA_API_TOKEN_FILE" not in env(deployment)
    assert not [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]


def test_metrics_can_be_switched_off() -> None:
    deployment = one(template("metrics.enabled=false"), "Deployment")
    assert env(deployment)["METRICS_ENABLED"] == "false"
    assert [p["name"] for p in container(deployment)["ports"]] == ["health"]


def test_monitoring_renders_the_same_rules_and_dashboard_as_the_component() -> None:
    objs = template(*MONITORING_ON)
    service, monitor = one(objs, "Service"), one(objs, "ServiceMonitor")
    deployment = one(objs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    # The rules name job="ona-taskrun-operator": the job comes from this Service label.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "ona-taskrun-operator"
    rules = yaml.safe_load((MANIFESTS / "monitoring" / "rules.yaml").read_text())
    assert one(objs, "PrometheusRule")["spec"] == rules
    dashboard = one(objs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = dashboard["data"].values()
    assert content == (MANIFESTS / "monitoring" / "dashboard.json").read_text().rstrip("\n")


def test_the_chart_copies_are_in_step_with_their_sources() -> None:
    """Run scripts/sync-monitoring after editing a CRD, the rules or the dashboard."""
    pairs = [
        (MANIFESTS / "monitoring" / "rules.yaml", CHART / "files" / "rules.yaml"),
        (MANIFESTS / "monitoring" / "dashboard.json", CHART / "files" / "dashboard.json"),
    ]
    crds = sorted((REPO_ROOT / "crds").glob("*.automation.ona.com.yaml"))
    assert len(crds) == 4
    pairs += [(crd, CHART / "crds" / crd.name) for crd in crds]
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [c.name for c in crds]
    for source, copy in pairs:
        assert copy.read_text() == source.read_text(), f"{copy} is stale"
    rule = yaml.safe_load((MANIFESTS / "monitoring" / "prometheusrule.yaml").read_text())
    assert rule["spec"] == yaml.safe_load(pairs[0][0].read_text()), "prometheusrule.yaml is stale"


@pytest.mark.e2e
def test_api_server_accepts_the_chart_and_the_restricted_policy_admits_its_pod(
    control_plane: ControlPlane,
) -> None:
    objs = template()
    applied = control_plane.kubectl_run(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objs)
    )
    assert "deployment.apps/ona-taskrun-operator created (server dry run)" in applied.stdout
    template_ = one(objs, "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "chart-admission", "labels": template_["metadata"]["labels"]},
        "spec": template_["spec"],
    }
    result = control_plane.kubectl_run(
        "create", "--dry-run=server", "-n", "ona-system", "-f", "-",
        input=yaml.safe_dump(pod), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr
