"""Leader election through a coordination.k8s.io Lease: one replica acts at a time.

The others keep watching (so they take over warm) but do not reconcile. A replica that
cannot renew its lease in time stops acting at once and exits, so two replicas never
act together for longer than the renewal margin; starts stay safe even then, because
every start is claimed with a resourceVersion precondition first.

A replica that stops cleanly (SIGTERM: a rollout, a drain) gives the Lease up once it has
stopped acting, so the next one leads at its next try (a standby tries every
`STANDBY_RETRY` seconds) instead of waiting for the Lease to expire; one that dies
without a word is waited out for `duration`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from ..clients.kube import Conflict, KubeClient, KubeError

log = logging.getLogger(__name__)

# How often a replica that does not lead tries to: the Lease's holder renews every third
# of its duration, but a Lease given up is taken at the next try.
STANDBY_RETRY = 2.0


def _micro(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        active: asyncio.Event,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
    ) -> None:
        self._kube = kube
        self._active = active
        self._namespace = namespace
        self._name = name
        self._identity = identity
        self._duration = duration
        self._renew_every = duration / 3
        self._standby_every = min(self._renew_every, STANDBY_RETRY)
        self.holding = False  # the last try (or renewal) won the Lease

    async def run(self) -> None:
        self._active.clear()
        last_renewal = datetime.now(UTC)
        while True:
            try:
                held = await self._try_acquire()
            except KubeError as exc:
                log.warning("leader election: %s", exc)
                held = False
            else:
                self.holding = held
            now = datetime.now(UTC)
            if held:
                last_renewal = now
                if not self._active.is_set():
                    log.info("leader election: %s now leads; reconciling", self._identity)
                    self._active.set()
            elif self._active.is_set() and now - last_renewal > timedelta(
                seconds=self._duration * 2 / 3
            ):
                log.error("leader election: lost the lease; stopping so another replica leads")
                self._active.clear()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await asyncio.sleep(self._renew_every if held else self._standby_every)

    async def release(self) -> None:
        """Give the Lease up, if this replica holds it: called once it has stopped acting,
        so the next replica need not wait for the Lease to expire. Best effort: a Lease
        taken or changed meanwhile is left alone (the resourceVersion precondition), and a
        failure only means the next replica waits for the expiry."""
        self._active.clear()
        if not self.holding:
            return
        self.holding = False
        try:
            lease = await self._kube.get_lease(self._namespace, self._name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self._identity:
                return
            now = _micro(datetime.now(UTC))
            # As client-go gives a Lease up: no holder, and expired a second from now.
            lease["spec"] = {
                **spec,
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            await self._kube.replace_lease(lease)
            log.info("leader election: %s gave the lease up", self._identity)
        except KubeError as exc:
            log.warning(
                "leader election: could not give the lease up (%s); the next replica "
                "waits for it to expire",
                exc,
            )

    async def _try_acquire(self) -> bool:
        now = datetime.now(UTC)
        lease = await self._kube.get_lease(self._namespace, self._name)
        spec: dict[str, Any] = {
            "holderIdentity": self._identity,
            "leaseDurationSeconds": max(int(self._duration), 1),
            "renewTime": _micro(now),
        }
        if lease is None:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = 0
            try:
                await self._kube.create_lease(self._namespace, self._name, spec)
            except KubeError as exc:
                if exc.status == 409:
                    return False
                raise
            return True
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        renewed = _parse(current.get("renewTime")) or datetime.min.replace(tzinfo=UTC)
        expired = now > renewed + timedelta(seconds=current.get("leaseDurationSeconds") or 15)
        if holder and holder != self._identity and not expired:
            return False  # held by another replica (a Lease given up has no holder)
        if holder != self._identity:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        else:
            spec["acquireTime"] = current.get("acquireTime") or _micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
        lease["spec"] = spec
        try:
            await self._kube.replace_lease(lease)  # carries resourceVersion: a race loses
        except Conflict:
            return False
        return True
