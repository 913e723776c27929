"""The TaskRun watch: list, then watch from the list's resourceVersion, for good.

kopf runs the operator (login, start-up and clean-up, the OnaConnection and
TaskRunSchedule watches, probes), but TaskRuns are watched here. Every write the operator
makes comes back as a watch event; at a thousand TaskRuns kopf's handling of each event
(a worker per object, cause detection, handler invocation) was a quarter of the
operator's CPU, for events whose handler only hands the object to the reconciler. This
loop does only that.

It resumes after the last resourceVersion it saw (bookmarks included), so a watch that
ends or breaks misses nothing; when that version is too old to watch from (410 Gone) it
lists again, and says DELETED for every TaskRun that went while it was not looking (kopf
never did). A failure to list or watch is retried with a back-off capped at 30 s.

The list is read in pages of `PAGE_SIZE` when the source can (`PagedSource`), each page
handed on before the next is read, and no object is handed on with its managedFields
(nothing reads them, and they are most of an object's size): after a restart among
10,000 TaskRuns, one list of them all, parsed whole, was the operator's peak of memory.
What a list hands on shares its keys and short strings (phases, reasons, timestamps)
with every other object (`_shared`): the reconciler holds each listed TaskRun for as long
as it exists, and thousands of copies of the same keys were half of what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from ..clients.kube import KubeError
from ..rules.backoff import exponential

log = logging.getLogger(__name__)

Deliver = Callable[[str, dict[str, Any]], None]
# The server ends each watch after about this long (a little randomised by the server),
# and it is opened again from where it stopped.
WATCH_SECONDS = 300
MAX_BACKOFF = 30.0
# Objects per page of the list (as client-go's informers read theirs).
PAGE_SIZE = 500


class Source(Protocol):
    async def list_versioned(
        self, plural: str, namespace: str = ""
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self, plural: str, namespace: str, resource_version: str, *, timeout_seconds: int
    ) -> AsyncGenerator[dict[str, Any]]: ...


@runtime_checkable
class PagedSource(Source, Protocol):
    async def list_page(
        self, plural: str, namespace: str, *, limit: int, token: str
    ) -> tuple[list[dict[str, Any]], str, str]:
        """One page of the list: its objects, the list's resourceVersion, and the token of
        the next page ("" after the last). A token too old to go on from is a 410."""
        ...


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return body


# Strings up to this long are shared (`sys.intern`): keys, phases, reasons, timestamps,
# the finalizer, short messages; not ids (36), which are each object's own.
SHARED_LENGTH = 32


def _shared(value: Any) -> Any:
    """`value` rebuilt with its keys and short strings interned: one copy of each, however
    many objects hold it. Parsed JSON has its own copy of every key of every object."""
    kind = type(value)
    if kind is dict:
        return {sys.intern(k): _shared(v) for k, v in value.items()}
    if kind is list:
        return [_shared(v) for v in value]
    if kind is str and len(value) <= SHARED_LENGTH:
        return sys.intern(value)
    return value


def _key(body: dict[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _uid(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid", ""))


def _gone(key: str, uid: str, kind: str) -> dict[str, Any]:
    namespace, name = key.split("/", 1)
    return {"kind": kind, "metadata": {"namespace": namespace, "name": name, "uid": uid}}


class Watch:
    """One list-and-watch loop over a kind in one namespace ("" for all)."""

    def __init__(
        self,
        source: Source,
        plural: str,
        kind: str,
        namespace: str,
        deliver: Deliver,
        *,
        timeout_seconds: int = WATCH_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._source = source
        self._plural = plural
        self._kind = kind
        self._namespace = namespace
        self._deliver = deliver
        self._timeout = timeout_seconds
        self._sleep = sleep
        # What this watch has said exists, by namespace/name: its uid.
        self._known: dict[str, str] = {}
        self.resource_version = ""
        # Set once the first list has been delivered: everything that existed is known.
        self.listed = asyncio.Event()

    @property
    def count(self) -> int:
        """How many objects the watch knows exist now."""
        return len(self._known)

    def _scope(self) -> str:
        return f"{self._plural} in {self._namespace or 'all namespaces'}"

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if not self.resource_version:
                    await self._list()
                stream = self._source.watch(
                    self._plural,
                    self._namespace,
                    self.resource_version,
                    timeout_seconds=self._timeout,
                )
                # Closed at once when an event ends the watch, not when it is collected.
                async with contextlib.aclosing(stream):
                    async for event in stream:
                        self._handle(event)
                        failures = 0
                failures = 0  # the server ended the watch: open it again from here
            except KubeError as exc:
                if exc.status == 410:
                    log.info("watching %s: %s; listing again", self._scope(), exc)
                    self.resource_version = ""
                    continue
                failures += 1
                delay = exponential(0.5, min(failures, 8), MAX_BACKOFF)
                log.warning("watching %s failed (%s); again in %.1fs", self._scope(), exc, delay)
                await self._sleep(delay)

    async def _list(self) -> None:
        started = time.monotonic()
        if not isinstance(self._source, PagedSource):
            items, version = await self._source.list_versioned(self._plural, self._namespace)
            present = {_key(item): _uid(item) for item in items}
            for key, uid in list(self._known.items()):
                if present.get(key) != uid:
                    # Deleted while the watch was not looking (or replaced by a namesake).
                    self._deliver("DELETED", _gone(key, uid, self._kind))
            self._known = present
            for item in items:
                self._deliver("ADDED", _shared(_slim(item)))
        else:
            version = await self._list_pages(self._source)
        self.resource_version = version
        seconds = time.monotonic() - started
        log.info("listed %d %s in %.1fs", len(self._known), self._scope(), seconds)
        self.listed.set()

    async def _list_pages(self, source: PagedSource) -> str:
        """List page by page, each page handed on and let go of before the next is read:
        the list is never held whole. What the watch knew and no page had is said DELETED
        after the last page; a namesake that replaced it, just before its ADDED."""
        present: dict[str, str] = {}
        token = version = ""
        while True:
            items, version, token = await source.list_page(
                self._plural, self._namespace, limit=PAGE_SIZE, token=token
            )
            items.reverse()
            while items:
                item = _shared(_slim(items.pop()))
                item.setdefault("kind", self._kind)
                key, uid = _key(item), _uid(item)
                present[key] = uid
                known = self._known.get(key)
                if known is not None and known != uid:
                    self._deliver("DELETED", _gone(key, known, self._kind))
                self._deliver("ADDED", item)
            if not token:
                break
        for key, uid in self._known.items():
            if key not in present:
                self._deliver("DELETED", _gone(key, uid, self._kind))
        self._known = present
        return version

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        body = event.get("object")
        if not isinstance(body, dict):
            return
        if kind == "ERROR":
            # The watch's own end: 410 when the version fell out of the server's window.
            raise KubeError(int(body.get("code") or 0), str(body.get("message") or kind))
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            _slim(body)
            key = _key(body)
            if kind == "DELETED":
                self._known.pop(key, None)
            else:
                self._known[key] = _uid(body)
            self._deliver(str(kind), body)
        if version:
            self.resource_version = version  # BOOKMARK events carry only this
