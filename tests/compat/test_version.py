"""Each compatibility control plane is the version it claims to be, serves the CRDs, and
ratchets: an object stored under an older CRD, which today's rules would refuse, can
still be stopped after the CRD is upgraded (the CRD upgrade path of docs/operations.md
relies on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import TaskRuns, inline_task
from tests.upgrade.previous import RELEASE_0_1_0, REPO_ROOT, extract

pytestmark = pytest.mark.e2e

TASKRUNS_CRD = "crds/taskruns.automation.ona.com.yaml"


def test_the_server_and_kubectl_are_the_version_under_test(
    control_plane: ControlPlane, request: pytest.FixtureRequest
) -> None:
    version = request.node.callspec.params["control_plane"]
    shown = json.loads(control_plane.kubectl_run("version", "-o", "json").stdout)
    assert shown["serverVersion"]["gitVersion"] == version
    assert shown["clientVersion"]["gitVersion"] == version


def test_every_crd_is_established(control_plane: ControlPlane) -> None:
    names = [
        yaml.safe_load(path.read_text())["metadata"]["name"]
        for path in sorted((REPO_ROOT / "crds").glob("*.automation.ona.com.yaml"))
    ]
    assert len(names) == 4
    control_plane.kubectl_run("wait", "--for=condition=Established", "--timeout=30s", "crd", *names)


def test_an_object_the_upgraded_crd_would_refuse_can_still_be_stopped(
    control_plane: ControlPlane, taskruns: TaskRuns, tmp_path: Path
) -> None:
    """0.1.0 allowed any spec.timeout; today's CRD refuses one over 720h. A TaskRun kept
    from 0.1.0 must stay stoppable after the CRD upgrade: ratcheting lets its unchanged
    timeout stand."""
    old = extract(RELEASE_0_1_0, [TASKRUNS_CRD], tmp_path) / TASKRUNS_CRD
    current = REPO_ROOT / TASKRUNS_CRD
    apply = ("apply", "--server-side", "--force-conflicts", "-f")
    try:
        control_plane.kubectl_run(*apply, str(old))
        taskruns.apply("long", {"task": inline_task("echo # sim:hang"), "timeout": "1000h"})
        control_plane.kubectl_run(*apply, str(current))
        refused = taskruns.try_apply("longer", {"task": inline_task("x"), "timeout": "1000h"})
        assert refused.returncode != 0
        assert "spec.timeout must be at most 720h" in refused.stderr
        stopped = taskruns.patch_spec("long", {"desiredPhase": "STOPPED"})
        assert stopped.returncode == 0, stopped.stderr
        assert taskruns.get("long")["spec"]["desiredPhase"] == "STOPPED"
    finally:
        control_plane.kubectl_run(*apply, str(current))
