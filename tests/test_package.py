"""The package layout: the source folder is not a package that shadows the standard library,
and the Ona API simulator is a distribution of its own, apart from the operator's."""

import ast
import operator
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import setuptools

import ona_taskrun


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
