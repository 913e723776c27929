"""The environment watch and the client's environment calls against the simulator over
real HTTP: a TaskRun waiting for its environment is woken when it changes, one stream per
environment waited on, closed once nobody waits."""

from __future__ import annotations

import functools

import pytest

from ona_taskrun.clients.ona import EnvironmentPhase, NotFound, OnaClient
from ona_taskrun.controller.environment_watch import EnvironmentWatch
from tests.support import waits
from tests.support.simulator_fixtures import SimulatorHandle

# Environments here change within a second or two: a shorter deadline than the default.
until = functools.partial(waits.until, within=10.0)


async def test_waiting_runs_are_woken_when_their_environment_changes(
    simulator: SimulatorHandle, ona: OnaClient
) -> None:
    stopped = simulator.control.seed_environment(phase="STOPPED", startDelay="300ms")
    other = simulator.control.seed_environment()
    woken: list[str] = []
    watch = EnvironmentWatch(ona, woken.append)
    try:
        watch.wait(stopped["id"], "ns/a")
        watch.wait(stopped["id"], "ns/b")
        watch.wait(other["id"], "ns/c")
        assert watch.streams == 2
        # Every stream wakes its waiters once it is open (a change may have come before).
        await until(lambda: {"ns/a", "ns/b", "ns/c"} <= set(woken), "the first wake-ups")
        woken.clear()
        await ona.start_environment(stopped["id"])
        await until(lambda: woken.count("ns/a") >= 2, "STARTING and RUNNING wake ns/a")
        assert "ns/c" not in woken  # the other environment did not change
        env = await ona.get_environment(stopped["id"])
        assert env.status.phase is EnvironmentPhase.RUNNING
        # Nobody waits on it any more: its stream closes.
        watch.done("ns/a")
        watch.done("ns/b")
        assert watch.streams == 1
        watch.done("ns/c")
        assert watch.streams == 0
        # A closed stream wakes nobody: a change now reaches no waiter.
        woken.clear()
        await ona.stop_environment(other["id"])
        await until(
            lambda: (
                simulator.control.environment(other["id"])["environment"]["status"]["phase"]
                == "ENVIRONMENT_PHASE_STOPPED"
            ),
            "the other environment stopped",
        )
        assert woken == []
    finally:
        await watch.close()


async def test_client_environment_calls(simulator: SimulatorHandle, ona: OnaClient) -> None:
    project = simulator.control.seed_project(createDelay="100ms", startDelay="100ms")
    created = await ona.create_environment_from_project(
        project["id"], name="run-x", spec={"machine": {"class": "small"}}
    )
    assert created.status.phase is EnvironmentPhase.CREATING
    assert created.metadata.name == "run-x"
    listed = await ona.list_environments(project_ids=[project["id"]])
    assert [e.id for e in listed] == [created.id]
    await ona.mark_environment_active(created.id, source="test", timestamp="2026-01-01T00:00:00Z")
    await ona.delete_environment(created.id)
    await until(
        lambda: (
            simulator.control.environment(created.id)["environment"]["status"]["phase"]
            == "ENVIRONMENT_PHASE_DELETED"
        ),
        "the environment deleted",
    )
    assert await ona.list_environments(project_ids=[project["id"]]) == []
    with pytest.raises(NotFound):
        await ona.get_environment("00000000-0000-4000-8000-0000000000ff")
