"""Reads the lock files scripts/lock writes (pip's requirements format, one pin per package
with its hashes) and the dependencies pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = REPO_ROOT / "requirements.lock"
CLI_LOCK = REPO_ROOT / "requirements-cli.lock"
BUILD_LOCK = REPO_ROOT / "requirements-build.lock"

_HASH = re.compile(r"--hash=(?P<algorithm>[a-z0-9]+):(?P<digest>[0-9a-f]+)$")


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]


def read_lock(path: Path) -> dict[NormalizedName, Pin]:
    """The pins of a lock file by normalized name; ValueError for anything but exact pins
    with hashes."""
    # Continuation lines join one requirement with its options; comments stand alone.
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending.strip())

    pins: dict[NormalizedName, Pin] = {}
    for entry in logical:
        requirement_text, *options = entry.split(" --")
        options = ["--" + option.strip() for option in options]
        requirement = Requirement(requirement_text.strip())
        specs = list(requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            raise ValueError(f"{path.name}: {requirement_text!r} is not an exact pin")
        (spec,) = specs
        hashes = []
        for option in options:
            match = _HASH.match(option)
            if match is None:
                raise ValueError(f"{path.name}: unexpected option {option!r}")
            hashes.append(f"{match['algorithm']}:{match['digest']}")
        if not hashes:
            raise ValueError(f"{path.name}: {requirement.name} has no hash")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"{path.name}: {name} is pinned twice")
        pins[name] = Pin(name, Version(spec.version), requirement.marker, tuple(hashes))
    return pins


def pyproject() -> dict[str, Any]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def declared(*extras: str) -> list[Requirement]:
    """The base dependencies and those of `extras`, without self-references."""
    project = pyproject()["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    requirements = [Requirement(text) for text in texts]
    return [r for r in requirements if canonicalize_name(r.name) != project["name"]]


def build_requirements() -> list[Requirement]:
    return [Requirement(text) for text in pyproject()["build-system"]["requires"]]
