"""End to end: an Ona API that does not serve ListEnvironments. Runs whose environment
creation had an unknown outcome cannot look their environment up: each asks once, then
waits for a person with a message saying what to look for and how to adopt it. The
connection's circuit breaker never opens on those answers, so the other runs of the same
connection start and succeed meanwhile, and the connection says once which method its API
does not serve (a Warning Event and status.unservedMethods)."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.test_connections import Kube, Team, _team
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    OperatorFactory,
    free_port,
    inline_task,
    wait_for,
)
from tests.support.scrape import Scrape, try_scrape
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

LIST = "gitpod.v1.EnvironmentService/ListEnvironments"
ADOPT = "automation.ona.com/adopt-environment"
FAST_ENVIRONMENTS = {"ENVIRONMENT_POLL_SECONDS": "0.3", "ENVIRONMENT_KEEPALIVE_SECONDS": "1"}
DELAYS = {"createDelay": "500ms", "startDelay": "500ms", "stopDelay": "200ms"}


@pytest.fixture
def kube(control_plane: ControlPlane, k8s_admin: client.ApiClient) -> Kube:
    return Kube(control_plane, k8s_admin)


class Breaker:
    """The team connection's breaker as /metrics shows it; reading it fails the test the
    moment the breaker has opened."""

    def __init__(self, port: int, namespace: str) -> None:
        self.port = port
        self.label = f"OnaConnection/{namespace}/team"

    def scrape(self) -> Scrape:
        return wait_for(lambda: try_scrape(self.port), what=f"/metrics on port {self.port}")

    def assert_closed(self) -> None:
        now = self.scrape()
        opened = now.value("ona_taskrun_circuit_breaker_opened_total", connection=self.label)
        is_open = now.value("ona_taskrun_circuit_breaker_open", connection=self.label)
        assert (opened, is_open) == (0, 0), (
            f"the circuit breaker of {self.label} opened ({opened:g} times, open={is_open:g}) "
            "on answers that concern one request"
        )


def _stalled(team: Team, name: str, breaker: Breaker) -> dict[str, Any] | None:
    breaker.assert_closed()
    cond = team.taskruns.condition(name, "Stalled")
    return cond if cond is not None and cond["status"] == "True" else None


def _connection_events(kube: Kube, namespace: str) -> list[Any]:
    found = kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.kind=OnaConnection,involvedObject.name=team"
    )
    return [e for e in found.items if e.reason == "MethodNotServed"]


def test_unserved_list_environments_stalls_adoption_while_other_runs_succeed(
    kube: Kube, e2e_simulator: SimulatorHandle, operator_factory: OperatorFactory
) -> None:
    sim = e2e_simulator.control
    project = sim.seed_project(name="web", **DELAYS)
    team = _team(kube, e2e_simulator)
    port = free_port()
    operator_factory(
        team.namespace,
        extra_env={
            **FAST_ENVIRONMENTS,
            "METRICS_PORT": str(port),
            "METRICS_BIND_ADDRESS": "127.0.0.1",
        },
    )
    kube.wait_ready(team.namespace, "team")
    breaker = Breaker(port, team.namespace)
    connection = {"connectionRef": {"name": "team"}}
    sim.set_unimplemented(LIST)
    try:
        adopting = [f"adopt-{index}" for index in range(3)]
        plain = [f"plain-{index}" for index in range(3)]
        for index, name in enumerate(adopting):
            # Its CreateEnvironmentFromProject takes effect, but the answer is lost: the
            # run must look its environment up, and ListEnvironments is not served.
            sim.set_faults(
                "CreateEnvironmentFromProject", lost_response=1.0, lost_response_mode="503", count=1
            )
            spec = {
                "task": {"name": "env-task", "command": "x # sim:duration=300ms"},
                "environment": {"fromProject": {"projectId": project["id"]}},
                **connection,
            }
            team.taskruns.apply(name, spec)
            # Plain runs of the same connection start meanwhile.
            team.taskruns.apply(
                plain[index], {"task": inline_task("x # sim:duration=300ms"), **connection}
            )
            wait_for(
                functools.partial(_stalled, team, name, breaker),
                timeout=60,
                what=f"{name} to wait for a person",
            )

        for name in plain:
            team.taskruns.wait_phase(name, "SUCCEEDED", timeout=60)
        breaker.assert_closed()

        # Each adopting run asked once and never again; each waits with the message.
        unimplemented = [c for c in sim.calls("ListEnvironments") if c["fault"] == "unimplemented"]
        assert len(unimplemented) == len(adopting)
        for name in adopting:
            stalled = team.taskruns.condition(name, "Stalled")
            assert stalled is not None
            assert stalled["reason"] == "EnvironmentOutcomeUnknown"
            uid = team.taskruns.get(name)["metadata"]["uid"]
            message = stalled["message"]
            assert f"the Ona API does not serve {LIST}" in message
            assert f"named {name}-{uid}" in message
            assert f"{ADOPT}=<environment id>" in message
            assert team.taskruns.status(name).get("phase") in (None, "", "PENDING")

        # The connection names the method once: one Event, one status entry.
        status = wait_for(
            lambda: (
                (s := kube.connection_status(team.namespace, "team")).get("unservedMethods") and s
            ),
            what="status.unservedMethods on the connection",
        )
        assert status["unservedMethods"] == [LIST]
        events = wait_for(
            lambda: _connection_events(kube, team.namespace),
            what="a MethodNotServed Event on the connection",
        )
        assert len(events) == 1
        assert events[0].type == "Warning"
        assert LIST in events[0].message
        assert team.token not in events[0].message

        # A person finds the environment by the name given and adopts it: the run goes on.
        name = adopting[0]
        uid = team.taskruns.get(name)["metadata"]["uid"]
        [created] = [
            item["environment"]
            for item in sim.environments()
            if item["environment"]["metadata"].get("name") == f"{name}-{uid}"
        ]
        kube.control_plane.kubectl_run(
            "-n", team.namespace, "annotate", "taskrun", name, f"{ADOPT}={created['id']}"
        )
        final = team.taskruns.wait_phase(name, "SUCCEEDED", timeout=60)
        assert final["environmentId"] == created["id"]
        breaker.assert_closed()
        assert len(_connection_events(kube, team.namespace)) == 1
    finally:
        sim.clear_unimplemented()
