"""CRD upgrades, both documented paths (docs/operations.md, Upgrade), from the 0.1.0 CRDs
to today's with objects present: every object survives unchanged (same uid, spec and
status), the fields 0.1.0's schema did not know are kept afterwards, the new rules refuse
new objects, and objects the new rules would refuse can still be stopped and edited
(validation ratcheting: an unchanged field is not judged again).

- crds.enabled: `helm upgrade --set crds.enabled=true --take-ownership` makes the CRDs
  objects of the release; from then on every `helm upgrade` upgrades them, and
  `helm uninstall` leaves them (crds.keep).
- crds/ folder: `kubectl apply --server-side --force-conflicts` of the new CRDs, then
  `helm upgrade` (Helm never upgrades crds/). Without --force-conflicts the apply is
  refused on a Helm install: Helm created the CRDs and owns .spec.versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import tools
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import ENVIRONMENT_ID, GROUP, VERSION
from tests.upgrade.previous import RELEASE_0_1_0, REPO_ROOT, extract

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHART = REPO_ROOT / "charts" / "ona-taskrun-operator"
RELEASE, SYSTEM, TEAM = "ona", "ona-system", "team-a"
CRD_NAMES = sorted(
    f"{plural}.{GROUP}"
    for plural in ("taskruns", "onaconnections", "clusteronaconnections", "taskrunschedules")
)
TIMEOUT_RULE = "spec.timeout must be at most 720h (30 days)"


def helm(plane: ControlPlane, *args: str) -> str:
    result = tools.run("helm", f"--kubeconfig={plane.admin_kubeconfig}", *args)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def apply(plane: ControlPlane, doc: dict[str, Any], *, check: bool = True) -> Any:
    return plane.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(doc), check=check)


def get(plane: ControlPlane, kind: str, name: str) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"]
    if kind != "crd":
        args = ["-n", TEAM, *args]
    found: dict[str, Any] = json.loads(plane.kubectl_run(*args).stdout)
    return found


def patch_status(plane: ControlPlane, kind: str, name: str, status: dict[str, Any]) -> None:
    plane.kubectl_run(
        "-n", TEAM, "patch", kind, name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def taskrun(name: str, **spec: Any) -> dict[str, Any]:
    task = {"environmentId": ENVIRONMENT_ID, "name": "build", "command": "make"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": TEAM},
        "spec": {"task": task, **spec},
    }


def objects_of_0_1_0(plane: ControlPlane) -> dict[tuple[str, str], dict[str, Any]]:
    """What a 0.1.0 user has: TaskRuns (one mid-run, one with a timeout that 0.1.0 allowed
    and today's CRD refuses), a schedule and a connection. Returns them as read back."""
    plane.kubectl_run("create", "namespace", TEAM)
    apply(plane, taskrun("running"))
    patch_status(
        plane,
        "taskrun",
        "running",
        {
            "phase": "RUNNING",
            "taskId": "2c1b3a4d-0000-4000-8000-000000000001",
            "taskExecutionId": "2c1b3a4d-0000-4000-8000-000000000002",
            "statusVersion": "7",
            "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}],
        },
    )
    apply(plane, taskrun("long", timeout="1000h"))
    apply(
        plane,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskRunSchedule",
            "metadata": {"name": "nightly", "namespace": TEAM},
            "spec": {"schedule": "0 2 * * *", "taskRunTemplate": {"spec": taskrun("x")["spec"]}},
        },
    )
    apply(
        plane,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OnaConnection",
            "metadata": {"name": "team", "namespace": TEAM},
            "spec": {"tokenSecretRef": {"name": "team-token", "key": "token"}},
        },
    )
    return {
        (kind, name): get(plane, kind, name)
        for kind, name in (
            ("taskrun", "running"),
            ("taskrun", "long"),
            ("taskrunschedule", "nightly"),
            ("onaconnection", "team"),
        )
    }


def unserved_methods_kept(plane: ControlPlane) -> bool:
    """Whether the connection CRD's schema keeps status.unservedMethods (new after 0.1.0);
    a schema without it prunes it silently."""
    patch_status(plane, "onaconnection", "team", {"unservedMethods": ["a.v1.S/M"]})
    kept = get(plane, "onaconnection", "team").get("status", {}).get("unservedMethods")
    return bool(kept == ["a.v1.S/M"])


def holds(now: Any, old: Any) -> bool:
    """Whether `now` holds everything `old` did, unchanged. It may hold more: a field the
    new schema adds with a default is defaulted on existing objects when they are read."""
    if isinstance(old, dict):
        return isinstance(now, dict) and all(k in now and holds(now[k], v) for k, v in old.items())
    if isinstance(old, list):
        return (
            isinstance(now, list)
            and len(now) == len(old)
            and all(holds(n, o) for n, o in zip(now, old, strict=True))
        )
    return bool(now == old)


def assert_survived(plane: ControlPlane, before: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (kind, name), old in before.items():
        now = get(plane, kind, name)
        assert now["metadata"]["uid"] == old["metadata"]["uid"], (kind, name)
        assert holds(now["spec"], old["spec"]), (kind, name, now["spec"], old["spec"])
        if kind == "taskrun":
            assert holds(now.get("status"), old.get("status")), (kind, name)


def assert_current_crds_work(plane: ControlPlane) -> None:
    # The field 0.1.0 pruned is kept now.
    assert unserved_methods_kept(plane)
    # The new rule refuses a new object...
    refused = apply(plane, taskrun("too-long", timeout="1000h"), check=False)
    assert refused.returncode != 0
    assert TIMEOUT_RULE in refused.stderr
    # ...and leaves the old one alone: it can still be stopped (its timeout unchanged).
    stopped = plane.kubectl_run(
        "-n", TEAM, "patch", "taskrun", "long", "--type=merge",
        "-p", json.dumps({"spec": {"desiredPhase": "STOPPED"}}),
    )  # fmt: skip
    assert get(plane, "taskrun", "long")["spec"]["desiredPhase"] == "STOPPED", stopped.stderr
    # Its timeout is still not editable to anything else.
    edited = plane.kubectl_run(
        "-n", TEAM, "patch", "taskrun", "long", "--type=merge",
        "-p", json.dumps({"spec": {"timeout": "1h"}}), check=False,
    )  # fmt: skip
    assert edited.returncode != 0
    assert "spec.timeout is immutable" in edited.stderr


def crd_has_timeout_rule(plane: ControlPlane) -> bool:
    return TIMEOUT_RULE in json.dumps(get(plane, "crd", f"taskruns.{GROUP}"))


@pytest.fixture
def chart_0_1_0(tmp_path: Path) -> Path:
    extract(RELEASE_0_1_0, ["charts/ona-taskrun-operator"], tmp_path / "0.1.0")
    chart = tmp_path / "0.1.0" / "charts" / "ona-taskrun-operator"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == "0.1.0"
    return chart


@pytest.fixture
def installed_0_1_0(
    bare_control_plane: ControlPlane, chart_0_1_0: Path
) -> dict[tuple[str, str], dict[str, Any]]:
    """The 0.1.0 chart installed as its README said (Helm installs crds/), with objects."""
    helm(bare_control_plane, "install", RELEASE, str(chart_0_1_0), "-n", SYSTEM,
         "--create-namespace")  # fmt: skip
    assert not crd_has_timeout_rule(bare_control_plane)
    before = objects_of_0_1_0(bare_control_plane)
    assert not unserved_methods_kept(bare_control_plane), "0.1.0's schema should prune it"
    # A timeout over 720h was allowed then.
    assert before[("taskrun", "long")]["spec"]["timeout"] == "1000h"
    return before


def test_helm_takes_the_crds_over_and_upgrades_them_with_the_release(
    bare_control_plane: ControlPlane, installed_0_1_0: dict[tuple[str, str], dict[str, Any]]
) -> None:
    plane = bare_control_plane
    # Without --take-ownership Helm refuses: the CRDs from crds/ carry no release metadata.
    refused = tools.run(
        "helm", f"--kubeconfig={plane.admin_kubeconfig}", "upgrade", RELEASE, str(CHART),
        "-n", SYSTEM, "--set", "crds.enabled=true",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "cannot be imported into the current release" in refused.stderr
    assert not crd_has_timeout_rule(plane)

    helm(plane, "upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--set", "crds.enabled=true",
         "--take-ownership")  # fmt: skip
    assert crd_has_timeout_rule(plane)
    for name in CRD_NAMES:
        metadata = get(plane, "crd", name)["metadata"]
        assert metadata["annotations"]["helm.sh/resource-policy"] == "keep"
        assert metadata["annotations"]["meta.helm.sh/release-name"] == RELEASE
    assert_survived(plane, installed_0_1_0)
    assert_current_crds_work(plane)

    # Uninstalling keeps the CRDs, and so every object.
    helm(plane, "uninstall", RELEASE, "-n", SYSTEM)
    for name in CRD_NAMES:
        assert get(plane, "crd", name)["metadata"].get("deletionTimestamp") is None
    assert (
        get(plane, "taskrun", "running")["metadata"]["uid"]
        == (installed_0_1_0[("taskrun", "running")]["metadata"]["uid"])
    )


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(["-f", str(CHART / "crds")], id="chart-crds-folder"),
        pytest.param(["-k", str(REPO_ROOT / "crds")], id="kustomize-crds"),
    ],
)
def test_kubectl_server_side_apply_upgrades_the_crds_of_a_helm_install(
    bare_control_plane: ControlPlane,
    installed_0_1_0: dict[tuple[str, str], dict[str, Any]],
    source: list[str],
) -> None:
    plane = bare_control_plane
    # Helm created the CRDs and owns their fields: a plain server-side apply conflicts.
    conflict = plane.kubectl_run("apply", "--server-side", *source, check=False)
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr
    assert not crd_has_timeout_rule(plane)

    plane.kubectl_run("apply", "--server-side", "--force-conflicts", *source)
    helm(plane, "upgrade", RELEASE, str(CHART), "-n", SYSTEM)
    assert crd_has_timeout_rule(plane)
    assert_survived(plane, installed_0_1_0)
    assert_current_crds_work(plane)


def test_kubectl_server_side_apply_upgrades_the_crds_of_a_kustomize_install(
    bare_control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Installed with `kubectl apply -k` (client-side) from 0.1.0's crds/: the server-side
    apply takes the fields over from kubectl's client-side apply without a conflict."""
    plane = bare_control_plane
    old = extract(RELEASE_0_1_0, ["crds"], tmp_path / "0.1.0") / "crds"
    plane.kubectl_run("apply", "-k", str(old))
    plane.kubectl_run("wait", "--for=condition=Established", "--timeout=60s", "crd", *CRD_NAMES)
    before = objects_of_0_1_0(plane)
    assert not crd_has_timeout_rule(plane)
    plane.kubectl_run("apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
    assert crd_has_timeout_rule(plane)
    assert_survived(plane, before)
    assert_current_crds_work(plane)


INSTALL = ["install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace"]


def test_a_fresh_install_with_crd_templates_is_refused_without_skip_crds(
    bare_control_plane: ControlPlane,
) -> None:
    """Helm creates crds/ first, then refuses to adopt them as the templates' objects."""
    plane = bare_control_plane
    refused = tools.run(
        "helm", f"--kubeconfig={plane.admin_kubeconfig}", *INSTALL, "--set", "crds.enabled=true"
    )
    assert refused.returncode != 0
    assert "cannot be imported into the current release" in refused.stderr


def test_a_fresh_install_with_crd_templates_and_skip_crds_keeps_them_on_uninstall(
    bare_control_plane: ControlPlane,
) -> None:
    plane = bare_control_plane
    helm(plane, *INSTALL, "--skip-crds", "--set", "crds.enabled=true")
    for name in CRD_NAMES:
        metadata = get(plane, "crd", name)["metadata"]
        assert metadata["annotations"]["meta.helm.sh/release-name"] == RELEASE
        assert metadata["annotations"]["helm.sh/resource-policy"] == "keep"
    plane.kubectl_run("wait", "--for=condition=Established", "--timeout=60s", "crd", *CRD_NAMES)
    plane.kubectl_run("create", "namespace", TEAM)
    apply(plane, taskrun("kept"))
    helm(plane, "uninstall", RELEASE, "-n", SYSTEM)
    assert get(plane, "taskrun", "kept")["spec"]["task"]["command"] == "make"
