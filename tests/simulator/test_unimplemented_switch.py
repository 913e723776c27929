"""The switch that makes one named method answer `unimplemented`, as a server that does not
serve it would: only that method, on every call, until it is cleared."""

from __future__ import annotations

import httpx
import pytest

from ona_simulator.control_client import SimulatorControlError
from tests.simulator.conftest import Api
from tests.support.simulator_fixtures import SimulatorHandle

LIST = "gitpod.v1.EnvironmentService/ListEnvironments"


async def post(api: Api, name: str, body: dict[str, object] | None = None) -> httpx.Response:
    return await api.http.post(
        f"/{name}",
        json=body or {},
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )


async def test_a_switched_off_method_answers_unimplemented_until_cleared(
    api: Api, simulator: SimulatorHandle
) -> None:
    assert (await post(api, LIST)).status_code == 200
    assert simulator.control.set_unimplemented(LIST) == [LIST]
    assert simulator.control.unimplemented() == [LIST]
    for _ in range(3):
        answer = await post(api, LIST)
        assert answer.status_code == 501
        assert answer.json()["code"] == "unimplemented"
        assert LIST in answer.json()["message"]
    # Other methods, of the same service too, are served.
    assert (await post(api, "gitpod.v1.EnvironmentService/GetEnvironment")).status_code != 501
    await api.call("ListTasks")
    calls = simulator.control.calls("ListEnvironments")
    assert [c["fault"] for c in calls] == [None, "unimplemented", "unimplemented", "unimplemented"]
    assert {c["code"] for c in calls[1:]} == {"unimplemented"}

    assert simulator.control.clear_unimplemented(LIST) == []
    assert (await post(api, LIST)).status_code == 200


async def test_it_comes_before_faults_and_authentication(
    api: Api, simulator: SimulatorHandle
) -> None:
    simulator.control.set_faults("ListEnvironments", error_503=1.0)
    simulator.control.set_unimplemented(LIST)
    answer = await api.http.post(f"/{LIST}", json={})  # no token at all
    assert answer.status_code == 501


async def test_watch_events_can_be_switched_off(api: Api, simulator: SimulatorHandle) -> None:
    simulator.control.set_unimplemented("gitpod.v1.EventService/WatchEvents")
    answer = await post(api, "gitpod.v1.EventService/WatchEvents")
    assert answer.status_code == 501
    assert answer.json()["code"] == "unimplemented"


async def test_clearing_all_faults_and_reset_serve_every_method_again(
    simulator: SimulatorHandle,
) -> None:
    simulator.control.set_unimplemented(LIST)
    simulator.control.set_unimplemented("gitpod.v1.EnvironmentAutomationService/StartTask")
    assert simulator.control.faults()["unimplemented"] == [
        "gitpod.v1.EnvironmentAutomationService/StartTask",
        LIST,
    ]
    assert simulator.control.clear_unimplemented() == []
    simulator.control.set_unimplemented(LIST)
    simulator.control.clear_faults()  # what test fixtures do between tests
    assert simulator.control.unimplemented() == []
    simulator.control.set_unimplemented(LIST)
    simulator.control.reset()
    assert simulator.control.unimplemented() == []


@pytest.mark.parametrize(
    "name",
    [
        "ListEnvironments",  # no service
        "gitpod.v1.NoSuchService/ListEnvironments",
        "gitpod.v1.EnvironmentService/NoSuchMethod",
        "",
    ],
)
def test_a_name_that_is_no_method_is_refused(simulator: SimulatorHandle, name: str) -> None:
    with pytest.raises(SimulatorControlError, match="HTTP 400"):
        simulator.control.set_unimplemented(name)
    assert simulator.control.unimplemented() == []
