"""The Ona wire vocabulary: Connect error codes, enum names, timestamps and request validation.

Everything here follows the protobuf-JSON mapping the real service speaks: lowerCamelCase
field names, enums by full name, 64-bit integers as decimal strings, unknown fields ignored.
Validation failures raise `ConnectError` with a message naming the offending field, so a
client's bug report can quote the simulator's answer verbatim.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

JSON = dict[str, Any]

HTTP_STATUS_BY_CODE: Final[Mapping[str, int]] = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}

PHASE_PREFIX: Final = "TASK_EXECUTION_PHASE_"
PENDING: Final = "TASK_EXECUTION_PHASE_PENDING"
RUNNING: Final = "TASK_EXECUTION_PHASE_RUNNING"
SUCCEEDED: Final = "TASK_EXECUTION_PHASE_SUCCEEDED"
FAILED: Final = "TASK_EXECUTION_PHASE_FAILED"
STOPPED: Final = "TASK_EXECUTION_PHASE_STOPPED"
# Enum numbers in declaration order, as protobuf-JSON also accepts them on input.
PHASES: Final = (
    "TASK_EXECUTION_PHASE_UNSPECIFIED",
    PENDING,
    RUNNING,
    SUCCEEDED,
    FAILED,
    STOPPED,
)
FINAL_PHASES: Final = frozenset({SUCCEEDED, FAILED, STOPPED})

PRINCIPAL_USER: Final = "PRINCIPAL_USER"

RESOURCE_TYPE_TASK: Final = "RESOURCE_TYPE_TASK"
RESOURCE_TYPE_TASK_EXECUTION: Final = "RESOURCE_TYPE_TASK_EXECUTION"
OP_CREATE: Final = "RESOURCE_OPERATION_CREATE"
OP_UPDATE: Final = "RESOURCE_OPERATION_UPDATE"
OP_DELETE: Final = "RESOURCE_OPERATION_DELETE"
OP_UPDATE_STATUS: Final = "RESOURCE_OPERATION_UPDATE_STATUS"

MAX_FILTER_VALUES: Final = 25
DEFAULT_PAGE_SIZE: Final = 25
MAX_PAGE_SIZE: Final = 100

_UUID_RE: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class ConnectError(Exception):
    """An error answer in Connect's shape: `{"code", "message"}` with the matching HTTP status."""

    def __init__(self, code: str, message: str, *, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        if code not in HTTP_STATUS_BY_CODE:
            raise ValueError(f"unknown Connect code {code!r}")
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_BY_CODE[self.code]

    def body(self) -> JSON:
        return {"code": self.code, "message": self.message}


def invalid(message: str) -> ConnectError:
    return ConnectError("invalid_argument", message)


def new_id() -> str:
    return str(uuid.uuid4())


def rfc3339(moment: datetime) -> str:
    """Format like protobuf-JSON Timestamps: UTC, 'Z' suffix, millisecond precision kept."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def utcnow() -> datetime:
    return datetime.now(UTC)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse_body(raw: bytes) -> JSON:
    """Decode a request body; an empty body is the empty message, as Connect allows."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid(f"request body must be a JSON object, got {type_name(value)}")
    return value


def is_uuid(value: str) -> bool:
    return bool(_UUID_RE.match(value))


def get_object(body: Mapping[str, Any], field: str, path: str = "") -> JSON:
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{path}{field}: expected an object, got {type_name(value)}")
    return value


def get_string(body: Mapping[str, Any], field: str, path: str = "") -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(f"{path}{field}: expected a string, got {type_name(value)}")
    return value


def get_bool(body: Mapping[str, Any], field: str, path: str = "") -> bool:
    value = body.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{path}{field}: expected a boolean, got {type_name(value)}")
    return value


def get_uuid(body: Mapping[str, Any], field: str, path: str = "", *, required: bool = True) -> str:
    value = get_string(body, field, path)
    if not value:
        if required:
            raise invalid(f"{path}{field}: must be a valid UUID, got an empty value")
        return ""
    if not is_uuid(value):
        raise invalid(f"{path}{field}: {value!r} is not a valid UUID")
    return value.lower()


def get_string_list(
    body: Mapping[str, Any],
    field: str,
    path: str = "",
    *,
    uuids: bool = False,
    limit: int | None = None,
) -> list[str]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{path}{field}: expected an array, got {type_name(value)}")
    if limit is not None and len(value) > limit:
        raise invalid(f"{path}{field}: at most {limit} values allowed, got {len(value)}")
    result: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise invalid(f"{path}{field}[{index}]: expected a string, got {type_name(item)}")
        if uuids:
            if not is_uuid(item):
                raise invalid(f"{path}{field}[{index}]: {item!r} is not a valid UUID")
            item = item.lower()
        result.append(item)
    return result


def get_phase_list(body: Mapping[str, Any], field: str, path: str) -> list[str]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{path}{field}: expected an array, got {type_name(value)}")
    if len(value) > MAX_FILTER_VALUES:
        raise invalid(
            f"{path}{field}: at most {MAX_FILTER_VALUES} values allowed, got {len(value)}"
        )
    return [parse_phase(item, f"{path}{field}[{index}]") for index, item in enumerate(value)]


def parse_phase(value: object, where: str) -> str:
    """Accept a phase by full name, by number (protobuf-JSON) or, for humans, by short name."""
    if isinstance(value, bool):
        raise invalid(f"{where}: expected a phase name, got boolean")
    if isinstance(value, int):
        if 0 <= value < len(PHASES):
            return PHASES[value]
        raise invalid(f"{where}: {value} is not a task execution phase")
    if isinstance(value, str):
        name = value if value.startswith(PHASE_PREFIX) else PHASE_PREFIX + value.upper()
        if name in PHASES:
            return name
        raise invalid(f"{where}: {value!r} is not a task execution phase")
    raise invalid(f"{where}: expected a phase name, got {type_name(value)}")


def get_int(body: Mapping[str, Any], field: str, path: str = "") -> int:
    """An int32 field: protobuf-JSON accepts a number or a decimal string."""
    value = body.get(field)
    if value is None:
        return 0
    if isinstance(value, bool):
        raise invalid(f"{path}{field}: expected an integer, got boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if not isinstance(value, int):
        raise invalid(f"{path}{field}: expected an integer, got {value!r}")
    return value


def page_size(pagination: Mapping[str, Any], query_value: str | None) -> int:
    size = get_int(pagination, "pageSize", "pagination.")
    if not size and query_value:
        size = get_int({"pageSize": query_value}, "pageSize", "query parameter ")
    if size < 0:
        raise invalid(f"pagination.pageSize: must not be negative, got {size}")
    if size > MAX_PAGE_SIZE:
        raise invalid(f"pagination.pageSize: must be at most {MAX_PAGE_SIZE}, got {size}")
    return size or DEFAULT_PAGE_SIZE
