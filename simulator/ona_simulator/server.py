"""Assembling and running the simulator: the aiohttp application and `run_simulator`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from ona_simulator import api, control, log_api
from ona_simulator.core import Simulator
from ona_simulator.faults import DEFAULT_SEED
from ona_simulator.logs import DEFAULT_TOKEN_TTL_S


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator serving on a socket. `base_url` is the API base clients are given."""

    host: str
    port: int
    simulator: Simulator

    @property
    def base_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}{control.PREFIX}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def build_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[api.SIMULATOR_KEY] = sim
    api.add_routes(app)
    control.add_routes(app)
    log_api.add_routes(app)
    return app


@asynccontextmanager
async def run_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    tokens: Iterable[str] = (),
    readonly_tokens: Iterable[str] = (),
    seed: int = DEFAULT_SEED,
    logs_token_ttl: float = DEFAULT_TOKEN_TTL_S,
) -> AsyncIterator[RunningSimulator]:
    """Serve the simulator until the block exits; `port=0` picks a free port."""
    all_tokens = [*([token] if token else []), *tokens]
    sim = Simulator(
        tokens=all_tokens, readonly_tokens=readonly_tokens, seed=seed, logs_token_ttl=logs_token_ttl
    )
    runner = web.AppRunner(build_app(sim), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = _bound_port(site, port)
    running = RunningSimulator(host=host, port=bound_port, simulator=sim)
    sim.base_url = running.base_url
    sim.store.start()
    try:
        yield running
    finally:
        sim.begin_shutdown()
        await sim.store.stop()
        await runner.cleanup()


def _bound_port(site: web.TCPSite, requested: int) -> int:
    server = site._server
    sockets: Iterable[socket.socket] = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return requested
