"""The reconciler forgets a TaskRun whole: once it is gone, nothing is held for it.

The reconciler runs in-process against an API server in memory (`fake_kube`) and the
simulator through the default connection, so each way of going can be arranged on cue:
deleted (the watch says DELETED), gone when a write's conflict makes it read the TaskRun
again (404 before the watch says anything), removed while its StartTask is under way,
and retried over several attempts whose executions it held. Afterwards
`Reconciler.remembered()` (the `ona_taskrun_remembered` gauge) counts nothing, and the
metrics' view of the work queue has no entry for it.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY, generate_latest

from ona_taskrun.clients.kube import Conflict
from ona_taskrun.controller.connections import Connections, RemoteSettings, Settings
from ona_taskrun.controller.reconciler import Reconciler
from ona_taskrun.controller.record import TaskRunRecord
from ona_taskrun.observability import metrics
from ona_taskrun.rules import selectors
from ona_taskrun.rules.model import CLAIM_ANNOTATION
from ona_taskrun.rules.model import Settings as RuleSettings
from tests.ona.fake_kube import FakeKube
from tests.support.scrape import parse
from tests.support.simulator_fixtures import SimulatorHandle

T = TypeVar("T")
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
NOTHING = dict.fromkeys(KINDS, 0)
QUICK = "make test # sim:pending=50ms sim:duration=300ms"


@dataclass
class Operator:
    reconciler: Reconciler
    kube: FakeKube
    environment: str

    def task(self, command: str, environment: str = "") -> dict[str, Any]:
        return {"environmentId": environment or self.environment, "name": "t", "command": command}

    def status(self, name: str) -> Mapping[str, Any]:
        body = self.kube.objects.get(name) or {}
        return dict(body.get("status") or {})

    def held(self) -> dict[str, int]:
        """What the reconciler remembers for TaskRuns, by kind, and its TaskRuns' entries
        in the metrics' view of the queue."""
        counts = dict(self.reconciler.remembered())
        prefix = f"{self.kube.namespace}/"
        counts["queued"] = sum(1 for key in metrics.QUEUE.queued_at if key.startswith(prefix))
        return counts


async def eventually(probe: Callable[[], T], what: str, within: float = 20.0) -> T:
    """Poll `probe` until it returns something truthy, or fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := probe()):
        assert loop.time() < deadline, f"timed out waiting for {what}; last seen: {found!r}"
        await asyncio.sleep(0.02)
    return found


async def forgotten(op: Operator, within: float = 20.0) -> None:
    """Wait until nothing is held for any TaskRun; fail saying what still is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (held := op.held()) != {**NOTHING, "queued": 0}:
        assert loop.time() < deadline, f"still held after {within}s: {held}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def op(simulator: SimulatorHandle) -> AsyncIterator[Operator]:
    kube = FakeKube(namespace=f"ns-{uuid.uuid4().hex[:8]}")
    environment = str(simulator.control.seed_environment(name="running")["id"])
    reconciler: Reconciler | None = None

    def to(call: Callable[[Reconciler], Callable[[Any], None]]) -> Callable[[Any], None]:
        return lambda key: call(reconciler)(key) if reconciler is not None else None

    connections = Connections(
        Settings(default_base_url=simulator.base_url, default_namespaces=selectors.EVERYTHING),
        RemoteSettings(request_timeout=5.0, poll_interval=0.2),
        notify_taskrun=to(lambda r: r.enqueue_urgent),
        enqueue=to(lambda r: r.enqueue),
        wake_users=to(lambda r: r.wake_users),
        default_token=simulator.token,
    )
    reconciler = Reconciler(
        connections,
        workers=2,
        settings=RuleSettings(
            start_settle=timedelta(seconds=3),
            resync_seconds=2.0,
            retry_backoff_base=0.1,
            environment_poll=0.5,
        ),
        merge_window=0.05,
    )
    reconciler.kube = kube  # type: ignore[assignment]
    kube.deliver = reconciler.observe
    await reconciler.start()
    listed = asyncio.Event()
    listed.set()
    await reconciler.initial_sync((), [listed])
    try:
        yield Operator(reconciler, kube, environment)
    finally:
        simulator.control.clear_faults()
        await reconciler.stop()


async def test_it_counts_what_it_holds_while_a_run_goes_on(op: Operator) -> None:
    op.kube.create("quick", {"task": op.task(QUICK)})
    await eventually(lambda: op.status("quick").get("taskExecutionId"), "an execution")
    held = op.held()
    assert held["taskruns"] == 1
    assert held["executions"] == 1  # followed by the connection's tracker
    assert held["claims"] == 1  # and held for the TaskRun: no other adopts it
    # The gauge says the same, at a scrape.
    scraped = parse(generate_latest(REGISTRY).decode())
    assert scraped.value("ona_taskrun_remembered", kind="taskruns") == 1
    assert {ls["kind"] for ls in scraped.labels("ona_taskrun_remembered")} == set(KINDS)
    await eventually(lambda: op.status("quick").get("phase") == "SUCCEEDED", "the run's end")
    op.kube.delete("quick")
    await forgotten(op)


async def test_a_taskrun_whose_re_read_answers_gone_is_forgotten(op: Operator) -> None:
    op.kube.create("vanishing", {"task": op.task("make test # sim:pending=0.5s sim:hang")})
    execution = str(
        await eventually(lambda: op.status("vanishing").get("taskExecutionId"), "an execution")
    )

    def vanish(name: str) -> None:
        # Changed by another writer, then gone before the reconciler reads it again; the
        # watch has not said so (and, in this test, never will).
        op.kube.before_status_write = None
        op.kube.remove(name, tell=False)
        raise Conflict(409, "the object has been modified")

    op.kube.before_status_write = vanish
    await eventually(lambda: op.kube.before_status_write is None, "the next status write")
    await forgotten(op)
    # Its execution is no longer followed: no TaskRun waits for its news.
    assert all(r.tracker.latest(execution) is None for r in op.reconciler.connections.remotes())


async def test_a_deleted_taskrun_is_forgotten_with_its_wait_for_the_environment(
    op: Operator, simulator: SimulatorHandle
) -> None:
    stopped = simulator.control.seed_environment(name="stopped", phase="STOPPED", startDelay=60)
    op.kube.create("waiting", {"task": op.task(QUICK, environment=str(stopped["id"]))})
    await eventually(lambda: op.held()["environments"] == 1, "a wait for the environment")
    op.kube.delete("waiting")
    await eventually(lambda: "waiting" not in op.kube.objects, "the finalizer's removal")
    await forgotten(op)

    # And when a person takes the finalizer away: the watch's DELETED is all it hears.
    op.kube.create("forced", {"task": op.task(QUICK, environment=str(stopped["id"]))})
    await eventually(lambda: op.held()["environments"] == 1, "a wait for the environment")
    op.kube.remove("forced")
    await forgotten(op)


async def test_a_retried_taskrun_holds_none_of_its_attempts_once_deleted(op: Operator) -> None:
    command = "make flaky # sim:pending=50ms sim:duration=200ms sim:fail_first=2"
    op.kube.create("flaky", {"task": op.task(command), "retries": 2})
    await eventually(
        lambda: op.status("flaky").get("phase") == "SUCCEEDED", "the third attempt's success", 30
    )
    assert len(op.status("flaky")["attempts"]) == 2
    # Every attempt's execution stays the run's own while it exists: none may be adopted.
    assert op.held()["claims"] == 3
    op.kube.delete("flaky")
    await forgotten(op)


async def test_a_taskrun_removed_while_its_start_is_under_way_is_forgotten(
    op: Operator, simulator: SimulatorHandle
) -> None:
    simulator.control.set_faults("StartTask", latency_ms=1000)
    op.reconciler.merge_window = 0  # the answer is recorded at once: a write to wait for
    op.kube.create("starting", {"task": op.task(QUICK)})
    claimed = CLAIM_ANNOTATION
    await eventually(
        lambda: claimed in (op.kube.objects["starting"]["metadata"].get("annotations") or {}),
        "the start claim",
    )
    # StartTask is on its way: the TaskRun goes before its answer comes back.
    op.kube.remove("starting")
    writes = len(op.kube.requests)
    await eventually(
        lambda: ("patch_status", "starting") in op.kube.requests[writes:],
        "the answer, and the try to record it",
    )
    await forgotten(op)


async def test_a_failed_run_with_a_log_tail_is_forgotten(op: Operator) -> None:
    command = 'make test # sim:pending=50ms sim:duration=200ms sim:log_lines=3 sim:fail="boom"'
    op.kube.create("tailed", {"task": op.task(command), "logs": {"tailLines": 2}})
    await eventually(lambda: op.status("tailed").get("logTail"), "the log tail")
    op.kube.delete("tailed")
    await forgotten(op)


async def test_no_worker_keeps_the_record_of_a_forgotten_taskrun(op: Operator) -> None:
    # A worker waiting for its next key kept the last record it had handled (its frame's
    # locals), body and all: up to one TaskRun per worker held after it was gone, which the
    # soak's heap samples saw as TaskRunRecords nobody remembered.
    names = [f"done-{i}" for i in range(4)]
    for name in names:
        op.kube.create(name, {"task": op.task(QUICK)})
    await eventually(
        lambda: all(op.status(n).get("phase") == "SUCCEEDED" for n in names), "the runs' ends"
    )
    for name in names:
        op.kube.delete(name)
    await forgotten(op)
    gc.collect()
    prefix = f"{op.kube.namespace}/"
    alive = [
        o.key for o in gc.get_objects() if isinstance(o, TaskRunRecord) and o.key.startswith(prefix)
    ]
    assert alive == [], f"records still alive once forgotten: {alive}"
