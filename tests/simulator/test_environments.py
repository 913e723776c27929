"""Environments in the simulator: phases, delays, idle timeout, activity signals, failures,
StartTask in an environment that is not running, and the watch events of environments."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx

from tests.simulator.conftest import JSON, Api, wait_for
from tests.support.simulator_fixtures import SimulatorHandle

ENV_SERVICE = "gitpod.v1.EnvironmentService"
RUNNING = "ENVIRONMENT_PHASE_RUNNING"
STOPPED = "ENVIRONMENT_PHASE_STOPPED"
FAST = {"createDelay": "100ms", "startDelay": "100ms", "stopDelay": "50ms", "deleteDelay": "50ms"}


async def env_call(api: Api, method: str, body: JSON, expect: int = 200) -> JSON:
    response = await api.http.post(
        f"/{ENV_SERVICE}/{method}",
        json=body,
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == expect, response.text
    result: JSON = response.json()
    return result


async def phase_of(api: Api, env_id: str) -> str:
    env = (await env_call(api, "GetEnvironment", {"environmentId": env_id}))["environment"]
    return str(env["status"]["phase"])


async def wait_env_phase(api: Api, env_id: str, phase: str, within: float = 5.0) -> None:
    async def reached() -> bool | None:
        return True if await phase_of(api, env_id) == phase else None

    await wait_for(reached, within=within, what=f"environment {env_id} in {phase}")


async def test_created_from_a_project_goes_creating_starting_running(
    api: Api, simulator: SimulatorHandle
) -> None:
    project = simulator.control.seed_project(name="web", **FAST)
    created = await env_call(
        api,
        "CreateEnvironmentFromProject",
        {
            "projectId": project["id"],
            "name": "run-1",
            "spec": {"machine": {"class": "small"}},
        },
    )
    env = created["environment"]
    assert env["status"]["phase"] == "ENVIRONMENT_PHASE_CREATING"
    assert env["metadata"]["name"] == "run-1"
    assert env["metadata"]["projectId"] == project["id"]
    assert env["spec"]["machine"] == {"class": "small"}
    await wait_env_phase(api, env["id"], RUNNING)
    history = simulator.control.environment(env["id"])["history"]
    assert [line.split()[1] for line in history] == ["CREATING:", "STARTING:", "RUNNING:"]


async def test_unknown_project_is_not_found(api: Api) -> None:
    missing = "00000000-0000-4000-8000-000000000001"
    answer = await env_call(api, "CreateEnvironmentFromProject", {"projectId": missing}, expect=404)
    assert answer["code"] == "not_found"


async def test_idle_timeout_stops_and_only_activity_signals_reset_it(
    api: Api, simulator: SimulatorHandle
) -> None:
    idle = simulator.control.seed_environment(idleTimeout="600ms", stopDelay="50ms")
    kept = simulator.control.seed_environment(idleTimeout="600ms", stopDelay="50ms")
    # A long execution in the idle one: running processes are no activity.
    task = simulator.control.seed_task(
        environment_id=idle["id"], reference="long", command="x sim:pending=10ms sim:hang"
    )
    execution = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
    deadline = asyncio.get_running_loop().time() + 1.5
    while asyncio.get_running_loop().time() < deadline:
        signal = {"source": "test", "timestamp": "2026-01-01T00:00:00Z"}
        await env_call(
            api, "MarkEnvironmentActive", {"environmentId": kept["id"], "activitySignal": signal}
        )
        await asyncio.sleep(0.2)
    assert await phase_of(api, kept["id"]) == RUNNING
    assert await phase_of(api, idle["id"]) == STOPPED
    debug = simulator.control.environment(idle["id"])
    assert debug["stoppedForIdleness"] == 1
    assert simulator.control.environment(kept["id"])["activitySignals"] >= 5
    # Its execution was stopped with it.
    await api.wait_phase(execution["id"], "TASK_EXECUTION_PHASE_STOPPED")


async def test_start_task_in_a_stopped_environment_is_failed_precondition(
    api: Api, simulator: SimulatorHandle
) -> None:
    env = simulator.control.seed_environment(phase="STOPPED", **FAST)
    task = simulator.control.seed_task(environment_id=env["id"], reference="t", command="x")
    response = await api.raw("StartTask", {"id": task["id"]})
    assert response.status_code == 400
    assert response.json()["code"] == "failed_precondition"
    assert not simulator.control.executions()
    # StartEnvironment keeps the environment (same id) and then StartTask works.
    await env_call(api, "StartEnvironment", {"environmentId": env["id"]})
    assert await phase_of(api, env["id"]) == "ENVIRONMENT_PHASE_STARTING"
    await wait_env_phase(api, env["id"], RUNNING)
    started = await api.call("StartTask", {"id": task["id"]})
    assert started["taskExecution"]["metadata"]["environmentId"] == env["id"]


async def test_tasks_in_environments_never_seeded_run_as_before(
    api: Api, simulator: SimulatorHandle
) -> None:
    task = simulator.control.seed_task(reference="legacy", command="x sim:duration=10ms")
    env_id = task["environmentId"]
    assert await phase_of(api, env_id) == RUNNING
    assert simulator.control.environment(env_id)["implicit"] is True
    await api.call("StartTask", {"id": task["id"]})


async def test_stop_delete_and_failures(api: Api, simulator: SimulatorHandle) -> None:
    env = simulator.control.seed_environment(**FAST)
    await env_call(api, "StopEnvironment", {"environmentId": env["id"]})
    await wait_env_phase(api, env["id"], STOPPED)
    await env_call(api, "DeleteEnvironment", {"environmentId": env["id"], "force": True})
    await wait_env_phase(api, env["id"], "ENVIRONMENT_PHASE_DELETED")
    listed = await env_call(api, "ListEnvironments", {})
    assert env["id"] not in [e["id"] for e in listed["environments"]]
    # A project whose starts fail: the environment ends STOPPED with a failure message.
    broken = simulator.control.seed_project(failOnStart="image pull failed", **FAST)
    created = await env_call(api, "CreateEnvironmentFromProject", {"projectId": broken["id"]})
    env_id = created["environment"]["id"]
    await wait_env_phase(api, env_id, STOPPED)
    got = (await env_call(api, "GetEnvironment", {"environmentId": env_id}))["environment"]
    assert got["status"]["failureMessage"] == ["image pull failed"]
    # The control API can fail a running environment.
    other = simulator.control.seed_environment(**FAST)
    simulator.control.set_environment_phase(other["id"], "STOPPING", "disk full")
    await wait_env_phase(api, other["id"], STOPPED)


async def test_list_filters_by_project_and_pages(api: Api, simulator: SimulatorHandle) -> None:
    project = simulator.control.seed_project(**FAST)
    ids = [
        (await env_call(api, "CreateEnvironmentFromProject", {"projectId": project["id"]}))[
            "environment"
        ]["id"]
        for _ in range(3)
    ]
    simulator.control.seed_environment()  # another, without the project
    first = await env_call(
        api,
        "ListEnvironments",
        {"filter": {"projectIds": [project["id"]]}, "pagination": {"pageSize": 2}},
    )
    token = first["pagination"]["nextToken"]
    assert token
    second = await env_call(
        api,
        "ListEnvironments",
        {"filter": {"projectIds": [project["id"]]}, "pagination": {"pageSize": 2, "token": token}},
    )
    assert [e["id"] for e in first["environments"] + second["environments"]] == ids
    assert second["pagination"]["nextToken"] == ""


async def test_watch_reports_environment_changes(api: Api, simulator: SimulatorHandle) -> None:
    env = simulator.control.seed_environment(**FAST)
    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async with api.http.stream(
            "POST",
            "/gitpod.v1.EventService/WatchEvents",
            content=json.dumps({"environmentId": env["id"]}),
            headers={
                "Authorization": f"Bearer {api.token}",
                "Content-Type": "application/json",
                "Accept": "application/jsonl",
            },
        ) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    events.append(json.loads(line))

    watcher = asyncio.create_task(watch())
    try:
        await wait_for(lambda: _true(simulator.control.health()["watchers"] >= 1), what="the watch")
        await env_call(api, "StopEnvironment", {"environmentId": env["id"]})

        async def two_events() -> bool | None:
            await asyncio.sleep(0)
            mine = [e for e in events if e["resourceType"] == "RESOURCE_TYPE_ENVIRONMENT"]
            return True if len(mine) >= 2 else None  # STOPPING, then STOPPED

        await wait_for(two_events, what="environment events")
        assert {e["resourceId"] for e in events} == {env["id"]}
        assert {e["operation"] for e in events} == {"RESOURCE_OPERATION_UPDATE_STATUS"}
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await watcher


async def _true(value: bool) -> bool | None:
    return True if value else None
