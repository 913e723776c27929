"""The alert rules: promtool accepts them, its unit tests (tests/monitoring/rules_test.yaml)
make every alert fire on the series meant to fire it and stay quiet on the others, and the
PrometheusRule that kustomize renders carries exactly the same groups."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_manifests import find_kubectl
from tests.support import tools

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = REPO_ROOT / "manifests" / "monitoring"
RULES = MONITORING / "rules.yaml"
UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules_file() -> None:
    result = tools.run("promtool", "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_alerts_fire_on_their_series_and_stay_quiet_on_the_others() -> None:
    result = tools.run("promtool", "test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_rule_that_would_not_fire(tmp_path: Path) -> None:
    """The unit tests can fail: with one alert's threshold out of reach, they do."""
    broken = RULES.read_text().replace(
        "sum(ona_taskrun_leader) == 0", "sum(ona_taskrun_leader) < 0"
    )
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = ["rules.yaml"]
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(tests))
    result = tools.run("promtool", "test", "rules", str(tmp_path / "rules_test.yaml"))
    assert result.returncode != 0
    assert "OnaTaskRunOperatorNotLeading" in result.stdout + result.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_must_not() -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for rule in alerts():
        mine = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never made to fire"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} has no quiet case"


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert len(rule["annotations"]["description"]) > 60, rule["alert"]
        assert rule.get("for"), f"{rule['alert']} would fire on a single evaluation"


@pytest.fixture(scope="module")
def component(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """manifests/ with the monitoring component, as a user's overlay renders it."""
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl: run scripts/build-control-plane (or put kubectl on PATH)")
    overlay = tmp_path_factory.mktemp("overlay")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(REPO_ROOT / "manifests", overlay)],
                "components": [os.path.relpath(MONITORING, overlay)],
            }
        )
    )
    result = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_prometheusrule_holds_the_rules_file(
    component: list[dict[str, Any]], tmp_path: Path
) -> None:
    (rule,) = [o for o in component if o["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    # And promtool reads the spec taken out of it, as the Prometheus Operator hands it on.
    extracted = tmp_path / "extracted.yaml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    result = tools.run("promtool", "check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_component_scrapes_the_operators_metrics_port(
    component: list[dict[str, Any]],
) -> None:
    def one(kind: str) -> dict[str, Any]:
        (found,) = [o for o in component if o["kind"] == kind]
        return found

    deployment, service, monitor = one("Deployment"), one("Service"), one("ServiceMonitor")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}  # 8081: METRICS_PORT's default
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The rules name job="ona-taskrun-operator": the job comes from this Service label.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "ona-taskrun-operator"
    assert 'job="ona-taskrun-operator"' in RULES.read_text()
    for obj in (service, monitor, one("PrometheusRule"), one("ConfigMap")):
        assert obj["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_the_dashboard_is_a_labelled_configmap_of_the_json(
    component: list[dict[str, Any]],
) -> None:
    (config_map,) = [o for o in component if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = config_map["data"].values()
    assert content == (MONITORING / "dashboard.json").read_text()
