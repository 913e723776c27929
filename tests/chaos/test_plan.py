"""The chaos plan puts a third of every kind of TaskRun on the second connection."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tools.chaos.plan import (
    PROJECT,
    SCHEDULE,
    TEAM_CONNECTION,
    Settings,
    make_plan,
    schedule_manifest,
)
from tools.chaos.verify import FORMS


@pytest.mark.parametrize("settings", [Settings(), Settings(taskruns=24, kills=2, seed=7)])
def test_every_form_has_taskruns_on_each_connection(settings: Settings) -> None:
    plan = make_plan(settings)
    runs = [*plan.runs, *(r for group in plan.trigger_runs.values() for r in group)]
    team = [r for r in runs if r.connection == TEAM_CONNECTION]
    assert {r.connection for r in runs} == {"", TEAM_CONNECTION}
    assert 0.25 <= len(team) / len(runs) <= 0.45
    for form in FORMS:
        of_form = [r for r in runs if r.form == form]
        assert any(r.connection == TEAM_CONNECTION for r in of_form), form
        assert any(r.connection == "" for r in of_form), form
    for special in ("created_stopped", "timeout", "stop_after"):
        assert any(getattr(r, special) for r in team), special
    for point, group in plan.trigger_runs.items():
        assert {r.connection for r in group} == {"", TEAM_CONNECTION}, point


def test_the_spec_names_the_connection_only_when_there_is_one() -> None:
    plan = make_plan(Settings(taskruns=24))
    for run in plan.runs:
        spec = run.spec("22222222-2222-4222-8222-222222222222")
        if run.connection:
            assert spec["connectionRef"] == {"name": TEAM_CONNECTION}
        else:
            assert "connectionRef" not in spec


@pytest.mark.parametrize("settings", [Settings(), Settings(taskruns=24, kills=2, seed=7)])
def test_retrying_taskruns_meet_both_ends(settings: Settings) -> None:
    plan = make_plan(settings)
    retrying = [r for r in plan.runs if r.retries]
    assert len(retrying) >= 2
    assert len(plan.runs) == max(settings.taskruns, len(plan.runs))  # none added on top
    for run in retrying:
        assert 1 <= run.retries <= 3
        assert f"sim:fail_first={run.fail_first}" in run.command
        assert run.spec()["retries"] == run.retries
    # Some succeed at their last attempt, some exhaust their retries.
    assert {r.fail_first > r.retries for r in retrying} == {True, False}


@pytest.mark.parametrize("settings", [Settings(), Settings(taskruns=24, kills=2, seed=7)])
def test_from_project_runs_create_their_environment(settings: Settings) -> None:
    plan = make_plan(settings)
    runs = [r for r in plan.runs if r.from_project]
    assert len(runs) >= 1
    for run in runs:
        spec = run.spec()
        assert "environmentId" not in spec["task"]
        assert spec["environment"] == {"fromProject": {"projectId": PROJECT}}


def test_a_full_plan_kills_once_between_an_environment_creation_and_its_record() -> None:
    plan = make_plan(Settings())
    assert "after-environment-create" in plan.trigger_runs
    assert all(r.from_project for r in plan.trigger_runs["after-environment-create"])


def test_a_full_plan_kills_once_between_a_stop_record_and_the_stop() -> None:
    plan = make_plan(Settings())
    runs = plan.trigger_runs["after-stop-claim"]
    assert runs
    for run in runs:
        assert run.spec()["timeout"] == "2s"
        assert "sim:hang" in run.command


@pytest.mark.parametrize("settings", [Settings(), Settings(taskruns=24, kills=2, seed=7)])
def test_the_schedule_is_on_through_every_fault_and_off_at_the_end(settings: Settings) -> None:
    plan = make_plan(settings)
    on = [e.at for e in plan.events if e.kind == "schedule-on"]
    off = [e.at for e in plan.events if e.kind == "schedule-off"]
    assert on == [0.0]
    assert off == [plan.length]  # with the outage's end, the plan's last event
    # Long enough for at least one minute slot; the full run has several.
    assert off[0] - on[0] >= 60
    assert not [
        e for e in make_plan(replace(settings, schedule=False)).events if "schedule" in e.kind
    ]


def test_the_schedule_makes_a_run_every_minute_through_the_team_connection() -> None:
    manifest = schedule_manifest("chaos-ns")
    assert manifest["metadata"] == {"name": SCHEDULE, "namespace": "chaos-ns"}
    spec = manifest["spec"]
    assert (spec["schedule"], spec["concurrencyPolicy"]) == ("* * * * *", "Allow")
    # Every run is kept, so each slot can be judged at the end.
    assert spec["successfulRunsHistoryLimit"] == spec["failedRunsHistoryLimit"] == 100
    assert spec["taskRunTemplate"]["spec"]["connectionRef"] == {"name": TEAM_CONNECTION}
