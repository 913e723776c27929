"""Reading a TaskRun object: the start claim lives in the annotations (written with the
finalizer in one conditional write), and objects claimed by earlier versions in status."""

from __future__ import annotations

from typing import Any

import pytest

from ona_taskrun import core
from ona_taskrun.reconciler import parse_taskrun


def body(annotations: dict[str, str] | None, status: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "metadata": {"uid": "u", "generation": 1, "annotations": annotations or {}},
        "spec": {"taskRef": {"id": "t"}},
        "status": status or {},
    }


CLAIMED = {core.CLAIM_ANNOTATION: "2026-01-01T00:00:00Z", core.ATTEMPTS_ANNOTATION: "2"}


@pytest.mark.parametrize(
    ("annotations", "status", "claim"),
    [
        pytest.param(CLAIMED, {}, ("2026-01-01T00:00:00Z", 2), id="annotation-claim"),
        pytest.param(
            CLAIMED,
            {"startRequestedAt": "2025-12-31T00:00:00Z", "startAttempts": 1},
            ("2026-01-01T00:00:00Z", 2),
            id="annotation-wins-over-a-stale-mirror",
        ),
        pytest.param(
            {core.CLAIM_ANNOTATION: "", core.ATTEMPTS_ANNOTATION: "2"},
            {"startRequestedAt": "2025-12-31T00:00:00Z", "startAttempts": 2},
            ("", 2),
            id="cleared-claim-is-no-claim",
        ),
        pytest.param(
            None,
            {"startRequestedAt": "2025-12-31T00:00:00Z", "startAttempts": 1},
            ("2025-12-31T00:00:00Z", 1),
            id="claimed-by-an-earlier-version-in-status",
        ),
        pytest.param(None, None, ("", 0), id="never-claimed"),
        pytest.param(
            {core.CLAIM_ANNOTATION: "2026-01-01T00:00:00Z", core.ATTEMPTS_ANNOTATION: "x"},
            {},
            ("2026-01-01T00:00:00Z", 0),
            id="unreadable-attempts",
        ),
    ],
)
def test_start_claim_is_read_from_the_annotations_first(
    annotations: dict[str, str] | None, status: dict[str, Any] | None, claim: tuple[str, int]
) -> None:
    run = parse_taskrun(body(annotations, status))
    assert (run.status.start_requested_at, run.status.start_attempts) == claim


@pytest.mark.parametrize(
    ("annotations", "attempt"),
    [
        pytest.param({**CLAIMED, core.CLAIM_ATTEMPT_ANNOTATION: "3"}, 3, id="claim-for-attempt-3"),
        pytest.param(CLAIMED, 0, id="written-before-retries-existed"),
        pytest.param({**CLAIMED, core.CLAIM_ATTEMPT_ANNOTATION: "x"}, 0, id="unreadable"),
    ],
)
def test_the_claim_names_its_attempt(annotations: dict[str, str], attempt: int) -> None:
    run = parse_taskrun(body(annotations, {"attempt": 3}))
    assert run.status.claim_attempt == attempt
    assert run.status.attempt == 3
