"""The tests in this folder run the real Tekton controller (tests/support/tekton.py), all
but those that ask for no `tekton` fixture (the Argo Workflows recipe's)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support.tekton import LOG_TAIL_LINES, Tekton, tekton

__all__ = ["tekton"]

_TEKTON = pytest.StashKey[Tekton]()


@pytest.fixture(autouse=True)
def _remember_tekton(request: pytest.FixtureRequest) -> None:
    if "tekton" in request.fixturenames:
        request.node.stash[_TEKTON] = request.getfixturevalue("tekton")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    found = item.stash.get(_TEKTON, None)
    if report.failed and found is not None:
        report.sections.append(
            (
                f"Tekton controller log, last {LOG_TAIL_LINES} lines ({found.log_path})",
                found.log_tail(),
            )
        )
    return report
