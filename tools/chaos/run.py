"""Running a chaos plan against a live stack and reporting the figures.

`run_chaos(settings, state_dir)` starts the stack, seeds the simulator's tasks, plays the
plan's events in time (waves of TaskRuns, faults, SIGKILLs and crash points, the API
server restart), clears the faults, waits until every TaskRun is final or stalled for a
person, then counts from the simulator's own records. It returns the figures (also written
to `figures.json` in the state folder) and always tears the stack down.
"""

from __future__ import annotations

import heapq
import json
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client

from ona_simulator.control_client import SimulatorControl
from tools.chaos.plan import (
    ENVIRONMENTS,
    PROJECT,
    SCHEDULE,
    TEAM_CONNECTION,
    TEAM_LIMIT,
    Event,
    FaultKind,
    Plan,
    PlannedRun,
    Settings,
    make_plan,
    schedule_manifest,
)
from tools.chaos.stack import Stack, StackError
from tools.chaos.verify import (
    DEFAULT_CONNECTION,
    INLINE,
    SHARED,
    Finding,
    Planned,
    Verdict,
    judge_limit,
    judge_schedule,
    settled,
    verify,
)

GROUP, VERSION, PLURAL = "automation.ona.com", "v1alpha1", "taskruns"
SCHEDULES = "taskrunschedules"
SCHEDULE_LABEL = "automation.ona.com/schedule"
WRONG_CONNECTION_LINES = 20  # a systematic mix-up would list every call: show a few
T = TypeVar("T")
Log = Callable[[str], None]


class ChaosError(RuntimeError):
    """The run could not be carried out (not a verdict on the operator)."""


@dataclass
class _Window:
    name: str
    start: float  # wall clock (epoch seconds), to compare with the simulator's call times
    end: float | None = None


@dataclass
class _State:
    started: float = 0.0  # monotonic start of the chaos phase
    kills: int = 0
    crash_waits: dict[int, float] = field(default_factory=dict)  # operator index -> deadline
    unexpected_exits: list[str] = field(default_factory=list)
    windows: list[_Window] = field(default_factory=list)
    restarts: list[dict[str, float]] = field(default_factory=list)
    last_disturbance: float = 0.0  # monotonic: last fault off, operator back, API server back
    created: list[Planned] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    pending_start: float | None = None  # monotonic time to start the operator again
    # The chaos TaskRunSchedule: its creationTimestamp, and when it was suspended.
    schedule_created: datetime | None = None
    schedule_suspended: datetime | None = None


def run_chaos(
    settings: Settings, state_dir: Path, *, log: Log = print, keep_state: bool = True
) -> dict[str, Any]:
    plan = make_plan(settings)
    stack = Stack(state_dir, log, seed=settings.seed)
    wall_start = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        stack.start()
        with SimulatorControl(stack.control_url, timeout=30) as control:
            figures = _Runner(plan, stack, control, log, wall_start).run()
    finally:
        stack.close()
        left = stack.leftovers()
        log(f"teardown left behind: {', '.join(left)}" if left else "teardown: nothing left")
        if figures:
            figures["teardown_leftovers"] = left
            (state_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
        if not keep_state:
            _prune(state_dir)
    return figures


def _prune(state_dir: Path) -> None:
    """Drop the cluster's data and keys; keep logs and figures."""
    cluster = state_dir / "cluster"
    for name in ("etcd-data", "pki"):
        shutil.rmtree(cluster / name, ignore_errors=True)
    for name in ("admin.kubeconfig", "operator.kubeconfig"):
        (cluster / name).unlink(missing_ok=True)


class _Runner:
    def __init__(
        self, plan: Plan, stack: Stack, control: SimulatorControl, log: Log, wall_start: float
    ) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.stack = stack
        self.control = control
        self.log = log
        self.wall_start = wall_start
        self.state = _State()
        self.task_ids: dict[str, str] = {}  # run name -> seeded task id
        self.shared_task_id = ""
        # Connection name ("" for the operator-level token) -> the subject its token acts
        # as, from the simulator; and what the operator reported for the second one.
        self.subjects: dict[str, str] = {}
        self.connection_status: dict[str, Any] = {}
        self.connection_ready_seconds = 0.0
        self._queue: list[tuple[float, int, str, Callable[[], None]]] = []
        self._seq = 0

    # ------------------------------------------------------------------ helpers

    def now(self) -> float:
        return time.monotonic() - self.state.started

    def note(self, message: str) -> None:
        line = f"[{self.now():7.1f}s] {message}"
        self.state.timeline.append(line)
        self.log(line)

    def at(self, when: float, label: str, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, label, action))

    def kube(self, call: Callable[[], T], what: str, timeout: float = 120.0) -> T:
        """A Kubernetes call that outlasts an API server restart."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call()
            except client.ApiException as exc:
                if exc.status and exc.status < 500 and exc.status != 429:
                    raise
                error: Exception = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                error = exc
            if time.monotonic() >= deadline:
                raise ChaosError(f"{what}: the API server did not answer: {error}") from error
            time.sleep(0.5)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        settings = self.settings
        on_team = sum(1 for r in self.plan.runs if r.connection == TEAM_CONNECTION)
        self.log(
            f"plan: {len(self.plan.runs)} TaskRuns in {max(r.wave for r in self.plan.runs) + 1}"
            f" waves ({on_team} through {TEAM_CONNECTION}), {settings.kills} kills, "
            f"faults for {self.plan.length:.0f} s, budget {settings.duration_budget:.0f} s"
        )
        self._seed_tasks()
        self._add_connection()
        self.stack.start_operator()
        self._wait_connection_ready()
        self.state.started = time.monotonic()
        for event in self.plan.events:
            self.at(event.at, event.kind, self._action(event))
        while self._queue or self._crash_pending():
            self._step()
        self.control.clear_faults()
        if self.stack.operator is None or not self.stack.operator.running:
            self._start_operator("end of the plan")
        self.note("every fault is off; waiting for the TaskRuns to settle")
        converged_at = self._wait_settled()
        self._wait_environments_cleaned()
        return self._figures(converged_at)

    def _shift(self, took: float) -> None:
        """Move the rest of the plan by the time a blocking action (an API server restart, a
        wave created while the API server was away) took, so fault windows keep their length
        instead of firing in a burst."""
        if took < 0.5:
            return
        self._queue = [(when + took, seq, label, fn) for when, seq, label, fn in self._queue]
        heapq.heapify(self._queue)
        if self.state.pending_start is not None:
            self.state.pending_start += took

    def _crash_pending(self) -> bool:
        return bool(self.state.crash_waits) or self.state.pending_start is not None

    def _step(self) -> None:
        self._watch_operator()
        if self.state.pending_start is not None and self.now() >= self.state.pending_start:
            self.state.pending_start = None
            self._start_operator("after a pause")
        if self._queue and self._queue[0][0] <= self.now():
            _, _, _, action = heapq.heappop(self._queue)
            began = self.now()
            action()
            self._shift(self.now() - began)
            return
        if time.monotonic() - self.wall_start > self.settings.duration_budget:
            raise ChaosError("the duration budget ran out before the plan was played")
        time.sleep(0.1)

    def _action(self, event: Event) -> Callable[[], None]:
        if event.kind == "wave":
            return lambda: self._wave(self.plan.wave_runs(event.wave), f"wave {event.wave}")
        if event.kind == "fault-on":
            assert event.fault is not None
            fault = event.fault
            return lambda: self._fault_on(fault)
        if event.kind == "fault-off":
            assert event.fault is not None
            fault = event.fault
            return lambda: self._fault_off(fault)
        if event.kind == "kill":
            return lambda: self._kill(event)
        if event.kind == "restart-apiserver":
            return self._restart_apiserver
        if event.kind == "quiet-on":
            return lambda: self._window_on("quiet")
        if event.kind == "quiet-off":
            return lambda: self._window_off("quiet")
        if event.kind == "schedule-on":
            return self._schedule_on
        if event.kind == "schedule-off":
            return self._schedule_off
        raise ValueError(event.kind)

    # ------------------------------------------------------------------ actions

    def _seed_tasks(self) -> None:
        shared = self.control.seed_task(
            environment_id=self.plan.runs[0].environment_id,
            reference="chaos-shared",
            name="chaos shared",
            command=self.plan.shared_command,
        )
        self.shared_task_id = str(shared["id"])
        for run in self.plan.runs:
            if run.form == SHARED:
                self.task_ids[run.name] = self.shared_task_id
            elif run.form != "inline":
                task = self.control.seed_task(
                    environment_id=run.environment_id,
                    reference=run.reference,
                    name=run.name,
                    command=run.command,
                )
                self.task_ids[run.name] = str(task["id"])
        self.log(f"seeded {len(self.task_ids) and len(set(self.task_ids.values()))} tasks")
        # Environments made for fromProject runs: quick to create and start.
        self.control.seed_project(
            id=PROJECT, name="chaos", createDelay="500ms", startDelay="500ms", stopDelay="100ms"
        )

    def _add_connection(self) -> None:
        """A second token in the simulator, with its own subject, and an OnaConnection in
        the chaos namespace whose Secret holds it."""
        token = secrets.token_urlsafe(24)
        self.subjects = {
            DEFAULT_CONNECTION: self.control.subject_of(self.stack.token),
            TEAM_CONNECTION: self.control.add_token(token),
        }
        self.stack.add_connection(
            TEAM_CONNECTION,
            token,
            environment_ids=ENVIRONMENTS,
            project_ids=[PROJECT],
            max_concurrent_runs=TEAM_LIMIT,
        )
        self.log(
            f"connections: the operator-level token acts as {self.subjects[DEFAULT_CONNECTION]}"
            f", OnaConnection {TEAM_CONNECTION} as {self.subjects[TEAM_CONNECTION]}"
        )

    def _wait_connection_ready(self) -> None:
        began = time.monotonic()
        try:
            self.connection_status = self.stack.wait_connection_ready(TEAM_CONNECTION)
        except StackError as exc:
            raise ChaosError(str(exc)) from exc
        self.connection_ready_seconds = round(time.monotonic() - began, 1)
        subject = (self.connection_status.get("subject") or {}).get("id")
        self.log(
            f"OnaConnection {TEAM_CONNECTION} is Ready after {self.connection_ready_seconds} s"
            f" (status.subject.id {subject})"
        )

    def _wave(self, runs: Iterable[PlannedRun], label: str) -> None:
        created = 0
        for run in runs:
            self._create(run)
            created += 1
            if run.stop_after is not None:
                self.at(self.now() + run.stop_after, "stop-edit", self._stop_edit(run.name))
        self.note(f"{label}: created {created} TaskRuns")

    def _create(self, run: PlannedRun) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskRun",
            "metadata": {"name": run.name, "namespace": self.stack.namespace},
            "spec": run.spec(self.task_ids.get(run.name, "")),
        }
        api = self.stack.custom()

        def create() -> None:
            try:
                api.create_namespaced_custom_object(
                    GROUP, VERSION, self.stack.namespace, PLURAL, body
                )
            except client.ApiException as exc:
                if exc.status != 409:  # 409: an earlier attempt whose answer was lost
                    raise

        self.kube(create, f"creating {run.name}")
        self.state.created.append(
            Planned(
                run.name,
                run.form,
                self.task_ids.get(run.name, ""),
                run.created_stopped,
                run.stop_after is not None,
                run.connection,
                run.retries,
                run.fail_first,
                run.from_project,
            )
        )

    def _schedule_on(self) -> None:
        api = self.stack.custom()
        body = schedule_manifest(self.stack.namespace)

        def create() -> dict[str, Any]:
            try:
                made: Any = api.create_namespaced_custom_object(
                    GROUP, VERSION, self.stack.namespace, SCHEDULES, body
                )
            except client.ApiException as exc:
                if exc.status != 409:  # 409: an earlier attempt whose answer was lost
                    raise
                made = api.get_namespaced_custom_object(
                    GROUP, VERSION, self.stack.namespace, SCHEDULES, SCHEDULE
                )
            return cast(dict[str, Any], made)

        made = self.kube(create, f"creating TaskRunSchedule {SCHEDULE}")
        stamp = str(made["metadata"]["creationTimestamp"])
        self.state.schedule_created = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        self.note(f"TaskRunSchedule {SCHEDULE} created ({stamp}): a TaskRun every minute")

    def _schedule_off(self) -> None:
        api = self.stack.custom()
        patch = {"spec": {"suspend": True}}
        self.kube(
            lambda: api.patch_namespaced_custom_object(
                GROUP, VERSION, self.stack.namespace, SCHEDULES, SCHEDULE, patch
            ),
            f"suspending TaskRunSchedule {SCHEDULE}",
        )
        # Taken after the API server said yes: a slot after this is one the operator may
        # not have known was suspended; judge_schedule leaves a slack either side.
        self.state.schedule_suspended = datetime.now(UTC)
        self.note(f"TaskRunSchedule {SCHEDULE} suspended")

    def _stop_edit(self, name: str) -> Callable[[], None]:
        def edit() -> None:
            api = self.stack.custom()
            patch = {"spec": {"desiredPhase": "STOPPED"}}
            self.kube(
                lambda: api.patch_namespaced_custom_object(
                    GROUP, VERSION, self.stack.namespace, PLURAL, name, patch
                ),
                f"stopping {name}",
            )
            self.note(f"desiredPhase STOPPED on {name}")

        return edit

    def _fault_on(self, fault: FaultKind) -> None:
        self.control.set_faults(fault.method, **fault.knobs)
        self.state.windows.append(_Window(fault.name, time.time()))
        self.note(f"fault on: {fault.name} ({fault.method} {fault.knobs})")

    def _fault_off(self, fault: FaultKind) -> None:
        self.control.clear_faults(fault.method)
        self._window_off(fault.name)
        self.state.last_disturbance = time.monotonic()
        self.note(f"fault off: {fault.name}")

    def _window_on(self, name: str) -> None:
        self.state.windows.append(_Window(name, time.time()))
        self.note(f"{name} window begins")

    def _window_off(self, name: str) -> None:
        for window in reversed(self.state.windows):
            if window.name == name and window.end is None:
                window.end = time.time()
                return

    def _kill(self, event: Event) -> None:
        if self.state.pending_start is not None or self.state.crash_waits:
            # The operator is still paused after the previous kill, or on its way to a crash
            # point: kill it once it is back.
            self.at(self.now() + 3.0, "kill", lambda: self._kill(event))
            self.note("kill: the operator is not back yet; kill postponed by 3 s")
            return
        killed = self.stack.kill_operator()
        if killed is None:
            self.note("kill: no operator running; starting one")
            self._start_operator("it was not running")
            return
        self.state.kills += 1
        self.state.last_disturbance = time.monotonic()
        self.state.crash_waits.pop(killed.index, None)
        if event.crash_point:
            self.note(f"SIGKILL operator #{killed.index}; next one runs to {event.crash_point}")
            run = self.stack.start_operator(crash_point=event.crash_point)
            self.state.crash_waits[run.index] = time.monotonic() + 60
            triggers = self.plan.trigger_runs.get(event.crash_point, [])
            self._wave(triggers, f"crash point {event.crash_point} triggers")
        elif event.pause:
            self.note(f"SIGKILL operator #{killed.index}; back in {event.pause:.1f} s")
            self.state.pending_start = self.now() + event.pause
        else:
            self.note(f"SIGKILL operator #{killed.index}; back at once")
            self._start_operator("after a kill")

    def _start_operator(self, why: str) -> None:
        run = self.stack.start_operator()
        self.state.last_disturbance = time.monotonic()
        self.note(f"operator #{run.index} started ({why})")

    def _watch_operator(self) -> None:
        run = self.stack.operator
        overdue = [i for i, by in self.state.crash_waits.items() if time.monotonic() >= by]
        if run is not None and run.index in overdue and run.running:
            # Nothing reached the crash point: end it like any other kill.
            del self.state.crash_waits[run.index]
            self.stack.kill_operator()
            self.note(f"operator #{run.index} never reached {run.crash_point}; killed it")
            self._start_operator("after an unreached crash point")
            return
        if run is None or run.running or run.end:
            return
        self.stack.note_exit(run)
        if run.index in self.state.crash_waits:
            del self.state.crash_waits[run.index]
            self.state.last_disturbance = time.monotonic()
            reached = f"crash point {run.crash_point} reached" in run.log_path.read_text(
                errors="replace"
            )
            self.note(
                f"operator #{run.index} killed itself at {run.crash_point} "
                f"({'logged' if reached else 'NOT logged'}; {run.end})"
            )
        else:
            self.state.unexpected_exits.append(f"operator #{run.index}: {run.end}")
            self.note(f"operator #{run.index} exited on its own ({run.end}); see {run.log_path}")
        self._start_operator("after its exit")

    def _restart_apiserver(self) -> None:
        cluster = self.stack.cluster
        assert cluster is not None
        self.note("restarting kube-apiserver")
        # A short grace: the API server's graceful shutdown waits on open watches.
        restart = cluster.restart_apiserver(tied_to_caller=True, stop_timeout=5.0)
        self.state.restarts.append(
            {
                "stop_seconds": round(restart.stop_seconds, 2),
                "ready_seconds": round(restart.ready_seconds, 2),
                "total_seconds": round(restart.total_seconds, 2),
            }
        )
        self.state.last_disturbance = time.monotonic()
        self.note(f"kube-apiserver back after {restart.total_seconds:.1f} s")

    # ------------------------------------------------------------------ the end

    def _taskruns(self) -> list[dict[str, Any]]:
        api = self.stack.custom()

        def listing() -> list[dict[str, Any]]:
            listed: Any = api.list_namespaced_custom_object(
                GROUP, VERSION, self.stack.namespace, PLURAL
            )
            return cast(list[dict[str, Any]], listed["items"])

        return self.kube(listing, "listing TaskRuns")

    def _wait_environments_cleaned(self, timeout: float = 60.0) -> None:
        """An ended run's environment is deleted just after its final status is written
        (later if that call meets a fault): give it that moment before counting leaks."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = [
                item
                for item in self.control.environments()
                if item["environment"]["metadata"].get("projectId") == PROJECT
                and item["environment"]["status"]["phase"]
                not in ("ENVIRONMENT_PHASE_DELETING", "ENVIRONMENT_PHASE_DELETED")
            ]
            if not left:
                return
            time.sleep(1.0)
        self.note(f"{len(left)} environments of fromProject runs are still there")

    def _wait_settled(self) -> float | None:
        deadline = self.wall_start + self.settings.duration_budget
        last_report = 0.0
        while True:
            self._watch_operator()
            items = self._taskruns()
            waiting = [t for t in items if not settled(t.get("status") or {})]
            if not waiting:
                self.note(f"all {len(items)} TaskRuns are final or stalled for a person")
                return time.monotonic()
            if time.monotonic() >= deadline:
                self.note(f"budget spent: {len(waiting)} TaskRuns still not settled")
                return None
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                names = ", ".join(t["metadata"]["name"] for t in waiting[:5])
                self.note(f"{len(waiting)} TaskRuns not settled yet (e.g. {names})")
            time.sleep(1.0)

    def _figures(self, converged_at: float | None) -> dict[str, Any]:
        items = self._taskruns()
        executions = self.control.executions()
        calls = self.control.calls()
        tasks = self.control.tasks()
        scheduled = scheduled_runs(items)
        verdict = verify(
            [*self.state.created, *scheduled],
            items,
            executions,
            subjects=self.subjects,
            calls=calls,
            tasks=tasks,
            environments=self.control.environments(),
        )
        created, suspended = self.state.schedule_created, self.state.schedule_suspended
        if created is not None:
            if suspended is None:
                raise ChaosError(f"TaskRunSchedule {SCHEDULE} was created but never suspended")
            judge_schedule(verdict, SCHEDULE, created, suspended, (p.name for p in scheduled))
        judge_limit(
            verdict,
            executions,
            self.subjects[TEAM_CONNECTION],
            TEAM_LIMIT,
            f"OnaConnection {TEAM_CONNECTION}",
        )
        reported = (self.connection_status.get("subject") or {}).get("id")
        if reported != self.subjects[TEAM_CONNECTION]:
            verdict.wrong_connection.append(
                Finding(
                    f"OnaConnection {TEAM_CONNECTION}",
                    f"status.subject.id is {reported!r}; its token acts as "
                    f"{self.subjects[TEAM_CONNECTION]}",
                )
            )
        labels = {subject: _label(name) for name, subject in self.subjects.items()}
        operators = self.stack.operators
        crash_kills = sum(1 for r in operators if r.end == "crash-point")
        faults = Counter(str(c["fault"]) for c in calls if c.get("fault"))
        windows = {w.name: w for w in self.state.windows}
        figures: dict[str, Any] = {
            "settings": {
                "taskruns": self.settings.taskruns,
                "kills": self.settings.kills,
                "seed": self.settings.seed,
                "fault_window_seconds": self.settings.fault_window,
                "outage_seconds": self.settings.outage,
                "duration_budget_seconds": self.settings.duration_budget,
            },
            # Planned and scheduled TaskRuns alike (verdict.taskruns says the same).
            "taskruns": len(self.state.created) + len(scheduled),
            "taskruns_by_form": {
                **Counter(p.form for p in self.state.created),
                **({"scheduled": len(scheduled)} if scheduled else {}),
            },
            "connections": {
                _label(name): sum(
                    1 for p in [*self.state.created, *scheduled] if p.connection == name
                )
                for name in self.subjects
            },
            "schedule": {
                "created": created.isoformat() if created else None,
                "suspended": suspended.isoformat() if suspended else None,
            },
            "subjects": {_label(name): subject for name, subject in self.subjects.items()},
            "connection_ready_seconds": self.connection_ready_seconds,
            "calls_by_connection": dict(
                Counter(
                    labels.get(str(c.get("subjectId")), "unknown subject")
                    for c in calls
                    if c.get("subjectId")
                )
            ),
            "start_task_calls_by_connection": dict(
                Counter(
                    labels.get(str(c.get("subjectId")), "unknown subject")
                    for c in calls
                    if c.get("subjectId") and c.get("method") == "StartTask"
                )
            ),
            "kills": self.state.kills,
            "crash_point_kills": crash_kills,
            "crash_points": [r.crash_point for r in operators if r.end == "crash-point"],
            "operator_incarnations": len(operators),
            "unexpected_operator_exits": self.state.unexpected_exits,
            "faults_injected": dict(sorted(faults.items())),
            "apiserver_restarts": len(self.state.restarts),
            "apiserver_restart_times": self.state.restarts,
            "outage": _rate(calls, windows.get("outage"), faults_only=False),
            "quiet": _rate(calls, windows.get("quiet"), faults_only=False),
            "api_calls_total": len(calls),
            "start_task_calls": sum(1 for c in calls if c.get("method") == "StartTask"),
            "converge_seconds_after_last_fault": (
                round(converged_at - self.state.last_disturbance, 1)
                if converged_at is not None
                else None
            ),
            "wall_seconds": round(time.monotonic() - self.wall_start, 1),
            **verdict.to_json(),
            "ok": verdict.ok,
            "timeline": self.state.timeline,
        }
        path = self.stack.state_dir / "figures.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        self.log(summary(figures, verdict))
        self.log(f"figures written to {path}")
        return figures


def scheduled_runs(items: Iterable[Mapping[str, Any]]) -> list[Planned]:
    """The chaos schedule's TaskRuns (by the label the operator puts on them), to be judged
    like planned inline runs of the team connection."""
    return [
        Planned(str(t["metadata"]["name"]), INLINE, connection=TEAM_CONNECTION)
        for t in items
        if ((t.get("metadata") or {}).get("labels") or {}).get(SCHEDULE_LABEL) == SCHEDULE
    ]


def _label(connection: str) -> str:
    return "default" if connection == DEFAULT_CONNECTION else connection


def _call_time(call: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(call["time"])).timestamp()


def _rate(calls: list[dict[str, Any]], window: _Window | None, *, faults_only: bool) -> Any:
    if window is None or window.end is None:
        return None
    inside = [c for c in calls if window.start <= _call_time(c) <= window.end]
    if faults_only:
        inside = [c for c in inside if c.get("fault")]
    seconds = window.end - window.start
    return {
        "seconds": round(seconds, 1),
        "calls": len(inside),
        "calls_per_minute": round(len(inside) * 60 / seconds, 1) if seconds > 0 else None,
        "by_method": dict(Counter(str(c["method"]) for c in inside).most_common()),
    }


def summary(figures: Mapping[str, Any], verdict: Verdict) -> str:
    def rate(name: str) -> str:
        data: Mapping[str, Any] | None = figures.get(name)
        if not data:
            return "n/a"
        return (
            f"{data['calls_per_minute']} calls/min ({data['calls']} calls in {data['seconds']} s)"
        )

    connections: Mapping[str, int] = figures.get("connections") or {}
    split = ", ".join(f"{name}: {count} TaskRuns" for name, count in connections.items())
    checked = verdict.connection_checked
    lines = [
        "",
        "=== chaos run ===",
        f"TaskRuns:               {figures['taskruns']} {figures['taskruns_by_form']}",
        f"connections:            {len(connections)} ({split})",
        f"calls by connection:    {figures.get('calls_by_connection')} "
        f"(StartTask: {figures.get('start_task_calls_by_connection')})",
        f"executions:             {verdict.executions}",
        f"kills (SIGKILL):        {figures['kills']}",
        f"crash-point kills:      {figures['crash_point_kills']} {figures['crash_points']}",
        f"unexpected exits:       {len(figures['unexpected_operator_exits'])}",
        f"faults injected:        {figures['faults_injected']}",
        f"API server restarts:    {figures['apiserver_restarts']} "
        f"{figures['apiserver_restart_times']}",
        f"duplicate starts:       {len(verdict.duplicates)}",
        f"lost runs:              {len(verdict.lost)}",
        f"status mismatches:      {len(verdict.mismatches)}",
        f"not settled in budget:  {len(verdict.not_converged)}",
        f"retrying TaskRuns:      {verdict.retrying_taskruns} ({verdict.retry_attempts} "
        f"attempts judged; over the limit: {len(verdict.excess_attempts)})",
        f"environments:           {verdict.environments_checked} fromProject TaskRuns, "
        f"{len(verdict.environment_duplicates)} duplicates, "
        f"{len(verdict.environment_leaks)} leaked",
        f"schedule:               {verdict.scheduled_runs} scheduled TaskRuns for "
        f"{verdict.schedule_slots} slots due, {len(verdict.schedule_missed)} missed, "
        f"{len(verdict.schedule_unexpected)} for no due slot",
        f"wrong-connection calls: {len(verdict.wrong_connection)} "
        f"(checked {checked.get('executions', 0)} executions, "
        f"{checked.get('inline_tasks', 0)} inline tasks, {checked.get('calls', 0)} calls)",
        f"stalled for a person:   {len(verdict.stalled)} "
        f"(shared task: {verdict.shared_unrecorded} unrecorded executions, "
        f"{verdict.shared_stalled} stalled TaskRuns)",
        f"outage:                 {rate('outage')}",
        f"quiet window:           {rate('quiet')}",
        f"converged after last fault: {figures['converge_seconds_after_last_fault']} s",
        f"outcomes:               {figures['outcomes']}",
        f"wall time:              {figures['wall_seconds']} s",
    ]
    for title, found in (
        ("duplicate", verdict.duplicates),
        ("excess attempts", verdict.excess_attempts),
        ("lost", verdict.lost),
        ("mismatch", verdict.mismatches),
        ("stalled", verdict.stalled),
        ("not settled", verdict.not_converged),
        ("missed slot", verdict.schedule_missed),
        ("unexpected slot", verdict.schedule_unexpected),
    ):
        lines.extend(f"  {title}: {f.taskrun}: {f.detail}" for f in found)
    lines.extend(
        f"  wrong connection: {f.taskrun}: {f.detail}"
        for f in verdict.wrong_connection[:WRONG_CONNECTION_LINES]
    )
    if len(verdict.wrong_connection) > WRONG_CONNECTION_LINES:
        more = len(verdict.wrong_connection) - WRONG_CONNECTION_LINES
        lines.append(f"  wrong connection: ... and {more} more in figures.json")
    lines.append("RESULT: " + ("PASS" if verdict.ok else "FAIL"))
    return "\n".join(lines)
