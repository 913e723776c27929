"""The TaskRun watch: list, watch, resume from the last version, list again on 410."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ona_taskrun.clients.kube import KubeError
from ona_taskrun.controller.watch import Watch


class Done(Exception):
    """The script ran out: ends the otherwise endless loop."""


def obj(name: str, rv: int, uid: str = "") -> dict[str, Any]:
    return {
        "kind": "TaskRun",
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": uid or f"uid-{name}",
            "resourceVersion": str(rv),
        },
    }


def event(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": body}


def bookmark(rv: int) -> dict[str, Any]:
    return event("BOOKMARK", {"kind": "TaskRun", "metadata": {"resourceVersion": str(rv)}})


# A watch session: the events it sends, then how it ends (None: the server ends it).
Session = tuple[list[dict[str, Any]], Exception | None]


@dataclass
class Script:
    lists: list[tuple[list[dict[str, Any]], str]]
    sessions: list[Session]
    watched_from: list[str] = field(default_factory=list)
    listed: int = 0

    async def list_versioned(
        self, plural: str, namespace: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        assert (plural, namespace) == ("taskruns", "ns")
        self.listed += 1
        if not self.lists:
            raise Done
        return self.lists.pop(0)

    async def watch(
        self, plural: str, namespace: str, resource_version: str, *, timeout_seconds: int
    ) -> AsyncGenerator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        if not self.sessions:
            raise Done
        events, end = self.sessions.pop(0)
        for item in events:
            yield item
        if end is not None:
            raise end


async def run(script: Script) -> tuple[list[tuple[str, str, str]], list[float]]:
    seen: list[tuple[str, str, str]] = []
    delays: list[float] = []

    def deliver(kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        seen.append((kind, meta["name"], meta["uid"]))

    async def sleep(delay: float) -> None:
        delays.append(delay)

    watch = Watch(script, "taskruns", "TaskRun", "ns", deliver, sleep=sleep)
    with pytest.raises(Done):
        await watch.run()
    return seen, delays


async def test_lists_then_watches_and_resumes_where_it_stopped() -> None:
    script = Script(
        lists=[([obj("a", 5)], "10")],
        sessions=[
            ([event("MODIFIED", obj("a", 11)), event("ADDED", obj("b", 12)), bookmark(20)], None),
            ([event("DELETED", obj("b", 21))], None),
        ],
    )
    seen, delays = await run(script)
    assert seen == [
        ("ADDED", "a", "uid-a"),
        ("MODIFIED", "a", "uid-a"),
        ("ADDED", "b", "uid-b"),
        ("DELETED", "b", "uid-b"),
    ]
    # From the list's version, then from the bookmark's, then from the delete's.
    assert script.watched_from == ["10", "20", "21"]
    assert script.listed == 1
    assert delays == []


async def test_a_broken_watch_backs_off_and_resumes_without_listing() -> None:
    script = Script(
        lists=[([], "3")],
        sessions=[
            ([event("ADDED", obj("a", 4))], KubeError(0, "ClientOSError watching taskruns")),
            ([], KubeError(503, "unavailable")),
            ([event("MODIFIED", obj("a", 6))], None),
        ],
    )
    seen, delays = await run(script)
    assert seen == [("ADDED", "a", "uid-a"), ("MODIFIED", "a", "uid-a")]
    assert script.watched_from == ["3", "4", "4", "6"]
    assert script.listed == 1
    assert delays == [1.0, 2.0]  # doubling, and reset by the events that followed


@pytest.mark.parametrize(
    "expiry",
    [
        # the watch says so in an ERROR event...
        event("ERROR", {"kind": "Status", "code": 410, "message": "too old resource version"}),
        # ...or the watch request itself is refused
        None,
    ],
)
async def test_gone_lists_again_and_says_deleted_for_what_went_meanwhile(
    expiry: dict[str, Any] | None,
) -> None:
    first: Session = (
        ([event("ADDED", obj("b", 8))], None)
        if expiry is None
        else ([event("ADDED", obj("b", 8)), expiry], None)
    )
    sessions: list[Session] = [first]
    if expiry is None:
        sessions.append(([], KubeError(410, "too old resource version")))
    script = Script(
        lists=[
            ([obj("a", 5), obj("c", 6)], "7"),
            # a is gone, c was deleted and made again under its name, d is new
            ([obj("c", 40, uid="uid-c2"), obj("d", 41)], "42"),
        ],
        sessions=[*sessions, ([], None)],
    )
    seen, delays = await run(script)
    assert seen == [
        ("ADDED", "a", "uid-a"),
        ("ADDED", "c", "uid-c"),
        ("ADDED", "b", "uid-b"),
        ("DELETED", "a", "uid-a"),
        ("DELETED", "c", "uid-c"),
        ("DELETED", "b", "uid-b"),
        ("ADDED", "c", "uid-c2"),
        ("ADDED", "d", "uid-d"),
    ]
    assert script.listed == 2
    assert script.watched_from[-1] == "42"
    assert delays == []


async def test_listed_is_set_once_the_first_list_has_been_delivered() -> None:
    # The reconciler's initial sync waits for it: every TaskRun listed must be known first.
    script = Script(lists=[([obj("a", 1), obj("b", 2)], "2")], sessions=[])
    set_while_delivering: list[bool] = []

    def deliver(kind: str, body: dict[str, Any]) -> None:
        set_while_delivering.append(watch.listed.is_set())

    async def sleep(delay: float) -> None:
        raise AssertionError("nothing failed: no back-off")

    watch = Watch(script, "taskruns", "TaskRun", "ns", deliver, sleep=sleep)
    assert not watch.listed.is_set()
    with pytest.raises(Done):
        await watch.run()
    assert set_while_delivering == [False, False]
    assert watch.listed.is_set()
