"""After a restart the first list queues every TaskRun; the finished ones (thousands) must
neither go before the running ones nor keep the event loop to themselves.

Measured at 10,000 finished and 500 running TaskRuns: every one was queued in list order,
so a running TaskRun waited behind the finished ones listed before it to be followed
again, and reconciles that need no I/O never yielded, so for seconds nothing else ran (not
even the line saying the operator was ready, 5 s late). Here the reconciler's own queue
and workers, with a reconcile that only notes the order, as a finished TaskRun's does no
I/O.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ona_taskrun.controller import connections
from ona_taskrun.controller import reconciler as reconciler_module
from ona_taskrun.controller.reconciler import Reconciler
from ona_taskrun.rules import selectors
from tests.support.waits import until


def taskrun(name: str, *, finished: bool, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": "ns",
        "name": name,
        "uid": f"uid-{name}",
        "resourceVersion": "10",
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"taskExecutionId": f"exec-{name}"}
    if finished:
        status["phase"] = "SUCCEEDED"
        status["conditions"] = [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}]
    else:
        status["phase"] = "RUNNING"
        status["conditions"] = [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]
    return {"kind": "TaskRun", "metadata": meta, "spec": {"taskRef": {"id": "t"}}, "status": status}


def reconciler(order: list[str], workers: int = 4) -> Reconciler:
    conns = connections.Connections(
        connections.Settings(default_namespaces=selectors.EVERYTHING),
        connections.RemoteSettings(),
        notify_taskrun=lambda key: None,
        enqueue=lambda key: None,
        wake_users=lambda key: None,
    )
    r = Reconciler(conns, workers=workers)

    async def reconcile(key: str) -> None:  # a finished TaskRun's: no I/O at all
        order.append(key)

    r.reconcile = reconcile  # type: ignore[method-assign]
    return r


async def test_the_running_and_the_deleted_go_before_the_finished_listed_first() -> None:
    order: list[str] = []
    r = reconciler(order)
    names = [f"run-{i:03d}" for i in range(200)]
    running = {names[i] for i in (17, 99, 150, 199)}
    deleting = names[42]
    for name in names:  # in list order, as the first list delivers them
        r.observe(
            "ADDED",
            taskrun(name, finished=name not in running, deleting=name == deleting),
        )
    r.synced.set()
    await r.start()
    try:
        await until(lambda: len(order) == len(names), "every TaskRun reconciled")
    finally:
        await r.stop()
    first = {key.split("/", 1)[1] for key in order[: len(running) + 1]}
    assert first == {*running, deleting}, order[:10]


async def test_a_backlog_that_needs_no_io_lets_the_rest_of_the_loop_in() -> None:
    order: list[str] = []
    r = reconciler(order)
    for i in range(2000):
        r.observe("ADDED", taskrun(f"done-{i:04d}", finished=True))
    done_at_tick: list[int] = []

    async def ticker() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
            done_at_tick.append(len(order))

    r.synced.set()
    await r.start()
    tick = asyncio.create_task(ticker())
    try:
        await until(lambda: len(order) == 2000, "the backlog worked through")
        await tick
    finally:
        await r.stop()
    # Another task ran while the backlog was worked through, not only after it.
    assert done_at_tick[0] < 100, done_at_tick


async def test_one_worker_at_a_time_works_through_the_finished_backlog() -> None:
    # 32 workers each taking a finished TaskRun put 32 reconciles between any two steps of
    # everything else (the running TaskRuns' news among it); one at a time, one.
    order: list[str] = []
    r = reconciler(order, workers=8)
    inside = 0
    most = 0

    async def reconcile(key: str) -> None:
        nonlocal inside, most
        finished = "/done-" in key
        inside += finished
        most = max(most, inside)
        await asyncio.sleep(0)  # part of a reconcile: others run meanwhile
        inside -= finished
        order.append(key)

    r.reconcile = reconcile  # type: ignore[method-assign]
    for i in range(200):
        r.observe("ADDED", taskrun(f"done-{i:03d}", finished=True))
    running = [f"live-{i}" for i in range(8)]
    for name in running:
        r.observe("ADDED", taskrun(name, finished=False))
    r.synced.set()
    await r.start()
    try:
        await until(lambda: len(order) == 208, "every TaskRun reconciled")
    finally:
        await r.stop()
    assert most == 1, most
    assert {key.split("/", 1)[1] for key in order[:8]} == set(running)


async def test_the_finished_backlog_gives_way_while_other_taskruns_are_reconciled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a busy machine the backlog's CPU was the running TaskRuns': their changes made
    # right after a restart took 5.6 s (median) to mirror against 1.5 s with the operator
    # steady. While any other key is being reconciled, the backlog waits (here, for as
    # long as the test needs: FINISHED_WAIT is what bounds it in operation).
    monkeypatch.setattr(reconciler_module, "FINISHED_WAIT", 60.0, raising=False)
    order: list[str] = []
    r = reconciler(order, workers=4)
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        if "/live-" in key:
            await release.wait()  # a running TaskRun's status write, in flight
        order.append(key)

    r.reconcile = reconcile  # type: ignore[method-assign]
    r.observe("ADDED", taskrun("live-0", finished=False))
    for i in range(50):
        r.observe("ADDED", taskrun(f"done-{i:03d}", finished=True))
    r.synced.set()
    await r.start()
    try:
        for _ in range(200):  # the loop turns many times; no finished one goes meanwhile
            await asyncio.sleep(0)
        assert order == []
        release.set()
        await until(lambda: len(order) == 51, "every TaskRun reconciled")
    finally:
        await r.stop()
    assert order[0] == "ns/live-0"


async def test_the_finished_backlog_holds_no_worker_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker that took a finished TaskRun and waited for its turn was a worker the news
    # of a running one could not have: the backlog has a worker of its own.
    monkeypatch.setattr(reconciler_module, "FINISHED_WAIT", 60.0, raising=False)
    order: list[str] = []
    begun: list[str] = []
    r = reconciler(order, workers=2)
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        begun.append(key)
        if key == "ns/live-0":
            await release.wait()  # in flight: the backlog waits
        order.append(key)

    r.reconcile = reconcile  # type: ignore[method-assign]
    r.observe("ADDED", taskrun("live-0", finished=False))
    for i in range(20):
        r.observe("ADDED", taskrun(f"done-{i:03d}", finished=True))
    r.synced.set()
    await r.start()
    try:
        await until(lambda: "ns/live-0" in begun, "the first running TaskRun in flight")
        for _ in range(50):
            await asyncio.sleep(0)
        r.observe("ADDED", taskrun("live-1", finished=False))  # news of another
        await until(lambda: "ns/live-1" in order, "the second one reconciled", within=5.0)
        assert not [key for key in order if "/done-" in key]
        release.set()
        await until(lambda: len(order) == 22, "every TaskRun reconciled")
    finally:
        await r.stop()
