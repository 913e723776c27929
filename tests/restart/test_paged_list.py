"""The TaskRun watch reads its list a page at a time and hands each page on before asking
for the next, without managedFields.

After a restart among 10,000 finished TaskRuns, the one list of them all (the API
server's answer and every object parsed, managedFields and all, held until the last was
handed on) took the operator from 206 MiB to a peak of 324 MiB. Paged, nothing but one
page is held at once; a relist after 410 still says DELETED for what went meanwhile and
for a TaskRun replaced by a namesake before its successor's ADDED.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from ona_taskrun.clients.kube import KubeError
from ona_taskrun.controller.watch import PAGE_SIZE, Watch


class Done(Exception):
    """The script ran out: ends the otherwise endless loop."""


def obj(name: str, rv: int, uid: str = "") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": uid or f"uid-{name}",
            "resourceVersion": str(rv),
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"taskRef": {"id": "t"}},
    }


class Pages:
    """A source that can page: each list is a list of pages; after them, one watch that
    ends with `watch_error` (or Done)."""

    def __init__(self, lists: list[list[list[dict[str, Any]]]], watch_error: Exception) -> None:
        self.lists = lists
        self.watch_error = watch_error
        self.asked: list[tuple[int, str]] = []  # (limit, token) per page asked for
        self.delivered_when_asked: list[int] = []
        self.delivered: list[tuple[str, str, str, bool]] = []
        self.bodies: list[dict[str, Any]] = []
        self._page = 0

    def deliver(self, kind: str, body: dict[str, Any]) -> None:
        self.bodies.append(body)
        meta = body["metadata"]
        self.delivered.append((kind, meta["name"], meta["uid"], "managedFields" in meta))

    async def list_versioned(
        self, plural: str, namespace: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        raise AssertionError("the whole list was asked for at once")

    async def list_page(
        self, plural: str, namespace: str, *, limit: int, token: str
    ) -> tuple[list[dict[str, Any]], str, str]:
        assert (plural, namespace) == ("taskruns", "ns")
        self.asked.append((limit, token))
        self.delivered_when_asked.append(len(self.delivered))
        pages = self.lists[0]
        page = pages[self._page]
        self._page += 1
        last = self._page == len(pages)
        if last:
            self.lists.pop(0)
            self._page = 0
        version = str(100 * (len(self.asked)))
        # As the API server's answer is parsed: each page's strings are its own.
        return json.loads(json.dumps(page)), version, "" if last else f"next-{self._page}"

    async def watch(
        self, plural: str, namespace: str, resource_version: str, *, timeout_seconds: int
    ) -> AsyncGenerator[dict[str, Any]]:
        if not self.lists:
            raise Done
        raise self.watch_error
        yield {}  # an async generator


async def run(source: Pages) -> Watch:
    async def no_sleep(delay: float) -> None:
        raise AssertionError("nothing failed: no back-off")

    watch = Watch(source, "taskruns", "TaskRun", "ns", source.deliver, sleep=no_sleep)
    with pytest.raises(Done):
        await watch.run()
    return watch


async def test_pages_are_handed_on_one_at_a_time_without_managed_fields() -> None:
    pages = [[obj(f"r-{p}-{i}", 10 * p + i) for i in range(3)] for p in range(3)]
    source = Pages([pages], KubeError(500, "unused"))
    watch = await run(source)
    assert source.asked == [(PAGE_SIZE, ""), (PAGE_SIZE, "next-1"), (PAGE_SIZE, "next-2")]
    # Each page was handed on before the next was asked for.
    assert source.delivered_when_asked == [0, 3, 6]
    assert [d[:2] for d in source.delivered] == [
        ("ADDED", f"r-{p}-{i}") for p in range(3) for i in range(3)
    ]
    assert not any(has_fields for *_, has_fields in source.delivered)
    assert watch.count == 9
    assert watch.listed.is_set()
    assert watch.resource_version == "300"  # the list's version, from its pages


async def test_a_paged_relist_says_deleted_for_what_went_and_for_a_replaced_namesake() -> None:
    first = [[obj("a", 1), obj("b", 2)], [obj("c", 3)]]
    # After 410: a is gone, b was deleted and made again under its name, d is new.
    second = [[obj("b", 40, uid="uid-b2")], [obj("c", 3), obj("d", 41)]]
    source = Pages([first, second], KubeError(410, "too old resource version"))
    watch = await run(source)
    assert [d[:3] for d in source.delivered] == [
        ("ADDED", "a", "uid-a"),
        ("ADDED", "b", "uid-b"),
        ("ADDED", "c", "uid-c"),
        # The namesake: the old one's DELETED before the new one's ADDED.
        ("DELETED", "b", "uid-b"),
        ("ADDED", "b", "uid-b2"),
        ("ADDED", "c", "uid-c"),
        ("ADDED", "d", "uid-d"),
        # Gone meanwhile: said once every page is read.
        ("DELETED", "a", "uid-a"),
    ]
    assert watch.count == 3


async def test_listed_objects_share_their_keys_and_short_strings() -> None:
    # The reconciler holds every listed TaskRun: 10,000 copies of the same keys, phases
    # and reasons were half of its memory after a restart.
    def finished(name: str) -> dict[str, Any]:
        body = obj(name, 1)
        body["status"] = {
            "phase": "SUCCEEDED",
            "completedAt": "2026-12-07T12:36:03Z",
            "taskExecutionId": f"0f0e5f4a-3a4b-4b8e-9a51-{name:0>12}",
        }
        return body

    source = Pages([[[finished("a")], [finished("b")]]], KubeError(500, "unused"))
    await run(source)
    a, b = source.bodies
    key_a = next(k for k in a["status"] if k == "completedAt")
    key_b = next(k for k in b["status"] if k == "completedAt")
    assert key_a is key_b
    assert a["status"]["phase"] is b["status"]["phase"]
    assert a["status"]["completedAt"] is b["status"]["completedAt"]
    assert a["status"]["taskExecutionId"] == f"0f0e5f4a-3a4b-4b8e-9a51-{'a':0>12}"
