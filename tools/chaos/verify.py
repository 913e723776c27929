"""The verdict of a chaos run, counted from the simulator's own records.

Pure: given what each TaskRun was meant to be, the TaskRuns as the API server shows them at
the end, and the simulator's executions (`GET /_simulator/executions`), it counts duplicate
starts, lost runs, status mismatches and runs that never converged. Nothing here trusts the
operator's account of itself except the TaskRun status being judged.

Given the simulator's environments (`GET /_simulator/environments`), it counts the
environments of each fromProject TaskRun (named `<name>-<uid>`): more than one is a
duplicate, one still there (not DELETING or DELETED) after its run ended is a leak, and one
of the project that belongs to no TaskRun is a duplicate too.

Given also the subject each connection's token acts as, the simulator's call log
(`GET /_simulator/calls`) and tasks (`GET /_simulator/tasks`), it counts wrong-connection
calls: an execution, an inline task, or a call about one TaskRun's task or execution
(StartTask, CreateTask, GetTask, DeleteTask, GetTaskExecution, StopTaskExecution) made by
another subject than the one of the connection the TaskRun names.

Given a TaskRunSchedule's life (`judge_schedule`: when it was created and suspended, and
the names of the TaskRuns it made), it counts minute slots with no run and runs for no
slot: every slot while it was on must have exactly its one TaskRun, named
`<schedule>-<minutes since the epoch>` as docs/schedules.md promises. Its TaskRuns are
judged like planned inline ones (pass them in `planned`).

A TaskRun with `spec.retries` may have one execution per attempt: each must be the one an
attempt recorded (`status.attempts[]`, then `status.taskExecutionId`), an execution no
attempt recorded is a duplicate start within an attempt, and more executions or attempts
than `retries + 1` are excess attempts. Its end must be the one its `sim:fail_first`
implies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

INLINE, REF_ID, REF_REFERENCE, SHARED = "inline", "ref-id", "ref-reference", "shared"
FORMS = (INLINE, REF_ID, REF_REFERENCE, SHARED)
FINAL_REMOTE = ("SUCCEEDED", "FAILED", "STOPPED")
STALL_REASON = "StartOutcomeUnknown"
# Stalls that wait for a person: an ambiguous start, or an ambiguous environment creation.
STALL_REASONS = (STALL_REASON, "EnvironmentOutcomeUnknown")
REFERENCE_PREFIX = "k8s-taskrun-"
DEFAULT_CONNECTION = ""  # Planned.connection of a TaskRun without spec.connectionRef
# Calls whose request names one task or execution (`id`), or whose result is one; a
# call that failed before it was authenticated has no subject and is not judged.
ATTRIBUTED_METHODS = (
    "CreateTask",
    "DeleteTask",
    "GetTask",
    "GetTaskExecution",
    "StartTask",
    "StopTaskExecution",
)


@dataclass(frozen=True)
class Planned:
    """What the harness created: enough to know which executions belong to the TaskRun."""

    name: str
    form: str
    task_id: str = ""  # the seeded task for REF_ID, REF_REFERENCE and SHARED
    created_stopped: bool = False
    stop_edit: bool = False  # desiredPhase is patched to STOPPED while it may still start
    connection: str = DEFAULT_CONNECTION  # spec.connectionRef.name; "" for the default
    retries: int = 0  # spec.retries
    fail_first: int = 0  # sim:fail_first of its inline task: its first N executions fail
    from_project: bool = False  # spec.environment.fromProject: one environment of its own


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
    # Executions, inline tasks and calls made with another connection's token than the
    # one the TaskRun names, and how many of each were judged (0 when not asked to).
    wrong_connection: list[Finding] = field(default_factory=list)
    connection_checked: dict[str, int] = field(default_factory=dict)
    # spec.retries: TaskRuns with more executions or attempts than retries + 1, and how
    # many retrying TaskRuns and recorded attempts were judged.
    excess_attempts: list[Finding] = field(default_factory=list)
    retrying_taskruns: int = 0
    retry_attempts: int = 0
    # Environments of fromProject TaskRuns: more than one per run, or left after the run.
    environments_checked: int = 0
    environment_duplicates: list[Finding] = field(default_factory=list)
    environment_leaks: list[Finding] = field(default_factory=list)
    # A TaskRunSchedule's slots while it was on: how many were due, and any without its
    # run or any run of a slot that was not due.
    schedule_slots: int = 0
    scheduled_runs: int = 0
    schedule_missed: list[Finding] = field(default_factory=list)
    schedule_unexpected: list[Finding] = field(default_factory=list)
    # A connection's spec.limits.maxConcurrentRuns: the most of its executions that ran at
    # once (created -> completed, from the simulator's record), and any excess.
    limit: int = 0
    limit_most_at_once: int = 0
    limit_exceeded: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates
            or self.excess_attempts
            or self.lost
            or self.mismatches
            or self.not_converged
            or self.wrong_connection
            or self.environment_duplicates
            or self.environment_leaks
            or self.schedule_missed
            or self.schedule_unexpected
            or self.limit_exceeded
        )

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
            "wrong_connection_calls": len(self.wrong_connection),
            "excess_attempts": len(self.excess_attempts),
            "retrying_taskruns": self.retrying_taskruns,
            "retry_attempts_judged": self.retry_attempts,
            "environments_checked": self.environments_checked,
            "duplicate_environments": len(self.environment_duplicates),
            "leaked_environments": len(self.environment_leaks),
            "schedule_slots": self.schedule_slots,
            "scheduled_runs": self.scheduled_runs,
            "missed_slots": len(self.schedule_missed),
            "unexpected_slots": len(self.schedule_unexpected),
            "connection_limit": self.limit,
            "connection_limit_most_at_once": self.limit_most_at_once,
            "connection_limit_exceeded": len(self.limit_exceeded),
            "connection_checked": dict(self.connection_checked),
            "stalled": len(self.stalled),
            "shared_task_unrecorded_executions": self.shared_unrecorded,
            "shared_task_stalled_taskruns": self.shared_stalled,
            "outcomes": dict(sorted(self.outcomes.items())),
            "duplicates_detail": listed(self.duplicates),
            "lost_detail": listed(self.lost),
            "mismatches_detail": listed(self.mismatches),
            "stalled_detail": listed(self.stalled),
            "not_converged_detail": listed(self.not_converged),
            "wrong_connection_detail": listed(self.wrong_connection),
            "excess_attempts_detail": listed(self.excess_attempts),
            "duplicate_environments_detail": listed(self.environment_duplicates),
            "leaked_environments_detail": listed(self.environment_leaks),
            "missed_slots_detail": listed(self.schedule_missed),
            "unexpected_slots_detail": listed(self.schedule_unexpected),
            "connection_limit_exceeded_detail": listed(self.limit_exceeded),
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
    return cond is not None and cond.get("status") == "True" and cond.get("reason") in STALL_REASONS


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
    creator: str

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
            creator=str(((execution.get("metadata") or {}).get("creator") or {}).get("id") or ""),
        )


def verify(
    planned: Sequence[Planned],
    taskruns: Iterable[Mapping[str, Any]],
    executions: Iterable[Mapping[str, Any]],
    *,
    subjects: Mapping[str, str] | None = None,
    calls: Iterable[Mapping[str, Any]] = (),
    tasks: Iterable[Mapping[str, Any]] = (),
    environments: Iterable[Mapping[str, Any]] | None = None,
) -> Verdict:
    """Judge every planned TaskRun against the executions the simulator holds.

    With `subjects` (connection name, "" for the default, to the subject id its token acts
    as), also judge who made each TaskRun's executions, inline tasks and calls (`calls`
    and `tasks` as the simulator's control API lists them).
    """
    bodies = {str((t.get("metadata") or {}).get("name")): t for t in taskruns}
    remote = [_Execution.from_item(item) for item in executions]
    by_id = {e.id: e for e in remote}
    by_task: dict[str, list[_Execution]] = {}
    by_reference: dict[str, list[_Execution]] = {}
    for e in remote:
        by_task.setdefault(e.task_id, []).append(e)
        if e.reference:
            by_reference.setdefault(e.reference, []).append(e)

    task_bodies = list(tasks)
    tasks_by_reference: dict[str, list[Mapping[str, Any]]] = {}
    for task in task_bodies:
        reference = str((task.get("metadata") or {}).get("reference") or "")
        if reference.startswith(REFERENCE_PREFIX):
            tasks_by_reference.setdefault(reference, []).append(task)

    verdict = Verdict(taskruns=len(planned), executions=len(remote))
    owners = _Owners()
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
        for attempt in status.get("attempts") or ():
            if isinstance(attempt, Mapping) and attempt.get("executionId"):
                recorded_by.setdefault(str(attempt["executionId"]), []).append(plan.name)
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
            if plan.form == INLINE:
                inline_tasks = tasks_by_reference.get(REFERENCE_PREFIX + uid, [])
                owners.inline_tasks[plan.name] = inline_tasks
                owners.add({str(t.get("id", "")) for t in inline_tasks}, plan.name)
                owners.add({e.task_id for e in own}, plan.name)
            else:
                owners.add({plan.task_id}, plan.name)
        owners.executions[plan.name] = list(own)
        owners.add({e.id for e in own}, plan.name)
        accounted.update(e.id for e in own)
        (_judge_retrying if plan.retries else _judge)(verdict, plan, status, recorded, own)

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
    if environments is not None:
        _judge_environments(verdict, planned, bodies, environments)
    if subjects is not None:
        _judge_connections(
            verdict,
            planned,
            subjects,
            owners,
            unrecorded_shared,
            stalled_names,
            excess=max(0, excess),
            calls=calls,
        )
    return verdict


_GONE = ("ENVIRONMENT_PHASE_DELETING", "ENVIRONMENT_PHASE_DELETED")
# Slots this close to the suspension may or may not have been taken: neither is judged.
SUSPEND_SLACK = timedelta(seconds=5)


def judge_schedule(
    verdict: Verdict,
    schedule: str,
    created: datetime,
    suspended: datetime,
    names: Iterable[str],
) -> None:
    """An every-minute schedule created at `created` (its creationTimestamp) and suspended
    at `suspended` made the TaskRuns `names`: one for each minute slot after its creation
    and before its suspension, and none for any other slot."""
    present = set(names)
    verdict.scheduled_runs += len(present)
    first = created.replace(second=0, microsecond=0) + timedelta(minutes=1)
    due: list[datetime] = []
    slot = first
    while slot <= suspended + SUSPEND_SLACK:
        due.append(slot)
        slot += timedelta(minutes=1)
    allowed = {f"{schedule}-{int(s.timestamp()) // 60}": s for s in due}
    for name, at in allowed.items():
        if at <= suspended - SUSPEND_SLACK:
            verdict.schedule_slots += 1
            if name not in present:
                verdict.schedule_missed.append(
                    Finding(name, f"no TaskRun for the {at:%H:%M:%S} slot of {schedule}")
                )
    for name in sorted(present - set(allowed)):
        verdict.schedule_unexpected.append(
            Finding(
                name,
                f"made by {schedule}, created {created:%H:%M:%S} and suspended "
                f"{suspended:%H:%M:%S}, for no slot while it was on",
            )
        )


def _judge_environments(
    verdict: Verdict,
    planned: Sequence[Planned],
    bodies: Mapping[str, Mapping[str, Any]],
    environments: Iterable[Mapping[str, Any]],
) -> None:
    """One environment per fromProject TaskRun, and none left once its run is over."""
    envs = [item.get("environment", item) for item in environments]
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for env in envs:
        name = str((env.get("metadata") or {}).get("name") or "")
        if name:
            by_name.setdefault(name, []).append(env)
    owned: set[str] = set()
    projects: set[str] = set()
    for plan in planned:
        if not plan.from_project:
            continue
        body = bodies.get(plan.name)
        if body is None:
            continue
        verdict.environments_checked += 1
        uid = str((body.get("metadata") or {}).get("uid", ""))
        mine = by_name.get(f"{plan.name}-{uid}", [])
        owned.update(str(e.get("id")) for e in mine)
        projects.update(str((e.get("metadata") or {}).get("projectId")) for e in mine)
        if len(mine) > 1:
            ids = ", ".join(sorted(str(e.get("id")) for e in mine))
            verdict.environment_duplicates.append(Finding(plan.name, f"environments {ids}"))
        status: Mapping[str, Any] = body.get("status") or {}
        if is_final(status):
            for env in mine:
                phase = str((env.get("status") or {}).get("phase", ""))
                if phase not in _GONE:
                    verdict.environment_leaks.append(
                        Finding(plan.name, f"environment {env.get('id')} is {phase}")
                    )
    for env in envs:
        project = str((env.get("metadata") or {}).get("projectId") or "")
        if project in projects and str(env.get("id")) not in owned:
            verdict.environment_duplicates.append(
                Finding("(none)", f"environment {env.get('id')} belongs to no TaskRun")
            )


@dataclass
class _Owners:
    """Which TaskRun each task and execution id belongs to, for the connection check.

    The shared task belongs to no one TaskRun; an execution of it belongs to the TaskRun
    that recorded it. An id claimed by two TaskRuns (already a duplicate) is not judged.
    """

    by_id: dict[str, str] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)
    executions: dict[str, list[_Execution]] = field(default_factory=dict)
    inline_tasks: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)

    def add(self, ids: Iterable[str], name: str) -> None:
        for id_ in ids:
            if not id_:
                continue
            if self.by_id.setdefault(id_, name) != name:
                self.ambiguous.add(id_)

    def owner(self, id_: str) -> str | None:
        if not id_ or id_ in self.ambiguous:
            return None
        return self.by_id.get(id_)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def judge_limit(
    verdict: Verdict,
    executions: Iterable[Mapping[str, Any]],
    subject: str,
    limit: int,
    connection: str,
) -> None:
    """The executions made as `subject` (one connection's token) never ran more than
    `limit` at once, from creation to completion (one still running counts to the end)."""
    edges: list[tuple[datetime, int, str]] = []
    for item in executions:
        execution = item.get("execution") or {}
        meta = execution.get("metadata") or {}
        if ((meta.get("creator") or {}).get("id") or "") != subject or not meta.get("createdAt"):
            continue
        edges.append((_when(str(meta["createdAt"])), 1, str(execution.get("id", ""))))
        if meta.get("completedAt"):
            edges.append((_when(str(meta["completedAt"])), -1, str(execution.get("id", ""))))
    verdict.limit = limit
    now = 0
    for moment, step, execution_id in sorted(edges):  # an end sorts before a start
        now += step
        if now > verdict.limit_most_at_once:
            verdict.limit_most_at_once = now
        if step == 1 and now > limit:
            verdict.limit_exceeded.append(
                Finding(
                    connection,
                    f"execution {execution_id} created at {moment.isoformat()} made {now} "
                    f"running at once; spec.limits.maxConcurrentRuns is {limit}",
                )
            )


def _judge_connections(
    verdict: Verdict,
    planned: Sequence[Planned],
    subjects: Mapping[str, str],
    owners: _Owners,
    unrecorded_shared: Sequence[_Execution],
    stalled_names: set[str],
    *,
    excess: int,
    calls: Iterable[Mapping[str, Any]],
) -> None:
    """Everything done for a TaskRun must be done as its own connection's subject."""
    connection_of = {subject: connection for connection, subject in subjects.items()}

    def who(subject: str) -> str:
        if subject in connection_of:
            return _label(connection_of[subject])
        return f"unknown subject {subject or '(none)'}"

    plans = {p.name: p for p in planned}
    for plan in planned:
        if plan.connection not in subjects:
            raise ValueError(f"{plan.name}: no subject given for connection {plan.connection!r}")
    checked = {"executions": 0, "inline_tasks": 0, "calls": 0}

    def judge(name: str, actual: str, what: str) -> None:
        plan = plans[name]
        expected = subjects[plan.connection]
        if actual != expected:
            verdict.wrong_connection.append(
                Finding(
                    name,
                    f"{what} was made as {who(actual)}; the TaskRun uses {_label(plan.connection)}",
                )
            )

    for name, own in owners.executions.items():
        for e in own:
            checked["executions"] += 1
            judge(name, e.creator, f"execution {e.id}")
    for name, inline_tasks in owners.inline_tasks.items():
        for task in inline_tasks:
            checked["inline_tasks"] += 1
            creator = str(((task.get("metadata") or {}).get("creator") or {}).get("id") or "")
            judge(name, creator, f"inline task {task.get('id')}")

    # The shared task's unrecorded executions: each stalled TaskRun of that task owns one,
    # made as its own connection's subject. Match them per subject; what is left over
    # beyond the duplicates already counted was made with the wrong token.
    stalled_by_subject: dict[str, int] = {}
    for plan in planned:
        if plan.form == SHARED and plan.name in stalled_names:
            subject = subjects[plan.connection]
            stalled_by_subject[subject] = stalled_by_subject.get(subject, 0) + 1
    unmatched: list[_Execution] = []
    seen: dict[str, int] = {}
    for e in unrecorded_shared:
        checked["executions"] += 1
        seen[e.creator] = seen.get(e.creator, 0) + 1
        if seen[e.creator] > stalled_by_subject.get(e.creator, 0):
            unmatched.append(e)
    for e in unmatched[excess:]:
        verdict.wrong_connection.append(
            Finding(
                "(shared task)",
                f"execution {e.id} was made as {who(e.creator)}, and no stalled TaskRun "
                "of that connection is left to own it",
            )
        )

    for call in calls:
        method = str(call.get("method") or "")
        subject = str(call.get("subjectId") or "")
        if method not in ATTRIBUTED_METHODS or not subject:
            continue
        request_id = str(call.get("requestId") or "")
        result_id = str(call.get("resultId") or "")
        target = request_id if owners.owner(request_id) else result_id
        owner = owners.owner(target)
        if owner is None:
            continue
        checked["calls"] += 1
        judge(owner, subject, f"{method} call #{call.get('seq')} ({target})")
    verdict.connection_checked = checked


def _label(connection: str) -> str:
    return "the default connection" if connection == DEFAULT_CONNECTION else connection


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


def _judge_retrying(
    verdict: Verdict,
    plan: Planned,
    status: Mapping[str, Any],
    recorded: str,
    own: Sequence[_Execution],
) -> None:
    """A TaskRun with spec.retries: at most one execution per attempt, each recorded by its
    attempt; never more attempts than allowed; the end its sim:fail_first implies."""
    name, allowed = plan.name, plan.retries + 1
    past = [
        str(a.get("executionId") or "")
        for a in status.get("attempts") or ()
        if isinstance(a, Mapping)
    ]
    listed = [*past, *([recorded] if recorded else [])]
    verdict.retrying_taskruns += 1
    verdict.retry_attempts += len(listed)
    if len(own) > allowed or len(past) + 1 > allowed:
        verdict.excess_attempts.append(
            Finding(
                name,
                f"{len(own)} executions in {len(past) + 1} attempts; spec.retries "
                f"{plan.retries} allows {allowed}",
            )
        )
    if len(set(listed)) != len(listed):
        verdict.duplicates.append(Finding(name, f"attempts recorded {listed}: one id twice"))
    by_id = {e.id: e for e in own}
    unrecorded = [e for e in own if e.id not in listed]
    # A stalled attempt may own the one execution it could not tell apart.
    stalled_own = is_stalled(status) and not recorded and len(unrecorded) == 1
    if unrecorded and not stalled_own:
        ids = ", ".join(e.id for e in unrecorded)
        verdict.duplicates.append(
            Finding(name, f"executions no attempt recorded (a second start in one attempt): {ids}")
        )
    for number, execution_id in enumerate(past, 1):
        found = by_id.get(execution_id)
        if found is None:
            verdict.lost.append(
                Finding(name, f"attempt {number} recorded {execution_id!r}, not one of its own")
            )
        elif found.phase != "FAILED":
            verdict.mismatches.append(
                Finding(
                    name,
                    f"attempt {number} ({execution_id}) was retried, yet it is "
                    f"{found.phase} remotely",
                )
            )
    current = [by_id[recorded]] if recorded in by_id else unrecorded[:1] if stalled_own else []
    _judge(verdict, replace(plan, retries=0), status, recorded, current)
    if is_final(status) and not is_stalled(status):
        wanted_phase = "SUCCEEDED" if plan.fail_first <= plan.retries else "FAILED"
        wanted_attempt = min(plan.fail_first, plan.retries) + 1
        got = (status.get("phase"), status.get("attempt"))
        if got != (wanted_phase, wanted_attempt):
            verdict.mismatches.append(
                Finding(
                    name,
                    f"ended {got[0]} at attempt {got[1]}; sim:fail_first={plan.fail_first} "
                    f"with retries {plan.retries} means {wanted_phase} at attempt "
                    f"{wanted_attempt}",
                )
            )


def _stopped_before_start(status: Mapping[str, Any]) -> bool:
    cond = condition(status, "Succeeded") or {}
    return status.get("phase") == "STOPPED" and cond.get("reason") == "Stopped"
