"""The verdict of a chaos run, counted from the simulator's own records.

Pure: given what each TaskRun was meant to be, the TaskRuns as the API server shows them at
the end, and the simulator's executions (`GET /_simulator/executions`), it counts duplicate
starts, lost runs, status mismatches and runs that never converged. Nothing here trusts the
operator's account of itself except the TaskRun status being judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INLINE, REF_ID, REF_REFERENCE, SHARED = "inline", "ref-id", "ref-reference", "shared"
FORMS = (INLINE, REF_ID, REF_REFERENCE, SHARED)
FINAL_REMOTE = ("SUCCEEDED", "FAILED", "STOPPED")
STALL_REASON = "StartOutcomeUnknown"
REFERENCE_PREFIX = "k8s-taskrun-"


@dataclass(frozen=True)
class Planned:
    """What the harness created: enough to know which executions belong to the TaskRun."""

    name: str
    form: str
    task_id: str = ""  # the seeded task for REF_ID, REF_REFERENCE and SHARED
    created_stopped: bool = False
    stop_edit: bool = False  # desiredPhase is patched to STOPPED while it may still start


@dataclass(frozen=True)
class Finding:
    taskrun: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"taskrun": self.taskrun, "detail": self.detail}


@dataclass
class Verdict:
    taskruns: int = 0
    executions: int = 0
    duplicates: list[Finding] = field(default_factory=list)
    lost: list[Finding] = field(default_factory=list)
    mismatches: list[Finding] = field(default_factory=list)
    stalled: list[Finding] = field(default_factory=list)
    not_converged: list[Finding] = field(default_factory=list)
    # Executions of the shared task nobody recorded; each stalled TaskRun of that task may
    # own one (it started it, then could not tell it from the others).
    shared_unrecorded: int = 0
    shared_stalled: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.mismatches or self.not_converged)

    def to_json(self) -> dict[str, Any]:
        def listed(items: list[Finding]) -> list[dict[str, str]]:
            return [f.to_json() for f in items]

        return {
            "taskruns": self.taskruns,
            "executions": self.executions,
            "duplicate_starts": len(self.duplicates),
            "lost_runs": len(self.lost),
            "status_mismatches": len(self.mismatches),
            "not_converged": len(self.not_converged),
            "stalled": len(self.stalled),
            "shared_task_unrecorded_executions": self.shared_unrecorded,
            "shared_task_stalled_taskruns": self.shared_stalled,
            "outcomes": dict(sorted(self.outcomes.items())),
            "duplicates_detail": listed(self.duplicates),
            "lost_detail": listed(self.lost),
            "mismatches_detail": listed(self.mismatches),
            "stalled_detail": listed(self.stalled),
            "not_converged_detail": listed(self.not_converged),
        }


def short_phase(phase: str) -> str:
    return phase.removeprefix("TASK_EXECUTION_PHASE_")


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def is_final(status: Mapping[str, Any]) -> bool:
    cond = condition(status, "Succeeded")
    return cond is not None and cond.get("status") in ("True", "False")


def is_stalled(status: Mapping[str, Any]) -> bool:
    cond = condition(status, "Stalled")
    return cond is not None and cond.get("status") == "True" and cond.get("reason") == STALL_REASON


def settled(status: Mapping[str, Any]) -> bool:
    """Where a TaskRun may rest at the end: final, or waiting for a person."""
    return is_final(status) or is_stalled(status)


@dataclass(frozen=True)
class _Execution:
    id: str
    task_id: str
    reference: str
    phase: str
    status_version: str
    failure_message: str

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> _Execution:
        execution = item.get("execution") or {}
        status = execution.get("status") or {}
        return cls(
            id=str(execution.get("id", "")),
            task_id=str((execution.get("metadata") or {}).get("taskId", "")),
            reference=str(item.get("taskReference") or ""),
            phase=short_phase(str(status.get("phase", ""))),
            status_version=str(status.get("statusVersion", "")),
            failure_message=str(status.get("failureMessage", "")),
        )


def verify(
    planned: Sequence[Planned],
    taskruns: Iterable[Mapping[str, Any]],
    executions: Iterable[Mapping[str, Any]],
) -> Verdict:
    """Judge every planned TaskRun against the executions the simulator holds."""
    bodies = {str((t.get("metadata") or {}).get("name")): t for t in taskruns}
    remote = [_Execution.from_item(item) for item in executions]
    by_id = {e.id: e for e in remote}
    by_task: dict[str, list[_Execution]] = {}
    by_reference: dict[str, list[_Execution]] = {}
    for e in remote:
        by_task.setdefault(e.task_id, []).append(e)
        if e.reference:
            by_reference.setdefault(e.reference, []).append(e)

    verdict = Verdict(taskruns=len(planned), executions=len(remote))
    accounted: set[str] = set()
    recorded_by: dict[str, list[str]] = {}
    shared_tasks: set[str] = set()

    for plan in planned:
        body = bodies.get(plan.name)
        if body is None:
            verdict.lost.append(Finding(plan.name, "the TaskRun does not exist at the end"))
            continue
        status: Mapping[str, Any] = body.get("status") or {}
        recorded = str(status.get("taskExecutionId") or "")
        if recorded:
            recorded_by.setdefault(recorded, []).append(plan.name)
        outcome = _outcome(status)
        verdict.outcomes[outcome] = verdict.outcomes.get(outcome, 0) + 1
        if is_stalled(status):
            cond = condition(status, "Stalled") or {}
            verdict.stalled.append(Finding(plan.name, str(cond.get("message", ""))))
        elif not is_final(status):
            cond = condition(status, "Succeeded") or {}
            verdict.not_converged.append(
                Finding(
                    plan.name,
                    f"phase {status.get('phase') or '-'}, Succeeded "
                    f"{cond.get('status', '-')} ({cond.get('reason', '-')}): "
                    f"{cond.get('message', '')}",
                )
            )

        if plan.form == SHARED:
            shared_tasks.add(plan.task_id)
            own: list[_Execution] = [by_id[recorded]] if recorded in by_id else []
            if recorded and not own:
                verdict.lost.append(Finding(plan.name, f"recorded unknown execution {recorded}"))
                continue
            if own and own[0].task_id != plan.task_id:
                verdict.lost.append(
                    Finding(plan.name, f"recorded {recorded}, an execution of another task")
                )
                continue
        else:
            uid = str((body.get("metadata") or {}).get("uid", ""))
            own = (
                by_reference.get(REFERENCE_PREFIX + uid, [])
                if plan.form == INLINE
                else by_task.get(plan.task_id, [])
            )
        accounted.update(e.id for e in own)
        _judge(verdict, plan, status, recorded, own)

    for execution_id, names in recorded_by.items():
        if len(names) > 1:
            verdict.duplicates.append(
                Finding(", ".join(sorted(names)), f"all recorded execution {execution_id}")
            )

    stalled_names = {f.taskrun for f in verdict.stalled}
    verdict.shared_stalled = sum(1 for p in planned if p.form == SHARED and p.name in stalled_names)
    unrecorded_shared = [e for e in remote if e.task_id in shared_tasks and e.id not in accounted]
    verdict.shared_unrecorded = len(unrecorded_shared)
    excess = len(unrecorded_shared) - verdict.shared_stalled
    for e in unrecorded_shared[: max(0, excess)]:
        verdict.duplicates.append(
            Finding("(shared task)", f"execution {e.id} of the shared task: no TaskRun owns it")
        )
    for e in remote:
        if e.id not in accounted and e.task_id not in shared_tasks:
            verdict.duplicates.append(
                Finding(
                    "(none)",
                    f"execution {e.id} of task {e.task_id} ({e.reference or 'no reference'})"
                    " belongs to no TaskRun",
                )
            )
    return verdict


def _outcome(status: Mapping[str, Any]) -> str:
    if is_stalled(status):
        return f"Stalled/{STALL_REASON}"
    cond = condition(status, "Succeeded")
    if cond is None:
        return "no conditions"
    return f"{status.get('phase') or '-'}/{cond.get('reason') or cond.get('status')}"


def _judge(
    verdict: Verdict,
    plan: Planned,
    status: Mapping[str, Any],
    recorded: str,
    own: Sequence[_Execution],
) -> None:
    name = plan.name
    if len(own) > 1:
        ids = ", ".join(e.id for e in own)
        verdict.duplicates.append(Finding(name, f"{len(own)} executions: {ids}"))
        return
    if plan.created_stopped:
        if own:
            verdict.duplicates.append(Finding(name, f"created STOPPED, yet {own[0].id} started"))
        elif is_final(status) and status.get("phase") != "STOPPED":
            verdict.mismatches.append(
                Finding(name, f"created STOPPED, ended as {status.get('phase')!r}")
            )
        return
    if not own:
        if recorded:
            verdict.lost.append(Finding(name, f"recorded {recorded}, which does not exist"))
        elif is_stalled(status):
            return
        elif plan.stop_edit and is_final(status) and _stopped_before_start(status):
            return  # desiredPhase set to STOPPED before any start: nothing should run
        elif is_final(status):
            cond = condition(status, "Succeeded") or {}
            verdict.lost.append(
                Finding(
                    name,
                    f"ended ({cond.get('reason')}: {cond.get('message')}) without an execution",
                )
            )
        else:
            verdict.lost.append(Finding(name, "never got an execution"))
        return
    execution = own[0]
    if recorded != execution.id:
        if not is_stalled(status):
            what = f"recorded {recorded}" if recorded else "did not record it"
            verdict.lost.append(Finding(name, f"execution {execution.id} exists but it {what}"))
        return
    if execution.phase not in FINAL_REMOTE:
        if is_final(status):
            verdict.mismatches.append(
                Finding(
                    name,
                    f"final as {status.get('phase')} while {execution.id} is still "
                    f"{execution.phase} remotely",
                )
            )
        return
    if not is_final(status) or status.get("phase") != execution.phase:
        verdict.lost.append(
            Finding(
                name,
                f"{execution.id} ended {execution.phase} remotely; TaskRun phase "
                f"{status.get('phase') or '-'}, final={is_final(status)}",
            )
        )
        return
    if str(status.get("statusVersion") or "") != execution.status_version:
        verdict.mismatches.append(
            Finding(
                name,
                f"statusVersion {status.get('statusVersion')!r}, remote final "
                f"{execution.status_version!r}",
            )
        )
    if str(status.get("failureMessage") or "") != execution.failure_message:
        verdict.mismatches.append(
            Finding(
                name,
                f"failureMessage {status.get('failureMessage')!r}, remote "
                f"{execution.failure_message!r}",
            )
        )


def _stopped_before_start(status: Mapping[str, Any]) -> bool:
    cond = condition(status, "Succeeded") or {}
    return status.get("phase") == "STOPPED" and cond.get("reason") == "Stopped"
