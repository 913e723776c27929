"""WatchEvents in both framings: JSON lines and Connect stream envelopes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx

from tests.simulator.conftest import JSON, Api, wait_for
from tests.support.simulator_fixtures import SimulatorHandle

WATCH = "/gitpod.v1.EventService/WatchEvents"


async def jsonl_events(response: httpx.Response) -> AsyncIterator[JSON]:
    async for line in response.aiter_lines():
        if line.strip():
            yield json.loads(line)


async def connect_frames(response: httpx.Response) -> AsyncIterator[tuple[int, JSON]]:
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            length = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 5 + length:
                break
            yield buffer[0], json.loads(buffer[5 : 5 + length])
            buffer = buffer[5 + length :]


def envelope(message: JSON) -> bytes:
    data = json.dumps(message).encode()
    return b"\x00" + len(data).to_bytes(4, "big") + data


async def test_jsonl_watch_reports_execution_changes(api: Api, simulator: SimulatorHandle) -> None:
    environment = str(uuid.uuid4())
    task = simulator.control.seed_task(
        environment_id=environment, command="x sim:pending=20ms sim:duration=20ms"
    )
    headers = {"Authorization": f"Bearer {simulator.token}", "Accept": "application/jsonl"}
    async with api.http.stream(
        "POST", WATCH, json={"environmentId": environment}, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/jsonl")
        execution = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
        seen: list[JSON] = []

        async def until_final() -> None:
            async for event in jsonl_events(response):
                seen.append(event)
                if event["resourceId"] == execution["id"]:
                    current = await api.execution(execution["id"])
                    if current["status"]["phase"] == "TASK_EXECUTION_PHASE_SUCCEEDED":
                        return

        await asyncio.wait_for(until_final(), timeout=5)
    assert seen[0] == {
        "operation": "RESOURCE_OPERATION_CREATE",
        "resourceType": "RESOURCE_TYPE_TASK_EXECUTION",
        "resourceId": execution["id"],
    }
    assert {e["operation"] for e in seen[1:]} == {"RESOURCE_OPERATION_UPDATE_STATUS"}


async def test_connect_watch_frames_and_end_of_stream(api: Api, simulator: SimulatorHandle) -> None:
    environment = str(uuid.uuid4())
    task = simulator.control.seed_task(environment_id=environment, command="x sim:hang")
    headers = {
        "Authorization": f"Bearer {simulator.token}",
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
    }
    async with api.http.stream(
        "POST", WATCH, content=envelope({"environmentId": environment}), headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/connect+json"
        execution = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
        frames = connect_frames(response)
        flags, first = await asyncio.wait_for(anext(frames), timeout=5)
        assert flags == 0
        assert first["resourceId"] == execution["id"]
        assert first["resourceType"] == "RESOURCE_TYPE_TASK_EXECUTION"
        assert simulator.control.disconnect_watchers() == 1

        async def end_frame() -> tuple[int, JSON]:
            async for flags, message in frames:
                if flags & 0x02:
                    return flags, message
            raise AssertionError("stream ended without an end frame")

        flags, end = await asyncio.wait_for(end_frame(), timeout=5)
    assert end["error"]["code"] == "unavailable"


async def test_connect_watch_auth_error_is_in_the_end_frame(
    api: Api, simulator: SimulatorHandle
) -> None:
    response = await api.http.post(
        WATCH,
        content=envelope({"environmentId": str(uuid.uuid4())}),
        headers={"Content-Type": "application/connect+json", "Authorization": "Bearer wrong"},
    )
    assert response.status_code == 200
    assert response.content[0] == 0x02
    end = json.loads(response.content[5:])
    assert end["error"]["code"] == "unauthenticated"


async def test_organization_scope_gets_no_task_events(api: Api, simulator: SimulatorHandle) -> None:
    environment = str(uuid.uuid4())
    task = simulator.control.seed_task(environment_id=environment, command="x sim:hang")
    headers = {"Authorization": f"Bearer {simulator.token}", "Accept": "application/jsonl"}
    async with (
        api.http.stream("POST", WATCH, json={"organization": True}, headers=headers) as org,
        api.http.stream("POST", WATCH, json={"environmentId": environment}, headers=headers) as env,
    ):
        execution = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
        env_event = await asyncio.wait_for(anext(jsonl_events(env)), timeout=5)
        assert env_event["resourceId"] == execution["id"]
        simulator.control.disconnect_watchers()
        org_events = [event async for event in jsonl_events(org)]
    assert org_events == []


async def test_jsonl_watch_errors_are_plain_connect_errors(api: Api) -> None:
    response = await api.http.post(
        WATCH,
        json={"environmentId": "nope"},
        headers={"Authorization": f"Bearer {api.token}", "Accept": "application/jsonl"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"


async def test_stream_history_says_which_environment_was_watched_when(
    api: Api, simulator: SimulatorHandle
) -> None:
    environment = str(uuid.uuid4())
    task = simulator.control.seed_task(environment_id=environment, command="x sim:hang")
    headers = {"Authorization": f"Bearer {simulator.token}", "Accept": "application/jsonl"}

    def streams() -> list[JSON]:
        return [s for s in simulator.control.watch_streams() if s["environmentId"] == environment]

    async with api.http.stream(
        "POST", WATCH, json={"environmentId": environment}, headers=headers
    ) as response:
        events = jsonl_events(response)
        # An event proves the stream is subscribed before the history is read.
        await api.call("StartTask", {"id": task["id"]})
        await asyncio.wait_for(anext(events), timeout=5)
        (stream,) = streams()
        assert stream["openedAt"]
        assert stream["closedAt"] is None
        simulator.control.disconnect_watchers()
        assert [event async for event in events] == []

    async def closed() -> JSON | None:
        (stream,) = streams()
        return stream if stream["closedAt"] is not None else None

    stream = await wait_for(closed, what="the stream's closedAt")
    assert stream["closedAt"] >= stream["openedAt"]


async def test_a_stream_the_client_closes_is_no_longer_open(
    api: Api, simulator: SimulatorHandle
) -> None:
    environment = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {simulator.token}", "Accept": "application/jsonl"}

    def stream(open_: bool) -> JSON | None:
        for item in simulator.control.watch_streams():
            if item["environmentId"] == environment and (item["closedAt"] is None) == open_:
                return item
        return None

    async def opened() -> JSON | None:
        return stream(open_=True)

    async def closed() -> JSON | None:
        return stream(open_=False)

    async with api.http.stream(
        "POST", WATCH, json={"environmentId": environment}, headers=headers
    ) as response:
        assert response.status_code == 200
        await wait_for(opened, what="the stream to open")
    # The client hung up on a quiet stream, with nothing for the simulator to write: it
    # notices all the same.
    await wait_for(closed, within=10, what="the simulator to see the stream closed")
    assert simulator.control.health()["watchers"] == 0
