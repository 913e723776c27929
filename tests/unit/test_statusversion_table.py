"""A remote status applies only when its statusVersion is greater than the one held,
compared as integers however large, and the held one is kept as the decimal text."""

from __future__ import annotations

from typing import Any

import pytest

from ona_taskrun.rules.conditions import apply_execution
from ona_taskrun.rules.model import Observation, Phase, Status
from ona_taskrun.rules.pipeline import decide

from .builders import EXEC, NOW, TASK, at, execution, inline_spec, pending_conditions, taskrun

U64_MAX = 18446744073709551615

# (held statusVersion text, remote statusVersion, applies?)
TABLE = [
    pytest.param("", 0, True, id="empty-held-applies-version-0"),
    pytest.param("", 7, True, id="empty-held-applies"),
    pytest.param("", U64_MAX, True, id="empty-held-applies-u64-max"),
    pytest.param("0", 1, True, id="0-vs-1"),
    pytest.param("1", 0, False, id="1-vs-0"),
    pytest.param("9", 10, True, id="9-vs-10-not-text-order"),
    pytest.param("10", 9, False, id="10-vs-9-not-text-order"),
    pytest.param("99", 100, True, id="99-vs-100"),
    pytest.param("100", 99, False, id="100-vs-99"),
    pytest.param("10", 10, False, id="equal-is-dropped"),
    pytest.param("0", 0, False, id="equal-zero-is-dropped"),
    pytest.param(str(U64_MAX), U64_MAX, False, id="equal-u64-max-is-dropped"),
    pytest.param(str(U64_MAX - 1), U64_MAX, True, id="u64-max-minus-1-vs-u64-max"),
    pytest.param(str(U64_MAX), U64_MAX - 1, False, id="u64-max-vs-u64-max-minus-1"),
    pytest.param(str(U64_MAX), U64_MAX + 1, True, id="past-u64"),
    pytest.param("9" * 19, 10**19, True, id="19-nines-vs-10e19"),
    pytest.param(str(10**19), 10**19 - 1, False, id="10e19-vs-19-nines"),
]


def held_status(version: str) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "taskId": TASK,
        "taskExecutionId": EXEC,
        "phase": "RUNNING",
        "statusVersion": version,
        "startRequestedAt": at(-60),
        "conditions": pending_conditions("Running"),
    }


@pytest.mark.parametrize(("held", "remote", "applies"), TABLE)
def test_apply_execution(held: str, remote: int, applies: bool) -> None:
    status = Status.from_dict(held_status(held))
    update = execution(phase=Phase.FAILED, version=remote, failure_message="boom")

    new = apply_execution(status, update)

    if applies:
        assert (new.phase, new.status_version, new.failure_message) == (
            "FAILED",
            str(remote),
            "boom",
        )
    else:
        assert new == status


@pytest.mark.parametrize(("held", "remote", "applies"), TABLE)
def test_decide_ends_the_run_only_on_a_newer_status(held: str, remote: int, applies: bool) -> None:
    run = taskrun(inline_spec(), held_status(held))
    update = execution(phase=Phase.SUCCEEDED, version=remote)

    decision = decide(run, Observation(execution=update), NOW)

    succeeded = decision.status.condition("Succeeded")
    assert succeeded is not None
    if applies:
        assert (decision.status.phase, succeeded.status) == ("SUCCEEDED", "True")
        assert decision.status.to_dict()["statusVersion"] == str(remote)
        assert decision.track is None
    else:
        assert (decision.status.phase, succeeded.status) == ("RUNNING", "Unknown")
        assert decision.status.to_dict().get("statusVersion", "") == held
        assert decision.track == EXEC


def test_versions_arriving_out_of_order_keep_the_newest() -> None:
    """Updates 3, 5, 4, 5 (a replayed watch): the status ends at version 5's content."""
    status = Status.from_dict(held_status(""))
    for version, phase in (
        (3, Phase.RUNNING),
        (5, Phase.FAILED),
        (4, Phase.RUNNING),
        (5, Phase.RUNNING),
    ):
        status = apply_execution(status, execution(phase=phase, version=version))
    assert (status.phase, status.status_version) == ("FAILED", "5")
