"""Log tails, the edge: read the end of a finished run's log in the background.

The reconciler writes a run's final status first, exactly as before. Then, if the run
wants a tail (`rules.logtail.wants_tail`), `after_write` starts a background read through
the run's connection: a logs token for the execution's environment (one per connection
and environment, cached until shortly before it expires), then the log, with the
retries of `ona.logs.read_log`. The reconciler never waits for it: when the read is done
its outcome is kept here and the TaskRun is queued again, and the next reconcile folds
it into the status (`fold`) and writes it like any other change, with the same
resourceVersion precondition. A log that cannot be read becomes a short note in the
Succeeded condition's message. The run's `Failed` (or `TimedOut`) Event waits for the
read, bounded by `READ_TIMEOUT`, so it can carry the last lines.

A log is the task's to fill: its URL is checked before anything is asked for it
(`ona.logurl`), it is read a chunk at a time with long lines cut (`ona.logs`), only its
end is kept (`TailRing`, a few KiB whatever the log holds), and every token the operator
holds, the logs token included, is scrubbed from it before it is kept (`logs.scrub`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from ..clients.ona import errors, logurl
from ..clients.ona.logs import read_log
from ..observability import logs, metrics
from ..rules import terminal
from ..rules.connection import ConnectionKey
from ..rules.logtail import (
    TOKEN_LIFETIME,
    CachedToken,
    LogSettings,
    TailOutcome,
    TailRing,
    apply_outcome,
    event_message,
    has_note,
    outcome_of,
    parse_log_settings,
    usable,
    wants_tail,
)
from ..rules.model import Event, Status
from .connections import Remote

log = logging.getLogger(__name__)

# Whole read of one log, token included; a finished execution's log ends by itself.
READ_TIMEOUT: Final = 30.0
IDLE_TIMEOUT: Final = 10.0  # between two chunks of the log
MAX_CONCURRENT: Final = 4
# Events that wait for the tail, to carry its last lines.
HELD_EVENTS: Final = frozenset({"Failed", "TimedOut"})

_ENDED: Final = frozenset({"FAILED", "SUCCEEDED", "STOPPED"})

Post = Callable[[Mapping[str, Any], tuple[Event, ...]], Awaitable[None]]


def _problem(exc: errors.OnaError) -> str:
    """A short note for the condition message: what failed, not the whole error."""
    status = f"HTTP {exc.http_status}" if exc.http_status is not None else "no response"
    if isinstance(exc, logurl.LogUrlRefused):
        return exc.message
    if isinstance(exc, errors.Unauthenticated):
        return f"the logs token was refused ({status})"
    if exc.method == "CreateEnvironmentLogsToken":
        return f"no logs token ({exc.code}, {status})"
    if isinstance(exc, errors.Unavailable):
        return f"the log could not be read ({status})"
    return f"the log could not be read ({exc.code}, {status})"


class LogTails:
    def __init__(
        self,
        *,
        enqueue: Callable[[str], None],
        post: Post,
        read_timeout: float = READ_TIMEOUT,
        retry_delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._enqueue = enqueue
        self._post = post
        self._read_timeout = read_timeout
        self._retry_delay = retry_delay
        self._clock = clock
        self._outcomes: dict[str, TailOutcome] = {}
        self._reading: dict[str, asyncio.Task[None]] = {}
        self._tokens: dict[tuple[ConnectionKey, str], CachedToken] = {}
        self._token_locks: dict[tuple[ConnectionKey, str], asyncio.Lock] = {}
        self._limit: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ reconciler hooks

    def fold(self, key: str, status: Status) -> Status:
        """The status with a finished read's tail (or note) in it, if one is waiting."""
        outcome = self._outcomes.get(key)
        return status if outcome is None else apply_outcome(status, outcome)

    def after_write(
        self,
        key: str,
        body: Mapping[str, Any],
        events: tuple[Event, ...],
        remote: Remote | None,
    ) -> tuple[Event, ...]:
        """Called with each status the reconciler has written (or found unchanged) and
        the Events it is about to post; returns the Events to post now."""
        raw = body.get("status") or {}
        if key not in self._outcomes and (
            raw.get("phase") not in _ENDED or raw.get("logTail") or not raw.get("logUrl")
        ):
            return events  # the common case, decided without parsing the status
        status = Status.from_dict(raw)
        if key in self._outcomes and (status.log_tail or has_note(status)):
            del self._outcomes[key]  # written: nothing more to do for this run
            return events
        if remote is None or key in self._reading or key in self._outcomes:
            return events
        spec = body.get("spec") or {}
        settings = parse_log_settings(spec.get("logs"))
        if not wants_tail(status, settings, datetime.now(UTC)):
            return events
        held = tuple(e for e in events if e.reason in HELD_EVENTS)
        self._reading[key] = asyncio.create_task(
            self._read(key, body, status, settings, remote, held), name=f"log-tail {key}"
        )
        return tuple(e for e in events if e.reason not in HELD_EVENTS)

    def forget(self, key: str) -> None:
        """The TaskRun is gone: drop what is kept for it and stop reading its log."""
        self._outcomes.pop(key, None)
        task = self._reading.pop(key, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._reading.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def reading(self) -> int:
        return len(self._reading)

    @property
    def remembered(self) -> int:
        """TaskRuns whose log tail is being read, or read and not yet written."""
        return len(self._reading.keys() | self._outcomes.keys())

    # ------------------------------------------------------------------ reading

    async def _read(
        self,
        key: str,
        body: Mapping[str, Any],
        status: Status,
        settings: LogSettings,
        remote: Remote,
        held: tuple[Event, ...],
    ) -> None:
        started = 0.0
        result = "canceled"
        try:
            if self._limit is None:
                self._limit = asyncio.Semaphore(MAX_CONCURRENT)
            async with self._limit:
                started = time.monotonic()  # the read, not the wait for a free slot
                outcome = await asyncio.wait_for(
                    self._tail(body, status, settings, remote), self._read_timeout
                )
            result = "ok"
        except TimeoutError:
            result = "timeout"
            outcome = TailOutcome(problem=f"reading the log took over {self._read_timeout:.0f}s")
        except errors.OnaError as exc:
            result = exc.code
            outcome = TailOutcome(problem=logs.scrub(_problem(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:
            # Never let a log take the operator down: note it, keep the run as it is.
            result = "unexpected"
            log.exception("%s: reading the log tail failed unexpectedly", key)
            outcome = TailOutcome(problem="the log could not be read (unexpected error)")
        finally:
            self._reading.pop(key, None)
            if started and result != "canceled":
                metrics.log_tail_read(result, time.monotonic() - started)
        if outcome.problem:
            log.info("%s: no log tail: %s", key, outcome.problem)
        self._outcomes[key] = outcome
        if held:
            # Scrubbed before `event_message` shortens it: a token is masked whole.
            events = tuple(
                replace(e, message=event_message(logs.scrub(e.message), outcome.tail)) for e in held
            )
            await self._post(body, events)
        self._enqueue(key)

    async def _tail(
        self, body: Mapping[str, Any], status: Status, settings: LogSettings, remote: Remote
    ) -> TailOutcome:
        client = remote.client
        # Refused before a token is asked for (`open_log` checks again, at each try).
        await logurl.check(status.log_url, client.base_url)
        environment_id = await self._environment(body, status, remote)

        held = ""

        async def token(renew: bool) -> str:
            nonlocal held
            held = await self._token(remote, environment_id, refused=held if renew else None)
            return held

        ring = TailRing(settings.tail_lines, scrub=_safe_line)
        async for line in read_log(
            lambda current: client.open_log(status.log_url, current, idle_timeout=IDLE_TIMEOUT),
            token,
            delay=self._retry_delay,
        ):
            ring.push(line)
        return outcome_of(ring.lines(), settings)

    async def _environment(self, body: Mapping[str, Any], status: Status, remote: Remote) -> str:
        spec = body.get("spec") or {}
        source = spec.get("task") or spec.get("taskRef") or {}
        environment = source.get("environmentId") or remote.task_environments.lookup(status.task_id)
        if environment:
            return str(environment)
        execution = await remote.client.get_task_execution(status.task_execution_id)
        return execution.metadata.environment_id

    async def _token(
        self, remote: Remote, environment_id: str, *, refused: str | None = None
    ) -> str:
        """The connection's logs token for the environment: the cached one while it is
        good, a new one when it is about to expire or is the one just `refused`. Reads
        that want the same token together wait for one request rather than each making
        their own (runs of one environment often end together)."""
        key = (remote.key, environment_id)
        lock = self._token_locks.get(key)
        if lock is None:
            lock = self._token_locks[key] = asyncio.Lock()
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and usable(cached, self._clock()) and cached.token != refused:
                return cached.token
            token = await remote.client.create_environment_logs_token(environment_id)
            # Out of every tail, Event and log record, for longer than it is good for.
            logs.protect(token, lifetime=2 * TOKEN_LIFETIME)
            now = self._clock()
            for stale in [k for k, c in self._tokens.items() if not usable(c, now)]:
                del self._tokens[stale]
            self._tokens[key] = CachedToken(token, now)
            # Locks of environments with no token kept (expired, or never got one).
            locks = self._token_locks
            for idle in [k for k in locks if k not in self._tokens and not locks[k].locked()]:
                del locks[idle]
            return token


def _safe_line(text: str, *, cut: bool = False) -> str:
    """A log line as the status and the Failed Event may hold it: without terminal
    control sequences (a task's log is the task's to fill) and scrubbed of tokens."""
    return logs.scrub(terminal.clean(text), cut=cut)
