"""What goes on the wire for each call: URLs, headers, bodies, pages and batches."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ona_taskrun.clients.ona import (
    DEFAULT_BASE_URL,
    EnvironmentVariable,
    OnaClient,
    OnaError,
    TaskExecutionPhase,
)

from .fakes import BASE_URL, TOKEN, Recorder, client, execution_json


def paged_executions(all_items: list[dict[str, Any]]) -> Recorder:
    """A ListTaskExecutions server: filters by taskIds, pages by an offset token."""

    def serve(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        wanted = set(body.get("filter", {}).get("taskIds", []))
        items = [i for i in all_items if not wanted or i["metadata"]["taskId"] in wanted]
        pagination = body.get("pagination", {})
        size = pagination.get("pageSize", 25)
        start = int(pagination.get("token") or 0)
        page = items[start : start + size]
        reply: dict[str, Any] = {"taskExecutions": page}
        if start + size < len(items):
            reply["pagination"] = {"nextToken": str(start + size)}
        return httpx.Response(200, json=reply)

    return Recorder([serve])


async def test_unary_request_shape() -> None:
    server = Recorder([httpx.Response(200, json={"taskExecution": execution_json("x1")})])
    async with client(server, timeout=12.5) as ona:
        await ona.start_task("t1")
    request = server.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/gitpod.v1.EnvironmentAutomationService/StartTask"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["connect-protocol-version"] == "1"
    assert request.headers["connect-timeout-ms"] == "12500"
    assert json.loads(request.content) == {"id": "t1"}


async def test_base_url_trailing_slash_and_default() -> None:
    server = Recorder([httpx.Response(200, json={"task": {"id": "t"}})])
    async with OnaClient(
        "http://127.0.0.1:9/api/", TOKEN, transport=httpx.MockTransport(server)
    ) as ona:
        await ona.get_task("t")
    assert server.requests[0].url.path == "/api/gitpod.v1.EnvironmentAutomationService/GetTask"
    async with OnaClient(token=TOKEN) as default:
        assert default.base_url == DEFAULT_BASE_URL == "https://app.ona.com/api"


@pytest.mark.parametrize("url", ["ftp://x/api", "not a url", ""])
def test_bad_base_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="base URL"):
        OnaClient(url, TOKEN)


def test_missing_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        OnaClient(BASE_URL, "")


async def test_list_follows_every_page() -> None:
    items = [execution_json(f"x{i:03}", task_id=f"t{i % 7}") for i in range(230)]
    server = paged_executions(items)
    async with client(server) as ona:
        found = await ona.list_task_executions()
    assert [e.id for e in found] == [i["id"] for i in items]
    assert server.methods == ["ListTaskExecutions"] * 3
    assert [b["pagination"] for b in server.bodies()] == [
        {"pageSize": 100},
        {"pageSize": 100, "token": "100"},
        {"pageSize": 100, "token": "200"},
    ]


async def test_single_page_returns_the_next_token() -> None:
    server = paged_executions([execution_json(f"x{i}") for i in range(30)])
    async with client(server) as ona:
        first = await ona.list_task_executions_page(page_size=20)
        second = await ona.list_task_executions_page(page_size=20, page_token=first.next_token)
    assert len(first.items) == 20
    assert first.next_token == "20"
    assert len(second.items) == 10
    assert second.next_token == ""


async def test_list_filters_go_in_the_body() -> None:
    server = Recorder([httpx.Response(200, json={})])
    async with client(server) as ona:
        found = await ona.list_task_executions(
            task_ids=["t1"],
            task_references=["ns/a"],
            environment_ids=["e1"],
            phases=[TaskExecutionPhase.RUNNING, TaskExecutionPhase.PENDING],
            page_size=10,
        )
    assert found == []
    assert server.bodies() == [
        {
            "filter": {
                "taskIds": ["t1"],
                "taskReferences": ["ns/a"],
                "environmentIds": ["e1"],
                "phases": ["TASK_EXECUTION_PHASE_RUNNING", "TASK_EXECUTION_PHASE_PENDING"],
            },
            "pagination": {"pageSize": 10},
        }
    ]


async def test_duplicates_across_pages_keep_the_newest_status() -> None:
    pages = [
        httpx.Response(
            200,
            json={
                "taskExecutions": [execution_json("x1", version="9")],
                "pagination": {"nextToken": "p2"},
            },
        ),
        httpx.Response(200, json={"taskExecutions": [execution_json("x1", version="10")]}),
    ]
    async with client(Recorder(pages)) as ona:
        found = await ona.list_task_executions()
    assert [(e.id, e.status.status_version) for e in found] == [("x1", "10")]


async def test_a_repeated_page_token_stops_the_listing() -> None:
    loop = httpx.Response(200, json={"tasks": [], "pagination": {"nextToken": "same"}})
    server = Recorder([loop])
    async with client(server) as ona:
        with pytest.raises(OnaError, match="repeated a page token"):
            await ona.list_tasks()
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task_ids": [f"t{i}" for i in range(26)]},
        {"task_references": [f"r{i}" for i in range(26)]},
        {"environment_ids": [f"e{i}" for i in range(26)]},
        {"page_size": 101},
        {"page_size": 0},
        {"task_ids": "t1"},
    ],
)
async def test_filter_and_page_sizes_are_checked_before_sending(kwargs: dict[str, Any]) -> None:
    server = Recorder([httpx.Response(200, json={})])
    async with client(server) as ona:
        with pytest.raises((ValueError, TypeError)):
            await ona.list_task_executions(**kwargs)
        with pytest.raises((ValueError, TypeError)):
            await ona.list_task_executions_page(**kwargs)
    assert server.requests == []


async def test_many_task_ids_are_listed_in_batches_of_25() -> None:
    task_ids = [f"t{i}" for i in range(60)]
    items = [execution_json(f"x{i}", task_id=f"t{i}") for i in range(70)]
    server = paged_executions(items)
    async with client(server) as ona:
        found = await ona.list_task_executions_by_task_ids([*task_ids, "t0", "t1"])
    assert sorted(e.id for e in found) == sorted(f"x{i}" for i in range(60))
    batches = [b["filter"]["taskIds"] for b in server.bodies()]
    assert [len(b) for b in batches] == [25, 25, 10]
    assert sorted(i for b in batches for i in b) == sorted(task_ids)


async def test_no_ids_means_no_executions_and_no_call() -> None:
    server = Recorder([httpx.Response(200, json={})])
    async with client(server) as ona:
        assert await ona.list_task_executions_by_task_ids([]) == []
        assert await ona.list_task_executions_by_references([]) == []
        assert await ona.list_tasks_by_references([]) == []
    assert server.requests == []


async def test_many_references_and_environments_are_batched_together() -> None:
    server = Recorder([httpx.Response(200, json={})])
    references = [f"r{i}" for i in range(30)]
    environments = [f"e{i}" for i in range(26)]
    async with client(server) as ona:
        await ona.list_task_executions_by_references(references, environment_ids=environments)
    filters = [b["filter"] for b in server.bodies()]
    # Every (reference, environment) pair is covered exactly once.
    pairs = [(r, e) for f in filters for r in f["taskReferences"] for e in f["environmentIds"]]
    assert sorted(pairs) == sorted((r, e) for r in references for e in environments)
    assert all(len(f["taskReferences"]) <= 25 and len(f["environmentIds"]) <= 25 for f in filters)


async def test_create_task_body() -> None:
    server = Recorder(
        [httpx.Response(200, json={"task": {"id": "t1", "metadata": {"reference": "ns/r"}}})]
    )
    async with client(server) as ona:
        task = await ona.create_task(
            "env-1",
            "build",
            "make all",
            reference="ns/r",
            description="from TaskRun ns/r",
            env={"A": "1"},
            runs_on={"docker": {"image": "alpine"}},
            depends_on=["t0"],
            triggered_by=[{"manual": True}],
        )
        await ona.create_task(
            "env-1", "b", "c", reference="r2", env=[EnvironmentVariable(name="B", value="2")]
        )
    assert task.id == "t1"
    assert task.metadata.reference == "ns/r"
    first, second = server.bodies()
    assert first == {
        "environmentId": "env-1",
        "dependsOn": ["t0"],
        "metadata": {
            "reference": "ns/r",
            "name": "build",
            "description": "from TaskRun ns/r",
            "triggeredBy": [{"manual": True}],
        },
        "spec": {
            "command": "make all",
            "env": [{"name": "A", "value": "1"}],
            "runsOn": {"docker": {"image": "alpine"}},
        },
    }
    assert second["spec"] == {"command": "c", "env": [{"name": "B", "value": "2"}]}


async def test_list_tasks_follows_pages_and_filters() -> None:
    server = Recorder(
        [
            httpx.Response(200, json={"tasks": [{"id": "t1"}], "pagination": {"nextToken": "n"}}),
            httpx.Response(200, json={"tasks": [{"id": "t2"}], "pagination": {}}),
        ]
    )
    async with client(server) as ona:
        tasks = await ona.list_tasks(references=["ns/r"], environment_ids=["e"])
    assert [t.id for t in tasks] == ["t1", "t2"]
    assert server.bodies()[0]["filter"] == {"environmentIds": ["e"], "references": ["ns/r"]}
    assert server.bodies()[1]["pagination"] == {"pageSize": 100, "token": "n"}
