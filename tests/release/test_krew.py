"""The krew manifest of kubectl ona: valid as krew's index checks it, and of this version."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.release.krew import problems
from tests.release.lockfile import REPO_ROOT, pyproject

MANIFEST = REPO_ROOT / "plugins" / "krew" / "ona.yaml"
PLACEHOLDER = "SHA256_OF_THE_RELEASE_ARCHIVE"
VERSION = pyproject()["project"]["version"]


def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return loaded


def test_manifest_is_a_valid_krew_plugin_template() -> None:
    assert problems(manifest(), filename=MANIFEST.name, sha256_placeholder=PLACEHOLDER) == []


def test_manifest_is_of_this_version() -> None:
    spec = manifest()["spec"]
    assert spec["version"] == f"v{VERSION}"
    for platform in spec["platforms"]:
        assert platform["uri"].endswith(f"/v{VERSION}/kubectl-ona-{VERSION}.tar.gz")


def test_plugin_is_kubectl_ona_on_linux_and_macos() -> None:
    data = manifest()
    assert data["metadata"]["name"] == "ona"
    (platform,) = data["spec"]["platforms"]
    assert platform["bin"] == "kubectl-ona"
    (expression,) = platform["selector"]["matchExpressions"]
    assert expression == {"key": "os", "operator": "In", "values": ["darwin", "linux"]}
    # The launcher krew runs is the one in plugins/krew, and it is executable.
    launcher = MANIFEST.parent / platform["bin"]
    assert launcher.stat().st_mode & 0o111
    assert launcher.read_text().startswith("#!/bin/sh\n")


def test_problems_sees_each_kind_of_mistake() -> None:
    good = manifest()
    assert problems(good, filename="other.yaml", sha256_placeholder=PLACEHOLDER) == [
        "the file other.yaml is not named after the plugin (ona.yaml)"
    ]
    # A template is not a release manifest: its sha256 is no digest.
    assert problems(good, filename="ona.yaml", sha256_placeholder=None) == [
        f"spec.platforms[0].sha256 {PLACEHOLDER!r} is not 64 lowercase hex digits"
    ]
    bad = copy.deepcopy(good)
    bad["apiVersion"] = "krew.googlecontainertools.github.com/v1alpha1"
    bad["spec"]["version"] = "0.2.0"
    bad["spec"]["shortDescription"] = ""
    platform = bad["spec"]["platforms"][0]
    platform["selector"] = {"matchLabels": {"os": "plan9"}}
    platform["uri"] = "http://example.com/x.tar.gz"
    platform["bin"] = "bin/kubectl-ona"
    platform["files"] = []
    assert problems(bad, filename="ona.yaml", sha256_placeholder=PLACEHOLDER) == [
        "apiVersion is 'krew.googlecontainertools.github.com/v1alpha1', "
        "not krew.googlecontainertools.github.com/v1alpha2",
        "spec.version '0.2.0' is not a semantic version with 'v'",
        "spec.shortDescription is empty",
        "spec.platforms[0]: selector os values ['plan9'] are not known to krew",
        "spec.platforms[0].uri is not an https URL",
        "spec.platforms[0].bin 'bin/kubectl-ona' is not a file name",
        "spec.platforms[0].files is empty",
    ]


def test_launcher_path_is_what_the_release_packs() -> None:
    # scripts/release copies the launcher from here into the archive.
    release = (REPO_ROOT / "scripts" / "release").read_text()
    assert "plugins/krew/kubectl-ona" in release
    assert Path("plugins/krew/ona.yaml").as_posix() in release
