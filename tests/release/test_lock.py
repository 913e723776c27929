"""The locked dependency sets cannot drift from pyproject.toml, and the image installs
the runtime one with every hash checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.release.lockfile import (
    BUILD_LOCK,
    CLI_LOCK,
    REPO_ROOT,
    RUNTIME_LOCK,
    Pin,
    build_requirements,
    declared,
    read_lock,
)

LOCKS = {
    RUNTIME_LOCK: lambda: declared("operator"),
    CLI_LOCK: lambda: declared(),
    BUILD_LOCK: build_requirements,
}
OPERATOR_ONLY = {canonicalize_name(r.name) for r in declared("operator")} - {
    canonicalize_name(r.name) for r in declared()
}


def uncovered(requirements: list[Requirement], pins: dict[NormalizedName, Pin]) -> list[str]:
    """What of `requirements` the pins miss or pin outside the declared range."""
    problems = []
    for requirement in requirements:
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement} is pinned to {pin.version}, outside the range")
    return problems


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda path: path.name)
def test_lock_pins_every_declared_dependency_within_its_range(lock: Path) -> None:
    pins = read_lock(lock)
    assert uncovered(LOCKS[lock](), pins) == [], "run scripts/lock"


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda path: path.name)
def test_every_pin_carries_sha256_hashes(lock: Path) -> None:
    for pin in read_lock(lock).values():
        assert pin.hashes, pin.name
        assert all(h.startswith("sha256:") and len(h) == len("sha256:") + 64 for h in pin.hashes)


def test_cli_lock_leaves_out_the_operators_own_dependencies() -> None:
    assert {"kopf", "prometheus-client"} <= OPERATOR_ONLY
    assert set(read_lock(CLI_LOCK)) & OPERATOR_ONLY == set()


def test_cli_lock_agrees_with_the_runtime_lock() -> None:
    # One set of versions: the plugin and the image run the same client code on the same
    # libraries.
    runtime = read_lock(RUNTIME_LOCK)
    for name, pin in read_lock(CLI_LOCK).items():
        assert name in runtime, name
        assert runtime[name].version == pin.version, name


def test_uncovered_sees_a_missing_and_an_out_of_range_pin() -> None:
    pins = read_lock(RUNTIME_LOCK)
    kopf = pins[canonicalize_name("kopf")]
    assert uncovered([Requirement("not-a-dependency-of-ours>=1")], pins) == [
        "not-a-dependency-of-ours>=1 is not in the lock"
    ]
    assert uncovered([Requirement(f"kopf>{kopf.version}")], pins) == [
        f"kopf>{kopf.version} is pinned to {kopf.version}, outside the range"
    ]


def test_read_lock_refuses_a_range_or_a_pin_without_hash(tmp_path: Path) -> None:
    ranged = tmp_path / "ranged.lock"
    ranged.write_text("kopf>=1.45 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        read_lock(ranged)
    bare = tmp_path / "bare.lock"
    bare.write_text("kopf==1.45.2\n")
    with pytest.raises(ValueError, match="has no hash"):
        read_lock(bare)


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    return [i.strip() for i in re.split(r"\n(?=[A-Z]+ )", "\n".join(lines).replace("\\\n", " "))]


def test_image_installs_from_the_locks_with_hashes_required() -> None:
    runs = [i for i in _instructions((REPO_ROOT / "Dockerfile").read_text()) if i.startswith("RUN")]
    installs = [
        part.strip()
        for run in runs
        for part in run.split("&&")
        if re.search(r"\bpip install\b", part)
    ]
    from_locks = [i for i in installs if "--requirement" in i]
    assert from_locks, installs
    for install in from_locks:
        assert "--require-hashes" in install, install
        assert "--only-binary :all:" in install, install
    locks = {
        word for install in from_locks for word in re.findall(r"--requirement\s+(\S+)", install)
    }
    assert locks == {RUNTIME_LOCK.name, BUILD_LOCK.name}
    # Every other install takes only the operator's own wheel, from no index.
    for install in set(installs) - set(from_locks):
        assert "--no-deps" in install, install
        assert "--no-index" in install, install
    # The locks are in the build context.
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert {f"!{RUNTIME_LOCK.name}", f"!{BUILD_LOCK.name}"} <= set(ignore)
