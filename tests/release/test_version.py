"""One version, pyproject.toml's: the package, both commands, the chart, the image the
chart and the manifests deploy, and the changelog's latest release all say the same."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from packaging.version import Version

import ona_taskrun
from tests.release.lockfile import REPO_ROOT, pyproject

VERSION = pyproject()["project"]["version"]
CHART = REPO_ROOT / "charts" / "ona-taskrun-operator"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def released_image() -> str:
    """The image reference the chart's default values give."""
    image = _yaml(CHART / "values.yaml")["image"]
    return f"{image['repository']}:{image['tag']}"


def test_version_is_a_release_version() -> None:
    version = Version(VERSION)
    assert str(version) == VERSION
    assert not version.is_prerelease
    assert not version.is_devrelease
    assert not version.local


def test_installed_package_reports_the_version() -> None:
    # A stale install (pyproject changed, scripts/bootstrap not run again) fails here.
    assert ona_taskrun.__version__ == VERSION


def _command(module: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_taskrun_operator_version() -> None:
    assert _command("ona_taskrun", "--version") == f"taskrun-operator {VERSION}"


def test_kubectl_ona_version() -> None:
    assert _command("ona_taskrun.cli", "--version") == f"kubectl ona {VERSION}"


def test_chart_version_and_app_version() -> None:
    chart = _yaml(CHART / "Chart.yaml")
    assert chart["version"] == VERSION
    assert chart["appVersion"] == VERSION


def test_chart_deploys_the_image_of_the_version() -> None:
    image = _yaml(CHART / "values.yaml")["image"]
    assert image["tag"] == VERSION
    # A released reference: not the name scripts/build-image gives a local build.
    assert not image["repository"].startswith("localhost/")


def test_manifests_deploy_the_same_image() -> None:
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all((REPO_ROOT / "manifests/manager/deployment.yaml").read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == released_image()


def test_changelog_names_the_version_as_its_latest_release() -> None:
    headings = re.findall(r"^## (.+)$", (REPO_ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == "Unreleased"
    match = re.fullmatch(r"(\S+) - (\d{4}-\d{2}-\d{2})", headings[1])
    assert match, f"the latest release heading {headings[1]!r} is not 'VERSION - YYYY-MM-DD'"
    assert match[1] == VERSION
