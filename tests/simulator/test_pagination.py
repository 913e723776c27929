"""Pagination: page token in the body or the query string, sizes, a stable order."""

from __future__ import annotations

from tests.simulator.conftest import JSON, Api
from tests.support.simulator_fixtures import SimulatorHandle


async def start_many(api: Api, simulator: SimulatorHandle, count: int) -> list[str]:
    task = simulator.control.seed_task(reference="many", command="x sim:hang")
    ids = []
    for _ in range(count):
        ids.append((await api.call("StartTask", {"id": task["id"]}))["taskExecution"]["id"])
    return ids


async def test_default_page_size_is_25(api: Api, simulator: SimulatorHandle) -> None:
    expected = await start_many(api, simulator, 30)
    first = await api.call("ListTaskExecutions", {})
    assert len(first["taskExecutions"]) == 25
    assert first["pagination"]["nextToken"]
    body: JSON = {"pagination": {"token": first["pagination"]["nextToken"]}}
    second = await api.call("ListTaskExecutions", body)
    assert second["pagination"]["nextToken"] == ""
    got = [e["id"] for e in first["taskExecutions"] + second["taskExecutions"]]
    assert got == expected


async def test_page_token_in_body_and_in_query_give_the_same_pages(
    api: Api, simulator: SimulatorHandle
) -> None:
    expected = await start_many(api, simulator, 7)

    async def walk(token_in_query: bool) -> list[str]:
        ids: list[str] = []
        token = ""
        pages = 0
        while True:
            body: JSON = {"pagination": {"pageSize": 3}}
            params = None
            if token and token_in_query:
                params = {"token": token}
            elif token:
                body["pagination"]["token"] = token
            page = await api.call("ListTaskExecutions", body, params=params)
            ids += [e["id"] for e in page["taskExecutions"]]
            pages += 1
            token = page["pagination"]["nextToken"]
            if not token:
                return ids if pages == 3 else []

    assert await walk(token_in_query=False) == expected
    assert await walk(token_in_query=True) == expected


async def test_exact_last_page_has_empty_next_token(api: Api, simulator: SimulatorHandle) -> None:
    await start_many(api, simulator, 4)
    page = await api.call("ListTaskExecutions", {"pagination": {"pageSize": 4}})
    assert len(page["taskExecutions"]) == 4
    assert page["pagination"] == {"nextToken": ""}


async def test_new_executions_do_not_shift_pages(api: Api, simulator: SimulatorHandle) -> None:
    first_ids = await start_many(api, simulator, 4)
    page = await api.call("ListTaskExecutions", {"pagination": {"pageSize": 2}})
    later_ids = await start_many(api, simulator, 2)
    rest = await api.call(
        "ListTaskExecutions",
        {"pagination": {"pageSize": 100, "token": page["pagination"]["nextToken"]}},
    )
    assert [e["id"] for e in rest["taskExecutions"]] == first_ids[2:] + later_ids


async def test_list_tasks_paginates(api: Api, simulator: SimulatorHandle) -> None:
    ids = [simulator.control.seed_task(reference=f"r{i}")["id"] for i in range(5)]
    first = await api.call("ListTasks", {"pagination": {"pageSize": 2}})
    second = await api.call(
        "ListTasks",
        {"pagination": {"pageSize": 100}},
        params={"token": first["pagination"]["nextToken"]},
    )
    assert [t["id"] for t in first["tasks"] + second["tasks"]] == ids
    assert second["pagination"]["nextToken"] == ""
