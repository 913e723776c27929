"""What a connection learns of tasks is bounded (`controller.lru`): the soak found one entry
kept for every task a connection ever checked against its environment policy."""

from __future__ import annotations

import pytest

from ona_taskrun.controller.connections import TASK_ENVIRONMENTS_KEPT
from ona_taskrun.controller.lru import Lru
from tests.ona.fakes import offline_remote


def test_the_entry_used_longest_ago_goes_first() -> None:
    lru: Lru[str, str] = Lru(2)
    lru["a"], lru["b"] = "1", "2"
    assert lru.lookup("a") == "1"  # a is now the newer one
    lru["c"] = "3"
    assert (lru.lookup("b"), lru.get("a", ""), lru.get("c", "")) == (None, "1", "3")
    assert len(lru) == 2
    with pytest.raises(ValueError, match="at least 1"):
        Lru(0)


async def test_a_connection_keeps_a_bounded_number_of_task_environments() -> None:
    remote = offline_remote()
    try:
        for i in range(TASK_ENVIRONMENTS_KEPT * 2):
            remote.task_environments[f"task-{i}"] = "env"
        assert len(remote.task_environments) == TASK_ENVIRONMENTS_KEPT
        assert remote.task_environments.lookup(f"task-{TASK_ENVIRONMENTS_KEPT * 2 - 1}") == "env"
        assert remote.task_environments.lookup("task-0") is None
    finally:
        await remote.close()
