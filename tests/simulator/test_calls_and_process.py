"""Call inspection, the `ona-simulator` command, and running the simulator in-process."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from ona_simulator import run_simulator
from ona_simulator.control_client import AsyncSimulatorControl
from tests.simulator.conftest import Api
from tests.support.simulator_fixtures import (
    SimulatorHandle,
    start_simulator_process,
    stop_simulator_process,
)


async def test_calls_are_recorded_without_the_token(api: Api, simulator: SimulatorHandle) -> None:
    task = simulator.control.seed_task(command="x sim:hang")
    started = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
    await api.raw("GetTaskExecution", {"id": started["id"]}, token=simulator.readonly_token)
    await api.raw("ListTasks", {}, token="")
    unknown = str(uuid.uuid4())
    await api.raw("GetTask", {"id": unknown})

    calls = simulator.control.calls()
    assert [c["method"] for c in calls] == ["StartTask", "GetTaskExecution", "ListTasks", "GetTask"]
    start, get, unauthenticated, missing = calls
    me = simulator.control.subject_of(simulator.token)
    assert start["httpStatus"] == 200
    assert start["subjectId"] == me
    assert start["requestId"] == task["id"]
    assert start["resultId"] == started["id"]
    assert get["subjectId"] == simulator.control.subject_of(simulator.readonly_token)
    assert get["requestId"] == started["id"]
    assert unauthenticated["httpStatus"] == 401
    assert unauthenticated["subjectId"] is None
    assert missing["httpStatus"] == 404
    assert missing["code"] == "not_found"
    assert all(c["time"].endswith("Z") for c in calls)
    assert simulator.control.calls("GetTask") == [missing]
    everything = (await api.http.get("/_simulator/calls")).text
    assert simulator.token not in everything
    assert simulator.readonly_token not in everything


def test_command_reports_the_port_it_picked(tmp_path: Path) -> None:
    running = start_simulator_process("cli-token", "cli-readonly", tmp_path)
    try:
        assert running.base_url.startswith("http://127.0.0.1:")
        port = int(running.base_url.rsplit(":", 1)[1])
        assert port > 0
        response = httpx.post(
            f"{running.base_url}/gitpod.v1.EnvironmentAutomationService/ListTasks",
            json={},
            headers={"Authorization": "Bearer cli-token"},
        )
        assert response.status_code == 200
    finally:
        stop_simulator_process(running)
    assert running.process.returncode == 0
    assert "cli-token" not in running.stderr_path.read_text()


async def test_in_process_simulator() -> None:
    async with run_simulator(token="in-process", readonly_tokens=("ro",)) as sim:
        assert sim.control_url == f"{sim.base_url}/_simulator"
        async with AsyncSimulatorControl(sim.control_url) as control:
            task = await control.seed_task(command="x sim:pending=0ms sim:duration=0ms")
            async with httpx.AsyncClient(base_url=sim.base_url) as http:
                api = Api(http, "in-process")
                started = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
                await api.wait_phase(started["id"], "TASK_EXECUTION_PHASE_SUCCEEDED")
                denied = await api.raw("StartTask", {"id": task["id"]}, token="ro")
                assert denied.status_code == 403
            starts = await control.calls("StartTask")
            assert [c["httpStatus"] for c in starts] == [200, 403]
