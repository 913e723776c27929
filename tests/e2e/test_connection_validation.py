"""The API server, through the connection CRDs' schemas and CEL rules and the TaskRun's
spec.connectionRef, rejects connections and references that cannot be right, and the
operator's RBAC lets it read Secrets by name only."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import GROUP, VERSION, TaskRuns, inline_task

pytestmark = pytest.mark.e2e

TASK_ID = str(uuid.UUID(int=7))
DEFAULT_BASE_URL = "https://app.ona.com/api"
TOKEN_REF = {"name": "ona-token", "key": "token"}


def connection(
    kind: str, name: str, spec: Mapping[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": metadata,
        "spec": dict(spec),
    }


def try_apply(
    control_plane: ControlPlane, doc: Mapping[str, Any]
) -> subprocess.CompletedProcess[str]:
    return control_plane.kubectl_run(
        "apply", "-f", "-", input=yaml.safe_dump(dict(doc)), check=False
    )


def applied(control_plane: ControlPlane, doc: Mapping[str, Any]) -> None:
    result = try_apply(control_plane, doc)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def custom(k8s_admin: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_admin)


def get_onac(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "onaconnections", name
        )
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def get_conac(custom: client.CustomObjectsApi, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = custom.get_cluster_custom_object(
            GROUP, VERSION, "clusteronaconnections", name
        )
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


@pytest.fixture
def cluster_name(control_plane: ControlPlane) -> Iterator[Callable[[str], str]]:
    """Unique ClusterOnaConnection names for this test; each is deleted at the end."""
    made: list[str] = []

    def make(stem: str) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        made.append(name)
        return name

    yield make
    for name in made:
        control_plane.kubectl_run("delete", "clusteronaconnection", name, "--ignore-not-found")


# --------------------------------------------------------------- OnaConnection


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        pytest.param(
            {"baseUrl": DEFAULT_BASE_URL},
            ["spec.tokenSecretRef", "Required value"],
            id="missing-token-secret-ref",
        ),
        pytest.param(
            {"tokenSecretRef": TOKEN_REF, "policy": {"inlineTasks": "Maybe"}},
            ["spec.policy.inlineTasks", "Unsupported value", '"Maybe"'],
            id="inline-tasks-maybe",
        ),
        pytest.param(
            {"tokenSecretRef": TOKEN_REF, "policy": {"environmentIds": ["not-a-uuid"]}},
            ["spec.policy.environmentIds[0]", "uuid"],
            id="environment-id-not-a-uuid",
        ),
        pytest.param(
            {"tokenSecretRef": TOKEN_REF, "baseUrl": "https://user:pw@x"},
            ["spec.baseUrl", "should match"],
            id="credentials-in-base-url",
        ),
        pytest.param(
            {"tokenSecretRef": {"name": "ona-token"}},
            ["spec.tokenSecretRef.key", "Required value"],
            id="secret-ref-without-key",
        ),
        pytest.param(
            {"tokenSecretRef": {"name": "Not_A_Name", "key": "token"}},
            ["spec.tokenSecretRef.name", "should match"],
            id="secret-name-not-dns",
        ),
    ],
)
def test_bad_ona_connections_are_rejected_at_apply(
    spec: dict[str, Any],
    fragments: list[str],
    control_plane: ControlPlane,
    custom: client.CustomObjectsApi,
    namespace: str,
) -> None:
    result = try_apply(control_plane, connection("OnaConnection", "bad", spec, namespace))
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr
    assert get_onac(custom, namespace, "bad") is None


def test_a_secret_ref_has_no_namespace_field(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    ref = {**TOKEN_REF, "namespace": "ona-system"}
    doc = connection("OnaConnection", "elsewhere", {"tokenSecretRef": ref}, namespace)
    result = try_apply(control_plane, doc)
    assert result.returncode != 0
    assert 'unknown field "spec.tokenSecretRef.namespace"' in result.stderr
    assert get_onac(custom, namespace, "elsewhere") is None


def test_ona_connection_defaults(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    applied(
        control_plane,
        connection("OnaConnection", "team-a", {"tokenSecretRef": TOKEN_REF}, namespace),
    )
    spec = (get_onac(custom, namespace, "team-a") or {})["spec"]
    assert spec == {
        "baseUrl": DEFAULT_BASE_URL,
        "tokenSecretRef": TOKEN_REF,
        "policy": {"inlineTasks": "Allow"},
    }


def test_a_full_ona_connection_is_kept_as_written(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    spec = {
        "baseUrl": "http://ona.internal:8080/api",
        "tokenSecretRef": {"name": "team.tokens", "key": "ona_token-1"},
        "policy": {"environmentIds": [str(uuid.uuid4()), str(uuid.uuid4())], "inlineTasks": "Deny"},
    }
    applied(control_plane, connection("OnaConnection", "full", spec, namespace))
    assert (get_onac(custom, namespace, "full") or {})["spec"] == spec


def test_duplicate_environment_ids_are_rejected(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    same = str(uuid.uuid4())
    spec = {"tokenSecretRef": TOKEN_REF, "policy": {"environmentIds": [same, same]}}
    result = try_apply(control_plane, connection("OnaConnection", "twice", spec, namespace))
    assert result.returncode != 0
    assert "spec.policy.environmentIds[1]" in result.stderr
    assert "Duplicate value" in result.stderr
    assert get_onac(custom, namespace, "twice") is None


# -------------------------------------------------------- ClusterOnaConnection


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        pytest.param(
            {"tokenSecretRef": TOKEN_REF},
            ["spec.namespaceSelector", "Required value"],
            id="missing-namespace-selector",
        ),
        pytest.param(
            {
                "tokenSecretRef": TOKEN_REF,
                "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]},
            },
            ["operators In and NotIn need at least one value"],
            id="in-without-values",
        ),
        pytest.param(
            {
                "tokenSecretRef": TOKEN_REF,
                "namespaceSelector": {
                    "matchExpressions": [{"key": "team", "operator": "NotIn", "values": []}]
                },
            },
            ["operators In and NotIn need at least one value"],
            id="not-in-with-empty-values",
        ),
        pytest.param(
            {
                "tokenSecretRef": TOKEN_REF,
                "namespaceSelector": {
                    "matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]
                },
            },
            ["operators Exists and DoesNotExist take no values"],
            id="exists-with-values",
        ),
        pytest.param(
            {
                "tokenSecretRef": TOKEN_REF,
                "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Like"}]},
            },
            ["spec.namespaceSelector.matchExpressions[0].operator", "Unsupported value"],
            id="unknown-operator",
        ),
        pytest.param(
            {
                "tokenSecretRef": TOKEN_REF,
                "namespaceSelector": {},
                "policy": {"inlineTasks": "Maybe"},
            },
            ["spec.policy.inlineTasks", "Unsupported value"],
            id="inline-tasks-maybe",
        ),
    ],
)
def test_bad_cluster_ona_connections_are_rejected_at_apply(
    spec: dict[str, Any],
    fragments: list[str],
    control_plane: ControlPlane,
    custom: client.CustomObjectsApi,
    cluster_name: Callable[[str], str],
) -> None:
    name = cluster_name("bad")
    result = try_apply(control_plane, connection("ClusterOnaConnection", name, spec))
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr
    assert get_conac(custom, name) is None


def test_cluster_ona_connection_defaults_and_empty_selector(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, cluster_name: Callable[[str], str]
) -> None:
    name = cluster_name("everyone")
    doc = connection(
        "ClusterOnaConnection", name, {"tokenSecretRef": TOKEN_REF, "namespaceSelector": {}}
    )
    applied(control_plane, doc)
    spec = (get_conac(custom, name) or {})["spec"]
    assert spec == {
        "baseUrl": DEFAULT_BASE_URL,
        "tokenSecretRef": TOKEN_REF,
        "namespaceSelector": {},
        "policy": {"inlineTasks": "Deny"},
    }


def test_a_well_formed_namespace_selector_is_accepted(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, cluster_name: Callable[[str], str]
) -> None:
    name = cluster_name("selected")
    selector = {
        "matchLabels": {"ona.com/tasks": "enabled"},
        "matchExpressions": [
            {"key": "team", "operator": "In", "values": ["a", "b"]},
            {"key": "example.com/frozen", "operator": "DoesNotExist"},
            {"key": "tier", "operator": "Exists", "values": []},
        ],
    }
    spec = {"tokenSecretRef": TOKEN_REF, "namespaceSelector": selector}
    applied(control_plane, connection("ClusterOnaConnection", name, spec))
    assert (get_conac(custom, name) or {})["spec"]["namespaceSelector"] == selector


# ------------------------------------------------------------- kubectl get


def names(result: subprocess.CompletedProcess[str]) -> set[str]:
    return set(result.stdout.split())


def test_short_names_and_category_list_connections(
    control_plane: ControlPlane,
    taskruns: TaskRuns,
    namespace: str,
    cluster_name: Callable[[str], str],
) -> None:
    cluster = cluster_name("listed")
    applied(
        control_plane,
        connection("OnaConnection", "team-a", {"tokenSecretRef": TOKEN_REF}, namespace),
    )
    applied(
        control_plane,
        connection(
            "ClusterOnaConnection", cluster, {"tokenSecretRef": TOKEN_REF, "namespaceSelector": {}}
        ),
    )
    taskruns.apply("run", {"taskRef": {"id": TASK_ID}, "connectionRef": {"name": "team-a"}})

    kubectl = control_plane.kubectl_run
    onac = names(kubectl("get", "onac", "-n", namespace, "-o", "name"))
    assert onac == {"onaconnection.automation.ona.com/team-a"}
    conac = names(kubectl("get", "conac", "-o", "name"))
    assert f"clusteronaconnection.automation.ona.com/{cluster}" in conac
    everything = names(kubectl("get", "ona", "-n", namespace, "-o", "name"))
    assert {
        "onaconnection.automation.ona.com/team-a",
        f"clusteronaconnection.automation.ona.com/{cluster}",
        "taskrun.automation.ona.com/run",
    } <= everything


def test_printer_columns_show_readiness_and_subject(
    control_plane: ControlPlane, namespace: str
) -> None:
    applied(
        control_plane,
        connection("OnaConnection", "team-a", {"tokenSecretRef": TOKEN_REF}, namespace),
    )
    status = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Authenticated",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ],
            "subject": {"id": "subject-of-team-a", "principal": "PRINCIPAL_USER"},
            "organizationId": "org-1",
            "checkedAt": "2025-01-01T00:00:00Z",
        }
    }
    control_plane.kubectl_run(
        "-n",
        namespace,
        "patch",
        "onac",
        "team-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    plain = control_plane.kubectl_run("-n", namespace, "get", "onac", "team-a").stdout.splitlines()
    assert plain[0].split() == ["NAME", "READY", "REASON", "SUBJECT", "AGE"]
    assert plain[1].split()[:4] == ["team-a", "True", "Authenticated", "subject-of-team-a"]
    wide = control_plane.kubectl_run("-n", namespace, "get", "onac", "team-a", "-o", "wide").stdout
    assert "BASE URL" in wide.splitlines()[0]
    assert DEFAULT_BASE_URL in wide.splitlines()[1]


# --------------------------------------------------- TaskRun.spec.connectionRef


def test_connection_ref_defaults_to_a_namespaced_connection(taskruns: TaskRuns) -> None:
    taskruns.apply("ref", {"taskRef": {"id": TASK_ID}, "connectionRef": {"name": "team-a"}})
    assert taskruns.get("ref")["spec"]["connectionRef"] == {
        "kind": "OnaConnection",
        "name": "team-a",
    }


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param({"connectionRef": {"name": "team-b"}}, id="name"),
        pytest.param({"connectionRef": {"kind": "ClusterOnaConnection"}}, id="kind"),
        pytest.param({"connectionRef": None}, id="removed"),
    ],
)
def test_connection_ref_edit_is_rejected(edit: dict[str, Any], taskruns: TaskRuns) -> None:
    taskruns.apply(
        "pinned", {"task": inline_task("echo # sim:hang"), "connectionRef": {"name": "team-a"}}
    )
    result = taskruns.patch_spec("pinned", edit)
    assert result.returncode != 0
    assert "spec.connectionRef is immutable" in result.stderr
    assert taskruns.get("pinned")["spec"]["connectionRef"] == {
        "kind": "OnaConnection",
        "name": "team-a",
    }
    allowed = taskruns.patch_spec("pinned", {"desiredPhase": "STOPPED"})
    assert allowed.returncode == 0, allowed.stderr


def test_connection_ref_cannot_be_added_later(taskruns: TaskRuns) -> None:
    taskruns.apply("default", {"taskRef": {"id": TASK_ID}})
    result = taskruns.patch_spec("default", {"connectionRef": {"name": "team-a"}})
    assert result.returncode != 0
    assert "spec.connectionRef is immutable" in result.stderr
    assert "connectionRef" not in taskruns.get("default")["spec"]


def test_connection_ref_has_no_namespace_field(taskruns: TaskRuns) -> None:
    ref = {"name": "team-a", "namespace": "someone-else"}
    result = taskruns.try_apply("borrowed", {"taskRef": {"id": TASK_ID}, "connectionRef": ref})
    assert result.returncode != 0
    assert 'unknown field "spec.connectionRef.namespace"' in result.stderr
    assert not taskruns.exists("borrowed")


@pytest.mark.parametrize(
    ("ref", "fragments"),
    [
        pytest.param(
            {"kind": "Secret", "name": "ona-api-token"},
            ["spec.connectionRef.kind", "Unsupported value", '"Secret"'],
            id="kind-secret",
        ),
        pytest.param(
            {"kind": "ClusterOnaConnection"},
            ["spec.connectionRef.name", "Required value"],
            id="no-name",
        ),
        pytest.param(
            {"name": "Team_A"},
            ["spec.connectionRef.name", "should match"],
            id="name-not-dns",
        ),
    ],
)
def test_bad_connection_refs_are_rejected_at_apply(
    ref: dict[str, Any], fragments: list[str], taskruns: TaskRuns
) -> None:
    result = taskruns.try_apply("badref", {"taskRef": {"id": TASK_ID}, "connectionRef": ref})
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr
    assert not taskruns.exists("badref")


def test_a_cluster_connection_ref_is_accepted(taskruns: TaskRuns) -> None:
    ref = {"kind": "ClusterOnaConnection", "name": "shared"}
    taskruns.apply("shared", {"taskRef": {"id": TASK_ID}, "connectionRef": ref})
    assert taskruns.get("shared")["spec"]["connectionRef"] == ref


# ------------------------------------------------------------------- RBAC


@pytest.mark.parametrize(
    ("question", "allowed"),
    [
        pytest.param(["get", "secrets", "-n", "team-a"], True, id="get-secret"),
        pytest.param(["get", "secrets", "-n", "ona-system"], True, id="get-own-secret"),
        pytest.param(["list", "secrets", "-n", "team-a"], False, id="no-list"),
        pytest.param(["list", "secrets", "-A"], False, id="no-list-all"),
        pytest.param(["watch", "secrets", "-A"], False, id="no-watch"),
        pytest.param(["create", "secrets", "-n", "team-a"], False, id="no-create"),
        pytest.param(["update", "secrets", "-n", "team-a"], False, id="no-update"),
        pytest.param(["watch", "onaconnections.automation.ona.com", "-A"], True, id="watch-onac"),
        pytest.param(["watch", "clusteronaconnections.automation.ona.com"], True, id="watch-conac"),
        pytest.param(
            ["patch", "onaconnections.automation.ona.com", "-n", "team-a"],
            False,
            id="no-spec-write",
        ),
        pytest.param(
            ["patch", "onaconnections.automation.ona.com", "-n", "team-a", "--subresource=status"],
            True,
            id="onac-status-write",
        ),
        pytest.param(
            ["patch", "clusteronaconnections.automation.ona.com", "--subresource=status"],
            True,
            id="conac-status-write",
        ),
    ],
)
def test_operator_reads_secrets_by_name_only(
    question: list[str], allowed: bool, control_plane: ControlPlane, operator_kubeconfig: Path
) -> None:
    result = control_plane.kubectl_run(
        "auth", "can-i", *question, kubeconfig=operator_kubeconfig, check=False
    )
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr
