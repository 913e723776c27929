"""What the project says about Kubernetes versions is what tests/compat tests: the chart's
kubeVersion starts at the oldest tested minor, and the README and docs/deploy.md name the
versions the tests run on (tests/compat/versions.py, and scripts/build-control-plane's
default for the rest of the suite)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.compat.versions import MIDDLE, OLDEST

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_version() -> str:
    script = (REPO_ROOT / "scripts" / "build-control-plane").read_text()
    found = re.search(r'K8S_VERSION="\$\{K8S_VERSION:-(v[0-9.]+)\}"', script)
    assert found, "scripts/build-control-plane sets no default K8S_VERSION"
    return found.group(1)


def minor(version: str) -> str:
    return ".".join(version.removeprefix("v").split(".")[:2])


def test_the_charts_kube_version_starts_at_the_oldest_tested() -> None:
    chart = yaml.safe_load(
        (REPO_ROOT / "charts" / "ona-taskrun-operator" / "Chart.yaml").read_text()
    )
    assert chart["kubeVersion"] == f">={minor(OLDEST)}.0-0"


def test_the_readme_and_deploy_md_name_the_tested_versions() -> None:
    tested = [minor(v) for v in (OLDEST, MIDDLE, default_version())]
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"**Kubernetes {tested[0]} or later**" in readme
    assert f"tested on {tested[0]}, {tested[1]} and {tested[2]}" in readme
    deploy = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert f"**Kubernetes {tested[0]} or later**" in deploy
    exact = [v.removeprefix("v") for v in (OLDEST, MIDDLE, default_version())]
    assert f"**{exact[0]}, {exact[1]} and {exact[2]}**" in deploy
