"""The kopf baseline's pieces, without a cluster: what it writes for an execution, its
configuration, and that its timer carries no finalizer unless asked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tools.bench import baseline


def _execution(phase: str) -> dict[str, object]:
    return {"id": "e", "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("remote", "phase", "succeeded"),
    [
        ("TASK_EXECUTION_PHASE_PENDING", "PENDING", "Unknown"),
        ("TASK_EXECUTION_PHASE_RUNNING", "RUNNING", "Unknown"),
        ("TASK_EXECUTION_PHASE_SUCCEEDED", "SUCCEEDED", "True"),
        ("TASK_EXECUTION_PHASE_FAILED", "FAILED", "False"),
        ("TASK_EXECUTION_PHASE_STOPPED", "STOPPED", "False"),
        ("", "PENDING", "Unknown"),
    ],
)
def test_mirror_writes_the_phase_and_a_succeeded_condition(
    remote: str, phase: str, succeeded: str
) -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert baseline.mirror(_execution(remote), now) == {
        "phase": phase,
        "conditions": [
            {
                "type": "Succeeded",
                "status": succeeded,
                "reason": phase.capitalize(),
                "lastTransitionTime": "2025-01-02T03:04:05Z",
            }
        ],
    }


def test_config_comes_from_the_operators_variables() -> None:
    config = baseline.BaselineConfig.from_env(
        {
            "ONA_BASE_URL": "http://127.0.0.1:1/",
            "ONA_API_TOKEN": "t",
            "WATCH_NAMESPACES": "a, b",
            "ONA_POLL_INTERVAL": "2",
        }
    )
    assert config.base_url == "http://127.0.0.1:1"
    assert config.namespaces == ("a", "b")
    assert config.interval == 2.0
    assert config.request_timeout == 10.0
    assert config.keep_kopf_finalizer is False
    with pytest.raises(ValueError, match="ONA_API_TOKEN"):
        baseline.BaselineConfig.from_env({"ONA_BASE_URL": "http://x"})


@pytest.mark.parametrize("keep", [False, True])
def test_the_timer_needs_no_finalizer_unless_asked(keep: bool) -> None:
    config = baseline.BaselineConfig(
        base_url="http://x", token="t", namespaces=("n",), keep_kopf_finalizer=keep
    )
    registry = baseline.build_registry(config)
    timers = list(registry._spawning._handlers)
    assert [handler.id for handler in timers] == ["poll"]
    assert timers[0].requires_finalizer is keep
    # No changing handler asks for one either: on.create is not a deletion handler.
    assert not any(h.requires_finalizer for h in registry._changing._handlers)
