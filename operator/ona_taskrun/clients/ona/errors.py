"""The Ona client's error tree: every failure of a call surfaces as one of these.

    OnaError                    any failed call; carries code, http_status, message, method
    ├── Unauthenticated         401 / unauthenticated: token missing, wrong or expired
    ├── PermissionDenied        403 / permission_denied: e.g. a read-only token
    ├── NotFound                404 / not_found (with a Connect error body)
    ├── InvalidArgument         400 / invalid_argument, failed_precondition, out_of_range
    ├── Conflict                409 / already_exists, aborted
    ├── Unimplemented           501 / unimplemented, or a 404 that is not a Connect error
    │                           (the method or the base URL is wrong)
    ├── RateLimited             429 / resource_exhausted; retry_after from Retry-After
    ├── Unavailable             503, 5xx, canceled, deadline_exceeded, connection errors and
    │                           timeouts where the call was safe to repeat
    └── OutcomeUnknown          a call that must not be repeated (StartTask, CreateTask) may
                                have reached the server: it may or may not have taken effect

Each error is raised `from` the httpx exception or response that caused it. Neither the
messages nor the reprs hold request headers, so the API token never appears in them.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "InvalidArgument",
    "NotFound",
    "OnaError",
    "OutcomeUnknown",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class OnaError(Exception):
    """A call to the Ona API failed.

    `code` is the Connect error code (snake_case, e.g. "not_found"), `http_status` the HTTP
    status when a response arrived (None for connection failures), `message` the server's
    message (or a description of the local failure), `method` the RPC name ("StartTask").
    `retry_after` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        code: str = "unknown",
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after

    def __str__(self) -> str:
        status = f"HTTP {self.http_status}" if self.http_status is not None else "no response"
        return f"{self.method}: {self.code} ({status}): {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(method={self.method!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}, message={self.message!r})"
        )


class Unauthenticated(OnaError):
    """The token was refused: missing, malformed, revoked or expired."""


class PermissionDenied(OnaError):
    """The token is valid but may not do this (read-only tokens cannot start or stop)."""


class NotFound(OnaError):
    """The server says the task or execution does not exist."""


class InvalidArgument(OnaError):
    """The server rejected the request itself; repeating it unchanged cannot help."""


class Conflict(OnaError):
    """The request conflicts with the resource's current state."""


class Unimplemented(OnaError):
    """The server does not know the method; usually a wrong base URL."""


class RateLimited(OnaError):
    """The server asked the client to slow down; the call did not take effect."""


class Unavailable(OnaError):
    """A transient failure: the server or the network could not serve the call now.

    `request_sent` is False only when the failure provably happened before any byte of the
    request left the client (no connection could be made).
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        code: str = "unavailable",
        http_status: int | None = None,
        retry_after: float | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(
            message, method=method, code=code, http_status=http_status, retry_after=retry_after
        )
        self.request_sent = request_sent


class OutcomeUnknown(OnaError):
    """A non-repeatable call may have reached the server; whether it took effect is unknown.

    For StartTask an execution may now exist; for CreateTask a task may. The caller has to
    look (list executions of the task, or tasks by reference) before deciding to call again.
    """
