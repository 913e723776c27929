"""The pure rules of Tekton CustomRuns that the operator serves (Tekton's Custom Task
protocol, `tekton.dev/v1beta1`): which CustomRuns are ours, what one asks for, the one child
TaskRun that runs it, and the CustomRun's status read from that child.

A CustomRun is ours when its `customRef` or `customSpec` names kind `TaskRun` of our group.
`customRef.name` names a TaskRun in the CustomRun's own namespace used as a template (its
spec is copied; a template is best created with `desiredPhase: STOPPED`, so that it never
runs itself); `customSpec.spec` carries a TaskRun spec inline. `$(params.NAME)` (or
`$(params["NAME"])`) in the task's command and env values is replaced by the param's value,
once, and a param the task does not use, or a reference to one not given, is refused.

The child is an ordinary TaskRun: the connection's namespace rule and policy, exactly-once
start, stop, retries (`spec.retries`) and the per-attempt timeout (`spec.timeout`) are its
own. It is named after the CustomRun and its uid (`child_name`), so however often a
CustomRun is looked at it can only ever have one child, and it carries a controller owner
reference to the CustomRun.

What a CustomRun's author writes is a request, never authority: a template is looked up in
the CustomRun's namespace only; params reach only the command and env values, as text; the
child's labels and annotations never carry the project's own keys; a TaskRun that holds the
child's name counts as the child only if it is controlled by this CustomRun and has the spec
this CustomRun asks for; results are bounded.

No I/O happens here; the edge (`controller/customruns.py`) reads the template and the child,
creates or stops the child, and writes what `status` returns.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .model import InvalidSpec, rfc3339
from .spec import MAX_RETRIES, parse_duration
from .spec import parse_spec as parse_taskrun_spec

KIND, PLURAL, GROUP, VERSION = "CustomRun", "customruns", "tekton.dev", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
TASKRUN_GROUP, TASKRUN_VERSION, TASKRUN_KIND = "automation.ona.com", "v1alpha1", "TaskRun"
TASKRUN_API_VERSION = f"{TASKRUN_GROUP}/{TASKRUN_VERSION}"
PIPELINERUN_KIND = "PipelineRun"
# spec.status a PipelineRun (or a person) sets to cancel a CustomRun.
RUN_CANCELLED = "RunCancelled"
SUCCEEDED = "Succeeded"
# Tekton's reasons for a CustomRun that was cancelled or ran out of time; the others
# (Succeeded, Failed, NotPermitted, ...) are the child TaskRun's own.
REASON_CANCELLED = "CustomRunCancelled"
REASON_TIMED_OUT = "CustomRunTimedOut"
REASON_WORKSPACES = "CustomRunWorkspaceNotSupported"
# On the child, for people and `kubectl get -l`: its CustomRun's name. Ownership is the
# controller owner reference, never this label.
CUSTOMRUN_LABEL = "automation.ona.com/customrun"
# Tekton's own labels on a CustomRun (pipelineRun, pipelineTask, ...), copied to the child.
TEKTON_LABEL_PREFIX = "tekton.dev/"
# Keys of the project's own labels and annotations (claims, adoption requests, marks): a
# CustomRun's author may not put them on the child.
RESERVED_DOMAIN = "automation.ona.com"

# Results: each value is cut to Tekton's default result size (`max-result-size`, 4096
# bytes, which is also what the termination message of a Tekton Task allows for all its
# results), and all of them together to MAX_RESULTS_BYTES, so the CustomRun, and the
# PipelineRun that copies them, stay small.
MAX_RESULT_BYTES = 4096
MAX_RESULTS_BYTES = 16384
MAX_RESULTS = 64
# Tekton's format for result names: `$(tasks.<task>.results.<name>)` reads only these.
_RESULT_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# Tekton's format for param names, and the references to one.
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_PARAM_REF = re.compile(
    r"""\$\(params(?:
        \.(?P<dot>[A-Za-z_][A-Za-z0-9_-]*)
      | \["(?P<dq>[A-Za-z_][A-Za-z0-9_.-]*)"\]
      | \['(?P<sq>[A-Za-z_][A-Za-z0-9_.-]*)'\]
    )\)""",
    re.VERBOSE,
)
_PARAM_START = re.compile(r"\$\(params\b")
# The CRD's limits of what params are substituted into (a longer one is refused here,
# with a message naming the param, rather than by the API server).
MAX_COMMAND = 65536
MAX_ENV_VALUE = 32768
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
MAX_NAME = 63
_MESSAGE_LIMIT = 1024
# The spec fields `rules.spec.parse_spec` reads (with the CRD's defaults applied);
# the others are compared as written.
_PARSED = frozenset(
    (
        "task",
        "taskRef",
        "desiredPhase",
        "deletionPolicy",
        "timeout",
        "connectionRef",
        "retries",
        "ttlSecondsAfterFinished",
        "environment",
    )
)


class InvalidCustomRun(ValueError):
    """A CustomRun (or its template) the operator cannot run; `reason` goes into its
    Succeeded condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- reading


def _group(api_version: Any) -> tuple[str, str]:
    group, _, version = str(api_version or "").rpartition("/")
    return group, version


def _target(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = body.get("spec") or {}
    for key in ("customRef", "customSpec"):
        target = spec.get(key)
        if isinstance(target, Mapping):
            return target
    return None


def is_ours(body: Mapping[str, Any]) -> bool:
    """Whether a CustomRun is for us: its customRef or customSpec names kind TaskRun of our
    group (any version: a wrong version gets a clear answer rather than silence). Others
    belong to other custom task controllers, and are never touched."""
    target = _target(body)
    if target is None:
        return False
    return (
        _group(target.get("apiVersion"))[0] == TASKRUN_GROUP and target.get("kind") == TASKRUN_KIND
    )


@dataclass(frozen=True)
class Request:
    """What a CustomRun asks for: a template by name, or an inline TaskRun spec."""

    template: str = ""
    inline: Mapping[str, Any] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    params: tuple[tuple[str, str], ...] = ()
    timeout: str = ""  # as the child's spec.timeout takes it; empty: the task's own
    retries: int = 0  # 0: the task's own


@dataclass(frozen=True)
class CustomRun:
    namespace: str
    name: str
    uid: str
    generation: int
    request: Request | InvalidCustomRun
    cancelled: bool = False
    cancel_message: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def done(self) -> bool:
        """Its Succeeded condition is True or False: nothing changes it any more."""
        return is_done(self.status)

    @property
    def recorded_child(self) -> tuple[str, str]:
        """The child's name and uid as this controller recorded them in the status (the
        status is written by controllers only: authors cannot forge it)."""
        extra = self.status.get("extraFields")
        if not isinstance(extra, Mapping):
            return "", ""
        return str(extra.get("taskRun") or ""), str(extra.get("taskRunUid") or "")


def is_done(status: Mapping[str, Any]) -> bool:
    """Whether a CustomRun's status says it is over (Succeeded True or False)."""
    cond = _condition(status, SUCCEEDED)
    return cond is not None and cond.get("status") in ("True", "False")


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def _strings(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidCustomRun("InvalidCustomRun", f"{where} must be a map of strings")
    return {str(k): str(v) for k, v in raw.items()}


def _reserved(key: str) -> bool:
    domain = key.partition("/")[0] if "/" in key else ""
    return domain == RESERVED_DOMAIN or domain.endswith("." + RESERVED_DOMAIN)


def _metadata(raw: Any) -> tuple[dict[str, str], dict[str, str]]:
    if raw is None:
        return {}, {}
    if not isinstance(raw, Mapping):
        raise InvalidCustomRun("InvalidCustomRun", "spec.customSpec.metadata must be an object")
    found: list[dict[str, str]] = []
    for part in ("labels", "annotations"):
        values = _strings(raw.get(part), f"spec.customSpec.metadata.{part}")
        taken = sorted(k for k in values if _reserved(k))
        if taken:
            raise InvalidCustomRun(
                "InvalidCustomRun",
                f"spec.customSpec.metadata.{part} {', '.join(taken)}: keys of "
                f"{RESERVED_DOMAIN} are the operator's own and cannot be requested",
            )
        found.append(values)
    return found[0], found[1]


def _params(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise InvalidCustomRun("InvalidParams", "spec.params must be a list of name and value")
    params: list[tuple[str, str]] = []
    for item in raw:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
            raise InvalidCustomRun(
                "InvalidParams",
                f"spec.params: {str(name)[:64]!r} is not a param name (letters, digits, "
                "_, - and ., starting with a letter or _)",
            )
        value = item.get("value")
        if not isinstance(value, str):
            kind = "an array" if isinstance(value, list) else "an object"
            raise InvalidCustomRun(
                "InvalidParams",
                f"spec.params: {name!r} is {kind if value is not None else 'missing its value'}"
                "; only string params can be put into a command",
            )
        if any(name == seen for seen, _ in params):
            raise InvalidCustomRun("InvalidParams", f"spec.params: {name!r} is given twice")
        params.append((name, value))
    return tuple(params)


def _timeout(raw: Any) -> str:
    """A CustomRun's spec.timeout (Go's duration text, `10m0s`) as the child's: empty for
    none or zero (Tekton: no timeout)."""
    if raw is None or raw == "":
        return ""
    text = str(raw)
    if re.fullmatch(r"(0+(\.0+)?(h|m|s|ms|us|µs|ns))+|0", text):
        return ""
    try:
        parse_duration(text)
    except InvalidSpec as exc:
        raise InvalidCustomRun(
            "InvalidCustomRun",
            f"spec.timeout {text[:40]!r} cannot be a TaskRun's timeout: "
            + str(exc).removeprefix("spec.timeout ").removeprefix(f"{text[:40]!r} "),
        ) from None
    return text


def _retries(raw: Any) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidCustomRun("InvalidCustomRun", "spec.retries must be a whole number")
    if raw > MAX_RETRIES:
        raise InvalidCustomRun(
            "InvalidCustomRun",
            f"spec.retries {raw}: a TaskRun retries at most {MAX_RETRIES} times",
        )
    return raw


def parse_request(body: Mapping[str, Any]) -> Request:
    """Read what a CustomRun of ours asks for; InvalidCustomRun says what is wrong."""
    spec = body.get("spec") or {}
    ref, inline = spec.get("customRef"), spec.get("customSpec")
    if ref is not None and inline is not None:
        raise InvalidCustomRun(
            "InvalidCustomRun", "spec.customRef and spec.customSpec cannot both be set"
        )
    target = ref if isinstance(ref, Mapping) else inline
    if not isinstance(target, Mapping):
        raise InvalidCustomRun("InvalidCustomRun", "spec.customRef or spec.customSpec is needed")
    where = "spec.customRef" if ref is not None else "spec.customSpec"
    version = _group(target.get("apiVersion"))[1]
    if version != TASKRUN_VERSION:
        raise InvalidCustomRun(
            "InvalidCustomRun",
            f"{where}.apiVersion {str(target.get('apiVersion'))[:80]!r} is not served: "
            f"use {TASKRUN_API_VERSION}",
        )
    if spec.get("workspaces"):
        raise InvalidCustomRun(
            REASON_WORKSPACES,
            "spec.workspaces: an Ona task runs in an Ona environment, not in a pod: "
            "it cannot mount a workspace",
        )
    common = Request(
        params=_params(spec.get("params")),
        timeout=_timeout(spec.get("timeout")),
        retries=_retries(spec.get("retries")),
    )
    if ref is not None:
        for unsupported in ("resolver", "bundle", "params", "namespace"):
            if target.get(unsupported):
                raise InvalidCustomRun(
                    "InvalidCustomRun",
                    f"spec.customRef.{unsupported} is not supported: customRef.name names a "
                    "TaskRun in the CustomRun's own namespace",
                )
        name = target.get("name")
        if not name:
            raise InvalidCustomRun(
                "InvalidCustomRun",
                "spec.customRef.name is needed: it names a TaskRun in the CustomRun's "
                "namespace to use as template",
            )
        name = str(name)
        if len(name) > 253 or not _NAME.fullmatch(name):
            raise InvalidCustomRun(
                "InvalidCustomRun",
                f"spec.customRef.name {name[:80]!r} is not a TaskRun name: a template is a "
                "TaskRun in the CustomRun's own namespace",
            )
        return replace(common, template=name)
    raw_spec = target.get("spec")
    if not isinstance(raw_spec, Mapping) or not raw_spec:
        raise InvalidCustomRun(
            "InvalidCustomRun", "spec.customSpec.spec must be a TaskRun spec (task or taskRef)"
        )
    labels, annotations = _metadata(target.get("metadata"))
    return replace(
        common, inline=copy.deepcopy(dict(raw_spec)), labels=labels, annotations=annotations
    )


def parse(body: Mapping[str, Any]) -> CustomRun:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    request: Request | InvalidCustomRun
    try:
        request = parse_request(body)
    except InvalidCustomRun as exc:
        request = exc
    return CustomRun(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        request=request,
        cancelled=spec.get("status") == RUN_CANCELLED,
        cancel_message=str(spec.get("statusMessage") or "")[:_MESSAGE_LIMIT],
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        status=dict(body.get("status") or {}),
    )


def controller_of(body: Mapping[str, Any]) -> tuple[str, str]:
    """The name and uid of the CustomRun controlling a TaskRun, or empty ones."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if (
            isinstance(ref, Mapping)
            and ref.get("kind") == KIND
            and _group(ref.get("apiVersion"))[0] == GROUP
            and ref.get("controller") is True
        ):
            return str(ref.get("name", "")), str(ref.get("uid", ""))
    return "", ""


# --------------------------------------------------------------------------- the child


def child_name(name: str, uid: str) -> str:
    """The child's name: the CustomRun's (cut to fit) and 8 hex digits of its uid, so a
    CustomRun deleted and created again under its name gets a new child."""
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    stem = name[: MAX_NAME - len(digest) - 1].rstrip("-.") or "customrun"
    return f"{stem}-{digest}"


def substitute(text: str, params: Mapping[str, str], where: str, used: set[str]) -> str:
    """`$(params.NAME)` in `text` replaced by the param's value, in one pass: a value that
    itself says `$(params.other)` is left as it is. Every name found goes into `used`."""
    for start in _PARAM_START.finditer(text):
        if not _PARAM_REF.match(text, start.start()):
            snippet = text[start.start() : start.start() + 40].split(")")[0] + ")"
            raise InvalidCustomRun(
                "InvalidParams",
                f"{where}: {snippet!r} is not a param reference this operator takes: "
                '$(params.NAME) or $(params["NAME"]) of a string param',
            )
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group("dot") or match.group("dq") or match.group("sq")
        used.add(name)
        if name not in params:
            missing.append(name)
            return match.group(0)
        return params[name]

    result = _PARAM_REF.sub(value, text)
    if missing:
        given = ", ".join(sorted(params)) or "none"
        raise InvalidCustomRun(
            "InvalidParams",
            f"{where} uses $(params.{missing[0]}), which the CustomRun does not give "
            f"(its params: {given})",
        )
    return result


def _with_params(spec: dict[str, Any], params: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    given = dict(params)
    used: set[str] = set()
    task = spec.get("task")
    if isinstance(task, dict):
        if isinstance(task.get("command"), str):
            task["command"] = substitute(task["command"], given, "the task's command", used)
            if len(task["command"]) > MAX_COMMAND:
                raise InvalidCustomRun(
                    "InvalidParams",
                    f"the task's command is {len(task['command'])} characters with its params "
                    f"put in; a TaskRun's command takes at most {MAX_COMMAND}",
                )
        for item in task.get("env") or ():
            if isinstance(item, dict) and isinstance(item.get("value"), str):
                where = f"the task's env {str(item.get('name'))[:64]!r}"
                item["value"] = substitute(item["value"], given, where, used)
                if len(item["value"]) > MAX_ENV_VALUE:
                    raise InvalidCustomRun(
                        "InvalidParams",
                        f"{where} is {len(item['value'])} characters with its params put in; "
                        f"an env value takes at most {MAX_ENV_VALUE}",
                    )
    unused = sorted(set(given) - used)
    if unused:
        where = (
            "the task's command and env"
            if isinstance(task, Mapping)
            else "a task named by taskRef (which has no command here to put them in)"
        )
        raise InvalidCustomRun(
            "InvalidParams",
            f"params {', '.join(unused)} are not used by {where}: "
            "refer to each as $(params.NAME), or leave it out",
        )
    return spec


def child_spec(run: CustomRun, template: Mapping[str, Any] | None) -> dict[str, Any]:
    """The child's spec: the template's (or the inline one), with the params put in and the
    CustomRun's timeout and retries when it sets them. The child always runs:
    `desiredPhase` is the CustomRun's cancel (spec.status), not the template's."""
    request = run.request
    if isinstance(request, InvalidCustomRun):
        raise request
    if request.inline is not None:
        source: Mapping[str, Any] = request.inline
        where = "spec.customSpec.spec"
    else:
        if template is None:
            raise InvalidCustomRun(
                "TemplateNotFound",
                f"TaskRun {request.template} (the template spec.customRef.name names) does not "
                f"exist in namespace {run.namespace}",
            )
        source = template.get("spec") or {}
        where = f"the template TaskRun {request.template}"
    spec = copy.deepcopy(dict(source))
    spec.pop("desiredPhase", None)
    spec = _with_params(spec, request.params)
    if request.timeout:
        spec["timeout"] = request.timeout
    if request.retries:
        spec["retries"] = request.retries
    try:
        parse_taskrun_spec(spec)
    except InvalidSpec as exc:
        reason = "InvalidCustomRun" if request.inline is not None else "InvalidTemplate"
        raise InvalidCustomRun(reason, f"{where}: {exc}") from None
    return spec


def child_manifest(run: CustomRun, template: Mapping[str, Any] | None) -> dict[str, Any]:
    """The child TaskRun, controlled by the CustomRun. InvalidCustomRun when it cannot be."""
    request = run.request
    if isinstance(request, InvalidCustomRun):
        raise request
    spec = child_spec(run, template)
    labels = {
        **request.labels,
        **{k: v for k, v in run.labels.items() if k.startswith(TEKTON_LABEL_PREFIX)},
    }
    if len(run.name) <= MAX_NAME:
        labels[CUSTOMRUN_LABEL] = run.name
    metadata: dict[str, Any] = {
        "name": child_name(run.name, run.uid),
        "namespace": run.namespace,
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": run.name,
                "uid": run.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if request.annotations:
        metadata["annotations"] = dict(request.annotations)
    return {
        "apiVersion": TASKRUN_API_VERSION,
        "kind": TASKRUN_KIND,
        "metadata": metadata,
        "spec": spec,
    }


def _comparable(spec: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    parsed = parse_taskrun_spec(spec)
    rest = {k: v for k, v in spec.items() if k not in _PARSED}
    return replace(parsed, desired_stopped=False), rest


def is_child(run: CustomRun, body: Mapping[str, Any], expected: Mapping[str, Any] | None) -> bool:
    """Whether a TaskRun found under the child's name is this CustomRun's child: controlled
    by it (its uid), and, unless the status already recorded it, with the spec this
    CustomRun asks for (`expected`, CRD defaults aside), running unless the CustomRun was
    cancelled. Anyone who may create TaskRuns can write an owner reference; only the spec
    check keeps such a TaskRun from standing in for the child."""
    if controller_of(body)[1] != run.uid or not run.uid:
        return False
    uid = str((body.get("metadata") or {}).get("uid", ""))
    recorded = run.recorded_child[1]
    if recorded and recorded == uid:
        return True
    if expected is None:
        return False
    spec = body.get("spec") or {}
    if spec.get("desiredPhase", "RUNNING") != "RUNNING" and not run.cancelled:
        return False
    try:
        return _comparable(spec) == _comparable(expected)
    except InvalidSpec:
        return False


# --------------------------------------------------------------------------- the child's state


@dataclass(frozen=True)
class Child:
    """The child TaskRun, as its CustomRun sees it."""

    name: str
    uid: str
    succeeded: Mapping[str, Any] | None = None  # its Succeeded condition
    phase: str = ""
    desired_stopped: bool = False
    deleting: bool = False
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.succeeded is not None and self.succeeded.get("status") in ("True", "False")


def parse_child(body: Mapping[str, Any]) -> Child:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return Child(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        succeeded=_condition(status, SUCCEEDED),
        phase=str(status.get("phase") or ""),
        desired_stopped=(body.get("spec") or {}).get("desiredPhase") == "STOPPED",
        deleting=bool(meta.get("deletionTimestamp")),
        status=dict(status),
    )


def wants_stop(run: CustomRun, child: Child | None) -> bool:
    """Cancelled, and the child still runs without having been asked to stop."""
    return (
        run.cancelled
        and child is not None
        and not child.final
        and not child.desired_stopped
        and not child.deleting
    )


def _cut_utf8(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


def results(child: Child) -> tuple[list[dict[str, str]], list[str]]:
    """The execution's outputs (its steps' `output`, a later step's winning) as Tekton
    results, sorted by name, and what was cut or left out, said in words."""
    outputs: dict[str, str] = {}
    for step in child.status.get("steps") or ():
        if isinstance(step, Mapping) and isinstance(step.get("output"), Mapping):
            for key, value in step["output"].items():
                outputs[str(key)] = str(value)
    found: list[dict[str, str]] = []
    notes: list[str] = []
    total = 0
    for name in sorted(outputs):
        value = outputs[name]
        if not _RESULT_NAME.fullmatch(name) or len(name) > 253:
            notes.append(
                f"output {name[:64]!r} is not a Tekton result name "
                "(letters, digits, -, _ and .): left out"
            )
            continue
        if len(found) >= MAX_RESULTS:
            notes.append(f"output {name!r} left out: at most {MAX_RESULTS} results")
            continue
        size = len(value.encode())
        if size > MAX_RESULT_BYTES:
            value = _cut_utf8(value, MAX_RESULT_BYTES)
            notes.append(
                f"result {name!r} cut from {size} to {len(value.encode())} bytes "
                f"(Tekton's result size limit is {MAX_RESULT_BYTES})"
            )
        if total + len(value.encode()) > MAX_RESULTS_BYTES:
            notes.append(
                f"result {name!r} left out: the results together may hold at most "
                f"{MAX_RESULTS_BYTES} bytes"
            )
            continue
        total += len(value.encode())
        found.append({"name": name, "value": value})
    return found, notes


def _attempt_status(attempt: Mapping[str, Any]) -> dict[str, Any]:
    """One ended attempt of the child as an entry of Tekton's `retriesStatus` (a
    CustomRun status of its own)."""
    phase = str(attempt.get("phase") or "")
    entry: dict[str, Any] = {
        "conditions": [
            {
                "type": SUCCEEDED,
                "status": "True" if phase == "SUCCEEDED" else "False",
                "reason": phase.capitalize() or "Failed",
                "message": str(attempt.get("failureMessage") or "")[:_MESSAGE_LIMIT],
                "lastTransitionTime": str(attempt.get("completedAt") or ""),
            }
        ],
        "extraFields": {"executionId": str(attempt.get("executionId") or ""), "phase": phase},
    }
    for key, out in (("startedAt", "startTime"), ("completedAt", "completionTime")):
        if attempt.get(key):
            entry[out] = str(attempt[key])
    return entry


@dataclass(frozen=True)
class Problem:
    """Why the CustomRun cannot go on (or not yet): status, reason and message of its
    Succeeded condition."""

    status: str
    reason: str
    message: str


def problem_of(exc: InvalidCustomRun) -> Problem:
    return Problem("False", exc.reason, str(exc)[:_MESSAGE_LIMIT])


def _succeeded(run: CustomRun, child: Child | None, problem: Problem | None) -> Problem:
    if problem is not None:
        return problem
    cancelled = run.cancel_message or "spec.status is RunCancelled"
    if child is None:
        if run.cancelled:
            return Problem("False", REASON_CANCELLED, f"{cancelled} (no TaskRun was created)")
        return Problem("Unknown", "Pending", "creating its TaskRun")
    cond = child.succeeded or {}
    status = str(cond.get("status") or "Unknown")
    reason = str(cond.get("reason") or "")
    message = str(cond.get("message") or "")[:_MESSAGE_LIMIT]
    said = f"TaskRun {child.name}: {reason}" + (f": {message}" if message else "")
    if status == "True":
        return Problem("True", "Succeeded", f"TaskRun {child.name} succeeded")
    if status == "False":
        if run.cancelled:
            return Problem("False", REASON_CANCELLED, f"{cancelled} ({said})")
        if reason == "TimedOut":
            return Problem("False", REASON_TIMED_OUT, said)
        return Problem("False", reason or "Failed", said)
    if run.cancelled:
        return Problem("Unknown", "Cancelling", f"{cancelled}; stopping TaskRun {child.name}")
    if child.deleting:
        return Problem("Unknown", "TaskRunDeleting", f"TaskRun {child.name} is being deleted")
    return Problem(
        "Unknown", reason or "Pending", message or f"TaskRun {child.name} is not running yet"
    )


def status(
    run: CustomRun, child: Child | None, now: datetime, problem: Problem | None = None
) -> dict[str, Any]:
    """The CustomRun's status from its child (None: not created, or gone) and what stood in
    the way, if anything (`problem`). Without a child, what the status said of the last
    one known (results, extraFields) is kept."""
    old = run.status
    verdict = _succeeded(run, child, problem)
    previous = _condition(old, SUCCEEDED)
    keep = previous is not None and previous.get("status") == verdict.status
    stamp = str(previous.get("lastTransitionTime") or "") if keep and previous else ""
    new: dict[str, Any] = {
        key: copy.deepcopy(old[key])
        for key in ("results", "retriesStatus", "extraFields")
        if key in old
    }
    new["observedGeneration"] = run.generation
    new["startTime"] = str(old.get("startTime") or rfc3339(now))
    notes: list[str] = []
    if child is not None:
        child_status = child.status
        found, notes = results(child)
        new["results"] = found
        attempts = [a for a in child_status.get("attempts") or () if isinstance(a, Mapping)]
        new["retriesStatus"] = [_attempt_status(a) for a in attempts]
        new["extraFields"] = {
            "taskRun": child.name,
            "taskRunUid": child.uid,
            "executionId": str(child_status.get("taskExecutionId") or ""),
            "logUrl": str(child_status.get("logUrl") or ""),
            "phase": child.phase,
            "attempt": int(child_status.get("attempt") or 0),
            "attempts": [dict(a) for a in attempts],
            "resultNotes": notes,
        }
    message = verdict.message
    if notes and verdict.status == "True":
        message = f"{message}; {'; '.join(notes)}"[:_MESSAGE_LIMIT]
    new["conditions"] = [
        {
            "type": SUCCEEDED,
            "status": verdict.status,
            "reason": verdict.reason,
            "message": message,
            "lastTransitionTime": stamp or rfc3339(now),
        }
    ]
    if verdict.status in ("True", "False"):
        ended = str((child.status.get("completedAt") if child is not None else "") or "")
        new["completionTime"] = ended or rfc3339(now)
    return new
