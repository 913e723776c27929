"""What `kubectl ona describe` prints, laid out like `kubectl describe`: pure text from
the TaskRun object and its Events, so it is tested without a cluster.

Every string of the TaskRun and its Events was written by its author, the Ona API or
some controller: it is cleaned of terminal control sequences before it is laid out (so
widths are counted on what is shown), and a field or a cell is kept to one line (a
newline in a step's label must not make a row of its own)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..rules import customrun as customrun_rules
from ..rules.model import parse_time
from ..rules.terminal import clean_tree, one_line

EVENTS_SHOWN = 10
PIPELINE_TASK_LABEL = "tekton.dev/pipelineTask"


def age(then: str, now: datetime) -> str:
    """`kubectl`'s short ages: 45s, 3m, 2h, 5d."""
    moment = parse_time(then)
    if moment is None:
        return "<unknown>"
    seconds = max(int((now - moment).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _table(table: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    rows = [[one_line(cell) for cell in row] for row in table]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append((indent + "  ".join([*cells, row[-1]])).rstrip())
    return lines


def _fields(pairs: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    width = max(len(label) for label, _ in pairs) + 2
    return [
        f"{indent}{(label + ':').ljust(width)}{one_line(value)}".rstrip() for label, value in pairs
    ]


def _connection(spec: Mapping[str, Any]) -> str:
    ref = spec.get("connectionRef")
    if not isinstance(ref, Mapping):
        return "<default>"
    return f"{ref.get('kind') or 'OnaConnection'}/{ref.get('name', '')}"


def _task(spec: Mapping[str, Any]) -> str:
    task = spec.get("task")
    if isinstance(task, Mapping):
        return f"inline {task.get('name', '')!r} in environment {task.get('environmentId', '')}"
    ref = spec.get("taskRef")
    if isinstance(ref, Mapping):
        if ref.get("id"):
            return f"taskRef {ref['id']}"
        return f"taskRef {ref.get('reference', '')!r} in environment {ref.get('environmentId', '')}"
    return "<none>"


def controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference that controls an object (`controller: true`), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return ref
    return None


def is_customrun(ref: Mapping[str, Any] | None) -> bool:
    """Whether an owner reference names a Tekton CustomRun."""
    if ref is None or ref.get("kind") != customrun_rules.KIND:
        return False
    return str(ref.get("apiVersion", "")).partition("/")[0] == customrun_rules.GROUP


def _parents(
    obj: Mapping[str, Any], customrun: Mapping[str, Any] | None, unread: str
) -> list[tuple[str, str]]:
    """What a TaskRun belongs to: its controller, and for a CustomRun's child the
    PipelineRun (and its task) that CustomRun runs for, read from the CustomRun."""
    ref = controller(obj)
    if ref is None:
        return []
    pairs = [("Controlled By", f"{ref.get('kind', '')}/{ref.get('name', '')}")]
    if not is_customrun(ref):
        return pairs
    if customrun is None:
        if unread:
            pairs.append(("Pipeline Run", f"<unknown: {unread}>"))
        return pairs
    cond = next(
        (
            c
            for c in (customrun.get("status") or {}).get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type") == "Succeeded"
        ),
        None,
    )
    if cond is not None:
        pairs.append(("Custom Run", f"{cond.get('status', '')} ({cond.get('reason', '')})"))
    owner = controller(customrun)
    if owner is not None and owner.get("kind") == customrun_rules.PIPELINERUN_KIND:
        task = ((customrun.get("metadata") or {}).get("labels") or {}).get(PIPELINE_TASK_LABEL)
        pairs.append(
            ("Pipeline Run", str(owner.get("name", "")) + (f" (task {task})" if task else ""))
        )
    return pairs


def _duration(status: Mapping[str, Any], now: datetime) -> str:
    start = parse_time(str(status.get("startedAt") or ""))
    if start is None:
        return ""
    end = parse_time(str(status.get("completedAt") or "")) or now
    seconds = int((end - start).total_seconds())
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def describe(
    obj: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    customrun: Mapping[str, Any] | None = None,
    unread: str = "",
) -> str:
    """The TaskRun and its Events; for a Tekton CustomRun's child, `customrun` is that
    CustomRun as read (None, with `unread` saying why, when it could not be)."""
    obj, events = clean_tree(obj), clean_tree(events)
    customrun = clean_tree(customrun) if customrun is not None else None
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    conditions = [c for c in status.get("conditions") or () if isinstance(c, Mapping)]
    succeeded = next((c for c in conditions if c.get("type") == "Succeeded"), None)
    outcome = f"{succeeded.get('status', '')} ({succeeded.get('reason', '')})" if succeeded else ""
    pairs = [
        ("Name", str(meta.get("name", ""))),
        ("Namespace", str(meta.get("namespace", ""))),
        ("Phase", str(status.get("phase") or "<none yet>")),
        ("Succeeded", outcome),
        ("Desired Phase", str(spec.get("desiredPhase") or "RUNNING")),
        ("Task", _task(spec)),
        ("Connection", _connection(spec)),
        *_parents(obj, customrun, unread),
        ("Task ID", str(status.get("taskId", ""))),
        ("Execution", str(status.get("taskExecutionId") or "<none yet>")),
        ("Created", str(meta.get("creationTimestamp", ""))),
        ("Started", str(status.get("startedAt", ""))),
        ("Completed", str(status.get("completedAt", ""))),
        ("Duration", _duration(status, now)),
    ]
    if spec.get("timeout"):
        pairs.append(("Timeout", str(spec["timeout"])))
    if spec.get("suspend") is True and not status.get("taskExecutionId"):
        pairs.append(("Suspended", "true: not started until spec.suspend is false"))
    if succeeded is not None and succeeded.get("reason") == "Queued":
        # The message names the connection's limit and the run's place in line.
        since = f" (since {status['queuedAt']})" if status.get("queuedAt") else ""
        pairs.append(("Queued", f"{succeeded.get('message', '')}{since}"))
    if status.get("failureMessage"):
        pairs.append(("Failure Message", str(status["failureMessage"])))
    if status.get("logUrl"):
        pairs.append(("Log URL", str(status["logUrl"])))
    lines = _fields(pairs)

    lines.append("Conditions:")
    if conditions:
        rows = [["Type", "Status", "Reason", "Message"], ["----", "------", "------", "-------"]]
        rows += [
            [
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                str(c.get("message", "")),
            ]
            for c in conditions
        ]
        lines += _table(rows)
    else:
        lines.append("  <none>")

    lines.append("Steps:")
    steps = [s for s in status.get("steps") or () if isinstance(s, Mapping)]
    if steps:
        rows = [["ID", "Label", "Phase", "Failure"], ["--", "-----", "-----", "-------"]]
        rows += [
            [
                str(s.get("id", "")),
                str(s.get("label", "")),
                str(s.get("phase", "")),
                str(s.get("failureMessage", "")),
            ]
            for s in steps
        ]
        lines += _table(rows)
        for step in steps:
            output = step.get("output")
            if isinstance(output, Mapping) and output:
                named = one_line(str(step.get("label") or step.get("id")))
                lines.append(f"  Outputs of {named}:")
                lines += [f"    {one_line(str(k))}: {one_line(str(v))}" for k, v in output.items()]
    else:
        lines.append("  <none>")

    attempts = [a for a in status.get("attempts") or () if isinstance(a, Mapping)]
    if attempts:
        lines.append("Attempts:")
        keys = sorted({key for attempt in attempts for key in attempt})
        rows = [[key[:1].upper() + key[1:] for key in keys], ["-" * len(key) for key in keys]]
        rows += [[str(a.get(key, "")) for key in keys] for a in attempts]
        lines += _table(rows)

    lines.append("Log Tail:")
    tail = str(status.get("logTail") or "")
    if tail:
        lines += [f"  {line}" for line in tail.split("\n")]
    else:
        lines.append("  <none>")

    lines.append("Events:")
    if events:
        shown = sorted(events, key=_event_time)[-EVENTS_SHOWN:]
        rows = [["Type", "Reason", "Age", "Message"], ["----", "------", "---", "-------"]]
        rows += [
            [
                str(e.get("type", "")),
                str(e.get("reason", "")),
                age(_event_time(e), now),
                str(e.get("message", "")),
            ]
            for e in shown
        ]
        lines += _table(rows)
    else:
        lines.append("  <none>")
    return "\n".join(lines) + "\n"


def _event_time(event: Mapping[str, Any]) -> str:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = event.get(key)
        if value:
            return str(value)
    return str((event.get("metadata") or {}).get("creationTimestamp", ""))
