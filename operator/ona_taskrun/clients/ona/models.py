"""The Ona API messages the operator reads and writes, as pydantic models.

Protobuf JSON leaves out fields that hold their default (empty string, empty list, zero,
the UNSPECIFIED enum value), so every field has a default. Unknown fields are ignored, and
enum values this client does not know map to UNSPECIFIED instead of failing the parse: the
server may grow new fields and phases before the operator learns about them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "Environment",
    "EnvironmentMetadata",
    "EnvironmentPhase",
    "EnvironmentStatus",
    "EnvironmentVariable",
    "ExecutionStep",
    "PlanGroup",
    "Principal",
    "ResourceEvent",
    "ResourceOperation",
    "StepStatus",
    "StepTask",
    "Subject",
    "Task",
    "TaskExecution",
    "TaskExecutionMetadata",
    "TaskExecutionPhase",
    "TaskExecutionSpec",
    "TaskExecutionStatus",
    "TaskMetadata",
    "TaskSpec",
]


class _TolerantEnum(StrEnum):
    """A protobuf enum in JSON: known by name; numbers and unknown names are tolerated."""

    @classmethod
    def _missing_(cls, value: object) -> _TolerantEnum:
        members = list(cls)
        # Protobuf JSON parsers accept the enum number too; members are declared in number
        # order, so the position is the number.
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(members):
            return members[value]
        return members[0]


class TaskExecutionPhase(_TolerantEnum):
    UNSPECIFIED = "TASK_EXECUTION_PHASE_UNSPECIFIED"
    PENDING = "TASK_EXECUTION_PHASE_PENDING"
    RUNNING = "TASK_EXECUTION_PHASE_RUNNING"
    SUCCEEDED = "TASK_EXECUTION_PHASE_SUCCEEDED"
    FAILED = "TASK_EXECUTION_PHASE_FAILED"
    STOPPED = "TASK_EXECUTION_PHASE_STOPPED"

    @property
    def is_final(self) -> bool:
        """SUCCEEDED, FAILED and STOPPED never change again."""
        return self in _FINAL_PHASES


_FINAL_PHASES = frozenset(
    {TaskExecutionPhase.SUCCEEDED, TaskExecutionPhase.FAILED, TaskExecutionPhase.STOPPED}
)


class Principal(_TolerantEnum):
    UNSPECIFIED = "PRINCIPAL_UNSPECIFIED"
    ACCOUNT = "PRINCIPAL_ACCOUNT"
    USER = "PRINCIPAL_USER"
    RUNNER = "PRINCIPAL_RUNNER"
    ENVIRONMENT = "PRINCIPAL_ENVIRONMENT"
    SERVICE_ACCOUNT = "PRINCIPAL_SERVICE_ACCOUNT"
    RUNNER_MANAGER = "PRINCIPAL_RUNNER_MANAGER"


class ResourceOperation(_TolerantEnum):
    UNSPECIFIED = "RESOURCE_OPERATION_UNSPECIFIED"
    CREATE = "RESOURCE_OPERATION_CREATE"
    UPDATE = "RESOURCE_OPERATION_UPDATE"
    DELETE = "RESOURCE_OPERATION_DELETE"
    UPDATE_STATUS = "RESOURCE_OPERATION_UPDATE_STATUS"


class _Message(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The message as the API expects it: camelCase names, defaults left out."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json")


class Subject(_Message):
    id: str = ""
    principal: Principal = Principal.UNSPECIFIED


class AuthenticatedIdentity(_Message):
    """IdentityService/GetAuthenticatedIdentity: who a token acts as, and in which
    organization."""

    subject: Subject = Field(default_factory=Subject)
    organization_id: str = ""


class EnvironmentVariable(_Message):
    name: str = ""
    value: str = ""


class TaskSpec(_Message):
    command: str = ""
    env: list[EnvironmentVariable] = Field(default_factory=list)
    # runsOn is a oneof (docker | machine) with nested options the operator passes through.
    runs_on: dict[str, Any] | None = None


class StepTask(_Message):
    id: str = ""
    spec: TaskSpec = Field(default_factory=TaskSpec)


class ExecutionStep(_Message):
    id: str = ""
    label: str = ""
    depends_on: list[str] = Field(default_factory=list)
    service_id: str = ""
    task: StepTask | None = None


class PlanGroup(_Message):
    steps: list[ExecutionStep] = Field(default_factory=list)


class TaskExecutionSpec(_Message):
    desired_phase: TaskExecutionPhase = TaskExecutionPhase.UNSPECIFIED
    plan: list[PlanGroup] = Field(default_factory=list)


class TaskExecutionMetadata(_Message):
    task_id: str = ""
    environment_id: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    creator: Subject = Field(default_factory=Subject)
    started_by: str = ""


class StepStatus(_Message):
    id: str = ""
    phase: TaskExecutionPhase = TaskExecutionPhase.UNSPECIFIED
    failure_message: str = ""
    output: dict[str, str] = Field(default_factory=dict)


class TaskExecutionStatus(_Message):
    phase: TaskExecutionPhase = TaskExecutionPhase.UNSPECIFIED
    status_version: str = "0"
    steps: list[StepStatus] = Field(default_factory=list)
    failure_message: str = ""
    log_url: str = ""

    @field_validator("status_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # uint64 travels as a decimal string, but protobuf JSON parsers also accept numbers.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @property
    def status_version_int(self) -> int:
        """The status version as an integer, the only way to compare two versions.

        A value that is not a decimal number counts as 0, the oldest possible version, so any
        readable version seen later is taken as newer.
        """
        text = self.status_version.strip()
        return int(text) if text.isdecimal() and text.isascii() else 0


class TaskExecution(_Message):
    id: str
    metadata: TaskExecutionMetadata = Field(default_factory=TaskExecutionMetadata)
    spec: TaskExecutionSpec = Field(default_factory=TaskExecutionSpec)
    status: TaskExecutionStatus = Field(default_factory=TaskExecutionStatus)

    @property
    def phase(self) -> TaskExecutionPhase:
        return self.status.phase

    @property
    def status_version_int(self) -> int:
        """`status.statusVersion` as an integer (see TaskExecutionStatus.status_version_int)."""
        return self.status.status_version_int

    @property
    def is_final(self) -> bool:
        return self.status.phase.is_final

    def step_status(self, step_id: str) -> StepStatus | None:
        """The status of one step, or None if the step has not started."""
        for step in self.status.steps:
            if step.id == step_id:
                return step
        return None


class TaskMetadata(_Message):
    reference: str = ""
    name: str = ""
    description: str = ""
    creator: Subject = Field(default_factory=Subject)
    created_at: datetime | None = None
    # AutomationTrigger is a oneof of trigger kinds; kept as sent.
    triggered_by: list[dict[str, Any]] = Field(default_factory=list)


class Task(_Message):
    id: str
    environment_id: str = ""
    depends_on: list[str] = Field(default_factory=list)
    metadata: TaskMetadata = Field(default_factory=TaskMetadata)
    spec: TaskSpec = Field(default_factory=TaskSpec)


class ResourceEvent(_Message):
    """One WatchEvents message: what changed, not the new state (re-read the resource)."""

    operation: ResourceOperation = ResourceOperation.UNSPECIFIED
    # Kept as text: the resource type enum is large and grows; the operator only compares
    # against RESOURCE_TYPE_TASK_EXECUTION and RESOURCE_TYPE_TASK.
    resource_type: str = "RESOURCE_TYPE_UNSPECIFIED"
    resource_id: str = ""

    @field_validator("resource_type", mode="before")
    @classmethod
    def _type_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def is_task_execution(self) -> bool:
        return self.resource_type == "RESOURCE_TYPE_TASK_EXECUTION"


class EnvironmentPhase(_TolerantEnum):
    UNSPECIFIED = "ENVIRONMENT_PHASE_UNSPECIFIED"
    CREATING = "ENVIRONMENT_PHASE_CREATING"
    STARTING = "ENVIRONMENT_PHASE_STARTING"
    RUNNING = "ENVIRONMENT_PHASE_RUNNING"
    UPDATING = "ENVIRONMENT_PHASE_UPDATING"
    STOPPING = "ENVIRONMENT_PHASE_STOPPING"
    STOPPED = "ENVIRONMENT_PHASE_STOPPED"
    DELETING = "ENVIRONMENT_PHASE_DELETING"
    DELETED = "ENVIRONMENT_PHASE_DELETED"


class EnvironmentMetadata(_Message):
    name: str = ""
    project_id: str = ""
    creator: Subject = Field(default_factory=Subject)
    created_at: datetime | None = None


class EnvironmentStatus(_Message):
    phase: EnvironmentPhase = EnvironmentPhase.UNSPECIFIED
    # Non-empty: the environment failed (or is about to).
    failure_message: list[str] = Field(default_factory=list)
    status_version: str = "0"

    @field_validator("status_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value


class Environment(_Message):
    """EnvironmentService's Environment, as far as the operator reads it."""

    id: str
    metadata: EnvironmentMetadata = Field(default_factory=EnvironmentMetadata)
    status: EnvironmentStatus = Field(default_factory=EnvironmentStatus)
