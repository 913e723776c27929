"""Executions run as their task's command says: phases, steps, outputs, versions, stops."""

from __future__ import annotations

from tests.simulator.conftest import JSON, Api, wait_for
from tests.support.simulator_fixtures import SimulatorHandle

SUCCEEDED = "TASK_EXECUTION_PHASE_SUCCEEDED"
FAILED = "TASK_EXECUTION_PHASE_FAILED"
STOPPED = "TASK_EXECUTION_PHASE_STOPPED"
RUNNING = "TASK_EXECUTION_PHASE_RUNNING"
PENDING = "TASK_EXECUTION_PHASE_PENDING"


async def start(api: Api, simulator: SimulatorHandle, command: str) -> JSON:
    task = simulator.control.seed_task(reference="t", command=command)
    execution: JSON = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
    return execution


async def observe_until_final(api: Api, execution_id: str, within: float = 5.0) -> list[JSON]:
    """Every distinct status a poller sees, in order, until the execution ends."""
    seen: list[JSON] = []

    async def final() -> bool | None:
        execution = await api.execution(execution_id)
        if not seen or seen[-1]["status"] != execution["status"]:
            seen.append(execution)
        return True if execution["status"]["phase"] in (SUCCEEDED, FAILED, STOPPED) else None

    await wait_for(final, within=within, what=f"{execution_id} to end")
    return seen


async def test_runs_to_succeeded_with_steps_and_outputs(
    api: Api, simulator: SimulatorHandle
) -> None:
    started = await start(
        api,
        simulator,
        'deploy sim:pending=50ms sim:duration=300ms sim:steps=3 sim:output.url="http://x/y z"',
    )
    seen = await observe_until_final(api, started["id"])
    final = seen[-1]
    status = final["status"]
    assert status["phase"] == SUCCEEDED
    plan_steps = [step["id"] for group in final["spec"]["plan"] for step in group["steps"]]
    assert [step["id"] for step in status["steps"]] == plan_steps
    assert all(step["phase"] == SUCCEEDED for step in status["steps"])
    assert status["steps"][-1]["output"] == {"url": "http://x/y z"}
    assert "failureMessage" not in status
    assert status["logUrl"]
    metadata = final["metadata"]
    assert metadata["createdAt"] <= metadata["startedAt"] <= metadata["completedAt"]
    # Steps that have not started are absent: no poll saw more steps than had started.
    running = [s for s in seen if s["status"]["phase"] == RUNNING]
    assert running, "the poller should have seen the execution running"
    assert all(len(s["status"]["steps"]) < 3 or s is running[-1] for s in running[:-1])
    assert all("logUrl" in s["status"] for s in running)


async def test_runs_to_failed_with_step_failure_message(
    api: Api, simulator: SimulatorHandle
) -> None:
    started = await start(
        api,
        simulator,
        "test sim:pending=20ms sim:duration=100ms sim:steps=2 sim:fail_step=1 "
        'sim:fail="tests failed: 3 of 10"',
    )
    final = (await observe_until_final(api, started["id"]))[-1]
    status = final["status"]
    assert status["phase"] == FAILED
    assert status["failureMessage"] == "tests failed: 3 of 10"
    [step] = status["steps"]  # the second group never started
    assert step["phase"] == FAILED
    assert step["failureMessage"] == "tests failed: 3 of 10"
    assert "completedAt" in final["metadata"]


async def test_stop_ends_in_stopped_and_stopping_again_is_harmless(
    api: Api, simulator: SimulatorHandle
) -> None:
    started = await start(api, simulator, "serve sim:pending=10ms sim:hang")
    await api.wait_phase(started["id"], RUNNING)
    assert await api.call("StopTaskExecution", {"id": started["id"]}) == {}
    stopped = await api.wait_phase(started["id"], STOPPED)
    assert stopped["spec"]["desiredPhase"] == STOPPED
    assert [step["phase"] for step in stopped["status"]["steps"]] == [STOPPED]
    assert "completedAt" in stopped["metadata"]

    again = await api.raw("StopTaskExecution", {"id": started["id"]})
    assert again.status_code == 200
    assert again.json() == {}
    assert await api.execution(started["id"]) == stopped


async def test_stop_of_succeeded_execution_changes_nothing(
    api: Api, simulator: SimulatorHandle
) -> None:
    started = await start(api, simulator, "x sim:pending=0ms sim:duration=10ms")
    done = await api.wait_phase(started["id"], SUCCEEDED)
    assert await api.call("StopTaskExecution", {"id": started["id"]}) == {}
    assert await api.execution(started["id"]) == done


async def test_stop_while_pending(api: Api, simulator: SimulatorHandle) -> None:
    started = await start(api, simulator, "x sim:pending=inf")
    await api.call("StopTaskExecution", {"id": started["id"]})
    stopped = await api.wait_phase(started["id"], STOPPED)
    assert "startedAt" not in stopped["metadata"]
    assert "steps" not in stopped["status"]


async def test_status_version_grows_past_a_digit_boundary(
    api: Api, simulator: SimulatorHandle
) -> None:
    started = await start(api, simulator, "x sim:pending=20ms sim:duration=60ms sim:steps=3")
    seen = await observe_until_final(api, started["id"])
    versions = [s["status"]["statusVersion"] for s in seen]
    assert all(isinstance(v, str) and v.isdigit() for v in versions)
    numbers = [int(v) for v in versions]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    first, last = versions[0], versions[-1]
    assert len(last) > len(first), versions
    assert int(last) > int(first)
    assert last < first, "as text the order is the other way round"


async def test_executions_by_different_tokens_have_different_creators(
    api: Api, simulator: SimulatorHandle
) -> None:
    task = simulator.control.seed_task(command="x sim:hang")
    other = simulator.control.add_token("another-user")
    mine = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
    theirs = (await api.call("StartTask", {"id": task["id"]}, token="another-user"))[
        "taskExecution"
    ]
    assert mine["id"] != theirs["id"], "every StartTask creates a new execution"
    assert mine["metadata"]["creator"]["id"] == simulator.control.subject_of(simulator.token)
    assert theirs["metadata"]["creator"]["id"] == other


async def test_set_phase_pushes_an_execution(api: Api, simulator: SimulatorHandle) -> None:
    started = await start(api, simulator, "x sim:hang")
    simulator.control.set_phase(started["id"], RUNNING)
    running = await api.execution(started["id"])
    assert running["status"]["phase"] == RUNNING
    assert running["status"]["logUrl"]
    simulator.control.set_phase(started["id"], "FAILED", failure_message="disk full")
    failed = await api.execution(started["id"])
    assert failed["status"]["phase"] == FAILED
    assert failed["status"]["failureMessage"] == "disk full"
    assert failed["status"]["steps"][0]["failureMessage"] == "disk full"
    assert int(failed["status"]["statusVersion"]) > int(running["status"]["statusVersion"])


async def test_replay_serves_an_older_status_until_the_next_change(
    api: Api, simulator: SimulatorHandle
) -> None:
    started = await start(api, simulator, "x sim:pending=10ms sim:hang")
    running = await api.wait_phase(started["id"], RUNNING)
    old_version = started["status"]["statusVersion"]
    simulator.control.replay(started["id"], old_version)

    replayed = await api.execution(started["id"])
    assert replayed["status"]["statusVersion"] == old_version
    assert replayed["status"]["phase"] == PENDING
    listed = await api.call("ListTaskExecutions", {"filter": {"phases": [PENDING]}})
    assert [e["status"]["statusVersion"] for e in listed["taskExecutions"]] == [old_version]

    simulator.control.clear_replay(started["id"])
    assert await api.execution(started["id"]) == running

    simulator.control.replay(started["id"], old_version)
    await api.call("StopTaskExecution", {"id": started["id"]})
    stopped = await api.wait_phase(started["id"], STOPPED)
    assert int(stopped["status"]["statusVersion"]) > int(running["status"]["statusVersion"])


async def test_control_lists_executions_with_full_state(
    api: Api, simulator: SimulatorHandle
) -> None:
    started = await start(api, simulator, "x sim:hang sim:steps=2")
    [item] = simulator.control.executions()
    assert item["execution"]["id"] == started["id"]
    assert item["taskReference"] == "t"
    assert item["statusVersions"] == [started["status"]["statusVersion"]]
    assert item["plan"]["steps"] == 2
    assert item["plan"]["durationSeconds"] is None


async def test_fail_first_fails_the_tasks_first_executions_then_succeeds(
    api: Api, simulator: SimulatorHandle
) -> None:
    task = simulator.control.seed_task(
        reference="flaky", command="flaky sim:pending=10ms sim:duration=50ms sim:fail_first=2"
    )
    outcomes = []
    for _ in range(3):
        started = (await api.call("StartTask", {"id": task["id"]}))["taskExecution"]
        final = (await observe_until_final(api, started["id"]))[-1]
        outcomes.append((final["status"]["phase"], final["status"].get("failureMessage")))
    assert outcomes == [
        (FAILED, "execution 1 of 2 failed (sim:fail_first)"),
        (FAILED, "execution 2 of 2 failed (sim:fail_first)"),
        (SUCCEEDED, None),
    ]
