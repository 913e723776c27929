"""The simulator's whole state in one object: store, tokens, faults, the rate limit and the
call log."""

from __future__ import annotations

import asyncio
import contextlib
import time as _time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ona_simulator.auth import TokenRegistry
from ona_simulator.faults import DEFAULT_SEED, FaultInjector
from ona_simulator.logs import DEFAULT_TOKEN_TTL_S, LogService
from ona_simulator.ratelimit import RateLimiter
from ona_simulator.store import Store
from ona_simulator.wire import JSON, rfc3339, utcnow

MAX_CALL_RECORDS: Final = 100_000


@dataclass
class CallRecord:
    """One API call as the control API reports it; it never holds the token."""

    seq: int
    method: str
    time: str
    started: float = field(default_factory=_time.monotonic)
    http_status: int = 0
    code: str = ""
    subject_id: str | None = None
    request_id: str | None = None
    result_id: str | None = None
    fault: str | None = None
    duration_ms: float = 0.0

    def finish(self, http_status: int, code: str = "") -> None:
        self.http_status = http_status
        self.code = code
        self.duration_ms = round((_time.monotonic() - self.started) * 1000, 3)

    def to_json(self) -> JSON:
        return {
            "seq": self.seq,
            "method": self.method,
            "time": self.time,
            "httpStatus": self.http_status,
            "code": self.code,
            "subjectId": self.subject_id,
            "requestId": self.request_id,
            "resultId": self.result_id,
            "fault": self.fault,
            "durationMs": self.duration_ms,
        }


class Simulator:
    def __init__(
        self,
        *,
        tokens: Iterable[str],
        readonly_tokens: Iterable[str] = (),
        seed: int = DEFAULT_SEED,
        logs_token_ttl: float = DEFAULT_TOKEN_TTL_S,
    ) -> None:
        self.tokens = TokenRegistry(tokens, readonly_tokens)
        self.faults = FaultInjector(seed)
        self.ratelimit = RateLimiter()
        self.logs = LogService(logs_token_ttl)
        self.store = Store(log_base_url=lambda: f"{self.base_url}/logs/task-executions")
        self.calls: deque[CallRecord] = deque(maxlen=MAX_CALL_RECORDS)
        self.base_url = ""
        self._call_seq = 0
        self._closing = asyncio.Event()

    def begin_call(self, method: str) -> CallRecord:
        self._call_seq += 1
        record = CallRecord(seq=self._call_seq, method=method, time=rfc3339(utcnow()))
        self.calls.append(record)
        return record

    def reset(self) -> None:
        self.store.reset()
        self.tokens.reset()
        self.faults.reset()
        self.ratelimit.set(None)
        self.logs.reset()
        self.calls.clear()

    async def pause(self, seconds: float) -> None:
        """Sleep for a fault's delay, but give up at once when the simulator shuts down."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def begin_shutdown(self) -> None:
        self._closing.set()
        self.store.events.close_all("the simulator is shutting down")
