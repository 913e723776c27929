"""Reading a TaskRun object: the start claim lives in the annotations (written with the
finalizer in one conditional write) and counts only when the operator signed it; the
status mirrors it, and holds the claims of earlier versions.

Annotations are writable by the TaskRun's author, so every forgery an author could try
is a row here: a claim written by hand, a signature copied from another TaskRun, a
signed claim edited, an old signed claim written back.
"""

from __future__ import annotations

from typing import Any

import pytest

from ona_taskrun.controller.reconciler import parse_taskrun
from ona_taskrun.rules.claims import SIGNATURE_ANNOTATION, ClaimSigner
from ona_taskrun.rules.model import ATTEMPTS_ANNOTATION, CLAIM_ANNOTATION, CLAIM_ATTEMPT_ANNOTATION

SIGNER = ClaimSigner(b"k" * 32)
OTHER_KEY = ClaimSigner(b"o" * 32)
UID = "7d3c2a10-0000-4000-8000-000000000001"
T1, T0 = "2026-01-01T00:00:00Z", "2025-12-31T00:00:00Z"


def body(annotations: dict[str, str] | None, status: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "metadata": {"uid": UID, "generation": 1, "annotations": annotations or {}},
        "spec": {"taskRef": {"id": "t"}},
        "status": status or {},
    }


def claim(
    at: str, attempts: int, attempt: int = 1, *, signer: ClaimSigner = SIGNER, uid: str = UID
) -> dict[str, str]:
    return {
        CLAIM_ANNOTATION: at,
        ATTEMPTS_ANNOTATION: str(attempts),
        CLAIM_ATTEMPT_ANNOTATION: str(attempt),
        SIGNATURE_ANNOTATION: signer.sign(uid, at, attempts, attempt),
    }


def unsigned(at: str, attempts: int, attempt: int = 1) -> dict[str, str]:
    signed = claim(at, attempts, attempt)
    del signed[SIGNATURE_ANNOTATION]
    return signed


@pytest.mark.parametrize(
    ("annotations", "status", "expected"),
    [
        pytest.param(claim(T1, 2), {}, (T1, 2), id="signed-claim"),
        pytest.param(
            claim(T1, 2),
            {"startRequestedAt": T0, "startAttempts": 1},
            (T1, 2),
            id="signed-claim-wins-over-a-stale-mirror",
        ),
        pytest.param(
            claim("", 2),
            {"startRequestedAt": T0, "startAttempts": 2},
            ("", 2),
            id="cleared-claim-is-no-claim",
        ),
        pytest.param(
            None,
            {"startRequestedAt": T0, "startAttempts": 1},
            (T0, 1),
            id="claimed-by-an-earlier-version-in-status",
        ),
        pytest.param(None, None, ("", 0), id="never-claimed"),
        # --- forgeries: the claim the status mirrors (or none) is the run's --------------
        pytest.param(unsigned(T1, 2), {}, ("", 0), id="forged-claim-at-create-is-no-claim"),
        pytest.param(
            unsigned(T1, 5),
            {"startRequestedAt": "", "startAttempts": 1},
            ("", 1),
            id="forged-claim-over-a-cleared-one",
        ),
        pytest.param(
            {**claim(T1, 2), CLAIM_ANNOTATION: "2026-06-01T00:00:00Z"},
            {},
            ("", 0),
            id="signed-claim-with-its-time-edited",
        ),
        pytest.param(
            {**claim(T1, 2), ATTEMPTS_ANNOTATION: "1"},
            {},
            ("", 0),
            id="signed-claim-with-its-count-edited",
        ),
        pytest.param(
            claim(T1, 2, uid="another-taskrun"), {}, ("", 0), id="signature-copied-from-another-run"
        ),
        pytest.param(claim(T1, 2, signer=OTHER_KEY), {}, ("", 0), id="signed-with-another-key"),
        pytest.param(
            claim(T0, 1),
            {"startRequestedAt": "", "startAttempts": 2},
            ("", 2),
            id="an-old-signed-claim-written-back",
        ),
        pytest.param(
            {**unsigned(T1, 2), ATTEMPTS_ANNOTATION: "x", SIGNATURE_ANNOTATION: "v1:x"},
            {},
            ("", 0),
            id="unreadable-attempts",
        ),
        pytest.param(
            {**unsigned(T1, 2), ATTEMPTS_ANNOTATION: "9" * 40, SIGNATURE_ANNOTATION: "v1:x"},
            {},
            ("", 0),
            id="absurd-attempts",
        ),
    ],
)
def test_only_a_claim_the_operator_signed_counts(
    annotations: dict[str, str] | None, status: dict[str, Any] | None, expected: tuple[str, int]
) -> None:
    run = parse_taskrun(body(annotations, status), SIGNER)
    assert (run.status.start_requested_at, run.status.start_attempts) == expected


def test_without_the_key_no_annotation_claim_counts() -> None:
    run = parse_taskrun(body(claim(T1, 2), {"startRequestedAt": T0, "startAttempts": 1}))
    assert (run.status.start_requested_at, run.status.start_attempts) == (T0, 1)


@pytest.mark.parametrize(
    ("annotations", "attempt"),
    [
        pytest.param(claim(T1, 2, 3), 3, id="claim-for-attempt-3"),
        pytest.param({**claim(T1, 2, 3), CLAIM_ATTEMPT_ANNOTATION: "1"}, 0, id="attempt-edited"),
    ],
)
def test_the_claim_names_its_attempt(annotations: dict[str, str], attempt: int) -> None:
    run = parse_taskrun(body(annotations, {"attempt": 3}), SIGNER)
    assert run.status.claim_attempt == attempt
    assert run.status.attempt == 3


def test_a_signature_never_shows_the_key() -> None:
    assert "k" * 16 not in repr(SIGNER)
    assert "k" * 16 not in SIGNER.sign(UID, T1, 1, 1)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        ClaimSigner(b"short")
