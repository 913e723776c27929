"""The plan of a chaos run, decided up front from the seed: which TaskRuns to create in which
wave, and when faults, operator kills, crash points and the API server restart happen.

Pure and deterministic: the same settings and seed give the same plan, so a failing run can
be replayed (the moments the operator happens to be in differ, which is the point).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from tools.chaos.verify import INLINE, REF_ID, REF_REFERENCE, SHARED

ENVIRONMENTS = (
    "6c1f0f5e-7a0b-4d1e-9a1e-0c4a1b2c3d01",
    "6c1f0f5e-7a0b-4d1e-9a1e-0c4a1b2c3d02",
)
# The project whose environments the fromProject TaskRuns create, one each.
PROJECT = "6c1f0f5e-7a0b-4d1e-9a1e-0c4a1b2c3dff"
FROM_PROJECT = "from-project"
# Past the operator's request timeout (ONA_REQUEST_TIMEOUT=2), so a hung StartTask times out.
HANG_MS = 5000
# The second connection: an OnaConnection in the chaos namespace with a token of its own.
# A third of the TaskRuns of every kind name it in spec.connectionRef; the rest use the
# operator-level token.
TEAM_CONNECTION = "chaos-team"
# Its spec.limits.maxConcurrentRuns: its runs queue behind it through the chaos, and the
# verifier checks from the simulator's record that it was never exceeded.
TEAM_LIMIT = 6
CONNECTION_EVERY = 3
# A TaskRunSchedule making a run every minute through the team connection, on from the
# start of the chaos phase to the end of the outage: its slots meet the kills, the API
# server restart and the outage like everything else.
SCHEDULE = "chaos-every-minute"
SCHEDULED_COMMAND = "make scheduled # sim:duration=1s"


@dataclass(frozen=True)
class Settings:
    taskruns: int = 200
    kills: int = 5
    seed: int = 0
    duration_budget: float = 1500.0
    fault_window: float = 10.0  # seconds each fault kind stays on
    outage: float = 45.0  # seconds of the full outage (and of the quiet window before it)
    fault_share: float = 0.3  # share of calls a partial fault hits
    lost_share: float = 0.5  # share of StartTask responses lost in a lost-response window
    schedule: bool = True  # run the every-minute TaskRunSchedule through the chaos phase


@dataclass(frozen=True)
class FaultKind:
    name: str
    method: str
    knobs: dict[str, Any]


def fault_kinds(settings: Settings) -> list[FaultKind]:
    share = settings.fault_share
    lost = settings.lost_share
    return [
        FaultKind("429", "*", {"error_429": share, "retry_after_s": 2}),
        FaultKind("500", "*", {"error_500": share}),
        FaultKind("503", "*", {"error_503": share}),
        FaultKind("drop", "*", {"drop": share}),
        FaultKind("lost:503", "StartTask", {"lost_response": lost, "lost_response_mode": "503"}),
        FaultKind("lost:500", "StartTask", {"lost_response": lost, "lost_response_mode": "500"}),
        FaultKind("lost:drop", "StartTask", {"lost_response": lost, "lost_response_mode": "drop"}),
        FaultKind(
            "lost:hang",
            "StartTask",
            {"lost_response": lost, "lost_response_mode": "hang", "hang_ms": HANG_MS},
        ),
    ]


OUTAGE = FaultKind("outage", "*", {"error_503": 1.0})


@dataclass(frozen=True)
class PlannedRun:
    name: str
    form: str
    wave: int
    command: str  # the inline task's or the seeded task's command
    environment_id: str
    created_stopped: bool = False
    stop_after: float | None = None  # seconds after creation to patch desiredPhase STOPPED
    timeout: str = ""
    connection: str = ""  # spec.connectionRef.name; "" for the operator-level token
    retries: int = 0  # spec.retries
    fail_first: int = 0  # sim:fail_first: how many of its executions fail
    from_project: bool = False  # an inline task in an environment created for the run

    def spec(self, task_id: str = "") -> dict[str, Any]:
        """The TaskRun spec; `task_id` is the seeded task for the taskRef forms."""
        spec: dict[str, Any]
        if self.form == INLINE and self.from_project:
            spec = {
                "task": {"name": self.name, "command": self.command},
                "environment": {"fromProject": {"projectId": PROJECT}},
            }
        elif self.form == INLINE:
            spec = {
                "task": {
                    "environmentId": self.environment_id,
                    "name": self.name,
                    "command": self.command,
                }
            }
        elif self.form == REF_REFERENCE:
            spec = {"taskRef": {"environmentId": self.environment_id, "reference": self.reference}}
        else:
            spec = {"taskRef": {"id": task_id}}
        if self.created_stopped:
            spec["desiredPhase"] = "STOPPED"
        if self.timeout:
            spec["timeout"] = self.timeout
        if self.connection:
            spec["connectionRef"] = {"name": self.connection}
        if self.retries:
            spec["retries"] = self.retries
        return spec

    @property
    def reference(self) -> str:
        return f"chaos-{self.name}"


@dataclass(frozen=True)
class Event:
    at: float  # seconds after the chaos phase began
    kind: str  # wave, fault-on, fault-off, kill, restart-apiserver, quiet-on, quiet-off,
    # schedule-on, schedule-off
    wave: int = -1
    fault: FaultKind | None = None
    pause: float = 0.0  # kill: seconds before the operator is started again
    crash_point: str = ""  # kill: the next operator runs with this crash point


@dataclass
class Plan:
    settings: Settings
    runs: list[PlannedRun] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    shared_command: str = "chaos shared task # sim:duration=3s"
    trigger_runs: dict[str, list[PlannedRun]] = field(default_factory=dict)

    @property
    def length(self) -> float:
        return max((e.at for e in self.events), default=0.0)

    def wave_runs(self, wave: int) -> list[PlannedRun]:
        return [r for r in self.runs if r.wave == wave]


def schedule_manifest(namespace: str) -> dict[str, Any]:
    """The chaos TaskRunSchedule: every minute, overlapping runs allowed, every run kept so
    each slot can be judged."""
    return {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRunSchedule",
        "metadata": {"name": SCHEDULE, "namespace": namespace},
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Allow",
            "successfulRunsHistoryLimit": 100,
            "failedRunsHistoryLimit": 100,
            "taskRunTemplate": {
                "spec": {
                    "task": {
                        "environmentId": ENVIRONMENTS[1],
                        "name": SCHEDULE,
                        "command": SCHEDULED_COMMAND,
                    },
                    "connectionRef": {"name": TEAM_CONNECTION},
                }
            },
        },
    }


def _command(rng: random.Random, index: int, fail: bool) -> str:
    duration = rng.choice([1, 1.5, 2, 3, 4, 5, 6, 7, 8])
    steps = rng.choice([1, 1, 2, 3])
    command = f"make chaos-{index} # sim:duration={duration}s sim:steps={steps}"
    if fail:
        command += f' sim:fail="chaos failure {index}"'
    return command


class _Connections:
    """Hands out connections so that every kind of TaskRun gets its share of the second
    one: the 1st, 4th, 7th, ... of each kind use it (so even a kind of one does)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def next(self, kind: str) -> str:
        count = self._seen.get(kind, 0)
        self._seen[kind] = count + 1
        return TEAM_CONNECTION if count % CONNECTION_EVERY == 0 else ""


def make_plan(settings: Settings) -> Plan:
    rng = random.Random(settings.seed)
    plan = Plan(settings)
    window, gap = settings.fault_window, settings.fault_window / 2

    # Faults one after another, then a quiet window and the outage of the same length.
    t = 4.0
    fault_starts: list[float] = []
    for fault in fault_kinds(settings):
        plan.events.append(Event(t, "fault-on", fault=fault))
        plan.events.append(Event(t + window, "fault-off", fault=fault))
        fault_starts.append(t)
        t += window + gap
    faults_end = t
    quiet_on, outage_on = t, t + settings.outage
    outage_off = outage_on + settings.outage
    plan.events.append(Event(quiet_on, "quiet-on"))
    plan.events.append(Event(outage_on, "quiet-off"))
    plan.events.append(Event(outage_on, "fault-on", fault=OUTAGE))
    plan.events.append(Event(outage_off, "fault-off", fault=OUTAGE))
    plan.events.append(Event(round(faults_end * 0.4, 1), "restart-apiserver"))
    if settings.schedule:
        plan.events.append(Event(0.0, "schedule-on"))
        plan.events.append(Event(outage_off, "schedule-off"))

    # Kills before the quiet window, so the quiet and outage figures measure the API alone.
    kill_times = sorted(rng.uniform(3.0, faults_end - 2.0) for _ in range(settings.kills))
    # Five kills or more: one also between an environment's creation and its record, and
    # one between a stop's record and StopTaskExecution.
    points = ("after-start", "after-claim", "after-environment-create", "after-stop-claim")
    wanted = 4 if settings.kills >= 5 else 2 if settings.kills >= 4 else 1
    crash_slots = (
        rng.sample(range(settings.kills), min(settings.kills, wanted)) if settings.kills else []
    )
    crash_points = dict(zip(crash_slots, points, strict=False))
    for index, at in enumerate(kill_times):
        pause = rng.uniform(3.0, 8.0) if rng.random() < 0.4 else 0.0
        plan.events.append(
            Event(round(at, 1), "kill", pause=pause, crash_point=crash_points.get(index, ""))
        )

    # Waves: one at the start of every fault window (so each kind meets fresh starts), one
    # in the quiet window and in the outage, the rest spread evenly.
    anchors = [*(s + 0.3 for s in fault_starts), quiet_on + 1.0, outage_on + 2.0]
    total_waves = max(len(anchors) + 1, math.ceil(settings.taskruns / 10))
    spread = total_waves - len(anchors)
    fill = [outage_off * i / spread for i in range(spread)]
    times = sorted([*anchors, *fill])
    shared_wave = times.index(fault_starts[4] + 0.3)  # the first lost-response window

    n = settings.taskruns
    shared = 10 if n >= 100 else max(3, n // 6)
    created_stopped = max(1, n // 50)
    timeouts = max(2, n // 40)
    stop_edits = max(2, n // 40)
    retrying = max(2, n // 12)
    from_project = max(1, n // 20)
    ordinary = max(
        0, n - shared - created_stopped - timeouts - stop_edits - retrying - from_project
    )
    kinds: list[str] = []
    for i in range(ordinary):
        share = i / max(1, ordinary)
        kinds.append(REF_ID if share < 0.25 else REF_REFERENCE if share < 0.4 else INLINE)
    kinds += ["created-stopped"] * created_stopped + ["timeout"] * timeouts
    kinds += ["stop-edit"] * stop_edits + ["retrying"] * retrying
    kinds += [FROM_PROJECT] * from_project
    rng.shuffle(kinds)

    other_waves = [w for w in range(len(times)) if w != shared_wave]
    connections = _Connections()
    retrying_seen = 0
    for index, kind in enumerate(kinds):
        wave = other_waves[index % len(other_waves)]
        env = ENVIRONMENTS[index % len(ENVIRONMENTS)]
        name = f"w{wave:02d}-{index:03d}-{kind}"
        # Retrying and fromProject runs are inline runs: they share that kind's turns on
        # the connections.
        conn = connections.next(INLINE if kind in ("retrying", FROM_PROJECT) else kind)
        if kind == "created-stopped":
            command = _command(rng, index, False)
            run = PlannedRun(name, INLINE, wave, command, env, True, connection=conn)
        elif kind == "timeout":
            command = f"hang-{index} # sim:hang"
            run = PlannedRun(name, INLINE, wave, command, env, timeout="3s", connection=conn)
        elif kind == FROM_PROJECT:
            command = _command(rng, index, False)
            run = PlannedRun(name, INLINE, wave, command, env, connection=conn, from_project=True)
        elif kind == "stop-edit":
            command = f"long-{index} # sim:duration=30s sim:steps=3"
            stop_after = rng.uniform(2.0, 6.0)
            run = PlannedRun(
                name, INLINE, wave, command, env, stop_after=stop_after, connection=conn
            )
        elif kind == "retrying":
            # Every other one fails more often than it may retry, so both ends are met:
            # success at the last attempt, and retries exhausted.
            retries = rng.choice([1, 2, 3])
            fail_first = retries if retrying_seen % 2 == 0 else retries + 1
            retrying_seen += 1
            duration = rng.choice([0.5, 1, 1.5, 2])
            command = f"make retry-{index} # sim:duration={duration}s sim:fail_first={fail_first}"
            run = PlannedRun(
                name,
                INLINE,
                wave,
                command,
                env,
                connection=conn,
                retries=retries,
                fail_first=fail_first,
            )
        else:
            fail = kind == INLINE and rng.random() < 0.2
            run = PlannedRun(name, kind, wave, _command(rng, index, fail), env, connection=conn)
        plan.runs.append(run)
    for j in range(shared):
        name = f"w{shared_wave:02d}-shared-{j:02d}"
        plan.runs.append(
            PlannedRun(
                name,
                SHARED,
                shared_wave,
                plan.shared_command,
                ENVIRONMENTS[0],
                connection=connections.next(SHARED),
            )
        )
    for w, at in enumerate(times):
        plan.events.append(Event(round(at, 1), "wave", wave=w))

    # Fresh starts right after a crash-point operator comes up, so it reaches its point.
    # A stop comes from a timeout: runs that hang, with a short one.
    for point in crash_points.values():
        stopping = point == "after-stop-claim"
        plan.trigger_runs[point] = [
            PlannedRun(
                f"crash-{point}-{k}",
                INLINE,
                -1,
                f"hang-{900 + k} # sim:hang" if stopping else _command(rng, 900 + k, False),
                ENVIRONMENTS[k % len(ENVIRONMENTS)],
                timeout="2s" if stopping else "",
                connection=connections.next(f"crash-{point}"),
                from_project=point == "after-environment-create",
            )
            for k in range(3)
        ]
    plan.events.sort(key=lambda e: (e.at, e.kind != "fault-off"))
    return plan
