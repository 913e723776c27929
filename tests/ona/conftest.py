"""Fixtures shared by the tests of the Ona client and the components built on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ona_taskrun.clients.ona import OnaClient
from tests.support.simulator_fixtures import SimulatorHandle


@pytest.fixture
async def ona(simulator: SimulatorHandle) -> AsyncIterator[OnaClient]:
    """A client of the test simulator with the operator's own token."""
    async with OnaClient(simulator.base_url, simulator.token, timeout=5) as client:
        yield client
