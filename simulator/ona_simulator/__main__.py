"""The `ona-simulator` command: serve the simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from ona_simulator.faults import DEFAULT_SEED
from ona_simulator.logs import DEFAULT_TOKEN_TTL_S
from ona_simulator.server import run_simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ona-simulator",
        description="Serve a local simulator of the Ona automation API for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument(
        "--token", action="append", default=[], help="accepted access token (repeatable)"
    )
    parser.add_argument(
        "--readonly-token",
        action="append",
        default=[],
        help="accepted read-only access token (repeatable)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed of the fault generator"
    )
    parser.add_argument(
        "--logs-token-ttl",
        type=float,
        default=DEFAULT_TOKEN_TTL_S,
        help="seconds a logs token from CreateEnvironmentLogsToken stays valid (default 3600)",
    )
    args = parser.parse_args(argv)
    if not args.logs_token_ttl > 0:
        parser.error("--logs-token-ttl must be positive")
    if not args.token and not args.readonly_token:
        parser.error("give at least one --token or --readonly-token")
    return args


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with run_simulator(
        host=args.host,
        port=args.port,
        tokens=args.token,
        readonly_tokens=args.readonly_token,
        seed=args.seed,
        logs_token_ttl=args.logs_token_ttl,
    ) as running:
        print(f"ona-simulator listening on {running.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
