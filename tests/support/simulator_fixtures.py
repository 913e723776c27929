"""Fixtures that run the Ona API simulator for tests.

`ona_simulator_process` starts the real `ona-simulator` command once per session, on a
free loopback port with a random token and one read-only token. `simulator` resets it
before each test and hands the test a `SimulatorHandle`.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from ona_simulator.control_client import SimulatorControl

STARTUP_DEADLINE_S = 20.0
LISTENING_PREFIX = "ona-simulator listening on "


@dataclass(frozen=True)
class SimulatorProcess:
    process: subprocess.Popen[str]
    base_url: str
    token: str
    readonly_token: str
    stderr_path: Path

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_simulator"


@dataclass(frozen=True)
class SimulatorHandle:
    base_url: str
    token: str
    readonly_token: str
    control: SimulatorControl

    @property
    def control_url(self) -> str:
        return self.control.control_url


def simulator_command() -> list[str]:
    script = Path(sys.executable).parent / "ona-simulator"
    if script.exists():
        return [str(script)]
    found = shutil.which("ona-simulator")
    return [found] if found else [sys.executable, "-m", "ona_simulator"]


def _pump_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    # Keeps reading after the listening line so the child never blocks on a full pipe.
    for line in stream:
        lines.put(line)


def start_simulator_process(token: str, readonly_token: str, stderr_dir: Path) -> SimulatorProcess:
    stderr_path = stderr_dir / "ona-simulator.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [
                *simulator_command(),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                # "--flag=value": a random token may begin with "-".
                f"--token={token}",
                f"--readonly-token={readonly_token}",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump_lines, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line.startswith(LISTENING_PREFIX):
            base_url = line[len(LISTENING_PREFIX) :].strip()
            return SimulatorProcess(process, base_url, token, readonly_token, stderr_path)
    process.kill()
    process.wait()
    raise RuntimeError(
        f"ona-simulator did not report listening within {STARTUP_DEADLINE_S}s "
        f"(exit code {process.returncode}); stderr: {stderr_path.read_text()[-2000:]}"
    )


def stop_simulator_process(running: SimulatorProcess) -> None:
    running.process.terminate()
    try:
        running.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()


@pytest.fixture(scope="session")
def ona_simulator_process() -> Iterator[SimulatorProcess]:
    with tempfile.TemporaryDirectory(prefix="ona-simulator-") as directory:
        running = start_simulator_process(
            token=secrets.token_urlsafe(24),
            readonly_token=secrets.token_urlsafe(24),
            stderr_dir=Path(directory),
        )
        try:
            yield running
        finally:
            stop_simulator_process(running)


@pytest.fixture
def simulator(ona_simulator_process: SimulatorProcess) -> Iterator[SimulatorHandle]:
    with SimulatorControl(ona_simulator_process.control_url) as control:
        control.reset()
        yield SimulatorHandle(
            base_url=ona_simulator_process.base_url,
            token=ona_simulator_process.token,
            readonly_token=ona_simulator_process.readonly_token,
            control=control,
        )
