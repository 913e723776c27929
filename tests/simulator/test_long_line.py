"""`sim:long_line`: a step prints one line of any size, streamed and never held."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ona_simulator.commands import parse_command
from ona_simulator.wire import ConnectError
from tests.simulator.conftest import Api
from tests.simulator.test_lifecycle import FAILED
from tests.simulator.test_logs import logs_token, running_with_log
from tests.support.simulator_fixtures import SimulatorHandle, SimulatorProcess

MiB = 1 << 20


@pytest.fixture(autouse=True)
def restore_logs(simulator: SimulatorHandle) -> Iterator[None]:
    yield
    simulator.control.clear_log_faults()


@pytest.mark.parametrize(
    ("value", "size"),
    [("0", 0), ("123", 123), ("4K", 4096), ("200M", 200 * MiB), ("1GiB", 1 << 30), ("4G", 4 << 30)],
)
def test_sizes(value: str, size: int) -> None:
    assert parse_command(f"x sim:long_line={value}").long_line == size


@pytest.mark.parametrize("value", ["5G", "1.5M", "-1", "10X", "M", ""])
def test_bad_sizes_are_refused(value: str) -> None:
    with pytest.raises(ConnectError, match=r"sim:long_line=.* must be a size of 0\.\.4G bytes"):
        parse_command(f"x sim:long_line={value}")


def lines_of(simulator: SimulatorHandle, execution: dict[str, object]) -> list[str]:
    return simulator.control.execution_log(str(execution["id"]))


def high_water_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1]) // 1024


async def test_a_long_line_is_streamed_without_being_held(
    api: Api, simulator: SimulatorHandle, ona_simulator_process: SimulatorProcess
) -> None:
    execution = await running_with_log(
        api,
        simulator,
        "make sim:pending=20ms sim:duration=50ms sim:parallel=2 sim:log_lines=0 "
        'sim:long_line=96M sim:fail="boom"',
    )
    await api.wait_phase(execution["id"], FAILED)
    token = await logs_token(api, execution["metadata"]["environmentId"])
    before = high_water_mib(ona_simulator_process.process.pid)
    # Each line's start and size, counted as the bytes go by.
    seen: list[tuple[str, int]] = []
    head, size = bytearray(), 0
    async with api.http.stream(
        "GET", execution["status"]["logUrl"], headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            parts = chunk.split(b"\n")
            for index, part in enumerate(parts):
                head += part[: max(0, 40 - len(head))]
                size += len(part)
                if index < len(parts) - 1:
                    seen.append((head.decode(), size))
                    head, size = bytearray(), 0
    labels = [line.removesuffix(" started") for line in lines_of(simulator, execution)[:2]]
    assert seen[:2] == [(f"{label} started", len(label) + 8) for label in labels]
    assert seen[2:4] == [
        ((f"{label} " + "x" * 40)[:40], len(label) + 1 + 96 * MiB) for label in labels
    ]
    assert any(start.endswith("error: boom") for start, _ in seen[4:])
    # Two lines of 96 MiB went out; the simulator held a MiB of them at a time.
    assert high_water_mib(ona_simulator_process.process.pid) - before < 48
