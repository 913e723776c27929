"""One soak: TaskRuns churned through one operator in waves, its memory sampled after each.

The stack is the chaos run's (`tools.chaos.stack`): a fresh local control plane, the Ona
API simulator and the operator as a process, with its heap traced
(`ONA_TASKRUN_DEBUG_HEAP`, see `ona_taskrun.observability.heap`) and its metrics on a
loopback port. Then:

- a second connection (an OnaConnection with a token of its own and a policy naming
  environments and a project), and a TaskRunSchedule making a TaskRun every minute through
  it, whose finished runs it prunes at once (history limits 0);
- waves of `sample_every` TaskRuns, each through `concurrency` client threads that take a
  TaskRun at a time through its life: create, wait for what its kind waits for, delete (or
  let its TTL delete it), wait until it is gone. The kinds (`MIX`): quick successes deleted
  by hand, quick successes deleted by `ttlSecondsAfterFinished: 0`, failures with a log
  tail, runs failing once then succeeding on their retry (`spec.retries: 1`), runs deleted
  while they run, runs creating their environment from a project (`fromProject`), and
  runs naming a seeded task by id (through the second connection, whose environment policy
  then looks the task's environment up); a third of each kind uses the second connection;
- after each wave, once every TaskRun of it is gone: a sample of the operator's resident
  size (`/proc`), its traced Python heap and object count (`/debug/heap`, after a garbage
  collection) and `ona_taskrun_remembered`; the heap's sites are compared with the previous
  wave's, and the largest growers logged;
- halfway through, in the middle of a wave, the operator is stopped (SIGTERM) and started
  again;
- at the end, the schedule and its runs are deleted, and the soak waits for every
  remembered count to be 0.

Nothing here is timed with fixed sleeps: each wait is for a condition, with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, watch

from ona_simulator.control_client import SimulatorControl
from tools.bench.run import _api_client, proc_memory_kib
from tools.chaos.stack import FAST_TIMINGS, OperatorRun, Stack
from tools.soak import figures as fig

GROUP, VERSION, PLURAL = "automation.ona.com", "v1alpha1", "taskruns"
SCHEDULES = "taskrunschedules"
SCHEDULE = "soak-every-minute"
SCHEDULE_LABEL = "automation.ona.com/schedule"
TEAM = "soak-team"
ENVIRONMENTS = (
    "5d0c0f5e-7a0b-4d1e-9a1e-0c4a1b2c3d01",
    "5d0c0f5e-7a0b-4d1e-9a1e-0c4a1b2c3d02",
)
PROJECT = "5d0c0f5e-7a0b-4d1e-9a1e-0c4a1b2c3dff"
SYNCED_LINE = "TaskRuns; reconciling"
METRICS_LINE = re.compile(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics")
REMEMBERED_LINE = re.compile(r'^ona_taskrun_remembered\{kind="([a-z_]+)"\} ([0-9.e+]+)$', re.M)

QUICK = "make soak # sim:pending=50ms sim:duration=200ms"
FAILING = f'{QUICK} sim:log_lines=4 sim:fail="soak failure"'
RETRYING = f"{QUICK} sim:fail_first=1"
HANGING = "make soak # sim:pending=50ms sim:hang"
SCHEDULED = "make scheduled # sim:pending=50ms sim:duration=200ms"

# Kind -> share of the runs (out of 100), in the order runs are dealt.
MIX: dict[str, int] = {
    "quick": 30,
    "ttl": 20,
    "failing": 10,
    "retry": 10,
    "midrun": 10,
    "project": 5,
    "ref": 15,
}
Log = Callable[[str], None]


class SoakError(RuntimeError):
    """The soak could not be carried out (not a figure about the operator)."""


@dataclass(frozen=True)
class SoakSettings:
    taskruns: int = 50_000
    concurrency: int = 24
    sample_every: int = 1000
    # Runs of each operator incarnation left out of the growth fit (None: a fifth of it).
    warmup: int | None = None
    restart: bool = True
    schedule: bool = True
    heap_frames: int = 1
    run_timeout: float = 120.0  # one TaskRun's life, create to gone
    plot: Path | None = None  # also write the curve here (PNG), besides the state folder

    def __post_init__(self) -> None:
        if self.taskruns < 1 or self.concurrency < 1 or self.sample_every < 1:
            raise ValueError("taskruns, concurrency and sample-every must be at least 1")
        if not 1 <= self.heap_frames <= 25:
            raise ValueError("heap frames must be from 1 to 25")


def kind_of(index: int) -> str:
    """The kind of the index-th run: the mix dealt round-robin over blocks of 100."""
    slot = index % 100
    for kind, share in MIX.items():
        if slot < share:
            return kind
        slot -= share
    raise AssertionError("MIX adds up to 100")


def team_run(index: int) -> bool:
    """A third of the runs (and of each kind: the kinds come in blocks) use the second
    connection; `project` and `ref` runs always do (its policy is what they exercise)."""
    return kind_of(index) in ("project", "ref") or index % 3 == 0


# ---------------------------------------------------------------------- the watch


class Watcher:
    """Follows the namespace's TaskRuns from a thread: each one's newest status, and which
    are gone. A client thread waits for one TaskRun's condition without waking the others."""

    GONE: Mapping[str, Any] = {"__gone__": True}

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._lock = threading.Lock()
        self._status: dict[str, Mapping[str, Any]] = {}
        self._waiters: dict[str, tuple[Callable[[Mapping[str, Any]], bool], threading.Event]] = {}
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="soak-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(60):
            raise SoakError("could not list TaskRuns to start watching")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30)

    def alive(self) -> int:
        with self._lock:
            return len(self._status)

    def wait(
        self, name: str, wanted: Callable[[Mapping[str, Any]], bool], timeout: float
    ) -> Mapping[str, Any] | None:
        """Until `wanted(status)` holds for the TaskRun (`GONE` once it is gone); returns
        that status, or None after `timeout` seconds."""
        event = threading.Event()
        with self._lock:
            current = self._status.get(name, self.GONE)
            if wanted(current):
                return current
            self._waiters[name] = (wanted, event)
        try:
            if not event.wait(timeout):
                return None
        finally:
            with self._lock:
                self._waiters.pop(name, None)
        with self._lock:
            return dict(self._status.get(name, self.GONE))

    def created(self, name: str) -> None:
        """The create was answered: the TaskRun exists even if its event is still coming."""
        with self._lock:
            self._status.setdefault(name, {})

    def _set(self, name: str, status: Mapping[str, Any] | None) -> None:
        with self._lock:
            if status is None:
                self._status.pop(name, None)
                current = self.GONE
            else:
                current = self._status[name] = status
            waiter = self._waiters.get(name)
            if waiter is not None and waiter[0](current):
                waiter[1].set()

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
            except client.ApiException as exc:
                if exc.status == 410:
                    version = ""
                    continue
                self.errors += 1
                self._stop.wait(0.5)
            except (urllib3.exceptions.HTTPError, OSError, ValueError):
                self.errors += 1
                self._stop.wait(0.5)

    def _list(self) -> str:
        listing = cast(
            dict[str, Any],
            self._custom.list_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL),
        )
        present = {
            str(i["metadata"]["name"]): dict(i.get("status") or {}) for i in listing["items"]
        }
        with self._lock:
            known = set(self._status)
        for name in known - present.keys():
            self._set(name, None)
        for name, status in present.items():
            self._set(name, status)
        self.ready.set()
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            resource_version=version,
            timeout_seconds=30,
            allow_watch_bookmarks=True,
        ):
            body = event["object"]
            version = str(body["metadata"]["resourceVersion"])
            name = str(body["metadata"].get("name") or "")
            if event["type"] == "DELETED":
                self._set(name, None)
            elif event["type"] in ("ADDED", "MODIFIED"):
                self._set(name, dict(body.get("status") or {}))
            if self._stop.is_set():
                stream.stop()  # type: ignore[no-untyped-call]
        return version


def _gone(status: Mapping[str, Any]) -> bool:
    return bool(status.get("__gone__"))


def _final(status: Mapping[str, Any]) -> bool:
    """Over, as `kubectl wait --for=condition=Succeeded` sees it: a run waiting to retry
    shows its failed attempt's phase (FAILED) while Succeeded is still Unknown."""
    if _gone(status):
        return True
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Succeeded":
            return cond.get("status") in ("True", "False")
    return False


def _running(status: Mapping[str, Any]) -> bool:
    return _final(status) or bool(status.get("taskExecutionId"))


def _tail_or_note(status: Mapping[str, Any]) -> bool:
    """A failed run whose log tail (or the note saying why there is none) is written."""
    if _gone(status):
        return True
    if status.get("phase") != "FAILED":
        return False
    if status.get("logTail"):
        return True
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Succeeded" and "log" in str(cond.get("message") or ""):
            return True
    return False


# ---------------------------------------------------------------------- the soak


@dataclass
class Tally:
    done: int = 0
    stuck: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    # Per kind: seconds from the create sent to what the kind waits for, and from then
    # until the TaskRun was gone.
    waits: dict[str, list[float]] = field(default_factory=dict)
    deletes: dict[str, list[float]] = field(default_factory=dict)


class _Soak:
    def __init__(
        self, settings: SoakSettings, stack: Stack, control: SimulatorControl, log: Log
    ) -> None:
        self.settings = settings
        self.stack = stack
        self.control = control
        self.log = log
        self.tally = Tally()
        self.lock = threading.Lock()
        self.samples: list[dict[str, Any]] = []
        self.operator: OperatorRun | None = None
        self.port = 0
        self.restarted_at: int | None = None
        self._previous_sites: dict[str, int] = {}
        self.baselines: dict[int, dict[str, int]] = {}  # incarnation -> sites at its warm-up
        self.site_growth: list[dict[str, Any]] = []

    # ------------------------------------------------------------ setting up

    def run(self) -> dict[str, Any]:
        info = self.stack.info
        assert info is not None
        settings = self.settings
        self.api = _api_client(info.admin_kubeconfig, settings.concurrency + 4)
        self.custom = client.CustomObjectsApi(self.api)
        self.watcher = Watcher(_api_client(info.admin_kubeconfig, 2), self.stack.namespace)
        try:
            self.control.seed_project(
                id=PROJECT, name="soak", createDelay="100ms", startDelay="100ms", stopDelay="50ms"
            )
            token = secrets.token_urlsafe(24)
            self.control.add_token(token)
            self.stack.add_connection(
                TEAM, token, environment_ids=ENVIRONMENTS, project_ids=[PROJECT]
            )
            self._start_operator()
            self.stack.wait_connection_ready(TEAM)
            self.watcher.start()
            if settings.schedule:
                self._create_schedule()
            started = time.monotonic()
            self._sample(0, started)
            total = settings.taskruns
            middle = total // 2 if settings.restart else -1
            for first in range(0, total, settings.sample_every):
                last = min(first + settings.sample_every, total)
                self._wave(first, last, restart_at=middle if first <= middle < last else None)
                self._sample(last, started)
            self._end(started)
        finally:
            self.watcher.stop()
            self.api.close()  # type: ignore[no-untyped-call]
        return self._figures()

    def _start_operator(self) -> None:
        run = self.stack.start_operator()
        deadline = time.monotonic() + 300
        port = 0
        while time.monotonic() < deadline:
            text = run.log_path.read_text(errors="replace")
            found = METRICS_LINE.search(text)
            if found:
                port = int(found.group(1))
            if port and SYNCED_LINE in text:
                self.operator, self.port = run, port
                return
            if not run.running:
                raise SoakError(f"the operator exited at start; see {run.log_path}")
            time.sleep(0.2)
        raise SoakError(f"the operator did not start within 300 s; see {run.log_path}")

    def _restart(self) -> None:
        run = self.operator
        assert run is not None
        self.log(f"restarting the operator (SIGTERM to pid {run.process.pid})")
        run.process.send_signal(signal.SIGTERM)
        try:
            run.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait(timeout=10)
        run.ended_at = time.monotonic()
        run.end = "stopped"
        began = time.monotonic()
        self._start_operator()
        self.log(f"operator started again in {time.monotonic() - began:.1f} s")

    def _create_schedule(self) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            self.stack.namespace,
            SCHEDULES,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TaskRunSchedule",
                "metadata": {"name": SCHEDULE, "namespace": self.stack.namespace},
                "spec": {
                    "schedule": "* * * * *",
                    "concurrencyPolicy": "Allow",
                    "successfulRunsHistoryLimit": 0,
                    "failedRunsHistoryLimit": 0,
                    "taskRunTemplate": {
                        "spec": {
                            "task": {
                                "environmentId": ENVIRONMENTS[1],
                                "name": SCHEDULE,
                                "command": SCHEDULED,
                            },
                            "connectionRef": {"name": TEAM},
                        }
                    },
                },
            },
        )

    # ------------------------------------------------------------ churning

    def _wave(self, first: int, last: int, restart_at: int | None) -> None:
        indexes = iter(range(first, last))
        take = threading.Lock()
        reached = threading.Event()

        def work() -> None:
            while True:
                with take:
                    index = next(indexes, None)
                if index is None:
                    return
                if index == restart_at:
                    reached.set()
                self._one(index)

        threads = [
            threading.Thread(target=work, name=f"soak-{i}", daemon=True)
            for i in range(min(self.settings.concurrency, last - first))
        ]
        for thread in threads:
            thread.start()
        if restart_at is not None:
            # From this thread: the operator dies with the thread that started it
            # (PR_SET_PDEATHSIG), and the client threads end with the wave.
            reached.wait()
            self.restarted_at = restart_at
            self._restart()
        for thread in threads:
            thread.join()

    def _spec(self, index: int, name: str) -> dict[str, Any]:
        kind = kind_of(index)
        team = team_run(index)
        environment = ENVIRONMENTS[index % 2]
        spec: dict[str, Any]
        command = {"failing": FAILING, "retry": RETRYING, "midrun": HANGING}.get(kind, QUICK)
        if kind == "project":
            spec = {
                "task": {"name": name, "command": command},
                "environment": {"fromProject": {"projectId": PROJECT}},
            }
        elif kind == "ref":
            task = self.control.seed_task(
                environment_id=environment, reference=name, name=name, command=command
            )
            spec = {"taskRef": {"id": str(task["id"])}}
        else:
            spec = {"task": {"environmentId": environment, "name": name, "command": command}}
        if kind == "ttl":
            spec["ttlSecondsAfterFinished"] = 0
        if kind == "failing":
            spec["logs"] = {"tailLines": 3}
        if kind == "retry":
            spec["retries"] = 1
        if team:
            spec["connectionRef"] = {"name": TEAM}
        return spec

    def _kube(self, what: str, call: Callable[[], Any]) -> Any:
        """A request of the soak's own, retried on 429, 5xx and dropped connections (the
        API server is busy, or the operator restarting has it busy)."""
        for attempt in range(30):
            try:
                return call()
            except client.ApiException as exc:
                if exc.status not in (429, 500, 502, 503, 504) or attempt == 29:
                    raise
            except (urllib3.exceptions.HTTPError, OSError):
                if attempt == 29:
                    raise
            with self.lock:
                self.tally.retries += 1
            time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _one(self, index: int) -> None:
        kind = kind_of(index)
        name = f"soak-{index:06d}"
        namespace = self.stack.namespace
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": self._spec(index, name),
        }
        timeout = self.settings.run_timeout
        began = time.monotonic()
        try:
            self._kube(
                "create",
                lambda: self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body
                ),
            )
        except client.ApiException as exc:
            if exc.status != 409:  # 409: an earlier attempt went through
                raise
        self.watcher.created(name)
        waited_for: Callable[[Mapping[str, Any]], bool] = {
            "ttl": _gone,
            "failing": _tail_or_note,
            "midrun": _running,
        }.get(kind, _final)
        seen = self.watcher.wait(name, waited_for, timeout)
        waited = time.monotonic()
        outcome = "stuck" if seen is None else str(seen.get("phase") or "gone")
        if kind == "ttl" and seen is not None:
            outcome = "ttl"
        if seen is None or not _gone(seen):
            with contextlib.suppress(client.ApiException):
                self._kube(
                    "delete",
                    lambda: self.custom.delete_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name
                    ),
                )
        if self.watcher.wait(name, _gone, timeout) is None:
            outcome = "not-gone"
        ended = time.monotonic()
        with self.lock:
            self.tally.waits.setdefault(kind, []).append(round(waited - began, 3))
            self.tally.deletes.setdefault(kind, []).append(round(ended - waited, 3))
            self.tally.done += 1
            self.tally.by_kind[kind] = self.tally.by_kind.get(kind, 0) + 1
            key = f"{kind}:{outcome}"
            self.tally.outcomes[key] = self.tally.outcomes.get(key, 0) + 1
            if outcome in ("stuck", "not-gone"):
                self.tally.stuck.append(f"{name} ({kind}, {outcome})")

    # ------------------------------------------------------------ sampling

    def _get(self, path: str, timeout: float = 120.0) -> bytes:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return cast(bytes, answer.read())

    def remembered(self) -> dict[str, float]:
        text = self._get("/metrics", timeout=30).decode()
        return {kind: float(value) for kind, value in REMEMBERED_LINE.findall(text)}

    def _settle(self, within: float = 120.0) -> None:
        """Before a sample: until the operator has posted the Events it queued behind the
        TaskRuns' writes (`remembered{kind="events"}`), which hold a little of each run
        for a while; a sample taken meanwhile measures that backlog, not a leak."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.remembered().get("events"):
                return
            time.sleep(0.25)
        self.log(f"Events still waiting to be posted after {within:.0f} s; sampling anyway")

    def _sample(self, runs: int, started: float) -> dict[str, Any]:
        run = self.operator
        assert run is not None
        self._settle()
        began = time.monotonic()
        report = json.loads(self._get("/debug/heap?limit=0"))
        memory = proc_memory_kib(run.process.pid)
        remembered = self.remembered()
        sites = {" <- ".join(s["where"]): int(s["bytes"]) for s in report["top"]}
        sim = self.stack.simulator
        sample: dict[str, Any] = {
            "runs": runs,
            "seconds": round(time.monotonic() - started, 1),
            "incarnation": run.index,
            "rss_mib": round(memory.get("VmRSS", 0) / 1024, 2),
            "peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 2),
            "heap_bytes": int(report["traced_bytes"]),
            "tracing_overhead_bytes": int(report["tracing_overhead_bytes"]),
            "gc_objects": int(report["gc_objects"]),
            # The C allocator's main arena and mmaps: in use (C extensions included, which
            # tracemalloc does not see) and free but kept.
            "malloc_in_use_mib": _mib(report.get("malloc", {}).get("in_use_bytes")),
            "malloc_free_mib": _mib(report.get("malloc", {}).get("free_bytes")),
            "remembered": remembered,
            "alive": self.watcher.alive(),
            "stuck": len(self.tally.stuck),
            "sample_seconds": 0.0,
            "simulator_rss_mib": (
                round(proc_memory_kib(sim.pid).get("VmRSS", 0) / 1024, 1)
                if sim is not None and sim.poll() is None
                else None
            ),
        }
        previous = self.samples[-1] if self.samples else None
        same = previous is not None and previous["incarnation"] == sample["incarnation"]
        if previous is not None and same and self._previous_sites:
            grown = fig.site_growth(self._previous_sites, sites, top=8)
            self.site_growth.append({"from": previous["runs"], "to": runs, "sites": grown})
        self._previous_sites = sites
        warm = fig.warmup_runs(self.settings, self._incarnation_start(run.index), runs)
        if run.index not in self.baselines and warm:
            self.baselines[run.index] = sites
            sample["warm"] = True
        self._last_sites = sites
        sample["sample_seconds"] = round(time.monotonic() - began, 2)
        self.samples.append(sample)
        with contextlib.suppress(Exception):
            self.control.clear_calls()  # the simulator's call log would grow for ever
        rate = runs / max(sample["seconds"], 1e-6)
        self.log(
            f"[{runs:>6} runs, {sample['seconds']:>7.0f} s, {rate:5.1f}/s] "
            f"RSS {sample['rss_mib']:7.1f} MiB, heap {sample['heap_bytes'] / 2**20:7.2f} MiB, "
            f"{sample['gc_objects']:>8} objects, remembered "
            f"{','.join(f'{k}={v:g}' for k, v in sorted(remembered.items()))}"
            f"{', stuck ' + str(len(self.tally.stuck)) if self.tally.stuck else ''}"
        )
        if self.site_growth and self.site_growth[-1]["to"] == runs:
            for where, delta in self.site_growth[-1]["sites"][:3]:
                self.log(f"    {delta:+10d} B  {where}")
        return sample

    def _incarnation_start(self, index: int) -> int:
        if index == 0 or self.restarted_at is None:
            return 0
        return self.restarted_at

    # ------------------------------------------------------------ the end

    def _end(self, started: float) -> None:
        namespace = self.stack.namespace
        if self.settings.schedule:
            with contextlib.suppress(client.ApiException):
                self._kube(
                    "delete schedule",
                    lambda: self.custom.delete_namespaced_custom_object(
                        GROUP, VERSION, namespace, SCHEDULES, SCHEDULE
                    ),
                )
        deadline = time.monotonic() + 180
        while True:
            listing = self._kube(
                "list",
                lambda: self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL
                ),
            )
            left = [str(i["metadata"]["name"]) for i in listing["items"]]
            if not left:
                break
            if time.monotonic() > deadline:
                raise SoakError(f"{len(left)} TaskRuns still there at the end, e.g. {left[0]}")
            for name in left:
                with contextlib.suppress(client.ApiException):
                    self.custom.delete_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name
                    )
            time.sleep(1.0)
        # What the operator holds once every TaskRun is gone: every kind 0, within a minute.
        deadline = time.monotonic() + 60
        last: dict[str, float] = {}
        while time.monotonic() < deadline:
            last = self.remembered()
            if last and not any(last.values()):
                break
            time.sleep(0.5)
        self.final_remembered = last
        self._sample(self.settings.taskruns, started)
        self.samples[-1]["final"] = True

    def _figures(self) -> dict[str, Any]:
        assert self.operator is not None
        operator_logs = [run.log_path for run in self.stack.operators]
        problems = fig.log_problems(operator_logs)
        growth = fig.growth(self.samples, self.settings, self.restarted_at)
        overall = {
            index: fig.site_growth(base, self._last_sites, top=15)
            for index, base in self.baselines.items()
            if index == self.operator.index
        }
        settings = asdict(self.settings)
        settings["plot"] = str(self.settings.plot) if self.settings.plot else None
        return {
            "settings": settings,
            "namespace": self.stack.namespace,
            "taskruns": self.tally.done,
            "by_kind": self.tally.by_kind,
            "outcomes": self.tally.outcomes,
            "stuck": self.tally.stuck[:50],
            "stuck_count": len(self.tally.stuck),
            "kube_retries": self.tally.retries,
            "seconds_to_wanted": {k: fig.spread(v) for k, v in sorted(self.tally.waits.items())},
            "seconds_to_gone": {k: fig.spread(v) for k, v in sorted(self.tally.deletes.items())},
            "restarted_at_run": self.restarted_at,
            "watch_errors": self.watcher.errors,
            "final_remembered": getattr(self, "final_remembered", {}),
            "samples": self.samples,
            "growth": growth,
            "site_growth_per_wave": self.site_growth,
            "site_growth_since_warmup": {str(k): v for k, v in overall.items()},
            "operator_log_problems": problems,
        }


def _mib(value: Any) -> float | None:
    return round(int(value) / 2**20, 2) if value is not None else None


def run_soak(
    settings: SoakSettings, state_dir: Path, *, log: Log = print, keep_state: bool = False
) -> dict[str, Any]:
    """Run the soak; returns its figures (also in `figures.json` in `state_dir`, with the
    curve as `soak.png` when matplotlib is there)."""
    timings = {
        **FAST_TIMINGS,
        "RETRY_BACKOFF_BASE_SECONDS": "0.5",
        "ONA_TASKRUN_DEBUG_HEAP": str(settings.heap_frames),
        "METRICS_BIND_ADDRESS": "127.0.0.1",
    }
    stack = Stack(state_dir, log, timings=timings, namespace_prefix="soak")
    wall = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        stack.start()
        with SimulatorControl(stack.control_url, timeout=60) as control:
            figures = _Soak(settings, stack, control, log).run()
    finally:
        stack.close()
        left = stack.leftovers()
        log(f"teardown left behind: {', '.join(left)}" if left else "teardown: nothing left")
        if figures:
            figures["wall_seconds"] = round(time.monotonic() - wall, 1)
            figures["teardown_leftovers"] = left
            (state_dir / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
            log(fig.summary(figures))
            for target in (state_dir / "soak.png", settings.plot):
                if target is None:
                    continue
                made = fig.plot(figures, target)
                log(f"curve written to {target}" if made else f"no curve: {made.reason}")
            log(f"figures written to {state_dir / 'figures.json'}")
        if not keep_state:
            cluster = state_dir / "cluster"
            for name in ("etcd-data", "pki"):
                shutil.rmtree(cluster / name, ignore_errors=True)
    return figures
