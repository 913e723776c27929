"""The Argo CD health check for TaskRun, run on Lua 5.1 (the dialect of gopher-lua)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
HEALTH_LUA = ARGOCD_DIR / "health.lua"
CM_PATCH = ARGOCD_DIR / "argocd-cm-patch.yaml"
CM_KEY = "resource.customizations.health.automation.ona.com_TaskRun"


def to_lua(runtime: Any, value: Any) -> Any:
    """Convert the way Argo CD hands an object to Lua: maps to tables, lists 1-based."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            table[key] = to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(runtime, item)
        return table
    return value


def health(obj: Any) -> tuple[str, str]:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute(HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])


def condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def taskrun(
    status: dict[str, Any] | None = None, desired_phase: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taskRef": {"id": "0194b7c2-task"}}
    if desired_phase is not None:
        spec["desiredPhase"] = desired_phase
    obj: dict[str, Any] = {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRun",
        "metadata": {"name": "build", "namespace": "default", "generation": 1},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


NOT_OVER = [
    condition("Succeeded", "Unknown", "Running", "The execution is running"),
    condition("Reconciling", "True", "Running", "The execution is running"),
    condition("Stalled", "False", "Running", ""),
]

CASES: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("just created, no status", taskrun(), "Progressing", ["Waiting for the operator"]),
    (
        "status without conditions yet",
        taskrun({"observedGeneration": 1}),
        "Progressing",
        ["Waiting for the operator"],
    ),
    (
        "empty conditions list",
        taskrun({"conditions": []}),
        "Progressing",
        ["Waiting for the operator"],
    ),
    (
        "conditions written, no remote status yet",
        taskrun({"phase": "", "conditions": NOT_OVER}),
        "Progressing",
        ["Waiting for the first status"],
    ),
    (
        "pending",
        taskrun({"phase": "PENDING", "conditions": NOT_OVER}),
        "Progressing",
        ["PENDING"],
    ),
    (
        "running",
        taskrun({"phase": "RUNNING", "conditions": NOT_OVER}),
        "Progressing",
        ["RUNNING"],
    ),
    (
        "running, Ona API unreachable",
        taskrun(
            {
                "phase": "RUNNING",
                "conditions": [
                    *NOT_OVER,
                    condition(
                        "RemoteReachable", "False", "RateLimited", "429 from the Ona API, retrying"
                    ),
                ],
            }
        ),
        "Progressing",
        ["RUNNING", "Ona API is unreachable", "RateLimited", "429 from the Ona API"],
    ),
    (
        "succeeded",
        taskrun(
            {
                "phase": "SUCCEEDED",
                "conditions": [
                    condition("Succeeded", "True", "Succeeded", "The execution succeeded"),
                    condition("Reconciling", "False", "Succeeded"),
                    condition("Stalled", "False", "Succeeded"),
                ],
            }
        ),
        "Healthy",
        ["succeeded"],
    ),
    (
        "succeeded while the API is unreachable afterwards",
        taskrun(
            {
                "phase": "SUCCEEDED",
                "conditions": [
                    condition("Succeeded", "True", "Succeeded", "The execution succeeded"),
                    condition("RemoteReachable", "False", "Unavailable", "connection refused"),
                ],
            }
        ),
        "Healthy",
        ["succeeded"],
    ),
    (
        "failed",
        taskrun(
            {
                "phase": "FAILED",
                "conditions": [
                    condition("Succeeded", "False", "Failed", "step 'test' exited with 2"),
                    condition("Reconciling", "False", "Failed"),
                    condition("Stalled", "True", "Failed", "step 'test' exited with 2"),
                ],
            }
        ),
        "Degraded",
        ["Failed", "step 'test' exited with 2"],
    ),
    (
        "failed, with the end of its log",
        taskrun(
            {
                "phase": "FAILED",
                "logTail": "[build] compiling\n[build] error: disk full\n\n",
                "conditions": [
                    condition("Succeeded", "False", "Failed", "disk full"),
                    condition("Stalled", "True", "Failed", "disk full"),
                ],
            }
        ),
        "Degraded",
        ["Failed: disk full", "; last log line: [build] error: disk full"],
    ),
    (
        "failed, a very long last log line keeps its end",
        taskrun(
            {
                "phase": "FAILED",
                "logTail": "x" * 300 + "THE END",
                "conditions": [condition("Succeeded", "False", "Failed", "boom")],
            }
        ),
        "Degraded",
        ["last log line: ..." + "x" * 193 + "THE END"],
    ),
    (
        "failed, logTail of the wrong type",
        taskrun(
            {
                "phase": "FAILED",
                "logTail": 42,
                "conditions": [condition("Succeeded", "False", "Failed", "boom")],
            }
        ),
        "Degraded",
        ["Failed: boom"],
    ),
    (
        "timed out",
        taskrun(
            {
                "phase": "STOPPED",
                "conditions": [
                    condition("Succeeded", "False", "TimedOut", "ran longer than the 30m timeout"),
                    condition("Stalled", "True", "TimedOut", "ran longer than the 30m timeout"),
                ],
            }
        ),
        "Degraded",
        ["TimedOut", "30m timeout"],
    ),
    (
        "stopped as spec.desiredPhase asked",
        taskrun(
            {
                "phase": "STOPPED",
                "conditions": [
                    condition("Succeeded", "False", "Stopped", "Stopped as requested"),
                    condition("Reconciling", "False", "Stopped"),
                    condition("Stalled", "False", "Stopped"),
                ],
            },
            desired_phase="STOPPED",
        ),
        "Healthy",
        ["Stopped as spec.desiredPhase asked"],
    ),
    (
        "stopped remotely while the spec asks to run",
        taskrun(
            {
                "phase": "STOPPED",
                "conditions": [
                    condition("Succeeded", "False", "Stopped", "The execution was stopped in Ona"),
                    condition("Stalled", "True", "Stopped", "The execution was stopped in Ona"),
                ],
            },
            desired_phase="RUNNING",
        ),
        "Degraded",
        ["Stopped", "stopped in Ona"],
    ),
    (
        "stopped remotely, desiredPhase left to its default",
        taskrun(
            {
                "phase": "STOPPED",
                "conditions": [
                    condition("Succeeded", "False", "Stopped", "The execution was stopped in Ona")
                ],
            }
        ),
        "Degraded",
        ["stopped in Ona"],
    ),
    (
        "task not found",
        taskrun(
            {
                "conditions": [
                    condition(
                        "Succeeded", "False", "TaskNotFound", "task 0194b7c2-task does not exist"
                    ),
                    condition("Stalled", "True", "TaskNotFound", "task 0194b7c2-task not found"),
                ],
            }
        ),
        "Degraded",
        ["TaskNotFound", "does not exist"],
    ),
    (
        "stalled: start outcome unknown",
        taskrun(
            {
                "phase": "",
                "conditions": [
                    condition("Succeeded", "Unknown", "Starting", ""),
                    condition("Reconciling", "True", "Starting", ""),
                    condition(
                        "Stalled",
                        "True",
                        "StartOutcomeUnknown",
                        "cannot tell which execution was started; not starting another",
                    ),
                ],
            }
        ),
        "Degraded",
        ["StartOutcomeUnknown", "not starting another"],
    ),
    (
        "failed condition without a message falls back to its reason",
        taskrun({"conditions": [condition("Succeeded", "False", "Forbidden")]}),
        "Degraded",
        ["Forbidden"],
    ),
]


@pytest.mark.parametrize(
    ("obj", "expected_status", "message_parts"),
    [pytest.param(obj, status, parts, id=name) for name, obj, status, parts in CASES],
)
def test_health(obj: dict[str, Any], expected_status: str, message_parts: list[str]) -> None:
    status, message = health(obj)
    assert status == expected_status, message
    for part in message_parts:
        assert part in message


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({}, id="empty object"),
        pytest.param({"status": "RUNNING"}, id="status not a table"),
        pytest.param({"status": {"conditions": "Succeeded"}}, id="conditions not a table"),
        pytest.param({"status": {"conditions": {"type": "Succeeded"}}}, id="conditions a map"),
        pytest.param({"spec": "x", "status": {"conditions": ["Succeeded", 3]}}, id="junk entries"),
        pytest.param(
            {
                "status": {
                    "phase": 7,
                    "conditions": [{"type": "RemoteReachable", "status": "False"}],
                }
            },
            id="wrong-typed fields",
        ),
    ],
)
def test_malformed_objects_read_as_progressing(obj: dict[str, Any]) -> None:
    status, message = health(obj)
    assert status == "Progressing"
    assert message


def test_missing_obj_reads_as_progressing() -> None:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    result = runtime.execute(HEALTH_LUA.read_text())
    assert result["status"] == "Progressing"


def test_argocd_cm_patch_holds_the_same_lua() -> None:
    patch = yaml.safe_load(CM_PATCH.read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][CM_KEY] == HEALTH_LUA.read_text(), (
        "manifests/argocd/argocd-cm-patch.yaml differs from health.lua: copy health.lua "
        "into the data key again (indented by four spaces)"
    )


def test_failed_without_a_usable_log_tail_names_no_log_line() -> None:
    for tail in (None, 42, "", "  \n \n"):
        status: dict[str, Any] = {
            "phase": "FAILED",
            "conditions": [condition("Succeeded", "False", "Failed", "boom")],
        }
        if tail is not None:
            status["logTail"] = tail
        assert health(taskrun(status)) == ("Degraded", "Failed: boom")
