"""A replica that stops cleanly gives its Lease up, so the next one leads at once.

Before, the Lease stayed held until it expired (15 s by default): a rollout or a drain
left every TaskRun without an operator for that long, longer than the 10 s a restart may
take. Against a Lease store with the API server's resourceVersion precondition.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from ona_taskrun.clients.kube import Conflict, KubeClient
from ona_taskrun.controller.leader import LeaderElector


class Leases:
    """One namespace's Leases, as the API server keeps them: a replace with a stale
    resourceVersion is a Conflict."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0

    def _stamp(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        lease["metadata"]["resourceVersion"] = str(self.version)
        self.leases[lease["metadata"]["name"]] = lease
        return copy.deepcopy(lease)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        lease = self.leases.get(name)
        return copy.deepcopy(lease) if lease is not None else None

    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> Any:
        if name in self.leases:
            raise Conflict(409, "exists")
        return self._stamp({"metadata": {"name": name, "namespace": namespace}, "spec": spec})

    async def replace_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        name = lease["metadata"]["name"]
        current = self.leases[name]
        if current["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"]:
            raise Conflict(409, "the object has been modified")
        return self._stamp(copy.deepcopy(lease))

    def holder(self, name: str = "lease") -> str | None:
        return cast(str | None, self.leases[name]["spec"].get("holderIdentity"))


def elector(leases: Leases, identity: str, duration: float = 15.0) -> LeaderElector:
    return LeaderElector(
        cast(KubeClient, leases),
        asyncio.Event(),
        namespace="ona-system",
        name="lease",
        identity=identity,
        duration=duration,
    )


async def wait_until(condition: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def test_a_stopped_leader_gives_the_lease_up_and_the_next_leads_at_once() -> None:
    leases = Leases()
    old = elector(leases, "old")
    running = asyncio.create_task(old.run())
    await wait_until(old._active.is_set)
    assert leases.holder() == "old"
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    await old.release()

    assert not old._active.is_set()
    assert leases.holder() is None
    new = elector(leases, "new")
    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(new.run())
    try:
        await wait_until(new._active.is_set, within=1.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Its first try: not the 15 s the Lease would have taken to expire.
    assert asyncio.get_running_loop().time() - started < 1.0
    assert leases.holder() == "new"
    assert leases.leases["lease"]["spec"]["leaseTransitions"] == 1


async def test_a_lease_held_by_another_replica_is_not_taken_before_it_expires() -> None:
    leases = Leases()
    now = datetime.now(UTC)
    await leases.create_lease(
        "ona-system",
        "lease",
        {
            "holderIdentity": "other",
            "leaseDurationSeconds": 15,
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    )
    standby = elector(leases, "standby")
    assert await standby._try_acquire() is False
    assert leases.holder() == "other"
    # A standby does not give up what it does not hold.
    await standby.release()
    assert leases.holder() == "other"
    # Expired: taken.
    lease = leases.leases["lease"]
    lease["spec"]["renewTime"] = (now - timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert await standby._try_acquire() is True
    assert leases.holder() == "standby"


async def test_release_leaves_a_lease_another_replica_took_meanwhile() -> None:
    leases = Leases()
    first = elector(leases, "first")
    assert await first._try_acquire() is True
    first.holding = True
    # The Lease passed to another replica (first's renewals stopped reaching it).
    lease = leases.leases["lease"]
    lease["spec"]["holderIdentity"] = "second"
    await first.release()
    assert leases.holder() == "second"


@pytest.mark.parametrize("duration", [15.0, 60.0])
async def test_a_standby_tries_again_within_two_seconds(duration: float) -> None:
    leases = Leases()
    await leases.create_lease(
        "ona-system",
        "lease",
        {
            "holderIdentity": "leader",
            "leaseDurationSeconds": int(duration),
            "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    )
    standby = elector(leases, "standby", duration=duration)
    task = asyncio.create_task(standby.run())
    try:
        await asyncio.sleep(0.05)
        assert not standby._active.is_set()
        # The leader gives the Lease up on its way out.
        lease = leases.leases["lease"]
        lease["spec"]["holderIdentity"] = None
        lease["spec"]["leaseDurationSeconds"] = 1
        await wait_until(standby._active.is_set, within=3.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert leases.holder() == "standby"
