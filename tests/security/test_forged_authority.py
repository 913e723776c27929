"""End to end, as a hostile tenant: a person who may create and edit TaskRuns in their own
namespace writes the annotations that used to carry authority (the start claim,
adopt-execution, adopt-environment) and tries to reach what their connection's policy does
not give them: executions and environments of others, or a connection that does not serve
their namespace. Each test is an attack that worked before the operator signed its claims
and checked every adoption against the run's own look; each asserts what the attacker
sees (status, Events) and what happened in Ona (the simulator's record)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.test_connections import _execution
from tests.e2e.test_crash_safety import _start_directly
from tests.e2e.test_environments import FAST_ENVIRONMENTS, _executions_in
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    ENVIRONMENT_ID,
    OperatorFactory,
    TaskRuns,
    inline_task,
    unique_reference,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

CLAIM = "automation.ona.com/start-requested-at"
ATTEMPTS = "automation.ona.com/start-attempts"
ATTEMPT = "automation.ona.com/start-attempt"
ADOPT_EXECUTION = "automation.ona.com/adopt-execution"
ADOPT_ENVIRONMENT = "automation.ona.com/adopt-environment"
DELAYS = {"createDelay": "1s", "startDelay": "1s", "stopDelay": "200ms", "deleteDelay": "200ms"}


def _everything_shown(taskruns: TaskRuns, name: str) -> str:
    """All a tenant can read of their TaskRun: its status and its Events."""
    return json.dumps(taskruns.status(name)) + json.dumps(taskruns.events(name))


def _create(
    taskruns: TaskRuns, name: str, spec: dict[str, Any], annotations: dict[str, str]
) -> None:
    manifest = taskruns.manifest(name, spec)
    manifest["metadata"]["annotations"] = annotations
    taskruns.control_plane.kubectl_run(
        "-n", taskruns.namespace, "apply", "-f", "-", input=json.dumps(manifest)
    )


def test_a_forged_start_claim_does_not_switch_the_namespace_rule_off(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    # The operator-level token serves only labelled namespaces; this one is not.
    operator_factory(
        namespace, extra_env={"DEFAULT_CONNECTION_NAMESPACE_SELECTOR": "ona.com/default-token=yes"}
    )
    task = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:hang"
    )
    victim = _start_directly(e2e_simulator, task["id"])
    forged = {CLAIM: "2020-01-01T00:00:00Z", ATTEMPTS: "1", ATTEMPT: "1"}
    _create(taskruns, "forged-claim", {"taskRef": {"id": task["id"]}}, forged)

    cond = taskruns.wait_condition("forged-claim", "Succeeded", "False", "NotPermitted")
    assert "DEFAULT_CONNECTION_NAMESPACE_SELECTOR" in cond["message"]
    status = taskruns.status("forged-claim")
    assert not status.get("taskExecutionId")
    taskruns.wait_events("forged-claim", "NotPermitted")
    assert victim not in _everything_shown(taskruns, "forged-claim")
    # Nothing was asked of Ona for this run: no start of its task, no read or stop of the
    # execution it tried to claim.
    starts = [c for c in e2e_simulator.control.calls("StartTask") if c["requestId"] == task["id"]]
    assert [c["resultId"] for c in starts] == [victim]  # the other team's own start only
    for method, target in (
        ("GetTaskExecution", victim),
        ("StopTaskExecution", victim),
    ):
        calls = [c for c in e2e_simulator.control.calls(method) if c.get("requestId") == target]
        assert calls == [], method
    assert _execution(e2e_simulator, victim)["status"]["phase"] == "TASK_EXECUTION_PHASE_RUNNING"


def test_a_forged_adopt_execution_does_not_reach_another_teams_execution(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(namespace)
    theirs = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:hang"
    )
    victim = _start_directly(e2e_simulator, theirs["id"])
    mine = e2e_simulator.control.seed_task(
        environment_id=ENVIRONMENT_ID, reference=unique_reference(), command="x # sim:hang"
    )
    # The start takes effect but its answer is lost: the outcome is unknown, the moment
    # at which adopt-execution is read.
    e2e_simulator.control.set_faults(
        "StartTask", lost_response=1.0, lost_response_mode="503", count=1
    )
    _create(taskruns, "thief", {"taskRef": {"id": mine["id"]}}, {ADOPT_EXECUTION: victim})

    taskruns.wait_events("thief", "AdoptionRefused", timeout=60)
    cond = taskruns.wait_condition("thief", "Stalled", "True", "StartOutcomeUnknown")
    assert "was refused" in cond["message"]
    assert taskruns.status("thief").get("taskExecutionId") in (None, "")
    assert victim not in _everything_shown(taskruns, "thief")
    assert _execution(e2e_simulator, victim)["status"]["phase"] == "TASK_EXECUTION_PHASE_RUNNING"

    # Deleting the run stops nothing of theirs.
    taskruns.control_plane.kubectl_run(
        "-n", namespace, "delete", "taskrun", "thief", "--wait=false"
    )
    wait_for(lambda: not taskruns.exists("thief"), timeout=30, what="the TaskRun gone")
    assert _execution(e2e_simulator, victim)["status"]["phase"] == "TASK_EXECUTION_PHASE_RUNNING"
    stops = [
        c
        for c in e2e_simulator.control.calls("StopTaskExecution")
        if victim in (c.get("requestId"), c.get("resultId"))
    ]
    assert stops == []


def test_a_forged_adopt_environment_does_not_reach_another_teams_environment(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
) -> None:
    operator_factory(namespace, extra_env=FAST_ENVIRONMENTS)
    victim = e2e_simulator.control.seed_environment(phase="RUNNING", **DELAYS)["id"]
    project = e2e_simulator.control.seed_project(**DELAYS)
    # The creation takes effect but its answer is lost: the outcome is unknown, the moment
    # at which adopt-environment is read.
    e2e_simulator.control.set_faults(
        "CreateEnvironmentFromProject", lost_response=1.0, lost_response_mode="503", count=1
    )
    spec = {
        "task": inline_task("x # sim:duration=300ms"),
        "environment": {"fromProject": {"projectId": project["id"]}, "cleanup": "Delete"},
    }
    spec["task"].pop("environmentId", None)
    _create(taskruns, "squatter", spec, {ADOPT_ENVIRONMENT: victim})

    taskruns.wait_events("squatter", "EnvironmentAdoptionRefused", timeout=60)
    assert victim not in _everything_shown(taskruns, "squatter")
    assert taskruns.status("squatter").get("environmentId") in (None, "")
    assert _executions_in(e2e_simulator, victim) == []

    control_plane.kubectl_run("-n", namespace, "delete", "taskrun", "squatter", "--wait=false")
    wait_for(lambda: not taskruns.exists("squatter"), timeout=30, what="the TaskRun gone")
    phase = e2e_simulator.control.environment(victim)["environment"]["status"]["phase"]
    assert phase == "ENVIRONMENT_PHASE_RUNNING"
    for method in ("DeleteEnvironment", "StopEnvironment"):
        touched = [
            c
            for c in e2e_simulator.control.calls(method)
            if victim in (c.get("requestId"), c.get("resultId"))
        ]
        assert touched == [], method


def test_a_fresh_install_lends_the_operator_token_to_no_namespace(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    operator_factory(namespace, extra_env={"DEFAULT_CONNECTION_NAMESPACE_SELECTOR": ""})
    name = unique_reference()
    taskruns.apply("first", {"task": inline_task("echo # sim:duration=100ms", name=name)})
    cond = taskruns.wait_condition("first", "Succeeded", "False", "NotPermitted")
    assert "DEFAULT_CONNECTION_NAMESPACE_SELECTOR is not set" in cond["message"]
    # Nothing was created in Ona with the operator's token for this namespace.
    created = [t for t in e2e_simulator.control.tasks() if t["metadata"].get("name") == name]
    assert created == []


def test_a_timeout_past_the_cap_is_refused_at_apply(taskruns: TaskRuns) -> None:
    refused = taskruns.try_apply("forever", {"task": inline_task("x"), "timeout": "99999999999h"})
    assert refused.returncode != 0
    assert "spec.timeout must be at most 720h" in refused.stderr
