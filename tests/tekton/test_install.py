"""Installing the custom task controller: the manifests/tekton kustomize component and the
chart's tekton.customTasks.enabled grant the same rules for CustomRuns, bind them to the
operator's service account and turn TEKTON_CUSTOM_TASKS on; neither is there by default.
(Rendering only: no Tekton runs for these.)"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.test_chart import template
from tests.deploy.test_manifests import MANIFESTS, find_kubectl

COMPONENT = MANIFESTS / "tekton"


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def named(objects: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]


@pytest.fixture(scope="module")
def with_component(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl: run scripts/build-control-plane (or put kubectl on PATH)")
    # An overlay of one's own, as the component's comment says (kustomize wants the paths
    # relative to it).
    overlay = tmp_path_factory.mktemp("overlay")
    base = os.path.relpath(MANIFESTS, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "components": [f"{base}/tekton"]})
    )
    result = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_component_grants_customruns_and_turns_the_setting_on(
    with_component: list[dict[str, Any]],
) -> None:
    (role,) = named(with_component, "ClusterRole", "-tekton")
    role_file = yaml.safe_load((COMPONENT / "role.yaml").read_text())
    assert role["rules"] == role_file["rules"]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"customruns", "customruns/status", "customruns/finalizers"}
    assert {g for rule in role["rules"] for g in rule["apiGroups"]} == {"tekton.dev"}
    # Never the spec or metadata of a CustomRun: read and watch it, write its status.
    (plain,) = [rule for rule in role["rules"] if rule["resources"] == ["customruns"]]
    assert plain["verbs"] == ["get", "list", "watch"]
    (binding,) = named(with_component, "ClusterRoleBinding", "-tekton")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (account,) = [o for o in with_component if o["kind"] == "ServiceAccount"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert env(with_component)["TEKTON_CUSTOM_TASKS"] == "true"


def test_without_the_component_nothing_of_tekton_is_installed() -> None:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl: run scripts/build-control-plane (or put kubectl on PATH)")
    result = subprocess.run(
        [str(kubectl), "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True
    )
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert "TEKTON_CUSTOM_TASKS" not in env(objects)
    assert "tekton.dev" not in result.stdout


def test_the_charts_value_renders_the_components_rbac_and_setting() -> None:
    chart = template("tekton.customTasks.enabled=true")
    (role,) = named(chart, "ClusterRole", "-tekton")
    role_file = yaml.safe_load((COMPONENT / "role.yaml").read_text())
    assert role["rules"] == role_file["rules"]
    (binding,) = named(chart, "ClusterRoleBinding", "-tekton")
    (account,) = [o for o in chart if o["kind"] == "ServiceAccount"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ona-system"}
    ]
    assert env(chart)["TEKTON_CUSTOM_TASKS"] == "true"


def test_the_chart_installs_nothing_of_tekton_by_default() -> None:
    chart = template()
    assert named(chart, "ClusterRole", "-tekton") == []
    assert "TEKTON_CUSTOM_TASKS" not in env(chart)
