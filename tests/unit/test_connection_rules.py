"""The pure core of connections: which connection a TaskRun uses, what a policy allows
(and the message naming the rule that refuses), how a connection object is read, and the
status a look at its Secret and token leads to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ona_taskrun.rules import selectors
from ona_taskrun.rules.conditions import status_patch
from ona_taskrun.rules.connection import (
    DEFAULT_CONNECTION,
    ONA_ONLY,
    AllowedUrls,
    Check,
    ConnectionKey,
    Identity,
    InvalidConnection,
    Policy,
    SecretRef,
    SecretState,
    check_policy,
    connection_status,
    key_for,
    parse_connection,
    readiness,
)
from ona_taskrun.rules.model import ConnectionRef, FailureKind, InvalidSpec, RemoteFailure
from ona_taskrun.rules.spec import parse_connection_ref

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ENV = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"
OTHER = "7d1e2c3b-4a5f-4e6d-8c7b-9a0f1e2d3c4b"
TEAM = ConnectionKey("OnaConnection", "team-a", "ona")
SHARED = ConnectionKey("ClusterOnaConnection", "", "shared")


# ------------------------------------------------------------------ which connection


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param(None, DEFAULT_CONNECTION, id="no-ref-default"),
        pytest.param(ConnectionRef("ona"), TEAM, id="named-in-own-namespace"),
        pytest.param(
            ConnectionRef("ona", "OnaConnection"), TEAM, id="explicit-kind-same-namespace"
        ),
        pytest.param(
            ConnectionRef("shared", "ClusterOnaConnection"), SHARED, id="cluster-no-namespace"
        ),
    ],
)
def test_a_taskrun_uses_a_connection_of_its_own_namespace_or_a_cluster_one(
    ref: ConnectionRef | None, expected: ConnectionKey
) -> None:
    assert key_for("team-a", ref) == expected


def test_queue_keys_round_trip_and_never_look_like_a_taskrun_key() -> None:
    for key in (TEAM, SHARED):
        assert ConnectionKey.from_queue_key(key.queue_key) == key
        assert ":" in key.queue_key


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"kind": "Secret", "name": "x"}, "must be OnaConnection", id="bad-kind"),
        pytest.param({"kind": "OnaConnection"}, "needs a name", id="no-name"),
        pytest.param({"name": "x", "namespace": "other"}, "has no namespace", id="namespace"),
        pytest.param("x", "needs a name", id="not-an-object"),
    ],
)
def test_bad_connection_refs_are_invalid_specs(raw: Any, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_connection_ref(raw)


# -------------------------------------------------------------------------- policy

TEAM_SELECTOR = selectors.parse("team in (a,b)")


@pytest.mark.parametrize(
    ("policy", "labels", "environment", "inline", "refusal"),
    [
        pytest.param(Policy(), {}, ENV, True, None, id="empty-policy-allows-all"),
        pytest.param(
            Policy(environment_ids=frozenset({ENV})), {}, ENV, False, None, id="env-allowed"
        ),
        pytest.param(
            Policy(environment_ids=frozenset({ENV})),
            {},
            OTHER,
            False,
            [f"does not allow environment {OTHER}", "environmentIds allows only " + ENV],
            id="env-not-allowed",
        ),
        pytest.param(
            Policy(environment_ids=frozenset({ENV})),
            {},
            "",
            False,
            ["does not allow environment (unknown)"],
            id="env-unknown-is-refused",
        ),
        pytest.param(
            Policy(inline_tasks=False),
            {},
            ENV,
            True,
            ["does not allow inline tasks", "inlineTasks is Deny", "spec.taskRef"],
            id="inline-denied",
        ),
        pytest.param(Policy(inline_tasks=False), {}, ENV, False, None, id="taskref-under-deny"),
        pytest.param(
            Policy(namespaces=TEAM_SELECTOR, namespaces_from="its spec.namespaceSelector"),
            {"team": "a"},
            ENV,
            True,
            None,
            id="namespace-selected",
        ),
        pytest.param(
            Policy(namespaces=TEAM_SELECTOR, namespaces_from="its spec.namespaceSelector"),
            {"team": "c"},
            ENV,
            True,
            ["does not serve namespace team-a", "spec.namespaceSelector (team in (a,b))"],
            id="namespace-not-selected",
        ),
        pytest.param(
            Policy(
                namespaces=TEAM_SELECTOR,
                inline_tasks=False,
                namespaces_from="its spec.namespaceSelector",
            ),
            {},
            ENV,
            True,
            ["does not serve namespace"],
            id="namespace-rule-named-first",
        ),
    ],
)
def test_policy(
    policy: Policy,
    labels: dict[str, str],
    environment: str,
    inline: bool,
    refusal: list[str] | None,
) -> None:
    found = check_policy(policy, TEAM, "team-a", labels, environment_id=environment, inline=inline)
    if refusal is None:
        assert found is None
    else:
        assert found is not None
        assert str(TEAM) in found
        for fragment in refusal:
            assert fragment in found


# --------------------------------------------------------------------------- parse


def connection(kind: str = "OnaConnection", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "ona", "generation": 3}
    if kind == "OnaConnection":
        meta["namespace"] = "team-a"
    return {
        "kind": kind,
        "metadata": meta,
        "spec": {"tokenSecretRef": {"name": "ona-token", "key": "token"}, **spec},
    }


def test_namespaced_connection_reads_its_secret_from_its_own_namespace() -> None:
    spec = parse_connection(connection(), operator_namespace="ona-system")
    assert spec.secret == SecretRef("team-a", "ona-token", "token")
    assert spec.base_url == "https://app.ona.com/api"
    assert spec.policy.inline_tasks is True
    assert spec.policy.environment_ids == frozenset()
    assert spec.policy.namespaces.matches({"anything": "at all"})


def test_cluster_connection_reads_its_secret_from_the_operator_namespace_only() -> None:
    body = connection("ClusterOnaConnection", namespaceSelector={"matchLabels": {"team": "a"}})
    spec = parse_connection(body, operator_namespace="platform")
    assert spec.key == ConnectionKey("ClusterOnaConnection", "", "ona")
    assert spec.secret.namespace == "platform"
    assert spec.policy.inline_tasks is False  # Deny by default on the cluster kind
    assert spec.policy.namespaces.matches({"team": "a"})
    assert not spec.policy.namespaces.matches({"team": "b"})


def test_policy_fields_are_read() -> None:
    body = connection(
        baseUrl="http://127.0.0.1:8080/",
        policy={"environmentIds": [ENV], "inlineTasks": "Deny"},
    )
    spec = parse_connection(body, operator_namespace="ona-system")
    assert spec.base_url == "http://127.0.0.1:8080"
    assert spec.policy == Policy(environment_ids=frozenset({ENV}), inline_tasks=False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"kind": "OnaConnection", "metadata": {"name": "x", "namespace": "n"}, "spec": {}},
            "tokenSecretRef needs a name and a key",
            id="no-secret-ref",
        ),
        pytest.param(connection(baseUrl="ftp://x"), "not an http(s) URL", id="bad-url"),
        pytest.param(connection(baseUrl="https://u:p@x"), "credentials", id="credentials"),
        pytest.param(
            connection(policy={"inlineTasks": "Maybe"}), "must be Allow or Deny", id="bad-inline"
        ),
        pytest.param(
            connection(policy={"environmentIds": "abc"}), "list of environment ids", id="env-str"
        ),
        pytest.param(
            connection("ClusterOnaConnection"), "namespaceSelector is required", id="no-selector"
        ),
        pytest.param(
            connection(
                "ClusterOnaConnection",
                namespaceSelector={"matchExpressions": [{"key": "t", "operator": "In"}]},
            ),
            "operator In needs at least one value",
            id="bad-selector",
        ),
    ],
)
def test_unusable_connections_say_why(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConnection) as caught:
        parse_connection(body, operator_namespace="ona-system")
    assert message in str(caught.value)
    assert "p@x" not in str(caught.value)


# ------------------------------------------------------------------------ readiness

SECRET = SecretRef("team-a", "ona-token", "token")
WHO = Identity("subject-1", "PRINCIPAL_USER", "org-1")


def failure(kind: FailureKind) -> RemoteFailure:
    return RemoteFailure(kind, f"the API says {kind.value}")


@pytest.mark.parametrize(
    ("check", "status", "reason", "fragment"),
    [
        pytest.param(Check(secret_ref=SECRET, identity=WHO), "True", "Authenticated", "subject-1"),
        pytest.param(Check(invalid="spec.baseUrl bad"), "False", "InvalidSpec", "spec.baseUrl"),
        pytest.param(
            Check(secret=SecretState.MISSING, secret_ref=SECRET),
            "False",
            "SecretNotFound",
            "Secret team-a/ona-token (key 'token') does not exist",
        ),
        pytest.param(
            Check(secret=SecretState.KEY_MISSING, secret_ref=SECRET),
            "False",
            "SecretKeyNotFound",
            "has no such key",
        ),
        pytest.param(
            Check(secret=SecretState.EMPTY, secret_ref=SECRET),
            "False",
            "InvalidSecret",
            "empty token",
        ),
        pytest.param(
            Check(secret_ref=SECRET, failure=failure(FailureKind.UNAUTHENTICATED)),
            "False",
            "Unauthorized",
            "not accepted",
        ),
        pytest.param(
            Check(secret_ref=SECRET, failure=failure(FailureKind.UNAVAILABLE)),
            "Unknown",
            "Unavailable",
            "cannot check the token",
        ),
        pytest.param(Check(secret_ref=SECRET), "Unknown", "Checking", "not been checked"),
    ],
)
def test_readiness(check: Check, status: str, reason: str, fragment: str) -> None:
    ready = readiness(check)
    assert (ready.status, ready.reason) == (status, reason)
    assert fragment in ready.message
    assert ready.ready is (status == "True")


def test_status_records_who_the_token_is_and_keeps_it_while_a_later_check_fails() -> None:
    first = connection_status({}, 3, Check(secret_ref=SECRET, identity=WHO, asked=True), NOW)
    assert first["subject"] == {"id": "subject-1", "principal": "PRINCIPAL_USER"}
    assert first["organizationId"] == "org-1"
    assert first["checkedAt"] == "2026-01-01T00:00:00Z"
    assert first["observedGeneration"] == 3
    [ready] = first["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Authenticated")

    later = NOW + timedelta(minutes=5)
    revoked = Check(secret_ref=SECRET, failure=failure(FailureKind.UNAUTHENTICATED), asked=True)
    second = connection_status(first, 3, revoked, later)
    assert second["subject"] == first["subject"]
    assert second["organizationId"] == "org-1"
    assert second["checkedAt"] == "2026-01-01T00:05:00Z"
    [ready] = second["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "Unauthorized")
    assert ready["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_unchanged_readiness_keeps_its_transition_time() -> None:
    asked = Check(secret_ref=SECRET, identity=WHO, asked=True)
    first = connection_status({}, 1, asked, NOW)
    again = connection_status(first, 1, asked, NOW + timedelta(hours=1))
    assert again["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert again["checkedAt"] == "2026-01-01T01:00:00Z"


def test_a_look_that_only_read_the_secret_writes_nothing() -> None:
    first = connection_status({}, 1, Check(secret_ref=SECRET, identity=WHO, asked=True), NOW)
    remembered = Check(secret_ref=SECRET, identity=WHO)
    later = connection_status(first, 1, remembered, NOW + timedelta(minutes=1))
    assert status_patch(first, later) == {}


# ------------------------------------------------------------------ allowed base URLs


@pytest.mark.parametrize(
    ("allowed", "url", "ok"),
    [
        pytest.param("https://app.ona.com/api", "https://app.ona.com/api", True, id="exact"),
        pytest.param("https://app.ona.com/api", "https://app.ona.com/api/v2", True, id="below"),
        pytest.param("https://app.ona.com/api", "https://app.ona.com/apix", False, id="sibling"),
        pytest.param("https://app.ona.com/api", "https://app.ona.com", False, id="above"),
        pytest.param("https://app.ona.com/api", "http://app.ona.com/api", False, id="http"),
        pytest.param("https://app.ona.com/api", "https://app.ona.com:8443/api", False, id="port"),
        pytest.param("https://app.ona.com/api", "https://app.ona.com:443/api", True, id="443"),
        pytest.param(
            "https://app.ona.com/api", "https://app.ona.com.evil.io/api", False, id="lookalike"
        ),
        pytest.param("http://127.0.0.1:8080", "http://127.0.0.1:8080/", True, id="root"),
        pytest.param("*", "https://anything.example/api", True, id="any"),
    ],
)
def test_allowed_base_urls(allowed: str, url: str, ok: bool) -> None:
    assert AllowedUrls.parse(allowed).allows(url) is ok


def test_the_default_connections_url_is_always_allowed() -> None:
    allowed = AllowedUrls.parse("https://app.ona.com/api", always=["http://127.0.0.1:9/"])
    assert allowed.allows("http://127.0.0.1:9")
    assert not allowed.allows("http://127.0.0.1:10")


def test_bad_allowed_base_url_setting_is_refused() -> None:
    with pytest.raises(InvalidConnection, match="allowed base URL 'ftp://x' is not an http"):
        AllowedUrls.parse("https://app.ona.com/api,ftp://x")


def test_a_connection_naming_another_server_is_refused_before_its_secret_is_used() -> None:
    body = connection(baseUrl="https://collector.example.com/api")
    with pytest.raises(InvalidConnection) as caught:
        parse_connection(body, operator_namespace="ona-system", allowed_urls=ONA_ONLY)
    assert caught.value.reason == "BaseUrlNotAllowed"
    assert "CONNECTION_ALLOWED_BASE_URLS" in str(caught.value)
    ready = readiness(Check(invalid=str(caught.value), invalid_reason=caught.value.reason))
    assert (ready.status, ready.reason) == ("False", "BaseUrlNotAllowed")


PROJECT = "3c2b1a09-8f7e-4d6c-9b5a-0f1e2d3c4b5a"


@pytest.mark.parametrize(
    ("policy", "project", "refusal"),
    [
        pytest.param(Policy(), PROJECT, None, id="no rules: any project"),
        pytest.param(Policy(project_ids=frozenset({PROJECT})), PROJECT, None, id="listed project"),
        pytest.param(
            Policy(project_ids=frozenset({OTHER})),
            PROJECT,
            ("spec.policy.projectIds", PROJECT, OTHER),
            id="project not listed",
        ),
        pytest.param(
            Policy(environment_ids=frozenset({ENV})),
            PROJECT,
            ("spec.policy.environmentIds", "spec.policy.projectIds"),
            id="environment allow-list without projects: no new environments",
        ),
        pytest.param(
            Policy(environment_ids=frozenset({ENV}), project_ids=frozenset({PROJECT})),
            PROJECT,
            None,
            id="environment allow-list and the project listed",
        ),
        pytest.param(
            Policy(inline_tasks=False, project_ids=frozenset({PROJECT})),
            PROJECT,
            ("inline tasks",),
            id="inline tasks denied: fromProject runs an inline task",
        ),
    ],
)
def test_from_project_policy(policy: Policy, project: str, refusal: tuple[str, ...] | None) -> None:
    found = check_policy(
        policy, TEAM, "team-a", {}, environment_id="", inline=True, project_id=project
    )
    if refusal is None:
        assert found is None
    else:
        assert found is not None
        for fragment in refusal:
            assert fragment in found


def test_project_ids_are_read_from_the_policy() -> None:
    body = {
        "metadata": {"name": "ona", "namespace": "team-a"},
        "spec": {
            "tokenSecretRef": {"name": "s", "key": "token"},
            "policy": {"projectIds": [PROJECT]},
        },
    }
    spec = parse_connection(body, operator_namespace="ona-system")
    assert spec.policy.project_ids == frozenset({PROJECT})
    bad = {**body, "spec": {**body["spec"], "policy": {"projectIds": PROJECT}}}
    with pytest.raises(InvalidConnection, match="projectIds"):
        parse_connection(bad, operator_namespace="ona-system")
