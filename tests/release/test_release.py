"""scripts/release: the artifacts a user pins (install.yaml, the chart package, the krew
plugin, the SBOM, and the image where one can be built), each of the version in
pyproject.toml, and listed with its sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.image import cannot_build_images
from tests.release.krew import installed_files, problems
from tests.release.lockfile import CLI_LOCK, REPO_ROOT, RUNTIME_LOCK, read_lock
from tests.release.test_version import VERSION, released_image

pytestmark = pytest.mark.slow

CRD_NAMES = {
    "taskruns.automation.ona.com",
    "onaconnections.automation.ona.com",
    "clusteronaconnections.automation.ona.com",
    "taskrunschedules.automation.ona.com",
}
SYFT = Path(
    os.environ.get("SYFT")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "ona-taskrun/syft/v1.57.2/syft"
)


@dataclass
class Release:
    out: Path
    returncode: int
    stdout: str
    stderr: str

    def printed(self) -> dict[Path, str]:
        """The artifacts the script printed, with the sha256 it printed for each."""
        listed = {}
        for line in self.stdout.splitlines():
            digest, _, path = line.partition("  ")
            listed[Path(path)] = digest
        return listed


# What scripts/release reads. The fixtures release from a copy of them, so the two
# releases compared below see the same sources even while the work tree changes.
RELEASE_INPUTS = (
    "scripts/release",
    "scripts/build-image",
    "scripts/build-tools",
    "scripts/build-control-plane",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "requirements-build.lock",
    "requirements-cli.lock",
    "operator",
    "charts",
    "manifests",
    "crds",
    "plugins",
)


def copy_sources(folder: Path) -> Path:
    for name in RELEASE_INPUTS:
        source, target = REPO_ROOT / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(source, target, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(source, target)
    return folder


def run_release(
    out: Path, *args: str, env: dict[str, str] | None = None, tree: Path = REPO_ROOT
) -> Release:
    result = subprocess.run(
        [str(tree / "scripts" / "release"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=2400,
        env=env,
        check=False,
    )
    return Release(out, result.returncode, result.stdout, result.stderr)


def path_without(names: set[str], folder: Path) -> str:
    """A PATH of one folder holding links to every program on PATH except `names`."""
    for entry in os.environ["PATH"].split(os.pathsep):
        if not entry or not Path(entry).is_dir():
            continue
        for program in Path(entry).iterdir():
            link = folder / program.name
            if program.name in names or link.exists() or link.is_symlink():
                continue
            if program.is_file() and os.access(program, os.X_OK):
                link.symlink_to(program)
    return str(folder)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def without_image(tmp_path_factory: pytest.TempPathFactory, sources: Path) -> Release:
    """A release where no image can be built: buildah and debootstrap are not on PATH."""
    programs = tmp_path_factory.mktemp("path")
    env = {**os.environ, "PATH": path_without({"buildah", "debootstrap"}, programs)}
    return run_release(tmp_path_factory.mktemp("release"), env=env, tree=sources)


@pytest.fixture(scope="module")
def no_image_flag(
    tmp_path_factory: pytest.TempPathFactory, sources: Path, without_image: Release
) -> Release:
    return run_release(tmp_path_factory.mktemp("release-no-image"), "--no-image", tree=sources)


def test_without_an_image_the_release_builds_the_rest_and_fails_saying_why(
    without_image: Release,
) -> None:
    assert without_image.returncode == 1, without_image.stderr
    last = without_image.stderr.strip().splitlines()[-1]
    assert last.startswith("release: no image: ")
    assert "buildah is missing" in last or "needs root" in last
    assert "--no-image" in last
    names = {path.name for path in without_image.printed()}
    assert names == {
        "install.yaml",
        f"ona-taskrun-operator-{VERSION}.tgz",
        f"kubectl-ona-{VERSION}.tar.gz",
        "ona.yaml",
        "sbom-python.cdx.json",
    }


def test_no_image_flag_releases_the_same_artifacts(
    without_image: Release, no_image_flag: Release
) -> None:
    assert no_image_flag.returncode == 0, no_image_flag.stderr
    # The same sources give the same artifacts, byte for byte.
    first = {path.name: digest for path, digest in without_image.printed().items()}
    second = {path.name: digest for path, digest in no_image_flag.printed().items()}
    assert first == second


def test_printed_digests_are_the_artifacts_and_sha256sums_lists_them(
    without_image: Release,
) -> None:
    printed = without_image.printed()
    for path, digest in printed.items():
        assert path.parent == without_image.out
        assert sha256(path) == digest, path
    sums = (without_image.out / "SHA256SUMS").read_text().splitlines()
    assert sorted(sums) == sorted(f"{digest}  {path.name}" for path, digest in printed.items())


def test_install_yaml_holds_the_crds_and_the_operator_of_the_version(
    without_image: Release, sources: Path
) -> None:
    objects = [doc for doc in yaml.safe_load_all((without_image.out / "install.yaml").read_text())]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects if o}
    assert {("CustomResourceDefinition", name) for name in CRD_NAMES} <= kinds
    assert ("Namespace", "ona-system") in kinds
    (deployment,) = [o for o in objects if o and o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == released_image()
    assert container["image"].endswith(f":{VERSION}")
    # The CRDs are those of the repository, unchanged.
    for path in (sources / "crds").glob("*.automation.ona.com.yaml"):
        source = yaml.safe_load(path.read_text())
        (released,) = [o for o in objects if o and o["metadata"]["name"] == path.stem]
        assert released["spec"] == source["spec"], path.name


def test_install_yaml_names_another_image_when_told(tmp_path: Path) -> None:
    env = {**os.environ, "ONA_RELEASE_IMAGE": "registry.example.com/mirror/operator:0.2.0-m1"}
    release = run_release(tmp_path, "--no-image", env=env)
    assert release.returncode == 0, release.stderr
    objects = yaml.safe_load_all((tmp_path / "install.yaml").read_text())
    (deployment,) = [o for o in objects if o and o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/mirror/operator:0.2.0-m1"


def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None, name
        return member.read()


def test_chart_package_is_of_the_version(without_image: Release) -> None:
    package = without_image.out / f"ona-taskrun-operator-{VERSION}.tgz"
    chart = yaml.safe_load(_member(package, "ona-taskrun-operator/Chart.yaml"))
    assert chart["version"] == VERSION
    assert chart["appVersion"] == VERSION
    values = yaml.safe_load(_member(package, "ona-taskrun-operator/values.yaml"))
    assert f"{values['image']['repository']}:{values['image']['tag']}" == released_image()
    with tarfile.open(package) as tar:
        crds = {Path(n).name for n in tar.getnames() if "/crds/" in n}
    assert {f"{name}.yaml" for name in CRD_NAMES} <= crds


def _components(sbom: dict[str, Any]) -> dict[str, set[str]]:
    """The SBOM's PyPI packages: normalized name -> versions."""
    found: dict[str, set[str]] = {}
    for component in sbom.get("components", []):
        purl = component.get("purl", "")
        if purl.startswith("pkg:pypi/"):
            name, _, version = purl.removeprefix("pkg:pypi/").partition("@")
            found.setdefault(name.replace("_", "-").lower(), set()).add(version.split("?")[0])
    return found


def test_python_sbom_lists_every_pinned_package(without_image: Release) -> None:
    sbom = json.loads((without_image.out / "sbom-python.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "ona-taskrun-operator"
    assert sbom["metadata"]["component"]["version"] == VERSION
    components = _components(sbom)
    for name, pin in read_lock(RUNTIME_LOCK).items():
        assert str(pin.version) in components.get(name, set()), name


def test_krew_manifest_names_the_archive_by_its_digest(without_image: Release) -> None:
    manifest = yaml.safe_load((without_image.out / "ona.yaml").read_text())
    assert problems(manifest, filename="ona.yaml", sha256_placeholder=None) == []
    archive = without_image.out / f"kubectl-ona-{VERSION}.tar.gz"
    (platform,) = manifest["spec"]["platforms"]
    assert platform["sha256"] == sha256(archive)
    assert platform["uri"].rsplit("/", 1)[1] == archive.name
    files = installed_files(archive, platform)
    assert files[platform["bin"]].mode & 0o111
    assert {
        "LICENSE",
        "requirements-cli.lock",
        f"ona_taskrun_operator-{VERSION}-py3-none-any.whl",
    } <= set(files)


def test_krew_launcher_installs_and_runs_kubectl_ona_alone(
    without_image: Release, tmp_path: Path
) -> None:
    # As krew does: the archive unpacked in a store, the bin linked from krew's bin folder.
    store, bin_folder = tmp_path / "store", tmp_path / "bin"
    store.mkdir()
    bin_folder.mkdir()
    with tarfile.open(without_image.out / f"kubectl-ona-{VERSION}.tar.gz") as tar:
        tar.extractall(store, filter="data")
    (bin_folder / "kubectl-ona").symlink_to(store / "kubectl-ona")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("VIRTUAL_ENV", None)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_folder / "kubectl-ona"), "--version"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"kubectl ona {VERSION}"
    assert "first run" in first.stderr
    (venv,) = (tmp_path / "cache" / "kubectl-ona").iterdir()
    installed = {
        p.name.split("-")[0].replace("_", "-").lower()
        for p in venv.glob("lib/python*/site-packages/*.dist-info")
    }
    # The venv's own pip (and setuptools before Python 3.12), the lock and the plugin.
    assert installed - {"pip", "setuptools"} == set(read_lock(CLI_LOCK)) | {"ona-taskrun-operator"}
    second = run()
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"kubectl ona {VERSION}"
    assert second.stderr == ""


def test_release_refuses_a_chart_of_another_version(tmp_path: Path) -> None:
    for name in (
        "scripts/release",
        "pyproject.toml",
        "CHANGELOG.md",
        "charts/ona-taskrun-operator/Chart.yaml",
        "charts/ona-taskrun-operator/values.yaml",
        "manifests/manager/deployment.yaml",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    chart = tmp_path / "charts/ona-taskrun-operator/Chart.yaml"
    chart.write_text(chart.read_text().replace(f"version: {VERSION}\n", "version: 9.9.9\n"))
    result = subprocess.run(
        [str(tmp_path / "scripts/release"), "--no-image"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"release: the chart says version 9.9.9, appVersion {VERSION}; "
        f"pyproject.toml says {VERSION}"
    )
    assert not (tmp_path / "dist").exists()


@pytest.mark.skipif(cannot_build_images() is not None, reason=str(cannot_build_images()))
@pytest.mark.skipif(
    not SYFT.is_file(), reason=f"syft is not built ({SYFT}): scripts/release --prepare builds it"
)
def test_release_with_the_image(tmp_path: Path) -> None:
    release = run_release(tmp_path, env={**os.environ, "SYFT": str(SYFT)})
    assert release.returncode == 0, release.stderr[-4000:]
    archive = tmp_path / f"ona-taskrun-operator-{VERSION}-image.tar"
    assert archive in release.printed()
    # The archive holds the image under its released name, with the digest recorded.
    index = json.loads(_member(archive, "index.json"))
    (manifest,) = index["manifests"]
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == released_image()
    assert (tmp_path / "image-digest").read_text().strip() == manifest["digest"]
    # The image's SBOM lists the operator, every locked package, and the base's python3.
    sbom = json.loads((tmp_path / "sbom-image.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    components = _components(sbom)
    assert VERSION in components.get("ona-taskrun-operator", set())
    for name, pin in read_lock(RUNTIME_LOCK).items():
        assert str(pin.version) in components.get(name, set()), name
    debian = {c["name"] for c in sbom["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert "python3" in debian
