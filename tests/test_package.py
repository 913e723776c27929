"""The package layout: the source folder is not a package that shadows the standard library."""

import operator
import sysconfig
from pathlib import Path

import ona_taskrun


def test_import_operator_is_the_standard_library() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(operator.__file__).resolve().parent == stdlib
    assert operator.add(2, 3) == 5


def test_package_imports_by_its_own_name() -> None:
    assert Path(ona_taskrun.__file__).resolve().parent.parent.name == "operator"
