"""TEKTON_CUSTOM_TASKS: off unless set, and when on the operator watches CustomRuns and
shares its work queue with them; when off, nothing of Tekton is watched (a cluster without
Tekton's CRDs, or without the RBAC of manifests/tekton, runs as before)."""

from __future__ import annotations

import pytest

from ona_taskrun import config
from ona_taskrun.app import App, build_registry
from ona_taskrun.config import ConfigError
from ona_taskrun.rules import customrun


def load(**env: str) -> config.Config:
    return config.load([], {"ONA_API_TOKEN": "t", **env})


def test_off_by_default() -> None:
    assert load().tekton_custom_tasks is False


@pytest.mark.parametrize(("raw", "on"), [("true", True), ("1", True), ("false", False)])
def test_turned_on_or_off_by_the_setting(raw: str, on: bool) -> None:
    assert load(TEKTON_CUSTOM_TASKS=raw).tekton_custom_tasks is on


def test_a_bad_value_is_named() -> None:
    with pytest.raises(ConfigError, match="TEKTON_CUSTOM_TASKS='maybe' must be true or false"):
        load(TEKTON_CUSTOM_TASKS="maybe")


def test_the_help_lists_it() -> None:
    assert "TEKTON_CUSTOM_TASKS" in config.ENV_HELP


def _watched(app: App) -> set[tuple[str, str]]:
    registry = build_registry(app)
    return {
        (str(h.selector.group), str(h.selector.any_name))  # type: ignore[union-attr]
        for h in registry._watching.get_all_handlers()
    }


async def test_only_when_on_are_customruns_watched_and_served() -> None:
    off = App(load())
    assert off.customruns is None
    assert customrun.KIND not in off.reconciler.handlers
    assert ("tekton.dev", "customruns") not in _watched(off)

    on = App(load(TEKTON_CUSTOM_TASKS="true"))
    assert on.customruns is not None
    assert on.reconciler.handlers[customrun.KIND] == on.customruns.reconcile
    assert ("tekton.dev", "customruns") in _watched(on)


async def test_what_customruns_hold_is_counted_with_the_rest() -> None:
    # The soak's and the leak gauge's promise (ona_taskrun_remembered all 0 once every run
    # is gone) covers CustomRuns too, and only when they are served.
    assert "customruns" not in App(load()).reconciler.remembered()
    on = App(load(TEKTON_CUSTOM_TASKS="true"))
    assert on.customruns is not None
    assert on.reconciler.remembered()["customruns"] == 0
    on.customruns.observe(
        "ADDED",
        {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "CustomRun",
            "metadata": {"namespace": "team-a", "name": "p-1", "uid": "u1", "resourceVersion": "1"},
            "spec": {"customRef": {"apiVersion": "automation.ona.com/v1alpha1", "kind": "TaskRun"}},
        },
    )
    assert on.reconciler.remembered()["customruns"] == 1
