"""Capacity benchmark: 1,000 live executions and 50 concurrent clients doing Get and List.

Runs the simulator as its own process (so clients and server do not share an event loop),
starts the executions through the API, then lets the clients call GetTaskExecution and
ListTaskExecutions for a bounded time and prints throughput and latency figures.

    python -m ona_simulator.bench [--executions 1000] [--clients 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import aiohttp

SERVICE = "gitpod.v1.EnvironmentAutomationService"
TASKS = 20
# Long runs with several step groups keep the ticker busy during the measurement.
COMMAND = "bench sim:pending=2s sim:duration=120s sim:steps=6 sim:parallel=2"


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0

    def add(self, method: str, seconds: float) -> None:
        self.latencies.setdefault(method, []).append(seconds)


def start_server(token: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "ona_simulator", "--port", "0", f"--token={token}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    prefix = "ona-simulator listening on "
    if not line.startswith(prefix):
        process.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return process, line[len(prefix) :].strip()


async def call(
    http: aiohttp.ClientSession, method: str, body: dict[str, object]
) -> tuple[int, dict[str, object]]:
    async with http.post(f"/{SERVICE}/{method}", json=body) as response:
        return response.status, await response.json()


async def prepare(
    http: aiohttp.ClientSession, executions: int, clients: int
) -> tuple[list[str], list[str]]:
    task_ids = []
    for index in range(TASKS):
        body = {"reference": f"bench-{index}", "command": COMMAND}
        async with http.post("/_simulator/tasks", json=body) as response:
            task_ids.append((await response.json())["task"]["id"])
    execution_ids: list[str] = []
    queue = list(range(executions))

    async def starter() -> None:
        while queue:
            index = queue.pop()
            status, answer = await call(http, "StartTask", {"id": task_ids[index % TASKS]})
            if status != 200:
                raise SystemExit(f"StartTask failed: HTTP {status}: {answer}")
            execution = answer["taskExecution"]
            assert isinstance(execution, dict)
            execution_ids.append(execution["id"])

    await asyncio.gather(*(starter() for _ in range(clients)))
    return task_ids, execution_ids


async def client_loop(
    http: aiohttp.ClientSession,
    task_ids: list[str],
    execution_ids: list[str],
    until: float,
    samples: Samples,
    rng: random.Random,
) -> None:
    while time.monotonic() < until:
        if rng.random() < 0.7:
            method = "GetTaskExecution"
            body: dict[str, object] = {"id": rng.choice(execution_ids)}
        else:
            method = "ListTaskExecutions"
            body = {"filter": {"taskIds": [rng.choice(task_ids)]}, "pagination": {"pageSize": 25}}
        began = time.perf_counter()
        status, _ = await call(http, method, body)
        elapsed = time.perf_counter() - began
        if status == 200:
            samples.add(method, elapsed)
        else:
            samples.errors += 1


def cpu_seconds(pid: int) -> float:
    """CPU time used by a process so far (Linux), to tell a busy server from a busy client."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(executions: int, clients: int, seconds: float) -> None:
    token = secrets.token_urlsafe(16)
    process, base_url = start_server(token)
    try:
        async with aiohttp.ClientSession(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(limit=clients),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as http:
            began = time.monotonic()
            task_ids, execution_ids = await prepare(http, executions, clients)
            setup_s = time.monotonic() - began
            samples = Samples()
            rng = random.Random(7)
            until = time.monotonic() + seconds
            measure_began = time.monotonic()
            server_cpu_began = cpu_seconds(process.pid)
            client_cpu_began = time.process_time()
            await asyncio.gather(
                *(
                    client_loop(http, task_ids, execution_ids, until, samples, rng)
                    for _ in range(clients)
                )
            )
            measured_s = time.monotonic() - measure_began
            server_cpu = cpu_seconds(process.pid) - server_cpu_began
            client_cpu = time.process_time() - client_cpu_began
            async with http.get("/_simulator/health") as response:
                health = await response.json()
    finally:
        process.terminate()
        process.wait(timeout=10)

    total = sum(len(values) for values in samples.latencies.values())
    print(
        f"executions started: {len(execution_ids)} in {setup_s:.2f}s "
        f"({len(execution_ids) / setup_s:.0f}/s with {clients} clients)"
    )
    print(f"live executions at the end: {health['liveExecutions']}")
    print(f"clients: {clients}, measured for {measured_s:.1f}s, errors: {samples.errors}")
    print(f"throughput: {total / measured_s:.0f} calls/s")
    print(
        f"CPU during measurement: server {server_cpu:.1f}s, clients {client_cpu:.1f}s "
        f"(of {measured_s:.1f}s wall, {os.cpu_count()} cores shared with the rest of the host)"
    )
    for method, values in sorted(samples.latencies.items()):
        print(
            f"{method:>20}: {len(values):6d} calls, "
            f"median {statistics.median(values) * 1000:6.1f} ms, "
            f"p95 {percentile(values, 0.95) * 1000:6.1f} ms"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    asyncio.run(run(args.executions, args.clients, args.seconds))


if __name__ == "__main__":
    main()
