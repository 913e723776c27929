"""OnaClient: the operator's async client for the Ona automation and event APIs.

Which calls are repeated after a failure, and why:

- GetTask, ListTasks, GetTaskExecution, ListTaskExecutions have no side effects: every
  transient failure (connection errors, timeouts, 5xx, 429) is retried with the policy.
- StopTaskExecution and DeleteTask are idempotent in effect: stopping twice leaves the
  execution stopped, deleting twice leaves the task gone (the repeat may answer not_found,
  which `delete_task(missing_ok=True)` accepts). They are retried like reads.
- StartTask and CreateTask create something new on every call and carry no idempotency
  key. They are repeated only when the failure provably happened before the request was
  sent (no connection could be made). Once the request may have reached the server, a
  timeout, a dropped connection, a 5xx, 503 included (a proxy answers 503 also after the
  upstream reset mid-request), or an unreadable 2xx raises OutcomeUnknown. A 429 is a
  refusal: RateLimited is raised without a retry inside the client and the caller decides
  when to try again. 4xx answers are definite refusals and raise their own errors.

Every call and every WatchEvents stream goes through the client's `Throttle`: after a 429
(HTTP 429 or Connect `resource_exhausted`) the client's calls wait for the server's
Retry-After, or the back-off without one, and go a few at a time (see `throttle`). A read
retried after a 429 waits the same way; a call that would wait longer than the retry
policy's `max_delay` is not sent, and raises RateLimited (its `retry_after` the time still
to wait) for the caller to schedule.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ..ratelimit import TokenBucket
from ..throttle import Held, Throttle
from ._connect import encode_envelope, error_from_reply, error_from_response
from ._unary import (
    AiohttpSender,
    HttpxSender,
    Reply,
    SendError,
    UnarySender,
    httpx_send_error,
    proxy_for,
)
from .errors import (
    NotFound,
    OnaError,
    OutcomeUnknown,
    RateLimited,
    Unavailable,
)
from .logs import open_log
from .models import (
    AuthenticatedIdentity,
    Environment,
    EnvironmentVariable,
    Task,
    TaskExecution,
    TaskExecutionPhase,
)
from .observe import NO_OBSERVER, OnaObserver
from .retry import RetryPolicy, parse_retry_after
from .watch import Framing, Resync, WatchItem, read_events

__all__ = [
    "AUTOMATION_SERVICE",
    "DEFAULT_BASE_URL",
    "EVENT_SERVICE",
    "MAX_FILTER_VALUES",
    "MAX_PAGE_SIZE",
    "OnaClient",
    "Page",
    "qualified_method",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://app.ona.com/api"
AUTOMATION_SERVICE = "gitpod.v1.EnvironmentAutomationService"
EVENT_SERVICE = "gitpod.v1.EventService"
IDENTITY_SERVICE = "gitpod.v1.IdentityService"
ENVIRONMENT_SERVICE = "gitpod.v1.EnvironmentService"
# Methods outside the automation service, by the service that serves them.
_SERVICE_OF = {
    "GetAuthenticatedIdentity": IDENTITY_SERVICE,
    "CreateEnvironmentLogsToken": ENVIRONMENT_SERVICE,
    **{
        method: ENVIRONMENT_SERVICE
        for method in (
            "GetEnvironment",
            "ListEnvironments",
            "StartEnvironment",
            "StopEnvironment",
            "DeleteEnvironment",
            "MarkEnvironmentActive",
            "CreateEnvironmentFromProject",
        )
    },
}
MAX_FILTER_VALUES = 25
MAX_PAGE_SIZE = 100


def qualified_method(method: str) -> str:
    """A method's full name as its Connect path carries it (`service/method`, e.g.
    gitpod.v1.EnvironmentService/ListEnvironments): what a person looks up in Ona's API."""
    service = EVENT_SERVICE if method == "WatchEvents" else _SERVICE_OF.get(method)
    return f"{service or AUTOMATION_SERVICE}/{method}"


T = TypeVar("T", bound=BaseModel)


class _Safety(Enum):
    READ = "read"  # no side effects
    IDEMPOTENT = "idempotent"  # side effects, but repeating them changes nothing
    ONCE = "once"  # every call creates something: never repeat once it may have arrived


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list call; an empty `next_token` means it was the last page."""

    items: list[T]
    next_token: str


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _chunks(values: Sequence[str], size: int) -> list[list[str]]:
    return [list(values[i : i + size]) for i in range(0, len(values), size)]


def _check_filter(name: str, values: Sequence[str]) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{name} must be a sequence of strings, not a string")
    listed = list(values)
    if len(listed) > MAX_FILTER_VALUES:
        raise ValueError(
            f"{name} has {len(listed)} values; the API takes at most {MAX_FILTER_VALUES} "
            "(use a batched list call)"
        )
    return listed


def _check_page_size(page_size: int) -> int:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    return page_size


def _newest(executions: Iterable[TaskExecution]) -> list[TaskExecution]:
    """Executions without duplicates; a later copy wins when its status is not older.

    The order of list results is not documented and pages can shift while they are read,
    so the same execution may arrive twice with different statuses.
    """
    by_id: dict[str, TaskExecution] = {}
    for execution in executions:
        seen = by_id.get(execution.id)
        if seen is None or execution.status_version_int >= seen.status_version_int:
            by_id[execution.id] = execution
    return list(by_id.values())


class OnaClient:
    """Async client for the Ona API; use as `async with OnaClient(url, token) as ona:`.

    `timeout` bounds each unary call (and is sent as Connect-Timeout-Ms), `connect_timeout`
    the TCP/TLS connect. Unary calls go through aiohttp, streams and log reads through
    httpx (see `_unary`). `transport` replaces the network for both (httpx.MockTransport
    in tests). `observer` is told the result and latency of every unary attempt, and
    what the client's `throttle` does (by default one of its own, nameless).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str = "",
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: OnaObserver = NO_OBSERVER,
        throttle: Throttle | None = None,
        rate: TokenBucket | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base URL must be an http(s) URL, got {base_url!r}")
        if not token or token.strip() != token:
            raise ValueError("token must be a non-empty string without surrounding whitespace")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._base_url = base_url.rstrip("/")
        self.__token = token
        # Tokens this client used before a rotation: still redacted wherever they appear.
        self.__retired: list[str] = []
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._retry = retry or RetryPolicy()
        self._observer = observer
        self.throttle = throttle or Throttle("", observer, sleep=self._retry.sleep)
        # The connection's own request rate (spec.limits.requestsPerSecond): in front of
        # the throttle, so a burst leaves the API's rate limit to other connections.
        self.rate = rate
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
        )
        self._unary: UnarySender = (
            AiohttpSender(
                timeout=timeout, connect_timeout=connect_timeout, proxy=proxy_for(base_url)
            )
            if transport is None
            else HttpxSender(self._http)
        )
        # WatchEvents streams hold their connection for as long as they are open: in the
        # pool of unary calls, 100 streams (httpx's default pool size, and the operator's
        # default stream bound) would leave StartTask and every read waiting for a
        # connection until they time out. Streams get a pool of their own, unbounded here:
        # the caller bounds how many it opens.
        self._streams = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    async def _take_token(self) -> None:
        """Wait for the connection's request rate, if it has one (the wait is told like
        a throttle's)."""
        if self.rate is not None:
            waited = await self.rate.acquire()
            if waited > 0:
                self.throttle.note_waited(waited)

    def __repr__(self) -> str:
        return f"OnaClient(base_url={self._base_url!r})"

    async def __aenter__(self) -> OnaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._unary.aclose()
        await self._http.aclose()
        await self._streams.aclose()

    # -- plumbing ---------------------------------------------------------------------

    def set_token(self, token: str) -> bool:
        """Use a rotated token from the next call on; True if it differs from the current.
        Calls in flight finish with the token they were sent with."""
        if not token or token.strip() != token:
            raise ValueError("token must be a non-empty string without surrounding whitespace")
        if token == self.__token:
            return False
        self.__retired = [*self.__retired[-3:], self.__token]
        self.__token = token
        return True

    def _redact(self, text: str) -> str:
        # A server or proxy may echo the Authorization header back in an error body.
        for token in (self.__token, *self.__retired):
            text = text.replace(token, "[redacted]")
        return text

    def _scrub(self, exc: BaseException) -> None:
        """Redact the token from an exception chain that is about to become a cause.

        httpx does not put headers in its messages, but lower layers are not ours to vouch
        for, and a chained cause is printed with every traceback.
        """
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if any(isinstance(a, str) and self._redact(a) != a for a in current.args):
                current.args = tuple(
                    self._redact(a) if isinstance(a, str) else a for a in current.args
                )
            current = current.__cause__ or current.__context__

    def _url(self, service: str, method: str) -> str:
        return f"{self._base_url}/{service}/{method}"

    def _headers(self, content_type: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.__token}",
            "Content-Type": content_type,
            "Connect-Protocol-Version": "1",
        }

    def _transport_error(self, method: str, exc: httpx.RequestError, safety: _Safety) -> OnaError:
        return self._unsent_error(method, httpx_send_error(exc), safety, cause=exc)

    def _unsent_error(
        self, method: str, exc: SendError, safety: _Safety, *, cause: BaseException
    ) -> OnaError:
        """The error for a call that got no answer."""
        self._scrub(cause)
        code = "deadline_exceeded" if exc.timed_out else "unavailable"
        message = f"{exc.kind}: {self._redact(exc.detail) or 'no detail'}"
        if exc.sent and safety is _Safety.ONCE:
            return OutcomeUnknown(
                f"{message}; the request may have reached the server", method=method, code=code
            )
        return Unavailable(message, method=method, code=code, request_sent=exc.sent)

    async def _send_once(
        self, method: str, body: Mapping[str, Any], safety: _Safety
    ) -> dict[str, Any]:
        headers = self._headers("application/json")
        headers["Connect-Timeout-Ms"] = str(int(self._timeout * 1000))
        try:
            reply = await self._unary.post(
                self._url(_SERVICE_OF.get(method, AUTOMATION_SERVICE), method),
                json.dumps(body).encode(),
                headers,
            )
        except SendError as exc:
            # The cause is the transport's own exception, as the sender caught it.
            cause = exc.__cause__ or exc
            raise self._unsent_error(method, exc, safety, cause=cause) from cause

        if reply.ok:
            try:
                data = json.loads(reply.body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise self._unreadable(method, reply, safety) from exc
            if not isinstance(data, dict):
                raise self._unreadable(method, reply, safety)
            return data

        error = error_from_reply(method, reply.status, reply.headers, reply.body, self._redact)
        if safety is _Safety.ONCE and isinstance(error, Unavailable):
            raise OutcomeUnknown(
                f"{error.message}; the request may have reached the server",
                method=method,
                code=error.code,
                http_status=error.http_status,
                retry_after=error.retry_after,
            ) from error
        raise error

    def _unreadable(self, method: str, reply: Reply, safety: _Safety) -> OnaError:
        message = f"HTTP {reply.status} with a body that is not a JSON object"
        if safety is _Safety.ONCE:
            return OutcomeUnknown(
                f"{message}; the call may have taken effect",
                method=method,
                code="internal",
                http_status=reply.status,
            )
        return OnaError(message, method=method, code="internal", http_status=reply.status)

    async def _observed(self, method: str, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Await one attempt, telling the observer how it ended and how long it took."""
        started = time.perf_counter()
        code = "ok"
        try:
            return await call
        except BaseException as exc:
            # The error tree carries the Connect code; cancellation has none.
            code = str(getattr(exc, "code", "") or "canceled")
            raise
        finally:
            self._observer.on_request(method, code, time.perf_counter() - started)

    def _may_retry(self, error: OnaError, safety: _Safety) -> bool:
        if safety is _Safety.ONCE:
            return isinstance(error, Unavailable) and not error.request_sent
        return isinstance(error, Unavailable | RateLimited)

    async def _call(self, method: str, body: Mapping[str, Any], safety: _Safety) -> dict[str, Any]:
        attempt = 1
        waited_out = -1  # the throttle's hold this call already slept through
        while True:
            try:
                return await self._attempt(method, body, safety, waited_out)
            except OnaError as error:
                if not self._may_retry(error, safety) or attempt >= self._retry.max_attempts:
                    raise
                if isinstance(error, RateLimited):
                    # The throttle holds every call of this client back now: a wait too
                    # long to sleep through here is the caller's to schedule.
                    held = self.throttle.remaining()
                    if held > self._retry.max_delay:
                        logger.info(
                            "%s: rate limited (HTTP %s); held back %.1fs, left to the caller",
                            method,
                            error.http_status,
                            held,
                        )
                        raise
                    waited_out = self.throttle.hold_id
                    delay = max(held, self._retry.delay(attempt, error.retry_after) or 0.0)
                else:
                    retry_delay = self._retry.delay(attempt, error.retry_after)
                    if retry_delay is None:
                        logger.warning(
                            "%s: server asked to wait %.1fs, longer than the retry cap; giving up",
                            method,
                            error.retry_after,
                        )
                        raise
                    delay = retry_delay
                logger.info(
                    "%s failed (%s, HTTP %s); retry %d of %d in %.2fs",
                    method,
                    error.code,
                    error.http_status,
                    attempt,
                    self._retry.max_attempts - 1,
                    delay,
                )
                await self._retry.sleep(delay)
                if isinstance(error, RateLimited):
                    self.throttle.note_waited(delay)
                attempt += 1

    async def _attempt(
        self, method: str, body: Mapping[str, Any], safety: _Safety, waited_out: int
    ) -> dict[str, Any]:
        """One attempt, once the throttle lets it go; what it answered is told to the
        throttle (a 429, or any other answer)."""
        await self._take_token()
        try:
            sent_at = await self.throttle.admit(
                max_wait=self._retry.max_delay, waited_out=waited_out
            )
        except Held as held:
            raise RateLimited(
                f"not sent: the server's earlier 429s hold calls back {held.remaining:.1f}s more",
                method=method,
                code="resource_exhausted",
                retry_after=held.remaining,
            ) from None
        try:
            data = await self._observed(method, self._send_once(method, body, safety))
        except RateLimited as error:
            self.throttle.refused(sent_at, error.retry_after)
            raise
        except OnaError as error:
            if error.http_status is not None:
                self.throttle.answered(sent_at)
            raise
        else:
            self.throttle.answered(sent_at)
        finally:
            self.throttle.release()
        return data

    def _parse(
        self, model: type[T], data: Any, method: str, *, safety: _Safety = _Safety.READ
    ) -> T:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            message = f"response does not hold a valid {model.__name__}"
            if safety is _Safety.ONCE:
                raise OutcomeUnknown(
                    f"{message}; the call may have taken effect", method=method, code="internal"
                ) from exc
            raise OnaError(message, method=method, code="internal") from exc

    # -- task executions --------------------------------------------------------------

    async def get_authenticated_identity(self) -> AuthenticatedIdentity:
        """Who the token acts as (IdentityService/GetAuthenticatedIdentity): its subject is
        the creator id that the API records on what this client creates or starts."""
        data = await self._call("GetAuthenticatedIdentity", {}, _Safety.READ)
        return self._parse(AuthenticatedIdentity, data, "GetAuthenticatedIdentity")

    async def start_task(self, task_id: str) -> TaskExecution:
        """Start a new execution of the task. Never repeated once it may have been sent.

        Raises OutcomeUnknown when an execution may or may not have been created. A caller
        that cancels this coroutine is in the same position: the request may have arrived.
        """
        data = await self._call("StartTask", {"id": task_id}, _Safety.ONCE)
        return self._parse(
            TaskExecution, data.get("taskExecution"), "StartTask", safety=_Safety.ONCE
        )

    async def get_task_execution(self, execution_id: str) -> TaskExecution:
        data = await self._call("GetTaskExecution", {"id": execution_id}, _Safety.READ)
        return self._parse(TaskExecution, data.get("taskExecution"), "GetTaskExecution")

    async def stop_task_execution(self, execution_id: str) -> None:
        """Ask the execution to stop (desired phase STOPPED); it ends in phase STOPPED."""
        await self._call("StopTaskExecution", {"id": execution_id}, _Safety.IDEMPOTENT)

    async def list_task_executions_page(
        self,
        *,
        task_ids: Sequence[str] = (),
        task_references: Sequence[str] = (),
        environment_ids: Sequence[str] = (),
        phases: Sequence[TaskExecutionPhase] = (),
        page_size: int = MAX_PAGE_SIZE,
        page_token: str = "",
    ) -> Page[TaskExecution]:
        """One page of executions; each filter takes at most 25 values, empty means any."""
        filters = {
            "taskIds": _check_filter("task_ids", task_ids),
            "taskReferences": _check_filter("task_references", task_references),
            "environmentIds": _check_filter("environment_ids", environment_ids),
            "phases": [TaskExecutionPhase(p).value for p in _check_filter("phases", list(phases))],
        }
        body = self._list_body(filters, page_size, page_token)
        data = await self._call("ListTaskExecutions", body, _Safety.READ)
        items = [
            self._parse(TaskExecution, item, "ListTaskExecutions")
            for item in data.get("taskExecutions") or []
        ]
        return Page(items, self._next_token(data))

    async def list_task_executions(
        self,
        *,
        task_ids: Sequence[str] = (),
        task_references: Sequence[str] = (),
        environment_ids: Sequence[str] = (),
        phases: Sequence[TaskExecutionPhase] = (),
        page_size: int = MAX_PAGE_SIZE,
    ) -> list[TaskExecution]:
        """All executions matching the filters, following every page."""

        def page(token: str) -> Awaitable[Page[TaskExecution]]:
            return self.list_task_executions_page(
                task_ids=task_ids,
                task_references=task_references,
                environment_ids=environment_ids,
                phases=phases,
                page_size=page_size,
                page_token=token,
            )

        return _newest(await self._every_page("ListTaskExecutions", page))

    async def list_task_executions_by_task_ids(
        self,
        task_ids: Iterable[str],
        *,
        phases: Sequence[TaskExecutionPhase] = (),
        page_size: int = MAX_PAGE_SIZE,
    ) -> list[TaskExecution]:
        """Executions of any number of tasks, in batches of 25 ids; no ids, no executions."""
        return await self._executions_batched(
            "taskIds", _unique(task_ids), phases=phases, page_size=page_size
        )

    async def list_task_executions_by_references(
        self,
        references: Iterable[str],
        *,
        environment_ids: Sequence[str] = (),
        phases: Sequence[TaskExecutionPhase] = (),
        page_size: int = MAX_PAGE_SIZE,
    ) -> list[TaskExecution]:
        """Executions of tasks with any of the references (task metadata.reference)."""
        return await self._executions_batched(
            "taskReferences",
            _unique(references),
            environment_ids=environment_ids,
            phases=phases,
            page_size=page_size,
        )

    async def _executions_batched(
        self,
        field: str,
        values: list[str],
        *,
        environment_ids: Sequence[str] = (),
        phases: Sequence[TaskExecutionPhase] = (),
        page_size: int,
    ) -> list[TaskExecution]:
        found: list[TaskExecution] = []
        env_batches = _chunks(_unique(environment_ids), MAX_FILTER_VALUES) or [[]]
        for batch, envs in itertools.product(_chunks(values, MAX_FILTER_VALUES), env_batches):
            found.extend(
                await self.list_task_executions(
                    task_ids=batch if field == "taskIds" else (),
                    task_references=batch if field == "taskReferences" else (),
                    environment_ids=envs,
                    phases=phases,
                    page_size=page_size,
                )
            )
        return _newest(found)

    # -- logs -------------------------------------------------------------------------

    async def create_environment_logs_token(self, environment_id: str) -> str:
        """A read-only token for the logs of one environment's executions (valid about an
        hour). Creating one changes nothing else, so it is retried like a read."""
        method = "CreateEnvironmentLogsToken"
        data = await self._call(method, {"environmentId": environment_id}, _Safety.READ)
        token = data.get("accessToken")
        if not isinstance(token, str) or not token:
            raise OnaError("response holds no accessToken", method=method, code="internal")
        return token

    def open_log(
        self, log_url: str, logs_token: str, *, idle_timeout: float | None = None
    ) -> AsyncIterator[str]:
        """The lines of an execution's log (`status.logUrl`), read once from the start
        until the server ends the stream; see `ona.logs.read_log` for retries and
        renewal. `idle_timeout` bounds the wait for each next chunk (None: no bound)."""
        timeout = httpx.Timeout(self._timeout, connect=self._connect_timeout, read=idle_timeout)

        def redact(text: str) -> str:
            return self._redact(text).replace(logs_token, "[redacted]")

        return open_log(
            self._http, log_url, logs_token, limits=timeout, redact=redact, base_url=self._base_url
        )

    # -- tasks ------------------------------------------------------------------------

    async def create_task(
        self,
        environment_id: str,
        name: str,
        command: str,
        *,
        reference: str,
        description: str = "",
        env: Mapping[str, str] | Iterable[EnvironmentVariable] = (),
        runs_on: Mapping[str, Any] | None = None,
        depends_on: Sequence[str] = (),
        triggered_by: Sequence[Mapping[str, Any]] = (),
    ) -> Task:
        """Create a task. Never repeated once it may have been sent: on OutcomeUnknown,
        look the task up by `reference` before creating it again."""
        variables = (
            [EnvironmentVariable(name=k, value=v) for k, v in env.items()]
            if isinstance(env, Mapping)
            else list(env)
        )
        spec: dict[str, Any] = {
            "command": command,
            "env": [{"name": v.name, "value": v.value} for v in variables],
        }
        if runs_on is not None:
            spec["runsOn"] = dict(runs_on)
        body = {
            "environmentId": environment_id,
            "dependsOn": list(depends_on),
            "metadata": {
                "reference": reference,
                "name": name,
                "description": description,
                "triggeredBy": [dict(t) for t in triggered_by],
            },
            "spec": spec,
        }
        data = await self._call("CreateTask", body, _Safety.ONCE)
        return self._parse(Task, data.get("task"), "CreateTask", safety=_Safety.ONCE)

    async def get_task(self, task_id: str) -> Task:
        data = await self._call("GetTask", {"id": task_id}, _Safety.READ)
        return self._parse(Task, data.get("task"), "GetTask")

    async def delete_task(self, task_id: str, *, missing_ok: bool = False) -> None:
        """Delete a task; with `missing_ok`, a task that is already gone is not an error."""
        try:
            await self._call("DeleteTask", {"id": task_id}, _Safety.IDEMPOTENT)
        except NotFound:
            if not missing_ok:
                raise

    async def list_tasks_page(
        self,
        *,
        environment_ids: Sequence[str] = (),
        references: Sequence[str] = (),
        task_ids: Sequence[str] = (),
        page_size: int = MAX_PAGE_SIZE,
        page_token: str = "",
    ) -> Page[Task]:
        filters = {
            "environmentIds": _check_filter("environment_ids", environment_ids),
            "references": _check_filter("references", references),
            "taskIds": _check_filter("task_ids", task_ids),
        }
        body = self._list_body(filters, page_size, page_token)
        data = await self._call("ListTasks", body, _Safety.READ)
        items = [self._parse(Task, item, "ListTasks") for item in data.get("tasks") or []]
        return Page(items, self._next_token(data))

    async def list_tasks(
        self,
        *,
        environment_ids: Sequence[str] = (),
        references: Sequence[str] = (),
        task_ids: Sequence[str] = (),
        page_size: int = MAX_PAGE_SIZE,
    ) -> list[Task]:
        """All tasks matching the filters, following every page."""

        def page(token: str) -> Awaitable[Page[Task]]:
            return self.list_tasks_page(
                environment_ids=environment_ids,
                references=references,
                task_ids=task_ids,
                page_size=page_size,
                page_token=token,
            )

        tasks = await self._every_page("ListTasks", page)
        return list({task.id: task for task in tasks}.values())

    async def list_tasks_by_references(
        self, references: Iterable[str], *, environment_ids: Sequence[str] = ()
    ) -> list[Task]:
        """Tasks with any of the references, in batches of 25; no references, no tasks."""
        found: dict[str, Task] = {}
        env_batches = _chunks(_unique(environment_ids), MAX_FILTER_VALUES) or [[]]
        for batch, envs in itertools.product(
            _chunks(_unique(references), MAX_FILTER_VALUES), env_batches
        ):
            for task in await self.list_tasks(references=batch, environment_ids=envs):
                found[task.id] = task
        return list(found.values())

    # -- environments -----------------------------------------------------------------
    # Starting, stopping, deleting and marking active change nothing when repeated, so they
    # are retried like reads. Creating makes a new environment on every call: never
    # repeated once it may have arrived (look it up by name instead).

    async def get_environment(self, environment_id: str) -> Environment:
        data = await self._call("GetEnvironment", {"environmentId": environment_id}, _Safety.READ)
        return self._parse(Environment, data.get("environment"), "GetEnvironment")

    async def start_environment(self, environment_id: str) -> None:
        body = {"environmentId": environment_id}
        await self._call("StartEnvironment", body, _Safety.IDEMPOTENT)

    async def stop_environment(self, environment_id: str) -> None:
        body = {"environmentId": environment_id}
        await self._call("StopEnvironment", body, _Safety.IDEMPOTENT)

    async def delete_environment(self, environment_id: str, *, force: bool = False) -> None:
        body = {"environmentId": environment_id, "force": force}
        await self._call("DeleteEnvironment", body, _Safety.IDEMPOTENT)

    async def mark_environment_active(
        self, environment_id: str, *, source: str, timestamp: str
    ) -> None:
        body = {
            "environmentId": environment_id,
            "activitySignal": {"source": source, "timestamp": timestamp},
        }
        await self._call("MarkEnvironmentActive", body, _Safety.IDEMPOTENT)

    async def create_environment_from_project(
        self, project_id: str, *, name: str, spec: Mapping[str, Any]
    ) -> Environment:
        """Create an environment of a project. Never repeated once it may have been sent:
        on OutcomeUnknown, list the project's environments and look for `name`."""
        body = {"projectId": project_id, "name": name, "spec": dict(spec)}
        data = await self._call("CreateEnvironmentFromProject", body, _Safety.ONCE)
        return self._parse(
            Environment,
            data.get("environment"),
            "CreateEnvironmentFromProject",
            safety=_Safety.ONCE,
        )

    async def list_environments(
        self, *, project_ids: Sequence[str] = (), creator_ids: Sequence[str] = ()
    ) -> list[Environment]:
        """Every environment matching the filters (deleted ones are not listed)."""

        async def page(token: str) -> Page[Environment]:
            filters = {
                "projectIds": _check_filter("project_ids", project_ids),
                "creatorIds": _check_filter("creator_ids", creator_ids),
            }
            body = self._list_body(filters, MAX_PAGE_SIZE, token)
            data = await self._call("ListEnvironments", body, _Safety.READ)
            items = [
                self._parse(Environment, item, "ListEnvironments")
                for item in data.get("environments") or []
            ]
            return Page(items, self._next_token(data))

        found = await self._every_page("ListEnvironments", page)
        return list({env.id: env for env in found}.values())

    # -- list helpers -----------------------------------------------------------------

    @staticmethod
    def _list_body(
        filters: Mapping[str, list[str]], page_size: int, page_token: str
    ) -> dict[str, Any]:
        pagination: dict[str, Any] = {"pageSize": _check_page_size(page_size)}
        if page_token:
            pagination["token"] = page_token
        return {
            "filter": {name: values for name, values in filters.items() if values},
            "pagination": pagination,
        }

    @staticmethod
    def _next_token(data: Mapping[str, Any]) -> str:
        pagination = data.get("pagination")
        if isinstance(pagination, dict):
            token = pagination.get("nextToken")
            if isinstance(token, str):
                return token
        return ""

    @classmethod
    async def _every_page(cls, method: str, page: Callable[[str], Awaitable[Page[T]]]) -> list[T]:
        """Follow page tokens from the first page to the last; return every item."""
        found: list[T] = []
        seen_tokens: set[str] = set()
        token = ""
        while True:
            current = await page(token)
            found.extend(current.items)
            token = cls._follow(current.next_token, seen_tokens, method)
            if not token:
                return found

    @staticmethod
    def _follow(token: str, seen: set[str], method: str) -> str:
        # A server that hands out a token twice would keep the listing going forever.
        if token and token in seen:
            raise OnaError("server repeated a page token", method=method, code="internal")
        seen.add(token)
        return token

    # -- events -----------------------------------------------------------------------

    async def watch_events(
        self,
        environment_id: str,
        *,
        framing: Framing = "connect",
        idle_timeout: float | None = 300.0,
        max_failures: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> AsyncIterator[WatchItem]:
        """Events of one environment, forever; a `Resync` after every (re)connect.

        A dropped or failed stream is reopened with the retry policy's backoff (honouring
        Retry-After). Errors that a reconnect cannot fix (unauthenticated, permission
        denied, invalid argument, ...) are raised, and so is the last error after
        `max_failures` consecutive failed connections. A stream quiet for `idle_timeout`
        seconds is reopened, which catches connections that died without a word.

        The `Resync` comes as soon as the server accepts the stream (HTTP 200). Connect
        servers report even a refused stream with HTTP 200 and an error in the end frame,
        so a `Resync` may be followed by an error (e.g. Unauthenticated) instead of events.
        """
        method = "WatchEvents"
        payload = json.dumps({"environmentId": environment_id}).encode()
        if framing == "connect":
            headers = self._headers("application/connect+json")
            content = encode_envelope(payload)
        else:
            headers = self._headers("application/json")
            headers["Accept"] = "application/jsonl"
            content = payload
        timeout = httpx.Timeout(self._timeout, connect=self._connect_timeout, read=idle_timeout)
        url = self._url(EVENT_SERVICE, method)
        failures = 0
        connected_once = False
        reason = ""
        while True:
            opened_at: float | None = None
            delivered = False
            # A stream holds no place among the calls in flight, but waits for a hold.
            await self._take_token()
            sent_at = await self.throttle.admit(slot=False)
            answer: Mapping[str, str] = {}
            try:
                async with self._streams.stream(
                    "POST", url, content=content, headers=headers, timeout=timeout
                ) as response:
                    answer = response.headers
                    if not response.is_success:
                        await response.aread()
                        raise error_from_response(method, response, self._redact)
                    opened_at = clock()
                    yield Resync(reconnect=connected_once, reason=reason)
                    connected_once = True
                    async for event in read_events(
                        response, framing, method=method, redact=self._redact
                    ):
                        delivered = True
                        yield event
                error: OnaError | None = None
                reason = "server ended the stream"
            except httpx.RequestError as exc:
                error = self._transport_error(method, exc, _Safety.READ)
                error.__cause__ = exc
                reason = f"connection lost ({error.message})"
            except (Unavailable, RateLimited) as exc:
                error = exc
                reason = f"stream failed ({exc.code}: {exc.message})"
                if isinstance(exc, RateLimited):
                    # Connect reports it in the end frame; Retry-After is a header.
                    if exc.retry_after is None:
                        exc.retry_after = parse_retry_after(answer.get("retry-after"))
                    self.throttle.refused(sent_at, exc.retry_after)
            answered = opened_at is not None or (error is not None and error.http_status)
            if answered and not isinstance(error, RateLimited):
                self.throttle.answered(sent_at)
            # A stream that carried events or stayed up a while was healthy: the next
            # reconnect starts the backoff afresh.
            if delivered or (
                opened_at is not None and clock() - opened_at >= self._retry.max_delay
            ):
                failures = 0
            failures += 1
            if error is not None and max_failures is not None and failures >= max_failures:
                raise error
            if isinstance(error, RateLimited):
                delay = 0.0  # the throttle holds the next stream back
            else:
                retry_after = error.retry_after if error is not None else None
                delay = self._retry.backoff(failures)
                if retry_after is not None:
                    delay = max(delay, retry_after)
            logger.info(
                "%s for environment %s: %s; reconnecting in %.2fs",
                method,
                environment_id,
                reason,
                delay,
            )
            if delay > 0:
                await self._retry.sleep(delay)
