"""A connection whose Ona API does not serve ListEnvironments, against the simulator: the
adoption look-up comes back as a failure that names the method, the environment to look
for and how to adopt it; the breaker stays closed however often it is asked; the
connection is told once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ona_taskrun.controller import environment_actions
from ona_taskrun.controller.connections import Remote, RemoteSettings
from ona_taskrun.controller.remote import METHOD_NOT_SERVED
from ona_taskrun.rules.connection import ConnectionKey
from ona_taskrun.rules.model import ADOPT_ENVIRONMENT_ANNOTATION, Action, ActionKind, Observation
from ona_taskrun.rules.results import apply_result
from tests.support.simulator_fixtures import SimulatorHandle
from tests.unit.builders import NOW, UID, at, taskrun

LIST = "gitpod.v1.EnvironmentService/ListEnvironments"


@pytest.fixture
async def told(simulator: SimulatorHandle) -> AsyncIterator[tuple[Remote, list[str]]]:
    methods: list[str] = []
    remote = Remote(
        ConnectionKey("OnaConnection", "team", "ona"),
        simulator.base_url,
        simulator.token,
        RemoteSettings(request_timeout=5.0),
        notify=lambda _: None,
        on_unauthenticated=lambda: None,
        on_unserved=methods.append,
    )
    yield remote, methods
    await remote.close()


async def test_an_unserved_adoption_lookup_says_what_to_look_for(
    simulator: SimulatorHandle, told: tuple[Remote, list[str]]
) -> None:
    remote, methods = told
    project = simulator.control.seed_project(name="web")
    simulator.control.set_unimplemented(LIST)
    spec = {
        "task": {"name": "build", "command": "make"},
        "environment": {"fromProject": {"projectId": project["id"]}},
    }
    run = taskrun(spec, {"environmentRequestedAt": at(-30)})
    find = Action(ActionKind.FIND_ENVIRONMENTS)

    for _ in range(10):
        result = await environment_actions.perform(remote, find, run, "build")
        assert result.failure is not None
        assert result.failure.reason == METHOD_NOT_SERVED
    assert not remote.breaker.open
    assert remote.breaker.opened == 0
    assert methods == [LIST]
    assert len(simulator.control.calls("ListEnvironments")) == 10

    message = result.failure.message
    assert f"the Ona API does not serve {LIST}" in message
    assert f"named build-{UID}" in message
    assert project["id"] in message
    assert f"{ADOPT_ENVIRONMENT_ANNOTATION}=<environment id>" in message
    assert simulator.token not in message

    new, _, _ = apply_result(run, find, result, Observation(), NOW)
    stalled = new.status.condition("Stalled")
    assert stalled is not None
    assert (stalled.status, stalled.message) == ("True", message)


async def test_calls_that_are_served_go_on(
    simulator: SimulatorHandle, told: tuple[Remote, list[str]]
) -> None:
    remote, methods = told
    simulator.control.set_unimplemented(LIST)
    env = simulator.control.seed_environment(name="kept")
    run = taskrun({"task": {"environmentId": env["id"], "name": "b", "command": "x"}})
    get = Action(ActionKind.GET_ENVIRONMENT, environment_id=env["id"])
    result = await environment_actions.perform(remote, get, run, "build")
    assert result.failure is None
    assert result.environment is not None
    assert result.environment.id == env["id"]
    assert methods == []
