"""Fault injection as a client sees it: latency, 429/500/503, drops and lost responses."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.simulator.conftest import Api
from tests.support.simulator_fixtures import SimulatorHandle


async def test_latency_is_added(api: Api, simulator: SimulatorHandle) -> None:
    simulator.control.set_faults("ListTasks", latency_ms=300)
    began = time.monotonic()
    await api.call("ListTasks")
    assert time.monotonic() - began >= 0.3
    began = time.monotonic()
    await api.call("ListTaskExecutions")
    assert time.monotonic() - began < 0.3, "other methods are not slowed down"


async def test_429_carries_retry_after(api: Api, simulator: SimulatorHandle) -> None:
    simulator.control.set_faults("*", error_429=1.0, retry_after_s=3)
    response = await api.raw("GetTaskExecution", {"id": "0b8a3c55-4b3c-4b1e-9b4a-0f2e6c7d8e9f"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["code"] == "resource_exhausted"


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [("error_500", 500, "internal"), ("error_503", 503, "unavailable")],
)
async def test_server_errors(
    api: Api, simulator: SimulatorHandle, knob: str, status: int, code: str
) -> None:
    simulator.control.set_faults("ListTaskExecutions", **{knob: 1.0})
    response = await api.raw("ListTaskExecutions", {})
    assert response.status_code == status
    assert response.json()["code"] == code
    simulator.control.clear_faults()
    assert (await api.raw("ListTaskExecutions", {})).status_code == 200


async def test_dropped_connection_has_no_response(api: Api, simulator: SimulatorHandle) -> None:
    simulator.control.set_faults("ListTasks", drop=1.0)
    # The socket is aborted: the client sees either a close before any response or a
    # reset while reading, depending on timing. Both mean no response arrived.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await api.raw("ListTasks", {})
    [call] = simulator.control.calls("ListTasks")
    assert call["fault"] == "drop"
    assert call["httpStatus"] == 0


async def test_count_limits_how_many_faults_a_rule_injects(
    api: Api, simulator: SimulatorHandle
) -> None:
    simulator.control.set_faults("ListTasks", error_503=1.0, count=2)
    statuses = [(await api.raw("ListTasks", {})).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]


@pytest.mark.parametrize(("mode", "status"), [("503", 503), ("500", 500)])
async def test_lost_start_response_still_creates_the_execution(
    api: Api, simulator: SimulatorHandle, mode: str, status: int
) -> None:
    task = simulator.control.seed_task(command="x sim:hang")
    simulator.control.set_faults("StartTask", lost_response=1.0, lost_response_mode=mode)
    response = await api.raw("StartTask", {"id": task["id"]})
    assert response.status_code == status
    [execution] = simulator.control.executions()
    assert execution["execution"]["metadata"]["taskId"] == task["id"]
    [call] = simulator.control.calls("StartTask")
    assert call["resultId"] == execution["execution"]["id"]
    assert call["fault"] == f"lost_response:{mode}"
    listed = await api.call("ListTaskExecutions", {"filter": {"taskIds": [task["id"]]}})
    assert [e["id"] for e in listed["taskExecutions"]] == [call["resultId"]]


async def test_lost_start_response_by_hang_outlasts_the_client_timeout(
    api: Api, simulator: SimulatorHandle
) -> None:
    task = simulator.control.seed_task(command="x sim:hang")
    simulator.control.set_faults(
        "StartTask", lost_response=1.0, lost_response_mode="hang", hang_ms=5000
    )
    async with httpx.AsyncClient(base_url=api.http.base_url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await Api(impatient, api.token).raw("StartTask", {"id": task["id"]})
    assert len(simulator.control.executions()) == 1


async def test_same_seed_gives_the_same_faults(api: Api, simulator: SimulatorHandle) -> None:
    async def pattern() -> list[int]:
        simulator.control.seed(1234)
        simulator.control.set_faults("ListTasks", error_500=0.3, error_503=0.3)
        return [(await api.raw("ListTasks", {})).status_code for _ in range(20)]

    first = await pattern()
    assert set(first) == {200, 500, 503}
    assert await pattern() == first


async def test_reset_clears_faults(api: Api, simulator: SimulatorHandle) -> None:
    simulator.control.set_faults("*", error_503=1.0)
    assert (await api.raw("ListTasks", {})).status_code == 503
    simulator.control.reset()
    assert (await api.raw("ListTasks", {})).status_code == 200
    assert simulator.control.faults()["rules"] == {}


async def test_bad_fault_knobs_are_refused(simulator: SimulatorHandle) -> None:
    from ona_simulator.control_client import SimulatorControlError

    with pytest.raises(SimulatorControlError, match="unknown fault knob"):
        simulator.control.set_faults("StartTask", eror_500=1.0)
    with pytest.raises(SimulatorControlError, match="at most 1"):
        simulator.control.set_faults("StartTask", error_500=0.6, error_503=0.6)
    with pytest.raises(SimulatorControlError, match="unknown method"):
        simulator.control.set_faults("StartTasks", error_500=1.0)
