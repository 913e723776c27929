"""What `kubectl apply -k manifests/` installs: hardened, least-privilege, secret-free."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.release.test_version import released_image
from tests.support.cluster_fixtures import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
CRDS = REPO_ROOT / "crds"
CRD_NAMES = {
    "taskruns.automation.ona.com",
    "onaconnections.automation.ona.com",
    "clusteronaconnections.automation.ona.com",
    "taskrunschedules.automation.ona.com",
}


def find_kubectl() -> Path | None:
    """kubectl from KUBEBUILDER_ASSETS, the control-plane cache, or PATH; never built here."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return Path(assets) / "kubectl"
    cache_root = Path(
        os.environ.get("ONA_CONTROL_PLANE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "ona-taskrun"
        / "control-plane"
    )
    cached = sorted(p for p in cache_root.glob("*/kubectl") if os.access(p, os.X_OK))
    if cached:
        return cached[-1]
    found = shutil.which("kubectl")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def rendered() -> str:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl: run scripts/build-control-plane (or put kubectl on PATH)")
    result = subprocess.run(
        [str(kubectl), "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def only(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="module")
def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = only(objects, "Deployment")
    return found


def test_one_apply_installs_namespace_crd_rbac_and_operator(objects: list[dict[str, Any]]) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert names == {
        ("Namespace", "ona-system"),
        *(("CustomResourceDefinition", name) for name in CRD_NAMES),
        ("ServiceAccount", "ona-taskrun-operator"),
        ("ClusterRole", "ona-taskrun-operator"),
        ("ClusterRoleBinding", "ona-taskrun-operator"),
        ("Role", "ona-taskrun-operator"),
        ("RoleBinding", "ona-taskrun-operator"),
        ("Deployment", "ona-taskrun-operator"),
    }


def test_deployment_runs_the_operator_image_as_its_service_account(
    deployment: dict[str, Any],
) -> None:
    assert deployment["metadata"]["namespace"] == "ona-system"
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ona-taskrun-operator"
    (container,) = pod["containers"]
    assert container["image"] == released_image()
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]


def test_deployment_is_hardened(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("privileged", False) is False
    assert "add" not in security["capabilities"]
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}
    probe = container["livenessProbe"]["httpGet"]
    port = probe["port"]
    if isinstance(port, str):
        (port,) = (p["containerPort"] for p in container["ports"] if p["name"] == port)
    assert (probe["path"], port) == ("/healthz", 8080)
    tmp_volumes = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert [v for v in pod["volumes"] if v["name"] in tmp_volumes and "emptyDir" in v]


def test_token_comes_from_the_secret_by_reference(
    deployment: dict[str, Any], objects: list[dict[str, Any]]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    token_file = Path(env["ONA_API_TOKEN_FILE"]["value"])
    assert "ONA_API_TOKEN" not in env, "the token itself must not be in the manifests"
    assert {"ONA_BASE_URL", "WATCH_NAMESPACES"} <= env.keys()
    assert env["LOG_FORMAT"]["value"] == "json"
    (mount,) = (m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent))
    assert mount["readOnly"] is True
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "ona-api-token"
    assert {"key": "token", "path": token_file.name} in volume["secret"]["items"]
    assert only(objects, "Secret") == []


@pytest.mark.parametrize("name", ["OPERATOR_NAMESPACE", "LEASE_NAMESPACE"])
def test_operator_knows_its_own_namespace_from_the_downward_api(
    deployment: dict[str, Any], name: str
) -> None:
    """The Lease must be where the Role grants Leases: the pod's own namespace."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env[name] == {
        "name": name,
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }


def test_the_default_connection_serves_no_namespace_until_the_installer_decides(
    deployment: dict[str, Any],
) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    # Written out, empty: the operator reads that as no namespace ("*" would be all).
    assert env["DEFAULT_CONNECTION_NAMESPACE_SELECTOR"] == {
        "name": "DEFAULT_CONNECTION_NAMESPACE_SELECTOR",
        "value": "",
    }


def test_crds_kustomization_lists_every_crd() -> None:
    kustomization = yaml.safe_load((CRDS / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(f"{name}.yaml" for name in CRD_NAMES)
    assert sorted(listed) == sorted(
        p.name for p in CRDS.glob("*.yaml") if p != CRDS / "kustomization.yaml"
    )
    for file in listed:
        crd = yaml.safe_load((CRDS / file).read_text())
        assert crd["kind"] == "CustomResourceDefinition"
        assert f"{crd['metadata']['name']}.yaml" == file
        assert crd["spec"]["names"]["categories"] == ["ona"]


def rules(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [
        rule
        for kind in kinds or ("ClusterRole", "Role")
        for o in only(objects, kind)
        for rule in o["rules"]
    ]


def secret_rules(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for rule in found
        if "secrets" in rule["resources"]
        or any(r.startswith("secrets/") for r in rule["resources"])
    ]


def test_rbac_has_no_wildcards_and_only_gets_secrets(objects: list[dict[str, Any]]) -> None:
    found = rules(objects)
    assert found
    for rule in found:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), rule
        assert not rule.get("nonResourceURLs"), rule
    # Secrets, cluster-wide: `get` by name and nothing else (no list, no watch, no writes),
    # in a rule of their own, so that no other verb reaches them through a shared rule.
    assert secret_rules(rules(objects, "ClusterRole")) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    ]
    (binding,) = only(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ona-taskrun-operator", "namespace": "ona-system"}
    ]


def test_no_cluster_role_grants_leases(objects: list[dict[str, Any]]) -> None:
    """Cluster-wide Leases would let the operator rewrite kube-system's leader elections."""
    assert [r for r in rules(objects, "ClusterRole") if "leases" in r["resources"]] == []
    assert [
        r for r in rules(objects, "ClusterRole") if "coordination.k8s.io" in r["apiGroups"]
    ] == []


def test_the_role_grants_leases_and_creating_secrets_in_the_operator_namespace_only(
    objects: list[dict[str, Any]],
) -> None:
    (role,) = only(objects, "Role")
    (binding,) = only(objects, "RoleBinding")
    (account,) = only(objects, "ServiceAccount")
    assert role["metadata"]["namespace"] == account["metadata"]["namespace"] == "ona-system"
    assert binding["metadata"]["namespace"] == "ona-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ona-taskrun-operator", "namespace": "ona-system"}
    ]
    # What the leader elector does: read, create, renew (an update with resourceVersion).
    leases = [r for r in role["rules"] if "leases" in r["resources"]]
    assert leases == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    # The claim key: created once if missing, never updated; get for it and for
    # ClusterOnaConnection Secrets, which live here too. Nothing that lists or rewrites.
    assert secret_rules(role["rules"]) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    assert len(role["rules"]) == 3


def granted(objects: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in rules(objects)
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("kind", ["onaconnections", "clusteronaconnections"])
def test_rbac_reads_connections_and_writes_only_their_status(
    objects: list[dict[str, Any]], kind: str
) -> None:
    assert granted(objects, "automation.ona.com", kind) == {"get", "list", "watch"}
    assert granted(objects, "automation.ona.com", f"{kind}/status") == {"get", "patch", "update"}


def test_rbac_lets_schedules_create_and_delete_their_taskruns_and_nothing_more(
    objects: list[dict[str, Any]],
) -> None:
    group = "automation.ona.com"
    assert granted(objects, group, "taskrunschedules") == {"get", "list", "watch"}
    assert granted(objects, group, "taskrunschedules/status") == {"get", "patch", "update"}
    # blockOwnerDeletion on the TaskRuns' owner reference needs this (and only this).
    assert granted(objects, group, "taskrunschedules/finalizers") == {"update"}
    assert granted(objects, group, "taskruns") == {
        "get",
        "list",
        "watch",
        "patch",
        "update",
        "create",
        "delete",
    }


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("question", "allowed"),
    [
        pytest.param(["create", "leases", "-n", "ona-system"], True, id="create-own-lease"),
        pytest.param(["update", "leases", "-n", "ona-system"], True, id="renew-own-lease"),
        pytest.param(["get", "leases", "-n", "ona-system"], True, id="read-own-lease"),
        pytest.param(["update", "leases", "-n", "kube-system"], False, id="no-kube-system"),
        pytest.param(["create", "leases", "-n", "default"], False, id="no-lease-elsewhere"),
        pytest.param(["delete", "leases", "-n", "ona-system"], False, id="no-lease-delete"),
        pytest.param(["create", "secrets", "-n", "ona-system"], True, id="create-claim-key"),
        pytest.param(["create", "secrets", "-n", "default"], False, id="no-secret-elsewhere"),
        pytest.param(["update", "secrets", "-n", "ona-system"], False, id="no-secret-update"),
        pytest.param(["delete", "secrets", "-n", "ona-system"], False, id="no-secret-delete"),
        pytest.param(["list", "secrets", "-n", "ona-system"], False, id="no-secret-list"),
        pytest.param(["get", "secrets", "-n", "ona-system"], True, id="get-own-secret"),
        pytest.param(["get", "secrets", "-n", "default"], True, id="get-team-secret"),
    ],
)
def test_the_applied_rbac_holds_leases_and_secret_writes_to_the_operator_namespace(
    control_plane: ControlPlane, operator_kubeconfig: Path, question: list[str], allowed: bool
) -> None:
    """As the API server decides for the operator's identity, with manifests/rbac applied
    (the control plane applies it after manifests/namespace.yaml)."""
    result = control_plane.kubectl_run(
        "auth", "can-i", *question, kubeconfig=operator_kubeconfig, check=False
    )
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr


@pytest.mark.e2e
def test_api_server_accepts_the_manifests_and_the_restricted_policy_admits_the_pod(
    control_plane: ControlPlane, deployment: dict[str, Any]
) -> None:
    applied = control_plane.kubectl_run("apply", "--dry-run=server", "-k", str(MANIFESTS))
    assert "deployment.apps/ona-taskrun-operator created (server dry run)" in applied.stdout
    # Pod Security admission enforces on Pods only (a Deployment merely warns when its
    # namespace asks for warnings): try the operator's pod itself in ona-system, whose
    # label enforces the restricted standard.
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ona-taskrun-operator-admission",
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }
    result = control_plane.kubectl_run(
        "create",
        "--dry-run=server",
        "-n",
        "ona-system",
        "-f",
        "-",
        input=yaml.safe_dump(pod),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr
