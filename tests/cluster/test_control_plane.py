"""The local control plane as the operator's tests see it: ready, TLS verified against its
own CA, anonymous callers refused, and the operator identity holding exactly the grants of
manifests/rbac."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client, config
from tools.localcluster import ADMIN, OPERATOR, https_get
from tools.localcluster.pki import create_pki, issue_client_certificate

from tests.support.cluster_fixtures import ControlPlane

pytestmark = pytest.mark.e2e

CRD_NAME = "taskruns.automation.ona.com"


def _port(plane: ControlPlane) -> int:
    port = urlsplit(plane.server).port
    assert port is not None
    return port


def _local_only(plane: ControlPlane) -> Path:
    if plane.ca_cert is None:
        pytest.skip("checks the local control plane's own CA and listener")
    return plane.ca_cert


@pytest.fixture(scope="module")
def operator_api(operator_kubeconfig: Path) -> Iterator[client.ApiClient]:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(operator_kubeconfig)
    )
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


def _plain(obj: object) -> Any:
    """A Kubernetes model as the plain JSON-like data the API server sent."""
    return client.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def test_api_server_is_ready_with_default_namespace(
    control_plane: ControlPlane, k8s_admin: client.ApiClient
) -> None:
    readyz = control_plane.kubectl_run("get", "--raw", "/readyz")
    assert readyz.stdout.strip() == "ok"
    default = _plain(client.CoreV1Api(k8s_admin).read_namespace("default"))
    assert default["status"]["phase"] == "Active"
    version = client.VersionApi(k8s_admin).get_code()
    assert version.major == "1"


def test_project_manifests_are_applied(k8s_admin: client.ApiClient) -> None:
    core = client.CoreV1Api(k8s_admin)
    assert _plain(core.read_namespace("ona-system"))["status"]["phase"] == "Active"
    account = _plain(core.read_namespaced_service_account("ona-taskrun-operator", "ona-system"))
    assert account["metadata"]["name"] == "ona-taskrun-operator"
    crd = _plain(client.ApiextensionsV1Api(k8s_admin).read_custom_resource_definition(CRD_NAME))
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert [c["status"] for c in established] == ["True"]


def test_operator_identity_is_the_service_account(control_plane: ControlPlane) -> None:
    review = json.loads(
        control_plane.kubectl_run(
            "auth", "whoami", "-o", "json", kubeconfig=control_plane.operator_kubeconfig
        ).stdout
    )
    user = review["status"]["userInfo"]
    assert user["username"] == OPERATOR.user
    assert user["username"] == "system:serviceaccount:ona-system:ona-taskrun-operator"
    assert set(user["groups"]) == {
        "system:serviceaccounts",
        "system:serviceaccounts:ona-system",
        "system:authenticated",
    }


def test_admin_identity_is_a_cluster_admin(control_plane: ControlPlane) -> None:
    review = json.loads(control_plane.kubectl_run("auth", "whoami", "-o", "json").stdout)
    assert review["status"]["userInfo"]["username"] == ADMIN.user
    assert "system:masters" in review["status"]["userInfo"]["groups"]
    can_i = control_plane.kubectl_run("auth", "can-i", "*", "*", "--all-namespaces")
    assert can_i.stdout.strip() == "yes"


def test_operator_is_refused_beyond_its_grants(
    operator_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(operator_api)
    with pytest.raises(client.ApiException) as secrets:
        core.list_namespaced_secret(namespace)
    assert secrets.value.status == 403
    with pytest.raises(client.ApiException) as all_secrets:
        core.list_secret_for_all_namespaces()
    assert all_secrets.value.status == 403
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="probe"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )
    with pytest.raises(client.ApiException) as pods:
        core.create_namespaced_pod(namespace, pod)
    assert pods.value.status == 403
    with pytest.raises(client.ApiException) as delete_namespace:
        core.delete_namespace(namespace)
    assert delete_namespace.value.status == 403
    assert "system:serviceaccount:ona-system:ona-taskrun-operator" in str(pods.value.body)


def test_operator_is_allowed_within_its_grants(
    operator_api: client.ApiClient, k8s_admin: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(operator_api)
    names = {ns["metadata"]["name"] for ns in _plain(core.list_namespace())["items"]}
    assert {"default", "ona-system", namespace} <= names

    event = _plain(
        core.create_namespaced_event(
            namespace,
            client.CoreV1Event(
                metadata=client.V1ObjectMeta(generate_name="probe-"),
                involved_object=client.V1ObjectReference(
                    api_version="v1", kind="ConfigMap", name="probe", namespace=namespace
                ),
                reason="Probe",
                message="the operator may post events",
                type="Normal",
            ),
        )
    )
    assert event["metadata"]["uid"]

    # Leases only in the operator's own namespace (its Role), never in a team's.
    probe = client.V1Lease(
        metadata=client.V1ObjectMeta(name=f"probe-{uuid.uuid4().hex[:8]}"),
        spec=client.V1LeaseSpec(holder_identity="probe"),
    )
    leases = client.CoordinationV1Api(operator_api)
    lease = _plain(leases.create_namespaced_lease("ona-system", probe))
    assert lease["spec"]["holderIdentity"] == "probe"
    with pytest.raises(client.ApiException) as elsewhere:
        leases.create_namespaced_lease(namespace, probe)
    assert elsewhere.value.status == 403

    crd = _plain(client.ApiextensionsV1Api(k8s_admin).read_custom_resource_definition(CRD_NAME))
    version = next(v["name"] for v in crd["spec"]["versions"] if v["storage"])
    taskruns: Any = client.CustomObjectsApi(operator_api).list_namespaced_custom_object(
        "automation.ona.com", version, namespace, "taskruns"
    )
    assert taskruns["items"] == []


def test_anonymous_requests_are_refused_beyond_health(control_plane: ControlPlane) -> None:
    ca_cert = _local_only(control_plane)
    anonymous = ssl.create_default_context(cafile=str(ca_cert))
    code, body = https_get(_port(control_plane), "/api/v1/namespaces", anonymous)
    assert code in (401, 403), body
    code, body = https_get(_port(control_plane), "/api/v1/namespaces/default/secrets", anonymous)
    assert code in (401, 403), body
    # Health endpoints stay public, as on any cluster (system:public-info-viewer).
    code, body = https_get(_port(control_plane), "/readyz", anonymous)
    assert (code, body) == (200, b"ok")


def test_client_certificate_from_another_ca_is_not_admin(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    ca_cert = _local_only(control_plane)
    rogue = issue_client_certificate(create_pki(tmp_path / "rogue"), ADMIN, "admin")
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.load_cert_chain(rogue.cert_path, rogue.key_path)
    code, _ = https_get(_port(control_plane), "/api/v1/namespaces", context)
    assert code == 401


def test_tls_is_verified_against_the_generated_ca(control_plane: ControlPlane) -> None:
    ca_cert = _local_only(control_plane)
    port = _port(control_plane)
    # The system trust store does not know the cluster's CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(port, "/readyz", ssl.create_default_context())
    trusting = ssl.create_default_context(cafile=str(ca_cert))
    for hostname in ("localhost", "127.0.0.1"):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            trusting.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            assert tls.getpeercert() is not None
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        trusting.wrap_socket(raw, server_hostname="not-the-api-server.example")

    for kubeconfig in (control_plane.admin_kubeconfig, control_plane.operator_kubeconfig):
        document = yaml.safe_load(kubeconfig.read_text())
        (cluster,) = document["clusters"]
        assert "insecure-skip-tls-verify" not in cluster["cluster"]
        assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == (
            ca_cert.read_bytes()
        )
        assert cluster["cluster"]["server"] == control_plane.server


def test_namespace_fixture_gives_a_fresh_namespace(
    k8s_admin: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s_admin)
    assert _plain(core.read_namespace(namespace))["status"]["phase"] == "Active"
    name = f"probe-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name))
    )
    stored = _plain(core.read_namespaced_config_map(name, namespace))
    assert stored["metadata"]["namespace"] == namespace
