"""`/debug/heap`, the soak's view of the operator's Python heap: off unless asked for, and
when on it tells sizes and places, never contents, and only to the host itself.

Attacker's view: the endpoint sits on the metrics port, which listens on every address
by default. It must not exist unless ONA_TASKRUN_DEBUG_HEAP is set, must not hand out a
token the operator holds even when on, and must refuse a caller from another address
(each report collects garbage and walks every traced block: work a stranger must not be
able to ask for at will).
"""

from __future__ import annotations

import secrets
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiohttp.test_utils import make_mocked_request

from ona_taskrun import config
from ona_taskrun.config import ConfigError
from ona_taskrun.observability import heap, logs, metrics

SOURCES = metrics.Sources(taskruns=list, remotes=list, leading=lambda: True)


@pytest.fixture(autouse=True)
def untraced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with the setting unset and the heap untraced, and leaves it so:
    tracing slows every other test down."""
    monkeypatch.delenv(heap.ENV, raising=False)
    was = tracemalloc.is_tracing()
    yield
    if not was:
        tracemalloc.stop()


@pytest.fixture
async def traced() -> AsyncIterator[metrics.Exporter]:
    exporter = metrics.Exporter(
        enabled=True, host="127.0.0.1", port=0, sources=SOURCES, debug_heap=1
    )
    await exporter.start()
    try:
        yield exporter
    finally:
        await exporter.stop()


async def test_it_is_off_by_default() -> None:
    exporter = metrics.Exporter(enabled=True, host="127.0.0.1", port=0, sources=SOURCES)
    await exporter.start()
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{exporter.port}{heap.PATH}")
            scraped = await http.get(f"http://127.0.0.1:{exporter.port}/metrics")
    finally:
        await exporter.stop()
    assert answer.status_code == 404
    assert scraped.status_code == 200
    assert exporter.heap is None
    assert not tracemalloc.is_tracing()


async def test_when_on_it_reports_sizes_and_places_but_no_token(
    traced: metrics.Exporter,
) -> None:
    # A token the operator holds, as it holds its connections' and logs tokens: in memory
    # and protected. Nothing in the report may carry it.
    token = "ona_" + secrets.token_urlsafe(32)
    logs.protect(token)
    held = {"token": token, "copies": [token + str(i) for i in range(200)]}
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{traced.port}{heap.PATH}?limit=0")
        by_stack = await http.get(
            f"http://127.0.0.1:{traced.port}{heap.PATH}?group=traceback&limit=20"
        )
    assert held["copies"]
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert token not in answer.text
    assert token not in by_stack.text
    report = answer.json()
    assert report["traced_bytes"] > 0
    assert report["gc_objects"] > 0
    # The C allocator's figures where the C library tells them (glibc), as numbers only.
    assert all(isinstance(v, int) and v >= 0 for v in report["malloc"].values())
    assert report["sites"] == len(report["top"]) > 0
    # Only places, counts and sizes.
    for site in report["top"]:
        assert set(site) == {"where", "bytes", "count"}
        assert all(isinstance(w, str) and ":" in w for w in site["where"])
    # What this test holds shows at its line.
    assert any("soak/test_debug_heap.py:" in w for s in report["top"] for w in s["where"])
    assert len(by_stack.json()["top"]) <= 20


async def test_it_answers_this_host_only() -> None:
    debug = metrics.Exporter(enabled=True, host="127.0.0.1", port=0, sources=SOURCES, debug_heap=1)
    debug.heap = heap.HeapDebug(1)
    debug.heap.start()
    for peer, status in (("10.1.2.3", 403), ("192.168.0.7", 403), ("::ffff:10.0.0.1", 403)):
        request = make_mocked_request("GET", heap.PATH, transport=_Transport(peer))
        answer = await debug._heap(request)
        assert answer.status == status, peer
        assert "this host only" in str(answer.text)
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        request = make_mocked_request("GET", heap.PATH, transport=_Transport(peer))
        assert (await debug._heap(request)).status == 200, peer


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 40000) if name == "peername" else default


async def test_a_bad_query_gets_a_clear_400(traced: metrics.Exporter) -> None:
    async with httpx.AsyncClient() as http:
        for query, words in (
            ("limit=-1", "limit must be a whole number"),
            ("limit=many", "limit must be a whole number"),
            ("group=objects", "group must be one of lineno, filename, traceback"),
            ("collect=maybe", "collect must be true or false"),
            ("format=text", "unknown parameter 'format'"),
        ):
            answer = await http.get(f"http://127.0.0.1:{traced.port}{heap.PATH}?{query}")
            assert answer.status_code == 400, query
            assert words in answer.json()["error"], query


@pytest.mark.parametrize(
    ("raw", "frames"),
    [("", 0), ("0", 0), ("false", 0), ("1", 1), ("true", 1), ("25", 25), (" 3 ", 3)],
)
def test_the_setting_reads_a_number_of_frames(raw: str, frames: int) -> None:
    assert heap.frames_from({heap.ENV: raw}) == frames


@pytest.mark.parametrize("raw", ["26", "-1", "lots", "1.5"])
def test_a_bad_setting_stops_the_operator_with_what_to_fix(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"ONA_TASKRUN_DEBUG_HEAP=.* from 1 to 25"):
        config.load(["--ona-base-url", "https://app.gitpod.io/api"], {heap.ENV: raw})
    assert not tracemalloc.is_tracing()


def test_the_setting_reaches_the_config_and_is_off_by_default() -> None:
    base = ["--ona-base-url", "https://app.gitpod.io/api"]
    assert config.load(base, {}).debug_heap == 0
    assert config.load(base, {heap.ENV: "3"}).debug_heap == 3
