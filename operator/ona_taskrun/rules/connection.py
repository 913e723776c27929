"""The pure rules of Ona connections: which connection a TaskRun uses, what a connection's
policy allows, and what a connection's status says after one look at its Secret and token.

No I/O happens here. The edges (`connections.py`) read Secrets, call
`IdentityService/GetAuthenticatedIdentity`, write the status this module returns, and ask
`check_policy` before a TaskRun may start.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import ParseResult, urlparse

from . import selectors
from .capacity import NO_LIMITS, InvalidLimits, Limits, parse_limits
from .model import (
    CLUSTER_CONNECTION,
    NAMESPACED_CONNECTION,
    Condition,
    ConnectionRef,
    RemoteFailure,
    rfc3339,
)

DEFAULT_BASE_URL = "https://app.ona.com/api"
READY = "Ready"


class InvalidConnection(ValueError):
    """A connection spec the schema let through but the operator cannot use."""

    def __init__(self, message: str, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AllowedUrls:
    """The Ona API base URLs a connection may name (a platform setting): a connection's
    token is never sent anywhere else, so an OnaConnection cannot carry one of its
    namespace's Secrets to a server of its author's choosing."""

    entries: tuple[str, ...] = (DEFAULT_BASE_URL,)

    @classmethod
    def parse(cls, text: str, *, always: Sequence[str] = ()) -> AllowedUrls:
        """Comma-separated base URLs; `*` allows any. `always` are added (the default
        connection's own base URL)."""
        entries = [e.strip().rstrip("/") for e in text.split(",") if e.strip()]
        for entry in entries:
            if entry != "*":
                base_url(entry, what="allowed base URL")
        return cls(tuple(dict.fromkeys([*entries, *(u.rstrip("/") for u in always)])))

    def allows(self, url: str) -> bool:
        target = urlparse(url)
        return any(e == "*" or _same_api(urlparse(e), target) for e in self.entries)

    def __str__(self) -> str:
        return ", ".join(self.entries)


ONA_ONLY = AllowedUrls()  # the default when the platform names nothing else


def _port(parsed: ParseResult) -> int:
    return parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)


def _same_api(allowed: ParseResult, target: ParseResult) -> bool:
    """Same scheme, host and port, and a path at or below the allowed one."""
    if (allowed.scheme, allowed.hostname, _port(allowed)) != (
        target.scheme,
        target.hostname,
        _port(target),
    ):
        return False
    root = allowed.path.rstrip("/")
    path = target.path.rstrip("/")
    return path == root or path.startswith(root + "/")


@dataclass(frozen=True, order=True)
class ConnectionKey:
    """Names one connection: an OnaConnection, a ClusterOnaConnection, or the default
    (operator-level token), whose kind, namespace and name are all empty."""

    kind: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def default(self) -> bool:
        return not self.kind

    @property
    def queue_key(self) -> str:
        """The work-queue key: never of a TaskRun's `namespace/name` form."""
        return f"{self.kind}:{self.namespace}/{self.name}"

    @classmethod
    def from_queue_key(cls, text: str) -> ConnectionKey:
        kind, _, rest = text.partition(":")
        namespace, _, name = rest.partition("/")
        return cls(kind, namespace, name)

    def __str__(self) -> str:
        if self.default:
            return "the operator-level connection"
        if self.kind == CLUSTER_CONNECTION:
            return f"{CLUSTER_CONNECTION} {self.name}"
        return f"{self.kind} {self.namespace}/{self.name}"


DEFAULT_CONNECTION = ConnectionKey()


def is_connection_key(queue_key: str) -> bool:
    return ":" in queue_key


def key_for(namespace: str, ref: ConnectionRef | None) -> ConnectionKey:
    """The connection a TaskRun in `namespace` uses: never another namespace's."""
    if ref is None:
        return DEFAULT_CONNECTION
    if ref.cluster:
        return ConnectionKey(CLUSTER_CONNECTION, "", ref.name)
    return ConnectionKey(NAMESPACED_CONNECTION, namespace, ref.name)


def key_of(body: Mapping[str, Any]) -> ConnectionKey:
    meta = body.get("metadata") or {}
    kind = str(body.get("kind") or "")
    if kind == CLUSTER_CONNECTION:
        return ConnectionKey(CLUSTER_CONNECTION, "", str(meta.get("name", "")))
    return ConnectionKey(
        NAMESPACED_CONNECTION, str(meta.get("namespace", "")), meta.get("name", "")
    )


# ------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """What a connection lets a TaskRun do, checked before any Ona call for it."""

    environment_ids: frozenset[str] = frozenset()  # empty: any the token reaches
    # Projects fromProject may create environments of; empty: any, unless environment_ids
    # is set (a new environment cannot be on that list).
    project_ids: frozenset[str] = frozenset()
    inline_tasks: bool = True
    namespaces: selectors.LabelSelector = selectors.EVERYTHING
    # Where `namespaces` comes from, for messages.
    namespaces_from: str = ""
    # spec.limits: the runs it starts at once, and its request rate (rules.capacity).
    limits: Limits = NO_LIMITS


def check_policy(
    policy: Policy,
    key: ConnectionKey,
    namespace: str,
    namespace_labels: Mapping[str, str],
    *,
    environment_id: str,
    inline: bool,
    project_id: str = "",
) -> str | None:
    """Why the connection refuses this run (naming the rule), or None if it allows it."""
    if policy.namespaces.nothing:
        return (
            f"{key} does not serve namespace {namespace}: {policy.namespaces_from} is not set, "
            "so it serves no namespace (the installer sets it to * for all namespaces or to a "
            "label selector)"
        )
    if not policy.namespaces.matches(namespace_labels):
        return (
            f"{key} does not serve namespace {namespace}: {policy.namespaces_from} "
            f"({policy.namespaces}) does not select it"
        )
    if inline and not policy.inline_tasks:
        return (
            f"{key} does not allow inline tasks (spec.policy.inlineTasks is Deny); "
            "reference an existing task with spec.taskRef"
        )
    if project_id:
        # An environment created for the run: the project is what the policy can name.
        if policy.project_ids and project_id not in policy.project_ids:
            allowed = ", ".join(sorted(policy.project_ids))
            return (
                f"{key} does not allow environments of project {project_id}: "
                f"spec.policy.projectIds allows only {allowed}"
            )
        if not policy.project_ids and policy.environment_ids:
            return (
                f"{key} allows only the environments in spec.policy.environmentIds; "
                f"creating one of project {project_id} (spec.environment.fromProject) needs "
                "the project in spec.policy.projectIds"
            )
        return None
    if policy.environment_ids and environment_id not in policy.environment_ids:
        allowed = ", ".join(sorted(policy.environment_ids))
        return (
            f"{key} does not allow environment {environment_id or '(unknown)'}: "
            f"spec.policy.environmentIds allows only {allowed}"
        )
    return None


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    key: str

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name} (key {self.key!r})"


@dataclass(frozen=True)
class ConnectionSpec:
    key: ConnectionKey
    base_url: str
    secret: SecretRef
    policy: Policy


def check_base_url(raw: str) -> tuple[str, str]:
    """An API base URL without a trailing slash, and what is wrong with it: "" (nothing),
    "credentials", "scheme" or "port". Credentials are checked first, so that a token
    pasted into the URL is never echoed back in a message."""
    url = raw.strip().rstrip("/")
    parsed = urlparse(url)
    if "@" in parsed.netloc:
        return url, "credentials"
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return url, "scheme"
    try:
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return url, "port"
    return url, ""


def base_url(raw: str, *, what: str = "spec.baseUrl") -> str:
    url, problem = check_base_url(raw)
    if problem == "credentials":
        raise InvalidConnection(f"{what} must not carry credentials")
    if problem == "scheme":
        raise InvalidConnection(f"{what} {raw!r} is not an http(s) URL")
    if problem == "port":
        raise InvalidConnection(f"{what} {raw!r} has an invalid port")
    return url


def parse_connection(
    body: Mapping[str, Any],
    *,
    operator_namespace: str,
    allowed_urls: AllowedUrls | None = None,
) -> ConnectionSpec:
    """Read an OnaConnection or ClusterOnaConnection; raise InvalidConnection if unusable.

    A ClusterOnaConnection's Secret is always read from the operator's namespace, and an
    OnaConnection's from its own: the spec has no say in where.
    """
    key = key_of(body)
    spec = body.get("spec") or {}
    ref = spec.get("tokenSecretRef")
    if not isinstance(ref, Mapping) or not ref.get("name") or not ref.get("key"):
        raise InvalidConnection("spec.tokenSecretRef needs a name and a key")
    secret_namespace = operator_namespace if key.kind == CLUSTER_CONNECTION else key.namespace
    raw_policy = spec.get("policy") or {}
    inline_raw = raw_policy.get("inlineTasks") or (
        "Deny" if key.kind == CLUSTER_CONNECTION else "Allow"
    )
    if inline_raw not in ("Allow", "Deny"):
        raise InvalidConnection(f"spec.policy.inlineTasks {inline_raw!r} must be Allow or Deny")
    environments = raw_policy.get("environmentIds") or ()
    if not isinstance(environments, Sequence) or isinstance(environments, str):
        raise InvalidConnection("spec.policy.environmentIds must be a list of environment ids")
    projects = raw_policy.get("projectIds") or ()
    if not isinstance(projects, Sequence) or isinstance(projects, str):
        raise InvalidConnection("spec.policy.projectIds must be a list of project ids")
    if key.kind == CLUSTER_CONNECTION:
        if spec.get("namespaceSelector") is None:
            raise InvalidConnection("spec.namespaceSelector is required ({} selects every one)")
        try:
            namespaces = selectors.from_dict(
                spec["namespaceSelector"], where="spec.namespaceSelector"
            )
        except selectors.SelectorError as exc:
            raise InvalidConnection(str(exc)) from None
        namespaces_from = "its spec.namespaceSelector"
    else:
        namespaces = selectors.EVERYTHING
        namespaces_from = ""
    try:
        limits = parse_limits(spec.get("limits"), cluster=key.kind == CLUSTER_CONNECTION)
    except InvalidLimits as exc:
        raise InvalidConnection(str(exc)) from None
    url = base_url(str(spec.get("baseUrl") or DEFAULT_BASE_URL))
    if allowed_urls is not None and not allowed_urls.allows(url):
        raise InvalidConnection(
            f"spec.baseUrl {url} is not an Ona API this operator may send tokens to "
            f"(CONNECTION_ALLOWED_BASE_URLS: {allowed_urls})",
            reason="BaseUrlNotAllowed",
        )
    return ConnectionSpec(
        key=key,
        base_url=url,
        secret=SecretRef(secret_namespace, str(ref["name"]), str(ref["key"])),
        policy=Policy(
            environment_ids=frozenset(str(e) for e in environments),
            project_ids=frozenset(str(p) for p in projects),
            inline_tasks=inline_raw == "Allow",
            namespaces=namespaces,
            namespaces_from=namespaces_from,
            limits=limits,
        ),
    )


# ------------------------------------------------------------------------- status


class SecretState(enum.StrEnum):
    FOUND = "Found"
    MISSING = "SecretNotFound"
    KEY_MISSING = "SecretKeyNotFound"
    EMPTY = "InvalidSecret"


@dataclass(frozen=True)
class Identity:
    subject_id: str
    principal: str
    organization_id: str


@dataclass(frozen=True)
class Check:
    """One look at a connection: its spec, its Secret, and (when the token was asked
    about) who the token acts as or why that failed."""

    invalid: str = ""  # the spec's problem, if it cannot be used
    invalid_reason: str = "InvalidSpec"
    secret: SecretState = SecretState.FOUND
    secret_ref: SecretRef | None = None
    identity: Identity | None = None
    failure: RemoteFailure | None = None
    # Whether the token was asked in this look (else identity/failure are remembered).
    asked: bool = False
    # Methods the connection's API answered `unimplemented` since it was opened (full
    # names, sorted): shown as status.unservedMethods.
    unserved_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Readiness:
    """The Ready condition's triple; what TaskRuns waiting on the connection are told."""

    status: str  # True, False or Unknown
    reason: str
    message: str

    @property
    def ready(self) -> bool:
        return self.status == "True"


def readiness(check: Check) -> Readiness:
    if check.invalid:
        return Readiness("False", check.invalid_reason, check.invalid)
    if check.secret is not SecretState.FOUND:
        what = {
            SecretState.MISSING: "does not exist",
            SecretState.KEY_MISSING: "has no such key",
            SecretState.EMPTY: "holds an empty token",
        }[check.secret]
        return Readiness("False", check.secret.value, f"{check.secret_ref} {what}")
    if check.identity is not None:
        return Readiness("True", "Authenticated", f"the token acts as {check.identity.subject_id}")
    if check.failure is not None:
        reason = check.failure.condition_reason
        # remote.METHOD_NOT_SERVED: the identity method is not served (a wrong base URL,
        # most often), which says nothing about the token.
        if check.failure.kind.transient or reason == "MethodNotServed":
            return Readiness("Unknown", reason, f"cannot check the token: {check.failure.message}")
        return Readiness("False", reason, f"the token was not accepted: {check.failure.message}")
    return Readiness("Unknown", "Checking", "the token has not been checked yet")


def connection_status(
    old: Mapping[str, Any], generation: int, check: Check, now: datetime
) -> dict[str, Any]:
    """The connection's new status. Subject and organization stay from the last
    successful check while a later one fails."""
    ready = readiness(check)
    old_conditions = [c for c in old.get("conditions") or () if isinstance(c, Mapping)]
    previous = next((c for c in old_conditions if c.get("type") == READY), None)
    stamp = (
        str(previous.get("lastTransitionTime"))
        if previous is not None
        and previous.get("status") == ready.status
        and previous.get("lastTransitionTime")
        else rfc3339(now)
    )
    condition = Condition(READY, ready.status, ready.reason, ready.message, stamp, generation)
    conditions = [dict(c) for c in old_conditions if c.get("type") != READY]
    conditions.append(condition.to_dict())
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "subject": old.get("subject"),
        "organizationId": old.get("organizationId"),
        "checkedAt": old.get("checkedAt"),
    }
    if check.identity is not None:
        status["subject"] = {
            "id": check.identity.subject_id,
            "principal": check.identity.principal,
        }
        status["organizationId"] = check.identity.organization_id
    if check.asked:
        status["checkedAt"] = rfc3339(now)
    if check.unserved_methods:
        status["unservedMethods"] = list(check.unserved_methods)
    return {k: v for k, v in status.items() if v is not None}
