"""The restart benchmark: what a restarted operator does with thousands of TaskRuns present.

`run_restart(settings, state_dir)` starts the benchmark's stack (control plane, simulator),
with leader election on as a Deployment of more than one replica has it, and fills it with
TaskRuns through a first operator:

- `finished` TaskRuns driven to their end by that operator: short executions
  (`sim:duration`), one seeded task each. They are created and finished by the operator
  rather than written with a final status by hand, so each carries exactly what the
  operator leaves on a finished TaskRun (finalizer, signed start claim, status with
  conditions, steps and observedGeneration) and its execution exists in the simulator:
  anything a restarted operator did with them would meet what it meets in a cluster.
  `control` of them (as many as the running ones) run until the benchmark completes them
  all at once while that operator is steady: their mirror latency is the usual latency of
  that many changes on the same stack;
- `running` TaskRuns whose executions run until the benchmark changes them (`sim:hang`),
  their names spread among the finished ones (a cluster's names do not sort by state),
  and in an environment of their own, so the simulator's WatchEvents records tell the
  streams of running executions from those of finished ones.

Once everything is quiet (no write to the API server for a few seconds), that operator is
stopped (SIGTERM, as an upgrade or a drain stops a pod; or SIGKILL) and a new one started.
The figures:

- time to ready: from the new process's start until it logs that it is ready (its TaskRun
  watches have delivered their first lists, the initial sync is done, and it holds the
  leader-election Lease: `app.READY_LINE`);
- Ona calls for finished TaskRuns: the simulator's call log after the restart, by the
  task, execution or environment a call names (ListTaskExecutions names none: its count,
  and the operator's `tracked_executions` gauge, show what it covered);
- writes to finished TaskRuns: resourceVersion changes seen by the benchmark's own watch,
  Events about them (new or counted again), and kube-apiserver's write counters;
- mirror latency of the running ones: the benchmark completes every running execution as
  soon as the new operator is ready (the worst moment: its initial backlog is still
  queued), and times each from the execution's `completedAt` to SUCCEEDED seen;
- the new operator's peak RSS (`VmHWM`), its RSS and CPU at ready and at the end.

Everything is written to `figures.json` in the state folder, and printed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from ona_simulator.control_client import SimulatorControl
from tools.bench import figures as fig
from tools.bench.run import (
    BenchError,
    Log,
    Observer,
    _api_client,
    _prune,
    command,
    create_taskruns,
    proc_cpu_seconds,
    proc_memory_kib,
    read_apiserver_requests,
    taskrun_body,
)
from tools.chaos.stack import OperatorRun, Stack

# The operator's line once it acts (`ona_taskrun.app.READY_LINE`), and its metrics address.
READY_LINE = "operator ready:"
METRICS_LINE = re.compile(r"serving metrics on (http://\S+/metrics)")
FINISHED_ENVIRONMENT = "0f0e5f4a-3a4b-4b8e-9a51-00000000f1f1"
RUNNING_ENVIRONMENT = "0f0e5f4a-3a4b-4b8e-9a51-00000000a1a1"
STOPS = ("term", "kill")
# A write is also a request the API server refused (409): these count every write verb.
WRITE_RESOURCES = ("taskruns", "events")


@dataclass(frozen=True)
class RestartSettings:
    finished: int = 10_000
    running: int = 500
    concurrency: int = 16
    # How long the finished ones' executions ran (they end before the restart).
    duration: str = "200ms"
    # "term": SIGTERM and wait for the operator to exit; "kill": SIGKILL.
    stop: str = "term"
    leader_election: bool = True
    poll_interval: float = 5.0
    operator_env: Mapping[str, str] = field(default_factory=dict)
    # Seconds allowed to fill the cluster (every finished TaskRun final, every running one
    # RUNNING), for the restarted operator to be ready, and for every change to be mirrored.
    fill_deadline: float = 1800.0
    ready_deadline: float = 120.0
    mirror_deadline: float = 300.0
    # Seconds without a write to the API server that count as quiet before the restart.
    quiet: float = 5.0
    # Seconds of looking on once every change is mirrored: late writes or calls count too.
    idle_window: float = 15.0

    def __post_init__(self) -> None:
        if self.finished < 1 or self.running < 1 or self.concurrency < 1:
            raise ValueError("need at least one finished and one running TaskRun, one thread")
        if self.stop not in STOPS:
            raise ValueError(f"stop must be one of {STOPS}, not {self.stop!r}")
        if min(self.fill_deadline, self.ready_deadline, self.mirror_deadline) <= 0:
            raise ValueError("deadlines must be positive")
        if self.quiet <= 0 or self.idle_window < 0 or self.poll_interval <= 0:
            raise ValueError("need a positive quiet time and poll interval")

    @property
    def control(self) -> int:
        """Finished TaskRuns that run until the benchmark completes them, all at once, with
        the first operator steady: the usual mirror latency of as many changes at once,
        on the same stack."""
        return min(self.running, self.finished)

    def environment(self) -> dict[str, str]:
        env = {"ONA_POLL_INTERVAL": str(self.poll_interval)}
        if self.leader_election:
            env.update({"LEADER_ELECTION": "true", "LEASE_NAME": "ona-taskrun-operator"})
        return {**env, **self.operator_env}


def names_of(finished: int, running: int) -> tuple[list[str], list[str]]:
    """The finished and running TaskRuns' names: `restart-NNNNN`, the running ones spread
    evenly among the finished ones, as a cluster's names do not sort by state."""
    total = finished + running
    running_at = {(i * total) // running + total // (2 * running) for i in range(running)}
    names = [f"restart-{i:05d}" for i in range(total)]
    return (
        [name for i, name in enumerate(names) if i not in running_at],
        [name for i, name in enumerate(names) if i in running_at],
    )


class VersionObserver(Observer):
    """The benchmark's watch, counting from `mark()` on every change of each TaskRun's
    resourceVersion: each one is a write that reached etcd."""

    def __init__(self, api: client.ApiClient, namespace: str, log: Log) -> None:
        super().__init__(api, namespace, log)
        self.versions: dict[str, str] = {}
        self.changes: Counter[str] = Counter()
        self.change_times: dict[str, list[float]] = {}
        self.marked = False

    def mark(self) -> None:
        with self._lock:
            self.marked = True

    def _see(self, body: Mapping[str, Any], now: float) -> None:
        super()._see(body, now)
        name = str(body["metadata"]["name"])
        version = str(body["metadata"].get("resourceVersion") or "")
        with self._lock:
            before = self.versions.get(name)
            self.versions[name] = version
            if self.marked and before is not None and version != before:
                self.changes[name] += 1
                self.change_times.setdefault(name, []).append(now)

    def phase(self, name: str) -> str:
        with self._lock:
            return str((self.latest.get(name, {}).get("status") or {}).get("phase") or "")

    def status(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest.get(name, {}).get("status") or {})


def run_restart(
    settings: RestartSettings, state_dir: Path, *, log: Log = print, keep_state: bool = False
) -> dict[str, Any]:
    stack = Stack(state_dir, log, timings=settings.environment(), namespace_prefix="restart")
    wall_start = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        stack.start()
        with SimulatorControl(stack.control_url, timeout=60) as control:
            figures = _Restart(settings, stack, control, log).run()
    finally:
        stack.close()
        left = stack.leftovers()
        log(f"teardown left behind: {', '.join(left)}" if left else "teardown: nothing left")
        if figures:
            figures["wall_seconds"] = round(time.monotonic() - wall_start, 1)
            figures["teardown_leftovers"] = left
            (state_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
            log(summary(figures))
            log(f"figures written to {state_dir / 'figures.json'}")
        if not keep_state:
            _prune(state_dir)
    return figures


class _Restart:
    def __init__(
        self, settings: RestartSettings, stack: Stack, control: SimulatorControl, log: Log
    ) -> None:
        self.settings = settings
        self.stack = stack
        self.control = control
        self.log = log
        self.task_of: dict[str, str] = {}

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        settings, stack = self.settings, self.stack
        info = stack.info
        assert info is not None
        finished, running = names_of(settings.finished, settings.running)
        control_runs = set(
            finished[:: max(len(finished) // settings.control, 1)][: settings.control]
        )
        api = _api_client(info.admin_kubeconfig, settings.concurrency)
        watch_api = _api_client(info.admin_kubeconfig, 2)
        observer = VersionObserver(watch_api, stack.namespace, self.log)
        try:
            bodies = self._seed(finished, running, control_runs)
            first = stack.start_operator()
            self._wait_line(first, READY_LINE, settings.ready_deadline)
            observer.start()
            fill = self._fill(api, observer, bodies, finished, running, control_runs)
            usual = self._control_latency(observer, sorted(control_runs))
            _, latest = observer.snapshot()
            sample = {n: latest.get(n) for n in [*finished[:3], *running[:3]]}
            (stack.state_dir / "sample-taskruns.json").write_text(json.dumps(sample, indent=1))
            self._wait_quiet(watch_api)
            before = self._snapshot(api, watch_api, first)
            stopped = self._stop(first)
            self.control.clear_calls()
            observer.mark()
            restarted = self._restart(observer, watch_api, finished, running, before, stopped)
        finally:
            observer.stop()
            for one in (api, watch_api):
                one.close()  # type: ignore[no-untyped-call]
        return {
            "settings": {
                "finished": settings.finished,
                "running": settings.running,
                "control": len(control_runs),
                "duration": settings.duration,
                "stop": settings.stop,
                "leader_election": settings.leader_election,
                "operator_env": settings.environment(),
                "namespace": stack.namespace,
            },
            "fill": fill,
            "usual_mirror_latency": usual,
            "before_restart": {k: v for k, v in before.items() if not k.startswith("_")},
            **restarted,
        }

    def _seed(
        self, finished: list[str], running: list[str], control_runs: set[str]
    ) -> dict[str, dict[str, Any]]:
        """One task per TaskRun, through the simulator's control API (no Ona API call),
        from the creating threads."""
        started = time.monotonic()
        namespace = self.stack.namespace
        live = set(running) | control_runs
        running_set = set(running)
        local = threading.local()
        clients: list[SimulatorControl] = []

        def seed(name: str) -> tuple[str, str]:
            control = getattr(local, "control", None)
            if control is None:
                control = local.control = SimulatorControl(self.stack.control_url, timeout=60)
                clients.append(control)
            task = control.seed_task(
                environment_id=RUNNING_ENVIRONMENT if name in running_set else FINISHED_ENVIRONMENT,
                reference=name,
                name=name,
                command="restart # sim:hang" if name in live else command(self.settings.duration),
            )
            return name, str(task["id"])

        try:
            with ThreadPoolExecutor(self.settings.concurrency) as pool:
                for name, task_id in pool.map(seed, [*finished, *running]):
                    self.task_of[name] = task_id
        finally:
            for control in clients:
                control.close()
        bodies = {
            name: taskrun_body(name, namespace, "", task_id)
            for name, task_id in self.task_of.items()
        }
        self.log(f"seeded {len(bodies)} tasks in {time.monotonic() - started:.1f} s")
        return bodies

    def _fill(
        self,
        api: client.ApiClient,
        observer: VersionObserver,
        bodies: dict[str, dict[str, Any]],
        finished: list[str],
        running: list[str],
        control_runs: set[str],
    ) -> dict[str, Any]:
        """Create every TaskRun through the first operator; wait until the short ones are
        final and the long ones (running and control) RUNNING."""
        settings = self.settings
        started = time.time()
        deadline = started + settings.fill_deadline
        self.log(
            f"creating {len(finished)} TaskRuns to finish and {len(running)} to keep running "
            f"from {settings.concurrency} threads"
        )
        creation = create_taskruns(api, self.stack.namespace, bodies, settings.concurrency)
        if creation.failures:
            raise BenchError(
                f"{len(creation.failures)} TaskRuns could not be created, e.g. "
                f"{creation.failures[0]}"
            )
        created = time.time()
        self.log(f"created {len(bodies)} TaskRuns in {created - started:.1f} s")
        short = [name for name in finished if name not in control_runs]
        long = [*running, *sorted(control_runs)]
        next_report = time.time() + 10
        while True:
            done = sum(1 for name in short if observer.phase(name) in ("SUCCEEDED",))
            live = sum(1 for name in long if observer.phase(name) == "RUNNING")
            if done == len(short) and live == len(long):
                break
            failed = [n for n in short if observer.phase(n) in ("FAILED", "STOPPED")]
            if failed:
                raise BenchError(f"{len(failed)} TaskRuns ended other than SUCCEEDED: {failed[:3]}")
            self._alive()
            now = time.time()
            if now > deadline:
                raise BenchError(
                    f"the cluster was not filled in {settings.fill_deadline:.0f} s: "
                    f"{done} of {len(short)} final, {live} of {len(long)} running"
                )
            if now >= next_report:
                next_report = now + 10
                self.log(f"  final {done} of {len(short)}, running {live} of {len(long)}")
            time.sleep(0.5)
        filled = time.time()
        self.log(f"filled in {filled - started:.1f} s")
        return {
            "create_seconds": round(created - started, 1),
            "seconds": round(filled - started, 1),
            "create_retries": creation.retries,
        }

    def _control_latency(self, observer: VersionObserver, names: list[str]) -> dict[str, Any]:
        """Complete the control runs' executions with the first operator steady: the usual
        mirror latency of this stack."""
        completed = self._complete(observer, names)
        self._wait_phase(observer, names, "SUCCEEDED", time.time() + self.settings.mirror_deadline)
        return self._mirror(observer, names, completed)

    def _complete(self, observer: VersionObserver, names: list[str]) -> dict[str, str]:
        """Make the simulator complete each named TaskRun's execution; name -> execution."""
        executions = {
            name: str(observer.status(name).get("taskExecutionId") or "") for name in names
        }
        missing = [name for name, execution in executions.items() if not execution]
        if missing:
            raise BenchError(
                f"{len(missing)} running TaskRuns have no execution, e.g. {missing[0]}"
            )
        for execution in executions.values():
            self.control.set_phase(execution, "SUCCEEDED")
        return executions

    def _wait_phase(
        self,
        observer: VersionObserver,
        names: list[str],
        phase: str,
        deadline: float,
        sample: Callable[[], None] | None = None,
    ) -> int:
        next_sample = 0.0
        while True:
            seen = sum(1 for name in names if observer.phase(name) == phase)
            if seen == len(names) or time.time() > deadline:
                return seen
            self._alive()
            if sample is not None and time.monotonic() >= next_sample:
                sample()
                next_sample = time.monotonic() + 0.5
            time.sleep(0.1)

    def _mirror(
        self, observer: VersionObserver, names: list[str], executions: Mapping[str, str]
    ) -> dict[str, Any]:
        """completedAt (the simulator's, in milliseconds) -> SUCCEEDED seen, per TaskRun."""
        records = {str(e["execution"]["id"]): e["execution"] for e in self.control.executions()}
        marks, _ = observer.snapshot()
        completed = {
            name: fig.parse_time(
                str(
                    ((records.get(executions[name]) or {}).get("metadata") or {}).get("completedAt")
                    or ""
                )
            )
            for name in names
        }
        seen = {name: marks.get(name, {}).get("SUCCEEDED") for name in names}
        return fig.spread(fig.latencies(completed, seen))

    def _wait_quiet(self, api: client.ApiClient) -> None:
        """Until the API server has taken no write of TaskRuns or Events for `quiet`
        seconds: the first operator's deferred Events and last writes are all in."""
        settings = self.settings
        deadline = time.monotonic() + 300
        last = _writes(read_apiserver_requests(api))
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settings.quiet:
            if time.monotonic() > deadline:
                raise BenchError("the API server kept taking writes for 300 s after the fill")
            time.sleep(0.5)
            now = _writes(read_apiserver_requests(api))
            if now != last:
                last, quiet_since = now, time.monotonic()

    def _snapshot(
        self, api: client.ApiClient, watch_api: client.ApiClient, run: OperatorRun
    ) -> dict[str, Any]:
        """The first operator at its end, the Events present, and the API server's counters."""
        memory = proc_memory_kib(run.process.pid)
        events = _events(api, self.stack.namespace)
        return {
            "operator_peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
            "operator_rss_mib": round(memory.get("VmRSS", 0) / 1024, 1),
            "operator_cpu_seconds": round(proc_cpu_seconds(run.process.pid), 1),
            "events": len(events),
            "_events": events,
            "_kube": read_apiserver_requests(watch_api),
        }

    def _stop(self, run: OperatorRun) -> float:
        """Stop the first operator as the settings say; returns how long it took to exit."""
        started = time.monotonic()
        if self.settings.stop == "kill":
            run.process.send_signal(signal.SIGKILL)
        else:
            run.process.send_signal(signal.SIGTERM)
        try:
            run.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise BenchError("the first operator did not exit within 60 s of SIGTERM") from None
        run.ended_at = time.monotonic()
        run.end = "sigkill" if self.settings.stop == "kill" else "stopped"
        seconds = time.monotonic() - started
        self.log(f"first operator stopped ({self.settings.stop}) in {seconds:.2f} s")
        return seconds

    def _restart(
        self,
        observer: VersionObserver,
        watch_api: client.ApiClient,
        finished: list[str],
        running: list[str],
        before: dict[str, Any],
        stopped: float,
    ) -> dict[str, Any]:
        settings = self.settings
        spawned = time.time()
        run = self.stack.start_operator()
        ready_at = self._wait_line(run, READY_LINE, settings.ready_deadline)
        ready_seconds = ready_at - spawned
        memory_at_ready = proc_memory_kib(run.process.pid)
        cpu_at_ready = proc_cpu_seconds(run.process.pid)
        self.log(f"restarted operator ready {ready_seconds:.2f} s after its start")
        # Every running execution changes at once, at the worst moment: the new operator's
        # first backlog (every TaskRun it listed) may still be queued.
        metrics_url = self._metrics_url(run)
        tracked: list[float] = []

        def sample() -> None:
            value = _gauge(metrics_url, "ona_taskrun_tracked_executions") if metrics_url else None
            if value is not None:
                tracked.append(value)

        executions = self._complete(observer, running)
        changed = time.time()
        seen = self._wait_phase(
            observer, running, "SUCCEEDED", changed + settings.mirror_deadline, sample
        )
        all_mirrored = time.time()
        self.log(
            f"{seen} of {len(running)} running TaskRuns mirrored SUCCEEDED "
            f"{all_mirrored - changed:.2f} s after their executions completed"
        )
        if settings.idle_window:
            self.log(f"looking on for {settings.idle_window:.0f} s")
            time.sleep(settings.idle_window)  # a measurement window, not a wait for a condition
        if not run.running:
            raise BenchError(f"the restarted operator exited ({run.process.returncode})")
        memory = proc_memory_kib(run.process.pid)
        cpu = proc_cpu_seconds(run.process.pid)
        calls = self.control.calls()
        kube_after = read_apiserver_requests(watch_api)
        events_after = _events(watch_api, self.stack.namespace)
        streams = self.control.watch_streams()
        finished_set = set(finished)
        executions_of_finished = {
            str(observer.status(name).get("taskExecutionId") or "") for name in finished
        }
        attribution = _attribute(
            calls,
            tasks={self.task_of[name] for name in finished},
            executions=executions_of_finished - {""},
        )
        writes_finished = {n: c for n, c in observer.changes.items() if n in finished_set}
        new_events = _new_events(before["_events"], events_after)
        events_finished = sum(1 for name in new_events if name in finished_set)
        kube = fig.increase(before["_kube"], kube_after, resources=WRITE_RESOURCES)
        kube_writes = fig.kube_writes(kube, settings.running)
        (self.stack.state_dir / "calls-after-restart.json").write_text(json.dumps(calls) + "\n")
        if metrics_url:
            # The restarted operator's own view (queue waits, reconcile durations, requests).
            (self.stack.state_dir / "metrics-after-restart.txt").write_text(_scrape(metrics_url))
        marks, _ = observer.snapshot()
        timeline = {name: marks.get(name, {}) for name in running}
        (self.stack.state_dir / "running-after-restart.json").write_text(
            json.dumps({"executions": executions, "seen": timeline}) + "\n"
        )
        # Streams opened by the restarted operator (the record keeps the first one's too).
        finished_streams = [
            s
            for s in streams
            if s.get("environmentId") == FINISHED_ENVIRONMENT
            and (fig.parse_time(str(s.get("openedAt") or "")) or 0.0) >= spawned
        ]
        return {
            "restart": {
                "stop_seconds": round(stopped, 2),
                "ready_seconds": round(ready_seconds, 2),
                "ready_line": _line(run, READY_LINE),
                "all_mirrored_seconds_after_change": round(all_mirrored - changed, 2),
                "change_seconds_after_ready": round(changed - ready_at, 2),
            },
            "finished": {
                "taskruns": len(finished),
                "ona_calls": attribution["finished"],
                "ona_calls_by_method": attribution["finished_by_method"],
                "watch_streams": len(finished_streams),
                "writes": sum(writes_finished.values()),
                "taskruns_written": len(writes_finished),
                "written_examples": sorted(writes_finished)[:5],
                "events": events_finished,
            },
            "running": {
                "taskruns": len(running),
                "mirrored": seen,
                "mirror_latency": self._mirror(observer, running, executions),
                # The most executions the operator followed at once while they were mirrored:
                # the running ones', not the finished ones'.
                "tracked_executions_max": max(tracked) if tracked else None,
            },
            "ona_calls_after_restart": {
                "total": len(calls),
                "by_method": fig.calls_by_method(calls),
                "unattributed_by_method": attribution["unattributed_by_method"],
            },
            "kube_after_restart": {"requests": kube, "writes": kube_writes},
            "operator": {
                "peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
                "rss_mib_at_ready": round(memory_at_ready.get("VmRSS", 0) / 1024, 1),
                "peak_rss_mib_at_ready": round(memory_at_ready.get("VmHWM", 0) / 1024, 1),
                "rss_mib_at_end": round(memory.get("VmRSS", 0) / 1024, 1),
                "cpu_seconds_at_ready": round(cpu_at_ready, 2),
                "cpu_seconds": round(cpu, 2),
            },
        }

    # ------------------------------------------------------------------ helpers

    def _alive(self) -> None:
        run = self.stack.operator
        if run is None or not run.running:
            raise BenchError(f"the operator exited; see {run.log_path if run else 'its log'}")

    def _wait_line(self, run: OperatorRun, line: str, timeout: float) -> float:
        """When `line` appeared in the operator's log (seen within 20 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in run.log_path.read_text(errors="replace"):
                return time.time()
            if not run.running:
                raise BenchError(f"the operator exited at start; see {run.log_path}")
            time.sleep(0.02)
        raise BenchError(f"the operator was not ready within {timeout:.0f} s; see {run.log_path}")

    def _metrics_url(self, run: OperatorRun) -> str:
        found = METRICS_LINE.search(run.log_path.read_text(errors="replace"))
        return found.group(1) if found else ""


def _writes(requests: Mapping[str, int]) -> int:
    return sum(
        n
        for key, n in requests.items()
        if key.split(" ", 1)[0] in fig.WRITE_VERBS
        and key.split(" ", 1)[-1].split("/")[0] in WRITE_RESOURCES
    )


def _events(api: client.ApiClient, namespace: str) -> dict[str, tuple[str, int]]:
    """Every Event in the namespace: uid -> (the TaskRun it is about, its count)."""
    core = client.CoreV1Api(api)
    found: dict[str, tuple[str, int]] = {}
    token = ""
    while True:
        page = core.list_namespaced_event(namespace, limit=2000, _continue=token or None)
        for event in page.items:
            found[str(event.metadata.uid)] = (
                str(event.involved_object.name or ""),
                int(event.count or 1),
            )
        token = str((page.metadata and page.metadata._continue) or "")
        if not token:
            return found


def _new_events(
    before: Mapping[str, tuple[str, int]], after: Mapping[str, tuple[str, int]]
) -> list[str]:
    """The TaskRun of each Event posted (or counted again) between the two lists."""
    return [
        name for uid, (name, count) in after.items() if uid not in before or count > before[uid][1]
    ]


def _attribute(
    calls: list[dict[str, Any]], *, tasks: set[str], executions: set[str]
) -> dict[str, Any]:
    """Calls naming a finished TaskRun's task or execution, or the finished TaskRuns'
    environment (WatchEvents); and those naming nothing (ListTaskExecutions filters, the
    connection's own checks)."""
    finished: list[dict[str, Any]] = []
    unattributed: list[dict[str, Any]] = []
    for call in calls:
        named = {str(call.get(key) or "") for key in ("requestId", "resultId")} - {""}
        if named & (tasks | executions | {FINISHED_ENVIRONMENT}):
            finished.append(call)
        elif not named:
            unattributed.append(call)
    return {
        "finished": len(finished),
        "finished_by_method": fig.calls_by_method(finished),
        "unattributed_by_method": fig.calls_by_method(unattributed),
    }


def _scrape(url: str) -> str:
    """The operator's /metrics ("" when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _gauge(url: str, name: str) -> float | None:
    """The sum of a gauge's samples on the operator's /metrics."""
    text = _scrape(url)
    if not text:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def _line(run: OperatorRun, text: str) -> str:
    for line in run.log_path.read_text(errors="replace").splitlines():
        if text in line:
            return line
    return ""


def summary(figures: Mapping[str, Any]) -> str:
    s = figures["settings"]
    r = figures["restart"]
    f = figures["finished"]
    run = figures["running"]
    op = figures["operator"]
    before = figures["before_restart"]
    calls = figures["ona_calls_after_restart"]
    writes = figures["kube_after_restart"]["writes"]
    usual = figures["usual_mirror_latency"]
    lines = [
        "",
        f"=== restart: {s['finished']} finished and {s['running']} running TaskRuns, "
        f"stopped by {s['stop']}, leader election {'on' if s['leader_election'] else 'off'} ===",
        f"fill (through the first operator):  {figures['fill']['seconds']:.1f} s "
        f"(creates {figures['fill']['create_seconds']:.1f} s); first operator at its end: "
        f"peak RSS {before['operator_peak_rss_mib']:.1f} MiB",
        f"first operator stopped in:          {r['stop_seconds']:.2f} s",
        f"restarted operator ready after:     {r['ready_seconds']:.2f} s "
        "(start -> leader, TaskRuns listed and synced)",
        f"Ona calls for finished TaskRuns:    {f['ona_calls']} {f['ona_calls_by_method'] or ''}"
        f" (WatchEvents streams of their environment: {f['watch_streams']})",
        f"writes to finished TaskRuns:        {f['writes']} resourceVersion changes on "
        f"{f['taskruns_written']} TaskRuns, {f['events']} Events",
        f"mirror latency of the running ones, changed {r['change_seconds_after_ready']:.2f} s "
        f"after ready: {fig._spread_line(run['mirror_latency'])}",
        f"  usual (as many changed at once, first operator steady): {fig._spread_line(usual)}",
        f"  all {run['mirrored']} of {run['taskruns']} mirrored "
        f"{r['all_mirrored_seconds_after_change']:.2f} s after the change; executions followed "
        f"at once: at most {run['tracked_executions_max']}",
        f"Ona calls after the restart:        {calls['total']} {calls['by_method']}",
        f"kube writes after the restart:      {writes['total']} {writes['by_kind']} "
        f"({writes['per_taskrun']} per running TaskRun)",
        f"restarted operator:                 peak RSS {op['peak_rss_mib']:.1f} MiB "
        f"(at ready {op['peak_rss_mib_at_ready']:.1f}), RSS at end {op['rss_mib_at_end']:.1f} "
        f"MiB, CPU {op['cpu_seconds_at_ready']:.1f} s at ready, {op['cpu_seconds']:.1f} s at end",
    ]
    if "wall_seconds" in figures:
        lines.append(f"wall time:                          {figures['wall_seconds']:.1f} s")
    return "\n".join(lines)


def ok(figures: Mapping[str, Any], *, ready_within: float = 10.0, rss_mib: float = 150.0) -> bool:
    """Whether the figures meet issue 21's restart targets."""
    run = figures["running"]
    usual = figures["usual_mirror_latency"]
    latency = run["mirror_latency"]
    return bool(
        figures["restart"]["ready_seconds"] <= ready_within
        and figures["finished"]["ona_calls"] == 0
        and figures["finished"]["watch_streams"] == 0
        and figures["finished"]["writes"] == 0
        and figures["finished"]["events"] == 0
        and run["mirrored"] == run["taskruns"]
        and latency["p95"] is not None
        and usual["max"] is not None
        and latency["p95"] <= max(2 * usual["p95"], 1.0)
        and figures["operator"]["peak_rss_mib"] <= rss_mib
    )
