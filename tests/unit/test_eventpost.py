"""Events wait behind the TaskRuns' own writes: one in flight while TaskRuns wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from ona_taskrun.controller.eventpost import EventPoster
from ona_taskrun.rules.model import Event
from tests.support import waits


class Api:
    """A post that holds every Event until told to let it through."""

    def __init__(self) -> None:
        self.in_flight: list[str] = []
        self.posted: list[str] = []
        self.most_at_once = 0
        self.gate = asyncio.Event()

    async def post(self, body: Mapping[str, Any], event: Event) -> None:
        self.in_flight.append(event.message)
        self.most_at_once = max(self.most_at_once, len(self.in_flight))
        try:
            await self.gate.wait()
        finally:
            self.in_flight.remove(event.message)
        self.posted.append(event.message)


def event(n: int) -> Event:
    return Event("Normal", "Succeeded", f"event {n}")


async def until(condition: Any, what: str) -> None:
    await waits.until(condition, what, within=5.0)


@contextlib.asynccontextmanager
async def running(poster: EventPoster) -> AsyncIterator[None]:
    task = asyncio.create_task(poster.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await poster.flush(within=1.0)


async def test_while_busy_an_event_waits_then_goes_one_at_a_time_then_more_once_idle() -> None:
    api, busy, looks, now = Api(), [True], [0], [100.0]

    def is_busy() -> bool:
        looks[0] += 1
        return busy[0]

    poster = EventPoster(
        api.post,
        busy=is_busy,
        idle_in_flight=4,
        busy_delay=10.0,
        recheck=0.01,
        clock=lambda: now[0],
    )
    async with running(poster):
        for n in range(6):
            poster.submit({}, event(n))
        await until(lambda: looks[0] >= 5, "the poster to look while busy")
        assert api.in_flight == []  # TaskRuns wait, and no Event has waited 10 s yet
        now[0] += 10.0
        await until(lambda: len(api.in_flight) == 1, "one Event in flight once it waited")
        seen = looks[0]
        await until(lambda: looks[0] >= seen + 5, "the poster to look again while busy")
        assert len(api.in_flight) == 1
        busy[0] = False
        await until(lambda: len(api.in_flight) == 4, "four in flight once idle")
        api.gate.set()
        await until(lambda: len(api.posted) == 6, "all posted")
    assert api.posted == [f"event {n}" for n in range(6)]
    assert api.most_at_once == 4
    assert poster.posted == 6


async def test_past_the_bound_the_oldest_are_dropped() -> None:
    api = Api()
    api.gate.set()
    poster = EventPoster(api.post, busy=lambda: True, limit=3, busy_delay=0.0)
    for n in range(5):
        poster.submit({}, event(n))
    assert poster.waiting == 3
    assert poster.dropped == 2
    async with running(poster):
        await until(lambda: len(api.posted) == 3, "the rest posted")
    assert api.posted == ["event 2", "event 3", "event 4"]


async def test_flush_posts_what_waits_and_gives_up_at_its_deadline() -> None:
    api = Api()
    poster = EventPoster(api.post, busy=lambda: True)
    poster.submit({}, event(0))
    api.gate.set()
    await poster.flush(within=1.0)
    assert api.posted == ["event 0"]

    stuck = Api()  # never let through
    poster = EventPoster(stuck.post, busy=lambda: True)
    poster.submit({}, event(1))
    await poster.flush(within=0.05)
    assert stuck.posted == []
    assert stuck.in_flight == []  # cancelled, not left running


async def test_a_failed_post_is_logged_and_the_rest_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    posted: list[str] = []

    async def post(body: Mapping[str, Any], event: Event) -> None:
        if event.message == "event 0":
            raise RuntimeError("refused")
        posted.append(event.message)

    poster = EventPoster(post, busy=lambda: False)
    async with running(poster):
        poster.submit({}, event(0))
        poster.submit({}, event(1))
        await until(lambda: posted == ["event 1"], "the second posted")
    assert "could not post an Event: refused" in caplog.text


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="busy_in_flight"):
        EventPoster(Api().post, busy=lambda: False, busy_in_flight=4, idle_in_flight=2)


async def test_a_queued_event_keeps_only_what_names_its_taskrun() -> None:
    # Under a long burst thousands of Events wait; each kept the whole TaskRun it was about
    # (spec, status, log tail: kilobytes), which the soak saw as the heap growing by the
    # queue's length times a TaskRun's size.
    api = Api()
    poster = EventPoster(api.post, busy=lambda: True, busy_delay=3600.0)
    body = {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRun",
        "metadata": {
            "name": "big",
            "namespace": "team",
            "uid": "u-1",
            "resourceVersion": "42",
            "annotations": {"a": "x" * 4096},
            "finalizers": ["automation.ona.com/taskrun"],
        },
        "spec": {"task": {"command": "y" * 4096}},
        "status": {"logTail": "z" * 4096},
    }
    poster.submit(body, event(1))
    seen: list[Mapping[str, Any]] = []

    async def post(obj: Mapping[str, Any], ev: Event) -> None:
        seen.append(obj)

    ((_, kept, _),) = poster._waiting
    assert kept == {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRun",
        "metadata": {"name": "big", "namespace": "team", "uid": "u-1", "resourceVersion": "42"},
    }
    # And that is what is posted: the Event names the same object as before.
    poster._post = post
    await poster.flush(within=1.0)
    assert seen == [kept]
