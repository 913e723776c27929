"""End to end: many teams, one operator. Each TaskRun's Ona calls use its own connection's
token (seen from the simulator's call log and the executions' creators), policies refuse
before anything is created or started, missing pieces are waited for, tokens rotate
without a restart, and no token appears in logs, Events or status."""

from __future__ import annotations

import base64
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    ENVIRONMENT_ID,
    GROUP,
    VERSION,
    OperatorFactory,
    OperatorProcess,
    TaskRuns,
    inline_task,
    unique_reference,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

OTHER_ENVIRONMENT = "7d1e2c3b-4a5f-4e6d-8c7b-9a0f1e2d3c4b"


def _token() -> str:
    return f"ona_pat_{uuid.uuid4().hex}"


@dataclass
class Team:
    namespace: str
    token: str
    subject: str
    taskruns: TaskRuns


@dataclass
class Kube:
    control_plane: ControlPlane
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def namespace(self, labels: dict[str, str] | None = None) -> str:
        name = f"t-conn-{uuid.uuid4().hex[:10]}"
        self.core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(
                    name=name, labels={"ona-taskrun/test": "true", **(labels or {})}
                )
            )
        )
        return name

    def secret(self, namespace: str, name: str, token: str) -> None:
        data = {"token": base64.b64encode(token.encode()).decode()}
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=data)
        try:
            self.core.create_namespaced_secret(namespace, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(name, namespace, body)

    def apply(self, doc: dict[str, Any]) -> None:
        self.control_plane.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(doc))

    def connection(
        self, namespace: str, name: str, base_url: str, policy: dict[str, Any] | None = None
    ) -> None:
        spec: dict[str, Any] = {
            "baseUrl": base_url,
            "tokenSecretRef": {"name": f"{name}-token", "key": "token"},
        }
        if policy is not None:
            spec["policy"] = policy
        self.apply(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "OnaConnection",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )

    def connection_status(
        self, namespace: str, name: str, *, cluster: bool = False
    ) -> dict[str, Any]:
        if cluster:
            obj = self.custom.get_cluster_custom_object(
                GROUP, VERSION, "clusteronaconnections", name
            )
        else:
            obj = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "onaconnections", name
            )
        return dict(obj.get("status") or {})

    def wait_ready(
        self,
        namespace: str,
        name: str,
        status: str = "True",
        *,
        cluster: bool = False,
        reason: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            found = self.connection_status(namespace, name, cluster=cluster)
            for cond in found.get("conditions") or ():
                if (
                    cond["type"] == "Ready"
                    and cond["status"] == status
                    and (reason is None or cond["reason"] == reason)
                ):
                    return found
            return None

        return wait_for(probe, timeout=timeout, what=f"connection {name} Ready={status} {reason}")


@pytest.fixture
def kube(control_plane: ControlPlane, k8s_admin: client.ApiClient) -> Kube:
    return Kube(control_plane, k8s_admin)


def _taskruns(kube: Kube, namespace: str) -> TaskRuns:
    return TaskRuns(kube.control_plane, kube.custom, namespace)


def _team(kube: Kube, sim: SimulatorHandle, connection: str = "team") -> Team:
    namespace = kube.namespace()
    token = _token()
    subject = sim.control.add_token(token)
    kube.secret(namespace, f"{connection}-token", token)
    kube.connection(namespace, connection, sim.base_url)
    return Team(namespace, token, subject, _taskruns(kube, namespace))


def _execution(sim: SimulatorHandle, execution_id: str) -> dict[str, Any]:
    found = sim.control.execution(execution_id)
    return dict(found.get("execution", found))


def _calls_for(sim: SimulatorHandle, method: str, request_id: str) -> list[dict[str, Any]]:
    return [c for c in sim.control.calls(method) if c.get("requestId") == request_id]


def _assert_no_token_leaks(
    tokens: list[str], operator: OperatorProcess, kube: Kube, namespaces: list[str]
) -> None:
    texts = [operator.log()]
    for namespace in namespaces:
        for kind in ("taskruns", "onaconnections", "events"):
            texts.append(
                kube.control_plane.kubectl_run("get", kind, "-n", namespace, "-o", "yaml").stdout
            )
    everything = "\n".join(texts)
    for token in tokens:
        assert token not in everything


def test_two_teams_run_with_their_own_tokens(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    a, b = _team(kube, e2e_simulator), _team(kube, e2e_simulator)
    operator = operator_factory(f"{a.namespace},{b.namespace}")

    for team in (a, b):
        status = kube.wait_ready(team.namespace, "team")
        assert status["subject"]["id"] == team.subject
        assert status["organizationId"]
        team.taskruns.apply(
            "build",
            {"task": inline_task("make # sim:duration=300ms"), "connectionRef": {"name": "team"}},
        )
    for team in (a, b):
        status = team.taskruns.wait_phase("build", "SUCCEEDED")
        execution = _execution(e2e_simulator, status["taskExecutionId"])
        assert execution["metadata"]["creator"]["id"] == team.subject
        starts = _calls_for(e2e_simulator, "StartTask", status["taskId"])
        assert starts
        assert {c["subjectId"] for c in starts} == {team.subject}
        # The execution is read with the team's own token only.
        reads = _calls_for(e2e_simulator, "GetTaskExecution", status["taskExecutionId"])
        assert {c["subjectId"] for c in reads} <= {team.subject}
    _assert_no_token_leaks([a.token, b.token], operator, kube, [a.namespace, b.namespace])


def test_cluster_connection_serves_selected_namespaces_only(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    operator_namespace = kube.namespace()
    label = f"shared-{uuid.uuid4().hex[:6]}"
    selected = kube.namespace({"ona.com/shared": label})
    unselected = kube.namespace()
    token = _token()
    subject = e2e_simulator.control.add_token(token)
    kube.secret(operator_namespace, "shared-token", token)
    # The operator may create its claim key only in ona-system (its Role); an installer
    # of another namespace grants the same there, which this stands in for.
    kube.core.create_namespaced_secret(
        operator_namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="ona-taskrun-claim-key"),
            data={"key": base64.b64encode(uuid.uuid4().bytes * 2).decode()},
        ),
    )
    name = f"shared-{uuid.uuid4().hex[:8]}"
    kube.apply(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterOnaConnection",
            "metadata": {"name": name},
            "spec": {
                "baseUrl": e2e_simulator.base_url,
                "tokenSecretRef": {"name": "shared-token", "key": "token"},
                "namespaceSelector": {"matchLabels": {"ona.com/shared": label}},
            },
        }
    )
    try:
        operator_factory(
            f"{selected},{unselected}", extra_env={"OPERATOR_NAMESPACE": operator_namespace}
        )
        kube.wait_ready("", name, cluster=True)
        task = e2e_simulator.control.seed_task(
            environment_id=ENVIRONMENT_ID,
            reference=unique_reference(),
            command="report # sim:duration=200ms",
        )
        spec = {
            "taskRef": {"id": task["id"]},
            "connectionRef": {"kind": "ClusterOnaConnection", "name": name},
        }
        refused = _taskruns(kube, unselected)
        refused.apply("report", spec)
        allowed = _taskruns(kube, selected)
        allowed.apply("report", spec)

        status = allowed.wait_phase("report", "SUCCEEDED")
        assert (
            _execution(e2e_simulator, status["taskExecutionId"])["metadata"]["creator"]["id"]
            == subject
        )
        cond = refused.wait_condition("report", "Succeeded", "False", "NotPermitted")
        assert f"does not serve namespace {unselected}" in cond["message"]
        assert "namespaceSelector" in cond["message"]
        assert refused.condition("report", "Stalled")["status"] == "True"  # type: ignore[index]
        assert "taskExecutionId" not in refused.status("report")
        starts = _calls_for(e2e_simulator, "StartTask", task["id"])
        assert len(starts) == 1
        # Inline tasks are denied by default on a cluster connection.
        allowed.apply(
            "inline", {"task": inline_task("echo"), "connectionRef": spec["connectionRef"]}
        )
        cond = allowed.wait_condition("inline", "Succeeded", "False", "NotPermitted")
        assert "inline tasks" in cond["message"]
    finally:
        with contextlib.suppress(client.ApiException):
            kube.custom.delete_cluster_custom_object(GROUP, VERSION, "clusteronaconnections", name)


def test_policy_refusals_create_and_start_nothing(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    kube.connection(
        team.namespace,
        "team",
        e2e_simulator.base_url,
        policy={"environmentIds": [ENVIRONMENT_ID], "inlineTasks": "Deny"},
    )
    elsewhere = e2e_simulator.control.seed_task(
        environment_id=OTHER_ENVIRONMENT, reference=unique_reference(), command="x"
    )
    allowed = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID,
        reference=unique_reference(),
        command="ok # sim:duration=200ms",
    )
    operator_factory(team.namespace)
    kube.wait_ready(team.namespace, "team")
    ref = {"connectionRef": {"name": "team"}}
    team.taskruns.apply("inline", {"task": inline_task("echo"), **ref})
    team.taskruns.apply(
        "by-ref",
        {
            "taskRef": {
                "environmentId": OTHER_ENVIRONMENT,
                "reference": elsewhere["metadata"]["reference"],
            },
            **ref,
        },
    )
    team.taskruns.apply("by-id", {"taskRef": {"id": elsewhere["id"]}, **ref})
    team.taskruns.apply("allowed", {"taskRef": {"id": allowed["id"]}, **ref})
    # A task the token cannot read has no environment to allow: the policy fails closed.
    unseen = str(uuid.uuid4())
    team.taskruns.apply("unseen", {"taskRef": {"id": unseen}, **ref})

    inline = team.taskruns.wait_condition("inline", "Succeeded", "False", "NotPermitted")
    cond = team.taskruns.wait_condition("unseen", "Succeeded", "False", "NotPermitted")
    assert f"task {unseen} was not found" in cond["message"]
    assert _calls_for(e2e_simulator, "StartTask", unseen) == []
    assert "inlineTasks is Deny" in inline["message"]
    for name in ("by-ref", "by-id"):
        cond = team.taskruns.wait_condition(name, "Succeeded", "False", "NotPermitted")
        assert f"does not allow environment {OTHER_ENVIRONMENT}" in cond["message"]
        assert "environmentIds" in cond["message"]
    team.taskruns.wait_phase("allowed", "SUCCEEDED")
    team.taskruns.wait_events("inline", "NotPermitted")

    # Nothing was created or started for the refused runs, by anyone.
    uid = team.taskruns.get("inline")["metadata"]["uid"]
    assert not [
        t for t in e2e_simulator.control.tasks() if uid in t["metadata"].get("reference", "")
    ]
    assert not [
        c for c in e2e_simulator.control.calls("CreateTask") if c["subjectId"] == team.subject
    ]
    assert not _calls_for(e2e_simulator, "StartTask", elsewhere["id"])
    for name in ("inline", "by-ref", "by-id"):
        assert "taskExecutionId" not in team.taskruns.status(name)


def test_taskrun_applied_before_its_connection_and_secret_starts_once_they_exist(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    namespace = kube.namespace()
    taskruns = _taskruns(kube, namespace)
    operator_factory(namespace)
    taskruns.apply(
        "early",
        {"task": inline_task("make # sim:duration=200ms"), "connectionRef": {"name": "late"}},
    )
    cond = taskruns.wait_condition("early", "Succeeded", "Unknown", "ConnectionNotFound")
    assert f"OnaConnection {namespace}/late does not exist" in cond["message"]
    reachable = taskruns.condition("early", "RemoteReachable")
    assert reachable is not None
    assert reachable["status"] == "False"

    kube.connection(namespace, "late", e2e_simulator.base_url)
    cond = taskruns.wait_condition("early", "Succeeded", "Unknown", "SecretNotFound")
    assert f"Secret {namespace}/late-token" in cond["message"]
    kube.wait_ready(namespace, "late", "False", reason="SecretNotFound")

    token = _token()
    subject = e2e_simulator.control.add_token(token)
    kube.secret(namespace, "late-token", token)
    status = taskruns.wait_phase("early", "SUCCEEDED", timeout=60)
    assert (
        _execution(e2e_simulator, status["taskExecutionId"])["metadata"]["creator"]["id"] == subject
    )
    assert status.get("startAttempts") == 1


def test_rotated_token_is_used_without_a_restart(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    operator = operator_factory(team.namespace)
    kube.wait_ready(team.namespace, "team")
    team.taskruns.apply(
        "long", {"task": inline_task("make # sim:duration=6s"), "connectionRef": {"name": "team"}}
    )
    team.taskruns.wait_phase("long", "RUNNING")

    # Rotate: the same subject gets a new token, the Secret is updated, the old one dies.
    rotated = _token()
    e2e_simulator.control.add_token(rotated, subject_id=team.subject)
    kube.secret(team.namespace, "team-token", rotated)
    e2e_simulator.control.revoke_token(team.token)

    status = team.taskruns.wait_phase("long", "SUCCEEDED", timeout=60)
    assert team.taskruns.condition("long", "Succeeded")["status"] == "True"  # type: ignore[index]
    # A later run uses the new token from its first call.
    team.taskruns.apply(
        "after",
        {"task": inline_task("make # sim:duration=200ms"), "connectionRef": {"name": "team"}},
    )
    after = team.taskruns.wait_phase("after", "SUCCEEDED", timeout=60)
    assert after["startAttempts"] == 1
    assert status["taskExecutionId"] != after["taskExecutionId"]
    assert operator.running
    _assert_no_token_leaks([team.token, rotated], operator, kube, [team.namespace])


def test_revoked_token_shows_as_unreachable_not_as_failed_runs(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    operator_factory(team.namespace)
    kube.wait_ready(team.namespace, "team")
    ref = {"connectionRef": {"name": "team"}}
    team.taskruns.apply("running", {"task": inline_task("make # sim:hang"), **ref})
    team.taskruns.wait_phase("running", "RUNNING")

    e2e_simulator.control.revoke_token(team.token)
    team.taskruns.wait_condition("running", "RemoteReachable", "False", "Unauthorized")
    assert team.taskruns.status("running")["phase"] == "RUNNING"
    assert team.taskruns.condition("running", "Succeeded")["status"] == "Unknown"  # type: ignore[index]
    kube.wait_ready(team.namespace, "team", "False", reason="Unauthorized")

    team.taskruns.apply("new", {"task": inline_task("echo"), **ref})
    cond = team.taskruns.wait_condition("new", "Succeeded", "Unknown", "Unauthorized")
    assert "is not ready" in cond["message"]
    assert "taskExecutionId" not in team.taskruns.status("new")

    # Deleting a run whose stop is refused never hangs.
    kube.custom.delete_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "taskruns", "running"
    )
    wait_for(lambda: not team.taskruns.exists("running"), what="the TaskRun to be deleted")


def test_connection_naming_a_server_that_is_not_allowed_never_gets_its_token(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    namespace = kube.namespace()
    kube.secret(namespace, "exfil-token", "not-an-ona-token")
    kube.connection(namespace, "exfil", "https://collector.example.com/api")
    operator_factory(namespace)
    status = kube.wait_ready(namespace, "exfil", "False", reason="BaseUrlNotAllowed")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "CONNECTION_ALLOWED_BASE_URLS" in ready["message"]
    taskruns = _taskruns(kube, namespace)
    taskruns.apply("run", {"task": inline_task("echo"), "connectionRef": {"name": "exfil"}})
    taskruns.wait_condition("run", "Succeeded", "Unknown", "BaseUrlNotAllowed")


def test_deleted_connection_keeps_the_last_status_and_deletion_completes(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    operator_factory(team.namespace)
    kube.wait_ready(team.namespace, "team")
    team.taskruns.apply(
        "running", {"task": inline_task("make # sim:hang"), "connectionRef": {"name": "team"}}
    )
    team.taskruns.wait_phase("running", "RUNNING")

    kube.custom.delete_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "onaconnections", "team"
    )
    cond = team.taskruns.wait_condition("running", "RemoteReachable", "False", "ConnectionNotFound")
    assert f"OnaConnection {team.namespace}/team does not exist" in cond["message"]
    assert team.taskruns.status("running")["phase"] == "RUNNING"

    kube.custom.delete_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "taskruns", "running"
    )
    wait_for(lambda: not team.taskruns.exists("running"), what="the TaskRun to be deleted")
    events = team.taskruns.wait_events("running", "CleanupSkipped")
    skipped = next(e for e in events if e["reason"] == "CleanupSkipped")
    assert "does not exist" in skipped["message"]


def test_without_an_operator_token_taskruns_must_name_a_connection(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    team = _team(kube, e2e_simulator)
    operator = operator_factory(team.namespace, token="")
    team.taskruns.apply("unnamed", {"task": inline_task("echo")})
    cond = team.taskruns.wait_condition("unnamed", "Succeeded", "Unknown", "NoDefaultConnection")
    assert "spec.connectionRef" in cond["message"]
    team.taskruns.apply(
        "named",
        {"task": inline_task("echo # sim:duration=100ms"), "connectionRef": {"name": "team"}},
    )
    team.taskruns.wait_phase("named", "SUCCEEDED")
    assert operator.running


def test_default_connection_serves_only_the_namespaces_its_setting_selects(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    served = kube.namespace({"ona.com/default-token": "yes"})
    other = kube.namespace()
    operator_factory(
        f"{served},{other}",
        extra_env={"DEFAULT_CONNECTION_NAMESPACE_SELECTOR": "ona.com/default-token=yes"},
    )
    for namespace in (served, other):
        _taskruns(kube, namespace).apply("run", {"task": inline_task("echo # sim:duration=100ms")})
    _taskruns(kube, served).wait_phase("run", "SUCCEEDED")
    cond = _taskruns(kube, other).wait_condition("run", "Succeeded", "False", "NotPermitted")
    assert "DEFAULT_CONNECTION_NAMESPACE_SELECTOR" in cond["message"]
    assert f"namespace {other}" in cond["message"]
