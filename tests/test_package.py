"""The package layout: the source folder is not a package that shadows the standard library,
the Ona API simulator is a distribution of its own, apart from the operator's, and
`kubectl ona` runs on the base dependencies alone."""

import ast
import json
import operator
import pkgutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import ona_taskrun
from tests.release.lockfile import CLI_LOCK, RUNTIME_LOCK, read_lock


def test_import_operator_is_the_standard_library() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(operator.__file__).resolve().parent == stdlib
    assert operator.add(2, 3) == 5


def test_package_imports_by_its_own_name() -> None:
    assert Path(ona_taskrun.__file__).resolve().parent.parent.name == "operator"


REPO_ROOT = Path(__file__).resolve().parent.parent


def _pyproject(folder: Path) -> dict[str, Any]:
    with (folder / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _packages(folder: Path) -> list[str]:
    """The packages setuptools puts in the distribution built from `folder`."""
    find = _pyproject(folder)["tool"]["setuptools"]["packages"]["find"]
    wheres = find.get("where", ["."])
    return sorted(
        package
        for where in wheres
        for package in setuptools.find_packages(
            where=str(folder / where),
            include=find.get("include", ["*"]),
            exclude=find.get("exclude", []),
        )
    )


def _imported_modules(root: Path) -> set[str]:
    modules: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
    return modules


def test_operator_distribution_holds_no_simulator() -> None:
    # The simulator is a test double: the operator's wheel, and so its image, must not
    # carry it or a command that starts it.
    packages = _packages(REPO_ROOT)
    assert "ona_taskrun" in packages
    assert [p for p in packages if "simulator" in p] == []
    scripts = _pyproject(REPO_ROOT)["project"]["scripts"]
    assert "ona-simulator" not in scripts
    assert [s for s in scripts.values() if "simulator" in s] == []


def test_simulator_is_its_own_distribution() -> None:
    folder = REPO_ROOT / "simulator"
    project = _pyproject(folder)["project"]
    assert project["name"] == "ona-simulator"
    assert project["scripts"] == {"ona-simulator": "ona_simulator.__main__:main"}
    assert {p.partition(".")[0] for p in _packages(folder)} == {"ona_simulator"}


def test_operator_and_simulator_import_nothing_of_each_other() -> None:
    # The simulator must stay an independent reading of the Ona API, not a reuse of the
    # operator's client; and the product must run without the test double installed.
    def names(modules: set[str], package: str) -> set[str]:
        return {m for m in modules if m == package or m.startswith(package + ".")}

    assert names(_imported_modules(REPO_ROOT / "operator"), "ona_simulator") == set()
    assert names(_imported_modules(REPO_ROOT / "simulator"), "ona_taskrun") == set()


# A child interpreter that refuses every third-party module installed here by a
# distribution outside `allowed`, then imports `modules`: what those modules need beyond
# `allowed` fails there.
_ONLY_ALLOWED = r"""
import importlib, importlib.abc, importlib.metadata, json, re, sys

allowed, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
owners = importlib.metadata.packages_distributions()


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


class OnlyAllowed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top == "ona_taskrun" or top.startswith("_"):
            return None
        found = {normalize(d) for d in owners.get(top, [])}
        # What no distribution here provides is missing anyway (optional imports probe
        # for such modules): the normal finders say so.
        if not found or found & set(allowed):
            return None
        raise ModuleNotFoundError(f"{name} is not allowed here", name=name)


sys.meta_path.insert(0, OnlyAllowed())
for module in modules:
    importlib.import_module(module)
"""


def _import_with_only(allowed: set[str], modules: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _ONLY_ALLOWED, json.dumps(sorted(allowed)), json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _operator_modules() -> list[str]:
    # `python -m ona_taskrun.cli` runs the command on import: its module is left out.
    return sorted(
        m.name
        for m in pkgutil.walk_packages(ona_taskrun.__path__, "ona_taskrun.")
        if m.name != "ona_taskrun.cli.__main__"
    )


def test_kubectl_ona_needs_only_the_base_dependencies() -> None:
    # `pipx install ona-taskrun-operator` gets kubectl ona without the extra `operator`:
    # the plugin must import with requirements-cli.lock alone (the base dependencies and
    # what they need), never kopf or prometheus-client.
    allowed = set(read_lock(CLI_LOCK))
    result = _import_with_only(allowed, ["ona_taskrun.cli", "ona_taskrun.cli.main"])
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_check_sees_a_module_outside_the_allowed_set() -> None:
    allowed = set(read_lock(CLI_LOCK))
    result = _import_with_only(allowed, ["ona_taskrun.__main__"])
    assert result.returncode != 0
    assert "kopf is not allowed here" in result.stderr


def test_the_runtime_lock_covers_every_module_of_the_operator() -> None:
    # The image installs requirements.lock and nothing else: every module of the package
    # must import with it.
    result = _import_with_only(set(read_lock(RUNTIME_LOCK)), _operator_modules())
    assert result.returncode == 0, result.stderr[-3000:]


def test_operator_dependencies_are_the_extra_operator() -> None:
    project = _pyproject(REPO_ROOT)["project"]
    base = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    operator_extra = {
        canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["operator"]
    }
    assert {"kopf", "prometheus-client"} <= operator_extra
    assert base & operator_extra == set()
    # The development install (scripts/bootstrap: `.[test]`) gets the operator too.
    assert "ona-taskrun-operator[operator]" in project["optional-dependencies"]["test"]
