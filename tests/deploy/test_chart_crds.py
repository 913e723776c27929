"""The chart's `crds.*` values: with crds.enabled the CRDs are templates of the release
(so `helm upgrade` upgrades them), read from the chart's crds/ folder, which
scripts/sync-monitoring copies from crds/. One CRD text, two paths: these tests fail when
the rendered CRDs and the files in crds/ differ in anything but the release's labels and
the keep annotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_chart import CHART, template
from tests.support import tools

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO_ROOT / "crds").glob("*.automation.ona.com.yaml"))
KEEP = "helm.sh/resource-policy"


def crds(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "CustomResourceDefinition"}


def sources() -> dict[str, dict[str, Any]]:
    loaded = [yaml.safe_load(path.read_text()) for path in SOURCES]
    return {crd["metadata"]["name"]: crd for crd in loaded}


def test_by_default_no_crd_is_a_template() -> None:
    assert crds(template()) == {}


def test_enabled_renders_every_crd_of_crds_folder_unchanged() -> None:
    rendered = crds(template("crds.enabled=true"))
    wanted = sources()
    assert sorted(rendered) == sorted(wanted)
    assert len(wanted) == 4
    for name, crd in rendered.items():
        source = wanted[name]
        assert crd["apiVersion"] == source["apiVersion"]
        assert crd["spec"] == source["spec"], name
        metadata = dict(crd["metadata"])
        labels, annotations = metadata.pop("labels"), metadata.pop("annotations")
        assert metadata == {k: v for k, v in source["metadata"].items() if k != "labels"}
        # The CRD's own labels stay; the release's are added, so Helm owns the object.
        assert source["metadata"]["labels"].items() <= labels.items()
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "ona-taskrun-operator"
        assert annotations == {KEEP: "keep"}


def test_keep_false_lets_uninstall_delete_the_crds() -> None:
    for crd in crds(template("crds.enabled=true", "crds.keep=false")).values():
        assert KEEP not in (crd["metadata"].get("annotations") or {})


def test_the_charts_crds_folder_is_the_repositorys() -> None:
    """The chart reads its own crds/ (a chart sees no file outside its folder); the copy
    is scripts/sync-monitoring's. Byte for byte, so Helm's first install is the same too."""
    copies = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in copies] == [p.name for p in SOURCES]
    for source, copy in zip(SOURCES, copies, strict=True):
        assert copy.read_bytes() == source.read_bytes(), f"run scripts/sync-monitoring: {copy}"


def test_the_kustomization_lists_every_crd() -> None:
    """`kubectl apply -k crds/` and `-f crds/` apply the same four CRDs."""
    kustomization = yaml.safe_load((REPO_ROOT / "crds" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in SOURCES]


@pytest.mark.parametrize("sets", [["crds.enabled=true"], ["crds.enabled=true", "crds.keep=false"]])
def test_lint_accepts_the_crd_templates(sets: list[str]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in sets:
        args += ["--set", value]
    result = tools.run("helm", *args)
    assert result.returncode == 0, result.stdout + result.stderr
