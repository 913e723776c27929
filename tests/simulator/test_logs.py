"""Execution logs: CreateEnvironmentLogsToken, the streamed log behind logUrl, its faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.simulator.conftest import JSON, Api, wait_for
from tests.simulator.test_lifecycle import FAILED, RUNNING, STOPPED, start
from tests.support.simulator_fixtures import SimulatorHandle

ENVIRONMENT_SERVICE = "gitpod.v1.EnvironmentService"


@pytest.fixture(autouse=True)
def restore_logs(simulator: SimulatorHandle) -> Iterator[None]:
    """The session's simulator is shared with later tests: leave its logs as found."""
    yield
    simulator.control.clear_log_faults()
    simulator.control.set_logs_token_ttl(3600)


async def logs_token(api: Api, environment_id: str, token: str | None = None) -> str:
    response = await api.http.post(
        f"/{ENVIRONMENT_SERVICE}/CreateEnvironmentLogsToken",
        json={"environmentId": environment_id},
        headers={"Authorization": f"Bearer {token or api.token}"},
    )
    assert response.status_code == 200, response.text
    access: str = response.json()["accessToken"]
    return access


async def running_with_log(api: Api, simulator: SimulatorHandle, command: str) -> JSON:
    started = await start(api, simulator, command)

    async def log_url() -> JSON | None:
        execution = await api.execution(started["id"])
        return execution if execution["status"].get("logUrl") else None

    return await wait_for(log_url, what="a logUrl")


async def read_all(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await http.get(url, headers={"Authorization": f"Bearer {token}"})


async def test_failed_execution_log_ends_with_the_failure(
    api: Api, simulator: SimulatorHandle
) -> None:
    execution = await running_with_log(
        api,
        simulator,
        'make sim:pending=20ms sim:duration=200ms sim:steps=2 sim:log_lines=3 sim:fail="disk full"',
    )
    await api.wait_phase(execution["id"], FAILED)
    token = await logs_token(api, execution["metadata"]["environmentId"])
    response = await read_all(api.http, execution["status"]["logUrl"], token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers.get("transfer-encoding") == "chunked"
    lines = response.text.splitlines()
    labels = [step["label"] for group in execution["spec"]["plan"] for step in group["steps"]]
    assert lines == [
        f"[{labels[0]}] started",
        *(f"[{labels[0]}] output line {i} of 3" for i in (1, 2, 3)),
        f"[{labels[0]}] done",
        f"[{labels[1]}] started",
        *(f"[{labels[1]}] output line {i} of 3" for i in (1, 2, 3)),
        f"[{labels[1]}] error: disk full",
    ]
    assert response.text.endswith("\n")
    assert simulator.control.execution_log(execution["id"]) == lines
    reads = simulator.control.calls("ReadLog")
    assert [(c["httpStatus"], c["requestId"], c["subjectId"]) for c in reads] == [
        (200, execution["id"], None)
    ]


async def test_stream_grows_while_the_execution_runs(api: Api, simulator: SimulatorHandle) -> None:
    execution = await running_with_log(
        api, simulator, "make sim:pending=20ms sim:duration=1200ms sim:log_lines=3"
    )
    token = await logs_token(api, execution["metadata"]["environmentId"])
    arrivals: list[tuple[str, str]] = []  # (line, phase of the execution when it arrived)
    async with api.http.stream(
        "GET", execution["status"]["logUrl"], headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            phase = (await api.execution(execution["id"]))["status"]["phase"]
            arrivals.append((line, phase))
    lines = [line for line, _ in arrivals]
    assert lines[0].endswith("] started")
    assert lines[-1].endswith("] done")
    assert [line.rsplit("] ", 1)[1] for line in lines[1:4]] == [
        f"output line {i} of 3" for i in (1, 2, 3)
    ]
    # The first lines came while it still ran; the stream ended once it was over.
    assert arrivals[0][1] == RUNNING
    assert arrivals[1][1] == RUNNING


async def test_stopped_execution_log_says_stopped(api: Api, simulator: SimulatorHandle) -> None:
    execution = await running_with_log(api, simulator, "serve sim:pending=20ms sim:hang")
    await api.call("StopTaskExecution", {"id": execution["id"]})
    await api.wait_phase(execution["id"], STOPPED)
    token = await logs_token(api, execution["metadata"]["environmentId"])
    lines = (await read_all(api.http, execution["status"]["logUrl"], token)).text.splitlines()
    assert lines[0].endswith("] started")
    assert lines[-1].endswith("] stopped")


async def test_logs_token_is_refused_when_wrong_expired_or_for_another_environment(
    api: Api, simulator: SimulatorHandle
) -> None:
    execution = await running_with_log(api, simulator, "make sim:pending=20ms sim:duration=100ms")
    url = execution["status"]["logUrl"]
    environment = execution["metadata"]["environmentId"]

    missing = await api.http.get(url)
    assert missing.status_code == 401
    # The API token itself is not a logs token.
    assert (await read_all(api.http, url, simulator.token)).status_code == 401
    other = await logs_token(api, "00000000-0000-4000-8000-000000000001")
    refused = await read_all(api.http, url, other)
    assert refused.status_code == 401
    assert "another environment" in refused.text
    # A read-only API token may ask for a logs token.
    readonly = await logs_token(api, environment, token=simulator.readonly_token)
    assert (await read_all(api.http, url, readonly)).status_code == 200

    simulator.control.set_logs_token_ttl(0.3)
    short = await logs_token(api, environment)
    assert (await read_all(api.http, url, short)).status_code == 200

    async def expired() -> httpx.Response | None:
        answer = await read_all(api.http, url, short)
        return answer if answer.status_code == 401 else None

    answer = await wait_for(expired, within=5.0, what="the logs token to expire")
    assert "expired" in answer.text
    assert short not in answer.text
    assert simulator.control.calls("ReadLog")[-1]["code"] == "expired"


async def test_create_logs_token_needs_a_valid_api_token_and_environment(
    api: Api, simulator: SimulatorHandle
) -> None:
    url = f"/{ENVIRONMENT_SERVICE}/CreateEnvironmentLogsToken"
    unauthenticated = await api.http.post(url, json={"environmentId": "x"})
    assert unauthenticated.status_code == 401
    bad = await api.http.post(
        url, json={"environmentId": "x"}, headers={"Authorization": f"Bearer {api.token}"}
    )
    assert bad.status_code == 400
    assert "environmentId" in bad.json()["message"]
    # The /api prefix of a base URL such as https://app.ona.com/api works too.
    prefixed = await api.http.post(
        f"/api{url}",
        json={"environmentId": "00000000-0000-4000-8000-000000000002"},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert prefixed.status_code == 200
    assert prefixed.json()["accessToken"]


async def test_log_faults_502_401_and_dropped_connection(
    api: Api, simulator: SimulatorHandle
) -> None:
    execution = await running_with_log(
        api, simulator, "make sim:pending=20ms sim:duration=100ms sim:log_lines=4"
    )
    await api.wait_phase(execution["id"], "TASK_EXECUTION_PHASE_SUCCEEDED")
    url = execution["status"]["logUrl"]
    token = await logs_token(api, execution["metadata"]["environmentId"])

    simulator.control.set_log_faults(error_502=1, count=1)
    first = await read_all(api.http, url, token)
    assert first.status_code == 502
    assert (await read_all(api.http, url, token)).status_code == 200

    simulator.control.set_log_faults(error_401=1, count=1)
    assert (await read_all(api.http, url, token)).status_code == 401
    assert (await read_all(api.http, url, token)).status_code == 200

    simulator.control.set_log_faults(drop=1, drop_after_lines=2, count=1)
    got: list[str] = []

    async def read_until_dropped() -> None:
        async with api.http.stream(
            "GET", url, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            async for line in response.aiter_lines():
                got.append(line)

    with pytest.raises(httpx.TransportError):
        await read_until_dropped()
    assert len(got) <= 2
    assert (await read_all(api.http, url, token)).status_code == 200

    with pytest.raises(Exception, match="share between 0 and 1"):
        simulator.control.set_log_faults(error_502=2)
    simulator.control.clear_log_faults()
    assert [c["fault"] for c in simulator.control.calls("ReadLog")][:1] == ["502"]


def test_log_lines_directive_is_checked(simulator: SimulatorHandle) -> None:
    with pytest.raises(Exception, match="log_lines"):
        simulator.control.seed_task(reference="bad", command="x sim:log_lines=1001")


async def test_reset_restores_the_token_lifetime(api: Api, simulator: SimulatorHandle) -> None:
    simulator.control.set_logs_token_ttl(1.5)
    assert simulator.control.logs_settings()["tokenTtlSeconds"] == 1.5
    simulator.control.reset()
    assert simulator.control.logs_settings()["tokenTtlSeconds"] == 3600.0
