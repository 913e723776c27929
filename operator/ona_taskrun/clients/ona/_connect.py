"""Connect protocol details: error bodies to the error tree, and streaming envelopes."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from .errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    OnaError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from .retry import parse_retry_after

Redact = Callable[[str], str]

# Every Connect code, and the class the client raises for it.
CODE_ERRORS: dict[str, type[OnaError]] = {
    "invalid_argument": InvalidArgument,
    "failed_precondition": InvalidArgument,
    "out_of_range": InvalidArgument,
    "unauthenticated": Unauthenticated,
    "permission_denied": PermissionDenied,
    "not_found": NotFound,
    "already_exists": Conflict,
    "aborted": Conflict,
    "resource_exhausted": RateLimited,
    "canceled": Unavailable,
    "unknown": Unavailable,
    "internal": Unavailable,
    "data_loss": Unavailable,
    "unimplemented": Unimplemented,
    "unavailable": Unavailable,
    "deadline_exceeded": Unavailable,
}

# For responses without a Connect error body (proxies, load balancers, a wrong base URL).
# A bare 404 means the route does not exist, not that the execution is gone: reporting
# NotFound there would make a caller believe its execution vanished.
_STATUS_CODES: dict[int, str] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "unimplemented",
    408: "deadline_exceeded",
    409: "aborted",
    429: "resource_exhausted",
    499: "canceled",
    500: "internal",
    501: "unimplemented",
    502: "unavailable",
    503: "unavailable",
    504: "deadline_exceeded",
}

_BODY_SNIPPET = 200


def code_for_status(status: int) -> str:
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    return "unavailable" if status >= 500 else "unknown"


def error_class(code: str, http_status: int | None) -> type[OnaError]:
    if code in CODE_ERRORS:
        return CODE_ERRORS[code]
    if http_status is not None:
        fallback = code_for_status(http_status)
        if fallback in CODE_ERRORS and fallback != "unknown":
            return CODE_ERRORS[fallback]
    return OnaError


def make_error(
    method: str,
    code: str,
    message: str,
    *,
    http_status: int | None,
    retry_after: float | None,
    redact: Redact,
    cls: type[OnaError] | None = None,
) -> OnaError:
    cls = cls or error_class(code, http_status)
    return cls(
        redact(message),
        method=method,
        code=code,
        http_status=http_status,
        retry_after=retry_after,
    )


def _snippet(text: str) -> str:
    cleaned = " ".join(text.split())
    if len(cleaned) > _BODY_SNIPPET:
        cleaned = cleaned[:_BODY_SNIPPET] + "..."
    return cleaned


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) from a Connect error body; (None, None) when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    code = data.get("code")
    message = data.get("message")
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) else None,
    )


def error_from_response(method: str, response: httpx.Response, redact: Redact) -> OnaError:
    """The error an unsuccessful response stands for; the body must already be read."""
    return error_from_reply(
        method, response.status_code, response.headers, response.content, redact
    )


def error_from_reply(
    method: str, status: int, headers: Mapping[str, str], body: bytes, redact: Redact
) -> OnaError:
    """The error an unsuccessful answer stands for (`headers` a case-insensitive mapping)."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    code, message = parse_error_body(body)
    cls: type[OnaError] | None = None
    if code is None:
        code = code_for_status(status)
        if code == "unknown":
            # An unusual 4xx from something that is not the API: nothing says that
            # repeating the call would help.
            cls = OnaError
        text = _snippet(body.decode("utf-8", errors="replace")) if body else "empty body"
        content_type = headers.get("content-type", "no content type")
        message = f"HTTP {status} without a Connect error body ({content_type}): {text}"
        if status == 404:
            message += " (is the base URL right?)"
    elif message is None or not message:
        message = f"server sent code {code} without a message"
    return make_error(
        method, code, message, http_status=status, retry_after=retry_after, redact=redact, cls=cls
    )


def error_from_end_stream(method: str, error: Any, redact: Redact) -> OnaError:
    """The error carried by a Connect end-of-stream message (or a JSON-lines error line)."""
    code = "unknown"
    message = "stream ended with an error"
    if isinstance(error, dict):
        if isinstance(error.get("code"), str) and error["code"]:
            code = error["code"]
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"]
    return make_error(method, code, message, http_status=None, retry_after=None, redact=redact)


FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02
_PREFIX = struct.Struct(">BI")


def encode_envelope(payload: bytes, flags: int = 0) -> bytes:
    """One Connect streaming frame: flag byte, 4-byte big-endian length, payload."""
    return _PREFIX.pack(flags, len(payload)) + payload


def envelope_prefix_size() -> int:
    return _PREFIX.size


def decode_envelope_prefix(prefix: bytes) -> tuple[int, int]:
    flags, length = _PREFIX.unpack(prefix)
    return int(flags), int(length)
