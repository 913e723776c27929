"""End to end: an operator that has seen TaskRuns come and go holds nothing for them.

About 60 TaskRuns go through the operator as a process: quick successes deleted by their
TTL or by hand, failures with a log tail, a run with `retries: 2` that fails twice and
then succeeds, runs deleted while they run or while they wait for a stopped environment,
and one whose finalizer a person takes away while another writer keeps changing it (the
operator's writes meet 409 Conflict, and its re-read may find the TaskRun gone). Once
all are gone, `ona_taskrun_remembered` says 0 for every kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, cast

import pytest
from kubernetes import client

from tests.support.operator_fixtures import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorFactory,
    TaskRuns,
    free_port,
    inline_task,
    wait_for,
)
from tests.support.scrape import Scrape, scrape, try_scrape
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KINDS = (
    "taskruns",
    "executions",
    "claims",
    "environments",
    "timers",
    "log_tails",
    "events",
    "queue",
)
QUICK = "make # sim:pending=0.1s sim:duration=0.3s"
FAILING = 'make # sim:pending=0.1s sim:duration=0.3s sim:log_lines=4 sim:fail="broken"'
HANGING = "make # sim:pending=0.1s sim:hang"


def remembered(scraped: Scrape) -> dict[str, float]:
    return {kind: scraped.value("ona_taskrun_remembered", kind=kind) for kind in KINDS}


def _create(taskruns: TaskRuns, name: str, spec: Mapping[str, Any]) -> None:
    taskruns.api.create_namespaced_custom_object(
        GROUP, VERSION, taskruns.namespace, PLURAL, taskruns.manifest(name, spec)
    )


def _delete(taskruns: TaskRuns, name: str) -> None:
    with contextlib.suppress(client.ApiException):  # already gone (a TTL)
        taskruns.api.delete_namespaced_custom_object(
            GROUP, VERSION, taskruns.namespace, PLURAL, name
        )


def _statuses(taskruns: TaskRuns) -> dict[str, dict[str, Any]]:
    """Every TaskRun of the namespace, by name: its status (one list)."""
    found = cast(
        dict[str, Any],
        taskruns.api.list_namespaced_custom_object(GROUP, VERSION, taskruns.namespace, PLURAL),
    )
    return {i["metadata"]["name"]: dict(i.get("status") or {}) for i in found["items"]}


def _all(taskruns: TaskRuns, names: list[str], wanted: Callable[[dict[str, Any]], Any]) -> bool:
    """Whether every one of `names` still there has a status that is `wanted`."""
    statuses = _statuses(taskruns)
    return all(wanted(statuses[name]) for name in names if name in statuses)


def test_churned_taskruns_leave_nothing_remembered(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
) -> None:
    port = free_port()
    operator_factory(
        namespace,
        extra_env={
            "METRICS_PORT": str(port),
            "METRICS_BIND_ADDRESS": "127.0.0.1",
            "RETRY_BACKOFF_BASE_SECONDS": "0.5",
        },
    )

    def leading() -> Scrape | None:
        scraped = try_scrape(port)
        return scraped if scraped is not None and scraped.value("ona_taskrun_leader") else None

    first = wait_for(leading, timeout=60, what="the operator to lead")
    # The gauge is declared, every kind, before any TaskRun.
    assert {ls["kind"] for ls in first.labels("ona_taskrun_remembered")} == set(KINDS)

    stopped = str(
        e2e_simulator.control.seed_environment(name="asleep", phase="STOPPED", startDelay=600)["id"]
    )
    quick = [f"quick-{i}" for i in range(30)]
    failing = [f"failing-{i}" for i in range(12)]
    running = [f"running-{i}" for i in range(10)]
    waiting = [f"waiting-{i}" for i in range(4)]
    for index, name in enumerate(quick):
        ttl = {"ttlSecondsAfterFinished": 1} if index % 2 else {}
        _create(taskruns, name, {"task": inline_task(QUICK), **ttl})
    for name in failing:
        _create(taskruns, name, {"task": inline_task(FAILING), "logs": {"tailLines": 3}})
    _create(
        taskruns,
        "flaky",
        {"task": inline_task(f"{QUICK} sim:fail_first=2"), "retries": 2},
    )
    for name in running:
        _create(taskruns, name, {"task": inline_task(HANGING)})
    for name in waiting:
        task = {**inline_task(QUICK), "environmentId": stopped}
        _create(taskruns, name, {"task": task})
    _create(taskruns, "contended", {"task": inline_task(HANGING)})
    total = len(quick) + len(failing) + len(running) + len(waiting) + 2

    wait_for(
        lambda: remembered(scrape(port))["taskruns"] == total,
        timeout=60,
        what=f"{total} TaskRuns remembered",
    )

    # Deleted while they run, or while they wait for their environment.
    wait_for(
        lambda: _all(taskruns, running, lambda status: status.get("taskExecutionId")),
        timeout=60,
        what="the hanging runs to run",
    )
    wait_for(
        lambda: remembered(scrape(port))["environments"] == len(waiting),
        what=f"{len(waiting)} TaskRuns waiting for their environment",
    )
    assert remembered(scrape(port))["claims"] >= len(running)
    for name in [*running, *waiting]:
        _delete(taskruns, name)

    # Another writer keeps changing it while a person takes its finalizer away and deletes
    # it: the operator's writes meet 409, and what it reads again may be gone.
    wait_for(
        lambda: _all(taskruns, ["contended"], lambda status: status.get("taskExecutionId")),
        what="the contended run to run",
    )
    with taskruns.edited("contended") as edits:
        wait_for(lambda: edits() >= 20, what="edits by another writer")
        taskruns.api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "contended", {"metadata": {"finalizers": None}}
        )
        _delete(taskruns, "contended")

    # The rest end: then delete them, as a user would (the TTL ones go by themselves).
    taskruns.wait_phase("flaky", "SUCCEEDED", timeout=90)
    assert [a["phase"] for a in taskruns.status("flaky")["attempts"]] == ["FAILED", "FAILED"]
    wait_for(
        lambda: _all(taskruns, failing, lambda status: status.get("phase") == "FAILED"),
        timeout=60,
        what="the failing runs to fail",
    )
    wait_for(  # the TTL ones may be gone already
        lambda: _all(taskruns, quick, lambda status: status.get("phase") == "SUCCEEDED"),
        timeout=60,
        what="the quick runs to succeed",
    )
    for name in [*quick[::2], *failing, "flaky"]:
        _delete(taskruns, name)
    wait_for(lambda: not _statuses(taskruns), timeout=90, what="every TaskRun gone")

    # Nothing is held for any of them.
    last: dict[str, float] = {}

    def nothing() -> bool:
        nonlocal last
        last = remembered(scrape(port))
        return not any(last.values())

    try:
        wait_for(nothing, timeout=30, what="ona_taskrun_remembered 0 for every kind")
    except AssertionError as exc:
        raise AssertionError(f"still remembered once every TaskRun is gone: {last}") from exc
