"""The API server, through the TaskRunSchedule CRD's schema and CEL rules, rejects a
schedule that cannot work at `kubectl apply`; the operator reports what only it can tell
(an expression croniter refuses, an unknown time zone) in the Ready condition."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    GROUP,
    VERSION,
    OperatorProcess,
    inline_task,
    wait_for,
)

pytestmark = pytest.mark.e2e


def manifest(namespace: str, name: str = "nightly", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskRunSchedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 2 * * *",
            "taskRunTemplate": {"spec": {"task": inline_task("make report")}},
            **spec,
        },
    }


def apply(control_plane: ControlPlane, doc: dict[str, Any]) -> Any:
    return control_plane.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"schedule": "* * * *"}, "must be a cron expression of 5 fields", id="4-fields"
        ),
        pytest.param(
            {"schedule": "0 0 2 * * *"}, "must be a cron expression of 5 fields", id="seconds"
        ),
        pytest.param({"schedule": "@reboot"}, "must be a cron expression of 5 fields", id="reboot"),
        pytest.param(
            {"schedule": "CRON_TZ=Europe/Berlin 0 2 * * *"}, "set spec.timeZone", id="cron-tz"
        ),
        pytest.param({"timeZone": "Europe Berlin"}, "IANA time zone name", id="zone-shape"),
        pytest.param({"concurrencyPolicy": "Queue"}, "spec.concurrencyPolicy", id="unknown-policy"),
        pytest.param(
            {"startingDeadlineSeconds": -10}, "spec.startingDeadlineSeconds", id="negative"
        ),
        pytest.param(
            {"startingDeadlineSeconds": 10**10}, "spec.startingDeadlineSeconds", id="deadline-huge"
        ),
        pytest.param(
            {"successfulRunsHistoryLimit": 101}, "spec.successfulRunsHistoryLimit", id="limit-huge"
        ),
        pytest.param(
            {"failedRunsHistoryLimit": -1}, "spec.failedRunsHistoryLimit", id="limit-negative"
        ),
        pytest.param(
            {"taskRunTemplate": {"spec": {"timeout": "5m"}}},
            "exactly one of spec.task and spec.taskRef",
            id="template-neither",
        ),
        pytest.param(
            {"taskRunTemplate": {"spec": {"task": {"name": "x", "command": "make test"}}}},
            "environmentId",
            id="template-incomplete",
        ),
    ],
)
def test_bad_schedules_are_rejected_at_apply(
    spec: dict[str, Any], message: str, control_plane: ControlPlane, namespace: str
) -> None:
    result = apply(control_plane, manifest(namespace, **spec))
    assert result.returncode != 0
    assert message in result.stderr


def test_a_name_too_long_for_its_runs_is_rejected(
    control_plane: ControlPlane, namespace: str
) -> None:
    result = apply(control_plane, manifest(namespace, name="n" * 53))
    assert result.returncode != 0
    assert "at most 52 characters" in result.stderr
    assert apply(control_plane, manifest(namespace, name="n" * 52)).returncode == 0


def test_a_good_schedule_gets_its_defaults(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, manifest(namespace, schedule="@daily"))
    shown = control_plane.kubectl_run(
        "-n", namespace, "get", "otrs", "nightly", "-o", "jsonpath={.spec}"
    ).stdout
    spec = yaml.safe_load(shown)
    assert spec["timeZone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Allow"
    assert (
        spec["suspend"],
        spec["successfulRunsHistoryLimit"],
        spec["failedRunsHistoryLimit"],
    ) == (
        False,
        3,
        1,
    )
    assert spec["taskRunTemplate"]["spec"]["deletionPolicy"] == "Stop"
    listed = control_plane.kubectl_run("-n", namespace, "get", "ona").stdout
    assert "taskrunschedule.automation.ona.com/nightly" in listed


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        pytest.param({"schedule": "61 * * * *"}, "InvalidSchedule", "not a valid cron", id="range"),
        pytest.param(
            {"schedule": "0 0 30 2 *"}, "InvalidSchedule", "not a valid cron", id="feb-30"
        ),
        pytest.param({"timeZone": "Mars/Olympus_Mons"}, "InvalidTimeZone", "IANA", id="zone"),
    ],
)
def test_what_only_the_operator_can_tell_is_a_condition(
    spec: dict[str, Any],
    reason: str,
    words: str,
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    k8s_admin: client.ApiClient,
) -> None:
    assert apply(control_plane, manifest(namespace, **spec)).returncode == 0
    api = client.CustomObjectsApi(k8s_admin)

    def ready() -> dict[str, Any] | None:
        body = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "taskrunschedules", "nightly"
        )
        for cond in (body.get("status") or {}).get("conditions") or ():
            if cond["type"] == "Ready":
                return dict(cond)
        return None

    cond = wait_for(ready, what="the Ready condition")
    assert (cond["status"], cond["reason"]) == ("False", reason)
    assert words in cond["message"]
    assert operator.running
