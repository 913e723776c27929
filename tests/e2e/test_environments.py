"""End to end: runs that survive Ona's environment lifecycle (`spec.environment`).

A stopped environment is started and the run succeeds; `whenStopped: Fail` ends at once;
keep-alive holds an environment up past its idle timeout (and without it the environment
stops under the run); an environment is created per run from a project, used and
deleted; a crash between its creation and its record leaves one environment, adopted;
deleting a TaskRun mid-run cleans up per `deletionPolicy`. Idle timeouts and delays are a
few seconds, so the file stays well under a minute of waiting."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.test_connections import Kube, _team
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    OperatorFactory,
    OperatorProcess,
    TaskRuns,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

# Environment timings of the operator under test: look often, signal every second.
FAST_ENVIRONMENTS = {"ENVIRONMENT_POLL_SECONDS": "0.3", "ENVIRONMENT_KEEPALIVE_SECONDS": "1"}
DELAYS = {"createDelay": "1s", "startDelay": "1.5s", "stopDelay": "200ms", "deleteDelay": "200ms"}


@pytest.fixture
def kube(control_plane: ControlPlane, k8s_admin: client.ApiClient) -> Kube:
    return Kube(control_plane, k8s_admin)


@pytest.fixture
def env_operator(operator_factory: OperatorFactory, namespace: str) -> OperatorProcess:
    return operator_factory(namespace, extra_env=FAST_ENVIRONMENTS)


def _task(environment_id: str | None, command: str) -> dict[str, Any]:
    task: dict[str, Any] = {"name": "env-task", "command": command}
    if environment_id:
        task["environmentId"] = environment_id
    return task


def _sim_env(sim: SimulatorHandle, env_id: str) -> dict[str, Any]:
    return sim.control.environment(env_id)


def _phase(sim: SimulatorHandle, env_id: str) -> str:
    return str(_sim_env(sim, env_id)["environment"]["status"]["phase"])


def _executions_in(sim: SimulatorHandle, env_id: str) -> list[dict[str, Any]]:
    return [
        item["execution"]
        for item in sim.control.executions()
        if item["execution"]["metadata"]["environmentId"] == env_id
    ]


def _project_environments(sim: SimulatorHandle, project_id: str) -> list[dict[str, Any]]:
    return [
        item
        for item in sim.control.environments()
        if item["environment"]["metadata"].get("projectId") == project_id
    ]


def test_a_stopped_environment_is_started_and_the_run_succeeds(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
) -> None:
    # A poll far longer than the test waits: the run goes on when the environment's watch
    # events say it is running, not at the next poll.
    operator_factory(namespace, extra_env={"ENVIRONMENT_POLL_SECONDS": "60"})
    # Slow enough to start that a user (and this test) sees it wait.
    env = e2e_simulator.control.seed_environment(phase="STOPPED", **{**DELAYS, "startDelay": "3s"})
    taskruns.apply(
        "wake",
        {"task": _task(env["id"], "x # sim:duration=1s"), "environment": {}},
    )

    def waiting_row(*wide: str) -> list[str] | None:
        out = control_plane.kubectl_run("-n", taskruns.namespace, "get", "otr", "wake", *wide)
        lines = out.stdout.splitlines()
        return lines if "STARTING" in out.stdout or "EnvironmentStarting" in out.stdout else None

    # `kubectl get otr` shows the environment's state while the run waits for it: in the
    # REASON column, and with -o wide in a column of its own.
    header, row = wait_for(waiting_row, timeout=20, what="EnvironmentStarting in get otr")[:2]
    assert header.split()[:4] == ["NAME", "PHASE", "SUCCEEDED", "REASON"]
    assert row.split()[:4] == ["wake", "PENDING", "Unknown", "EnvironmentStarting"]
    wide = wait_for(lambda: waiting_row("-o", "wide"), timeout=5, what="get otr -o wide")
    column = wide[0].split().index("ENVIRONMENT")
    assert wide[1].split()[column] in ("STOPPED", "STARTING")
    final = taskruns.wait_phase("wake", "SUCCEEDED", timeout=20)
    assert final["environmentId"] == env["id"]
    assert final["environmentPhase"] == "RUNNING"
    ready = taskruns.condition("wake", "EnvironmentReady")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Running")
    # Started once, in the same environment (content kept), and the task ran once in it.
    starts = [
        c for c in e2e_simulator.control.calls("StartEnvironment") if c["requestId"] == env["id"]
    ]
    assert len(starts) == 1
    assert [e["id"] for e in _executions_in(e2e_simulator, env["id"])] == [final["taskExecutionId"]]
    taskruns.wait_events("wake", "EnvironmentStarting", "Succeeded")


def test_when_stopped_fail_ends_the_run_at_once(
    env_operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    env = e2e_simulator.control.seed_environment(phase="STOPPED", **DELAYS)
    taskruns.apply(
        "strict",
        {"task": _task(env["id"], "x # sim:duration=1s"), "environment": {"whenStopped": "Fail"}},
    )
    cond = taskruns.wait_condition("strict", "Succeeded", "False", "EnvironmentNotRunning")
    assert env["id"] in cond["message"]
    assert _phase(e2e_simulator, env["id"]) == "ENVIRONMENT_PHASE_STOPPED"
    assert not _executions_in(e2e_simulator, env["id"])
    calls = e2e_simulator.control.calls("StartEnvironment")
    assert env["id"] not in {c["requestId"] for c in calls}
    # Nothing was created in it either.
    assert not taskruns.status("strict").get("taskId")


def test_keep_alive_holds_the_environment_past_its_idle_timeout(
    env_operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    idle = {"idleTimeout": "3s", "stopDelay": "200ms"}
    kept = e2e_simulator.control.seed_environment(**idle)
    left = e2e_simulator.control.seed_environment(**idle)
    command = "x # sim:pending=100ms sim:duration=7s"
    taskruns.apply("kept", {"task": _task(kept["id"], command), "environment": {}})
    taskruns.apply(
        "left", {"task": _task(left["id"], command), "environment": {"keepAlive": False}}
    )
    # Without signals the environment idles out under the run, which ends saying so.
    cond = taskruns.wait_condition("left", "Succeeded", "False", "EnvironmentStopped", timeout=20)
    assert left["id"] in cond["message"]
    # At least once: on a slow machine it may also idle out before the start, and be
    # started again for the run (a run's default environment handling).
    assert _sim_env(e2e_simulator, left["id"])["stoppedForIdleness"] >= 1
    ready = taskruns.condition("left", "EnvironmentReady")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "Stopped")
    # With them, the same run outlives the idle timeout and succeeds.
    # SUCCEEDED is the proof: the simulator stops an environment's executions when it
    # stops. Once the run is over the signals end and the environment may idle out, so
    # its phase now says nothing about the run.
    taskruns.wait_phase("kept", "SUCCEEDED", timeout=30)
    assert _sim_env(e2e_simulator, kept["id"])["activitySignals"] >= 3


def test_an_environment_is_created_for_the_run_used_and_deleted(
    env_operator: OperatorProcess, taskruns: TaskRuns, e2e_simulator: SimulatorHandle
) -> None:
    project = e2e_simulator.control.seed_project(name="web", **DELAYS)
    spec = {
        "task": _task(None, "x # sim:duration=1s"),
        "environment": {"fromProject": {"projectId": project["id"], "branch": "main"}},
    }
    taskruns.apply("fresh", spec)
    final = taskruns.wait_phase("fresh", "SUCCEEDED", timeout=30)
    created = _project_environments(e2e_simulator, project["id"])
    assert len(created) == 1
    env = created[0]["environment"]
    assert env["id"] == final["environmentId"]
    uid = taskruns.get("fresh")["metadata"]["uid"]
    assert env["metadata"]["name"] == f"fresh-{uid}"
    git = env["spec"]["content"]["initializer"]["specs"][0]["git"]
    assert git["cloneTarget"] == "main"
    # The task ran in it, and it is deleted once the run is over.
    assert [e["id"] for e in _executions_in(e2e_simulator, env["id"])] == [final["taskExecutionId"]]
    wait_for(
        lambda: _phase(e2e_simulator, env["id"]) == "ENVIRONMENT_PHASE_DELETED",
        timeout=15,
        what="the run's environment deleted",
    )
    taskruns.wait_events("fresh", "EnvironmentCreated", "Succeeded", "EnvironmentDeleted")


@pytest.mark.parametrize(
    ("point", "before_restart", "event"),
    [
        # Killed after the claim, before the call: none exists; one is created after all.
        ("after-environment-claim", 0, "EnvironmentRecreating"),
        # Killed after the call, before its record: the one that exists is adopted.
        ("after-environment-create", 1, "EnvironmentAdopted"),
    ],
)
def test_killed_around_the_creation_leaves_exactly_one_environment(
    point: str,
    before_restart: int,
    event: str,
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    project = e2e_simulator.control.seed_project(**DELAYS)
    crashing = operator_factory(
        namespace, extra_env={**FAST_ENVIRONMENTS, "ONA_TASKRUN_CRASH_POINT": point}
    )
    spec = {
        "task": _task(None, "x # sim:duration=500ms"),
        "environment": {"fromProject": {"projectId": project["id"]}},
    }
    taskruns.apply("crashy", spec)
    assert crashing.wait_exit(timeout=30) == -signal.SIGKILL
    status = taskruns.status("crashy")
    assert status.get("environmentRequestedAt")  # the claim went out first
    assert not status.get("environmentId")  # the crash came before any record
    assert len(_project_environments(e2e_simulator, project["id"])) == before_restart

    operator_factory(namespace, extra_env=FAST_ENVIRONMENTS)
    final = taskruns.wait_phase("crashy", "SUCCEEDED", timeout=40)
    created = _project_environments(e2e_simulator, project["id"])
    assert [item["environment"]["id"] for item in created] == [final["environmentId"]]
    creates = [
        c
        for c in e2e_simulator.control.calls("CreateEnvironmentFromProject")
        if c["resultId"] == final["environmentId"]
    ]
    assert len(creates) == 1
    taskruns.wait_events("crashy", event, "Succeeded")


def test_deleting_a_taskrun_mid_run_cleans_up_per_policy(
    env_operator: OperatorProcess,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
) -> None:
    project = e2e_simulator.control.seed_project(**DELAYS)
    hang = _task(None, "x # sim:hang")
    environment = {"fromProject": {"projectId": project["id"]}}
    taskruns.apply("tidy", {"task": hang, "environment": environment})
    taskruns.apply("orphan", {"task": hang, "environment": environment, "deletionPolicy": "Orphan"})
    tidy = taskruns.wait_phase("tidy", "RUNNING", timeout=30)
    orphan = taskruns.wait_phase("orphan", "RUNNING", timeout=30)
    for name in ("tidy", "orphan"):
        control_plane.kubectl_run("-n", taskruns.namespace, "delete", "otr", name, "--wait=false")
    wait_for(
        lambda: not taskruns.exists("tidy") and not taskruns.exists("orphan"),
        timeout=20,
        what="both TaskRuns gone",
    )
    # Stop (the default): the execution stopped and the environment made for it deleted.
    wait_for(
        lambda: _phase(e2e_simulator, tidy["environmentId"]) == "ENVIRONMENT_PHASE_DELETED",
        timeout=15,
        what="the deleted run's environment deleted",
    )
    # Orphan: everything remote left as it was.
    assert _phase(e2e_simulator, orphan["environmentId"]) == "ENVIRONMENT_PHASE_RUNNING"
    running = _executions_in(e2e_simulator, orphan["environmentId"])
    assert [e["status"]["phase"] for e in running] == ["TASK_EXECUTION_PHASE_RUNNING"]
    stops = {c["requestId"] for c in e2e_simulator.control.calls("StopTaskExecution")}
    assert tidy["taskExecutionId"] in stops
    assert orphan["taskExecutionId"] not in stops
    # Tidy up what the test orphaned on purpose.
    e2e_simulator.control.set_environment_phase(orphan["environmentId"], "STOPPED")


def test_connection_policy_limits_projects_and_environments_use_its_token(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    allowed = e2e_simulator.control.seed_project(**DELAYS)
    other = e2e_simulator.control.seed_project(**DELAYS)
    team = _team(kube, e2e_simulator)
    kube.connection(
        team.namespace, "team", e2e_simulator.base_url, policy={"projectIds": [allowed["id"]]}
    )
    operator_factory(team.namespace, extra_env=FAST_ENVIRONMENTS)
    kube.wait_ready(team.namespace, "team")
    for name, project in (("mine", allowed), ("theirs", other)):
        team.taskruns.apply(
            name,
            {
                "task": _task(None, "x # sim:duration=300ms"),
                "environment": {"fromProject": {"projectId": project["id"]}},
                "connectionRef": {"name": "team"},
            },
        )
    refused = team.taskruns.wait_condition("theirs", "Succeeded", "False", "NotPermitted")
    assert "spec.policy.projectIds" in refused["message"]
    assert other["id"] in refused["message"]
    final = team.taskruns.wait_phase("mine", "SUCCEEDED", timeout=30)
    assert not _project_environments(e2e_simulator, other["id"])
    created = _project_environments(e2e_simulator, allowed["id"])
    assert [item["environment"]["id"] for item in created] == [final["environmentId"]]
    # Created, read and signalled with the connection's token, not the operator's.
    assert created[0]["environment"]["metadata"]["creator"]["id"] == team.subject
    calls = [
        c
        for method in ("GetEnvironment", "MarkEnvironmentActive", "DeleteEnvironment")
        for c in e2e_simulator.control.calls(method)
        if c["requestId"] == final["environmentId"]
    ]
    assert calls
    assert {c["subjectId"] for c in calls} == {team.subject}


PROJECT_ID = "3c2b1a09-8f7e-4d6c-9b5a-0f1e2d3c4b5a"
ANY_ENVIRONMENT = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {
                "task": _task(ANY_ENVIRONMENT, "x"),
                "environment": {"fromProject": {"projectId": PROJECT_ID}},
            },
            "fromProject runs an inline spec.task without environmentId",
            id="from-project-with-environment-id",
        ),
        pytest.param(
            {
                "taskRef": {"id": PROJECT_ID},
                "environment": {"fromProject": {"projectId": PROJECT_ID}},
            },
            "fromProject runs an inline spec.task without environmentId",
            id="from-project-with-task-ref",
        ),
        pytest.param(
            {"task": _task(None, "x")},
            "otherwise spec.task needs environmentId",
            id="task-without-environment-id",
        ),
        pytest.param(
            {
                "task": _task(None, "x"),
                "environment": {
                    "fromProject": {"projectId": PROJECT_ID, "branch": "main", "commit": "abc1234"}
                },
            },
            "a branch or a commit, not both",
            id="branch-and-commit",
        ),
        pytest.param(
            {"task": _task(ANY_ENVIRONMENT, "x"), "environment": {"whenStopped": "Wait"}},
            "spec.environment.whenStopped",
            id="bad-when-stopped",
        ),
        pytest.param(
            {"task": _task(ANY_ENVIRONMENT, "x"), "environment": {"cleanup": "Burn"}},
            "spec.environment.cleanup",
            id="bad-cleanup",
        ),
    ],
)
def test_bad_environment_specs_are_rejected_at_apply(
    spec: dict[str, Any], message: str, taskruns: TaskRuns
) -> None:
    result = taskruns.try_apply("bad", spec)
    assert result.returncode != 0
    assert message in result.stderr
    assert not taskruns.exists("bad")


def test_environment_defaults_and_immutability(taskruns: TaskRuns) -> None:
    taskruns.apply("defaults", {"task": _task(ANY_ENVIRONMENT, "x"), "environment": {}})
    assert taskruns.get("defaults")["spec"]["environment"] == {
        "whenStopped": "Start",
        "keepAlive": True,
        "cleanup": "Delete",
    }
    result = taskruns.patch_spec("defaults", {"environment": {"keepAlive": False}})
    assert result.returncode != 0
    assert "spec.environment is immutable" in result.stderr
