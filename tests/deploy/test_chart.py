"""The Helm chart: `helm lint` and `helm template` accept it, its values do what they say,
and it renders the same RBAC rules and the same hardened pod as `kubectl kustomize
manifests/` (and the monitoring objects as manifests/monitoring), from copies that
scripts/sync-monitoring keeps in step."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
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


LOCKED_DOWN = [
    "rbac.secretNamespaces={team-a,team-b}",
    "metrics.networkPolicy.enabled=true",
    "defaultConnection.namespaceSelector=ona.com/default-token=true",
]


@pytest.mark.parametrize("sets", [[], [*MONITORING_ON, "leaderElection.enabled=true"], LOCKED_DOWN])
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
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]


def test_the_chart_grants_exactly_the_manifests_rbac(objects: list[dict[str, Any]]) -> None:  # noqa: F811
    chart = template()
    assert one(chart, "ClusterRole")["rules"] == one(objects, "ClusterRole")["rules"]
    assert one(chart, "Role")["rules"] == one(objects, "Role")["rules"]
    account = one(chart, "ServiceAccount")
    subject = {
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": "ona-system",
    }
    for kind in ("ClusterRole", "Role"):
        binding = one(chart, f"{kind}Binding")
        assert binding["roleRef"]["kind"] == kind
        assert binding["roleRef"]["name"] == one(chart, kind)["metadata"]["name"]
        assert binding["subjects"] == [subject]
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
    assert settings["LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert settings["METRICS_PORT"] == "9200"
    assert {"name": "metrics", "containerPort": 9200, "protocol": "TCP"} in main["ports"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert main["resources"]["limits"]["memory"] == "1Gi"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "team-token"
    assert volume["secret"]["items"] == [{"key": "pat", "path": "token"}]


def rules_on(role: dict[str, Any], resource: str) -> list[dict[str, Any]]:
    return [rule for rule in role["rules"] if resource in rule["resources"]]


@pytest.mark.parametrize("namespace", ["ona-system", "platform"])
def test_leases_and_creating_secrets_are_granted_in_the_release_namespace_only(
    namespace: str,
) -> None:
    objs = template(namespace=namespace)
    assert rules_on(one(objs, "ClusterRole"), "leases") == []
    role, binding = one(objs, "Role"), one(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert binding["subjects"][0]["namespace"] == namespace
    assert {v for r in rules_on(role, "leases") for v in r["verbs"]} == {"get", "create", "update"}
    assert {v for r in rules_on(role, "secrets") for v in r["verbs"]} == {"get", "create"}
    # Cluster-wide, the operator creates only Events and (for schedules) TaskRuns.
    cluster_creates = [r for r in one(objs, "ClusterRole")["rules"] if "create" in r["verbs"]]
    assert [r["resources"] for r in cluster_creates] == [["events"], ["taskruns"]]


def test_secret_namespaces_turn_the_cluster_wide_get_into_roles() -> None:
    objs = template("rbac.secretNamespaces={team-a,team-b,team-a,ona-system}")
    assert rules_on(one(objs, "ClusterRole"), "secrets") == []
    assert rules_on(one(objs, "ClusterRole"), "leases") == []
    account = one(objs, "ServiceAccount")["metadata"]["name"]
    roles = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "RoleBinding"}
    # Each listed namespace once, and the operator's own always (its own Role reads there).
    assert sorted(roles) == sorted(bindings) == ["ona-system", "team-a", "team-b"]
    for namespace in ("team-a", "team-b"):
        assert roles[namespace]["rules"] == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        ]
        assert bindings[namespace]["roleRef"]["name"] == roles[namespace]["metadata"]["name"]
        assert bindings[namespace]["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": "ona-system"}
        ]
    assert {"get"} <= {v for r in rules_on(roles["ona-system"], "secrets") for v in r["verbs"]}


def test_without_secret_namespaces_the_cluster_role_gets_secrets_everywhere() -> None:
    objs = template()
    assert rules_on(one(objs, "ClusterRole"), "secrets") == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    ]
    assert [o["metadata"]["namespace"] for o in objs if o["kind"] == "Role"] == ["ona-system"]


def test_a_secret_namespace_that_is_no_namespace_name_is_refused() -> None:
    result = tools.run(
        "helm", "template", "x", str(CHART), "--set", "rbac.secretNamespaces={Team_A}"
    )
    assert result.returncode != 0
    assert 'rbac.secretNamespaces: "Team_A" is not a namespace name' in result.stderr


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        pytest.param([], "", id="default-none"),
        pytest.param(["defaultConnection.namespaceSelector=*"], "*", id="all"),
        pytest.param(
            ["defaultConnection.namespaceSelector=ona.com/default-token=true"],
            "ona.com/default-token=true",
            id="selector",
        ),
    ],
)
def test_the_default_connection_namespace_selector_comes_from_its_value(
    sets: list[str], expected: str
) -> None:
    assert env(one(template(*sets), "Deployment"))["DEFAULT_CONNECTION_NAMESPACE_SELECTOR"] == (
        expected
    )


def notes(*sets: str) -> str:
    args = ["install", "ona-taskrun-operator", str(CHART), "-n", "ona-system", "--dry-run=client"]
    for value in sets:
        args += ["--set-string", value]
    result = tools.run("helm", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.partition("NOTES:")[2]


def test_a_fresh_install_says_its_token_serves_no_namespace_yet() -> None:
    assert "It serves no namespace yet" in notes()
    assert "It serves the TaskRuns of every namespace" in notes(
        "defaultConnection.namespaceSelector=*"
    )
    chosen = notes("defaultConnection.namespaceSelector=ona.com/default-token=true")
    assert 'whose labels match "ona.com/default-token=true"' in chosen
    assert "no namespace yet" not in chosen


def test_no_token_secret_means_no_default_connection() -> None:
    deployment = one(template("ona.tokenSecret.name="), "Deployment")
    assert "ONA_API_TOKEN_FILE" not in env(deployment)
    assert not [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]


def test_metrics_can_be_switched_off() -> None:
    deployment = one(template("metrics.enabled=false"), "Deployment")
    assert env(deployment)["METRICS_ENABLED"] == "false"
    assert [p["name"] for p in container(deployment)["ports"]] == ["health"]


def test_no_network_policy_unless_asked() -> None:
    assert [o for o in template(*MONITORING_ON) if o["kind"] == "NetworkPolicy"] == []


def test_the_network_policy_lets_only_prometheus_reach_the_metrics_port() -> None:
    prometheus = {"matchLabels": {"app.kubernetes.io/name": "prometheus", "team": "sre"}}
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
    objs = template(
        "metrics.networkPolicy.enabled=true",
        "metrics.port=9200",
        "metrics.networkPolicy.podSelector.matchLabels.team=sre",
        "metrics.networkPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name="
        "observability",
    )
    policy, deployment = one(objs, "NetworkPolicy"), one(objs, "Deployment")
    assert policy["metadata"]["namespace"] == "ona-system"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == (deployment["spec"]["selector"]["matchLabels"])
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ingress = policy["spec"]["ingress"]
    # The metrics port: from Prometheus's pods in its namespace (one peer: both must match).
    to_metrics = [rule for rule in ingress if {"port": 9200, "protocol": "TCP"} in rule["ports"]]
    assert to_metrics == [
        {
            "from": [{"namespaceSelector": monitoring, "podSelector": prometheus}],
            "ports": [{"port": 9200, "protocol": "TCP"}],
        }
    ]
    # The health port stays open for the kubelet's probes, and nothing else is allowed.
    probe = container(deployment)["livenessProbe"]["httpGet"]["port"]
    (health,) = (p["containerPort"] for p in container(deployment)["ports"] if p["name"] == probe)
    assert [rule for rule in ingress if rule not in to_metrics] == [
        {"ports": [{"port": health, "protocol": "TCP"}]}
    ]


def test_the_network_policy_allows_the_kustomize_components_ingress(tmp_path: Path) -> None:
    """Both kits let the same peers reach the same ports by default."""
    component = yaml.safe_load(
        (MANIFESTS / "monitoring" / "networkpolicy" / "networkpolicy.yaml").read_text()
    )
    chart = one(template("metrics.networkPolicy.enabled=true"), "NetworkPolicy")
    assert chart["spec"]["ingress"] == component["spec"]["ingress"]
    assert chart["spec"]["policyTypes"] == component["spec"]["policyTypes"]


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


def strings(value: Any) -> Iterator[str]:
    """Every string in a nested structure of dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@pytest.mark.parametrize(
    "names",
    [[], ["nameOverride=taskruns"], ["fullnameOverride=ops-runner"]],
    ids=["defaults", "nameOverride", "fullnameOverride"],
)
def test_the_metrics_job_is_the_one_the_rules_and_the_dashboard_select(names: list[str]) -> None:
    """The ServiceMonitor's job label reaches Prometheus as the value of the Service label
    it names; every `job="..."` in the alert rules and the dashboard must be that value,
    whatever the release's names."""
    objs = template(*MONITORING_ON, *names)
    service, monitor = one(objs, "Service"), one(objs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    (dashboard,) = one(objs, "ConfigMap")["data"].values()
    texts = [*strings(one(objs, "PrometheusRule")["spec"]), *strings(json.loads(dashboard))]
    selected = {m for text in texts for m in re.findall(r'\bjob\s*=~?\s*"([^"]*)"', text)}
    assert selected == {job}, f"the job is {job!r}; the rules and dashboard select {selected}"


def test_runbook_urls_take_the_charts_base_and_keep_their_anchors() -> None:
    def urls(objs: list[dict[str, Any]]) -> dict[str, str]:
        groups = one(objs, "PrometheusRule")["spec"]["groups"]
        return {r["alert"]: r["annotations"]["runbook_url"] for g in groups for r in g["rules"]}

    source = {
        r["alert"]: r["annotations"]["runbook_url"]
        for g in yaml.safe_load((MANIFESTS / "monitoring" / "rules.yaml").read_text())["groups"]
        for r in g["rules"]
    }
    assert urls(template(*MONITORING_ON)) == source
    base = "https://wiki.example.com/ona/operations"
    moved = urls(template(*MONITORING_ON, f"monitoring.runbookBaseUrl={base}/"))
    assert moved.keys() == source.keys()
    for alert, url in moved.items():
        assert url == f"{base}#{source[alert].partition('#')[2]}"
    assert all("#" in url and url.partition("#")[2] for url in moved.values())


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
@pytest.mark.parametrize("locked_down", [False, True], ids=["defaults", "locked-down"])
def test_api_server_accepts_the_chart_and_the_restricted_policy_admits_its_pod(
    control_plane: ControlPlane, namespace: str, locked_down: bool
) -> None:
    sets = [f"rbac.secretNamespaces={{{namespace},default}}", *LOCKED_DOWN[1:]]
    objs = template(*sets) if locked_down else template()
    applied = control_plane.kubectl_run(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objs)
    )
    assert "deployment.apps/ona-taskrun-operator created (server dry run)" in applied.stdout
    # Each object the API server took, whether new to it or already applied by the tests.
    accepted = [line.split()[0] for line in applied.stdout.splitlines()]
    kinds = {
        "Role": "role.rbac.authorization.k8s.io",
        "RoleBinding": "rolebinding.rbac.authorization.k8s.io",
        "NetworkPolicy": "networkpolicy.networking.k8s.io",
    }
    expected = [f"{kinds[o['kind']]}/{o['metadata']['name']}" for o in objs if o["kind"] in kinds]
    assert len(expected) == (7 if locked_down else 2)
    assert Counter(expected) <= Counter(accepted), applied.stdout
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
