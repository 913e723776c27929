"""One benchmark run: N TaskRuns through a fresh stack and one contender, timed from the
outside.

`run_bench(settings, state_dir)` starts the chaos run's stack (control plane, simulator),
optionally measures the API server's raw write ceiling on it (N TaskRuns created in a
namespace nobody watches), seeds one Ona task per TaskRun for the taskRef workload, starts
the contender (the operator with its real timings, or the kopf baseline of
`tools.bench.baseline`) as the operator's RBAC identity, watches TaskRuns from before the
first create, creates N TaskRuns from a pool of threads as fast as the API server takes
them, waits until every one is final, keeps still for an idle window, then reads the
simulator's call log and execution records, kube-apiserver's request counters and the
contender's /proc figures. It returns the figures (also written to `figures.json` in the
state folder) and always tears the stack down.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config, watch

from ona_simulator.api import STREAM_CHECK_SECONDS
from ona_simulator.control_client import SimulatorControl
from tools.bench import figures as fig
from tools.chaos.stack import OperatorRun, Stack, _die_with_parent
from tools.localcluster.binaries import REPO_ROOT

GROUP, VERSION, PLURAL = "automation.ona.com", "v1alpha1", "taskruns"
FINAL_PHASES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# Any UUID will do: the simulator accepts every environment, and one environment means one
# WatchEvents stream, as a team running many tasks in one environment would have.
ENVIRONMENT_ID = "0f0e5f4a-3a4b-4b8e-9a51-6f1f4f7d2c10"


def environment_ids(count: int) -> list[str]:
    """The workload's environments: ENVIRONMENT_ID alone, or `count` distinct UUIDs that
    TaskRun i uses round-robin (i % count)."""
    if count == 1:
        return [ENVIRONMENT_ID]
    return [f"0f0e5f4a-3a4b-4b8e-9a51-{i:012x}" for i in range(count)]


SYNCED_LINE = "TaskRuns; reconciling"
# The baseline is ready once kopf starts watching TaskRuns (see tools.bench.baseline).
BASELINE_READY_LINE = "Starting the watch-stream for taskruns"
CONTENDERS = ("operator", "baseline")
WORKLOADS = ("taskref", "inline")
Log = Callable[[str], None]


class BenchError(RuntimeError):
    """The benchmark could not be carried out (not a figure about the operator)."""


@dataclass(frozen=True)
class BenchSettings:
    taskruns: int = 1000
    concurrency: int = 16
    duration: str = "2s"
    poll_interval: float = 5.0
    deadline: float = 1200.0  # seconds from the first create until every TaskRun is final
    idle_window: float = 30.0
    operator_env: Mapping[str, str] = field(default_factory=dict)
    # "operator" (this project's) or "baseline" (tools.bench.baseline, unsafe on purpose).
    contender: str = "operator"
    # "taskref": one task per TaskRun seeded in the simulator first (not timed), TaskRuns
    # name it by spec.taskRef.id; "inline": TaskRuns carry spec.task.
    workload: str = "taskref"
    # Objects created to measure the API server's raw write ceiling before the contender
    # starts; 0 skips it.
    ceiling_objects: int = 0
    baseline_env: Mapping[str, str] = field(default_factory=dict)
    # Environments the TaskRuns are spread over (round-robin). Each environment is one
    # WatchEvents stream while the operator may open one (ONA_MAX_WATCH_STREAMS).
    environments: int = 1

    def __post_init__(self) -> None:
        if self.environments < 1:
            raise ValueError("need at least one environment")
        if self.contender not in CONTENDERS:
            raise ValueError(f"contender must be one of {CONTENDERS}, not {self.contender!r}")
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, not {self.workload!r}")

    def timings(self) -> dict[str, str]:
        """The contender's environment. Only the poll interval is set (the baseline's timer
        interval): every other timing stays at the contender's default."""
        extra = self.operator_env if self.contender == "operator" else self.baseline_env
        return {"ONA_POLL_INTERVAL": _number(self.poll_interval), **extra}


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def run_bench(
    settings: BenchSettings, state_dir: Path, *, log: Log = print, keep_state: bool = False
) -> dict[str, Any]:
    if settings.taskruns < 1 or settings.concurrency < 1:
        raise ValueError("need at least one TaskRun and one creating thread")
    stack = Stack(
        state_dir, log, timings=settings.timings(), namespace_prefix=f"bench-{settings.contender}"
    )
    wall_start = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        stack.start()
        with SimulatorControl(stack.control_url, timeout=60) as control:
            figures = _Bench(settings, stack, control, log).run()
    finally:
        stack.close()
        left = stack.leftovers()
        log(f"teardown left behind: {', '.join(left)}" if left else "teardown: nothing left")
        if figures:
            figures["wall_seconds"] = round(time.monotonic() - wall_start, 1)
            figures["teardown_leftovers"] = left
            (state_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
            log(fig.summary(figures))
            log(f"figures written to {state_dir / 'figures.json'}")
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


def start_baseline(stack: Stack, env: Mapping[str, str]) -> OperatorRun:
    """Start `python -m tools.bench.baseline` as the operator would be started: the
    operator's kubeconfig (its RBAC identity), the simulator's URL and token, the stack's
    namespace. It joins `stack.operators`, so the stack stops it and checks it is gone."""
    info = stack.info
    assert info is not None
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ONA_", "KUBE"))},
        **env,
        "PYTHONPATH": path,
        "KUBECONFIG": str(info.operator_kubeconfig),
        "ONA_BASE_URL": stack.base_url,
        "ONA_API_TOKEN": stack.token,
        "WATCH_NAMESPACES": stack.namespace,
    }
    log_path = stack.state_dir / f"baseline-{len(stack.operators):02d}.log"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.bench.baseline"],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    run = OperatorRun(len(stack.operators), process, log_path, "", time.monotonic())
    stack.operators.append(run)
    return run


def _api_client(kubeconfig: Path, pool: int) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    # One connection per creating thread, or the threads queue for urllib3's pool.
    configuration.connection_pool_maxsize = max(pool, 1)
    return client.ApiClient(configuration)


# ---------------------------------------------------------------------- measuring


def read_apiserver_requests(api: client.ApiClient) -> Counter[str]:
    response = api.rest_client.request(  # type: ignore[no-untyped-call]
        "GET", f"{api.configuration.host}/metrics", _request_timeout=30
    )
    if response.status != 200:
        raise BenchError(f"kube-apiserver /metrics answered {response.status}")
    return fig.apiserver_requests(response.read().decode())


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (/proc/stat: every
    state but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest and guest_nice (fields 9 and 10) are already counted in user and nice.
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of a live process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


# ---------------------------------------------------------------------- the watch


class Observer:
    """Watches the namespace's TaskRuns from a thread and notes, for each, when the
    benchmark first saw it claimed, started, in each phase, and final."""

    def __init__(self, api: client.ApiClient, namespace: str, log: Log) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._log = log
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.marks: dict[str, dict[str, float]] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.relists = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(60):
            raise BenchError("could not list TaskRuns to start watching")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=30)

    def snapshot(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
        with self._lock:
            return {k: dict(v) for k, v in self.marks.items()}, dict(self.latest)

    def count(self, mark: str) -> int:
        with self._lock:
            return sum(1 for m in self.marks.values() if mark in m)

    def _see(self, body: Mapping[str, Any], now: float) -> None:
        name = str(body["metadata"]["name"])
        status = body.get("status") or {}
        with self._lock:
            marks = self.marks.setdefault(name, {})
            if status.get("startRequestedAt"):
                marks.setdefault("claimed", now)
            if status.get("taskExecutionId"):
                marks.setdefault("execution", now)
            phase = str(status.get("phase") or "")
            if phase:
                marks.setdefault(phase, now)
            if phase in FINAL_PHASES:
                marks.setdefault("final", now)
            self.latest[name] = dict(body)

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
            except client.ApiException as exc:
                if exc.status == 410:
                    version = ""  # too old to resume: list again
                    self.relists += 1
                    continue
                self.errors += 1
                self._stop.wait(0.5)
            except (urllib3.exceptions.HTTPError, OSError):
                self.errors += 1
                self._stop.wait(0.5)

    def _list(self) -> str:
        listing = cast(
            dict[str, Any],
            self._custom.list_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL),
        )
        now = time.time()
        for item in listing.get("items", []):
            self._see(item, now)
        self.ready.set()
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        # A short server timeout, so stop() is noticed within seconds.
        for event in stream.stream(  # type: ignore[no-untyped-call]
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            resource_version=version,
            timeout_seconds=5,
            allow_watch_bookmarks=True,
        ):
            now = time.time()
            body = event["object"]
            version = str(body["metadata"]["resourceVersion"])
            if event["type"] in ("ADDED", "MODIFIED"):
                self._see(body, now)
            if self._stop.is_set():
                stream.stop()  # type: ignore[no-untyped-call]
        return version


# ---------------------------------------------------------------------- creating


@dataclass
class Creation:
    sent: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    retries: int = 0
    failures: list[str] = field(default_factory=list)


def command(duration: str) -> str:
    return f"bench # sim:duration={duration}"


def taskrun_body(
    name: str,
    namespace: str,
    duration: str,
    task_id: str | None = None,
    environment_id: str = ENVIRONMENT_ID,
) -> dict[str, Any]:
    """An inline TaskRun, or one naming the task `task_id` by spec.taskRef.id."""
    spec: dict[str, Any] = (
        {"taskRef": {"id": task_id}}
        if task_id is not None
        else {
            "task": {
                "environmentId": environment_id,
                "name": name,
                "command": command(duration),
            }
        }
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create_taskruns(
    api: client.ApiClient,
    namespace: str,
    bodies: Mapping[str, Mapping[str, Any]],
    concurrency: int,
) -> Creation:
    """Create every TaskRun (name -> body) from `concurrency` threads; a 429, 5xx or dropped
    connection is retried (and counted), anything else is a failure."""
    custom = client.CustomObjectsApi(api)
    todo: queue.SimpleQueue[str] = queue.SimpleQueue()
    names = list(bodies)
    for name in names:
        todo.put(name)
    result = Creation()
    lock = threading.Lock()

    def work() -> None:
        while True:
            try:
                name = todo.get_nowait()
            except queue.Empty:
                return
            body = dict(bodies[name])
            for attempt in range(20):
                sent = time.time()
                try:
                    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
                except client.ApiException as exc:
                    if exc.status == 409 and attempt:
                        pass  # an earlier attempt went through before its answer was lost
                    elif exc.status in (429, 500, 502, 503, 504) and attempt < 19:
                        with lock:
                            result.retries += 1
                        time.sleep(0.2)
                        continue
                    else:
                        with lock:
                            result.failures.append(f"{name}: HTTP {exc.status} {exc.reason}")
                        break
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    if attempt < 19:
                        with lock:
                            result.retries += 1
                        time.sleep(0.2)
                        continue
                    with lock:
                        result.failures.append(f"{name}: {exc}")
                    break
                with lock:
                    result.sent.setdefault(name, sent)
                    result.done[name] = time.time()
                break

    threads = [
        threading.Thread(target=work, name=f"bench-create-{i}", daemon=True)
        for i in range(min(concurrency, len(names)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


# ---------------------------------------------------------------------- the run


class _Bench:
    def __init__(
        self, settings: BenchSettings, stack: Stack, control: SimulatorControl, log: Log
    ) -> None:
        self.settings = settings
        self.stack = stack
        self.control = control
        self.log = log
        self.environment_of: dict[str, str] = {}

    def run(self) -> dict[str, Any]:
        settings = self.settings
        info = self.stack.info
        assert info is not None
        watch_api = _api_client(info.admin_kubeconfig, 2)
        create_api = _api_client(info.admin_kubeconfig, settings.concurrency)
        observer = Observer(watch_api, self.stack.namespace, self.log)
        try:
            spare = self._spare_namespace(create_api)
            self._warm_up(create_api, spare)
            ceiling = (
                self._write_ceiling(create_api, spare, settings.ceiling_objects)
                if settings.ceiling_objects
                else None
            )
            names = [f"bench-{i:05d}" for i in range(settings.taskruns)]
            bodies = self._bodies(names)
            operator = self._start_contender()
            self.log(
                f"{settings.contender} pid {operator.process.pid} is up; "
                f"environment {settings.timings()}"
            )
            observer.start()
            kube_before = read_apiserver_requests(watch_api)
            self.log(
                f"creating {len(names)} {settings.workload} TaskRuns from "
                f"{settings.concurrency} threads (sim:duration={settings.duration})"
            )
            cpu_at_first_create = proc_cpu_seconds(operator.process.pid)
            machine_at_first_create = self._machine_cpu(operator.process.pid)
            creation = create_taskruns(
                create_api, self.stack.namespace, bodies, settings.concurrency
            )
            if creation.failures:
                raise BenchError(
                    f"{len(creation.failures)} TaskRuns could not be created, e.g. "
                    f"{creation.failures[0]}"
                )
            first = min(creation.sent.values())
            created_seconds = max(max(creation.done.values()) - first, 1e-6)
            self.log(
                f"created {len(creation.done)} TaskRuns in {created_seconds:.2f} s "
                f"({len(creation.done) / created_seconds:.1f}/s, {creation.retries} retries)"
            )
            finished_at = self._wait_final(observer, names, first + settings.deadline)
            cpu_at_finish = proc_cpu_seconds(operator.process.pid)
            machine = _machine_figures(
                machine_at_first_create, self._machine_cpu(operator.process.pid)
            )
            kube_at_final = read_apiserver_requests(watch_api)
            self.log(f"idle window: {settings.idle_window:.0f} s with every TaskRun final")
            idle_end = finished_at + settings.idle_window
            halfway = finished_at + settings.idle_window / 2
            cpu_halfway: float | None = None
            while (left := idle_end - time.time()) > 0:
                # A measurement window, not a wait for a condition: nothing should happen.
                time.sleep(min(left, 0.5))
                if cpu_halfway is None and time.time() >= halfway:
                    cpu_halfway = proc_cpu_seconds(operator.process.pid)
            if not operator.running:
                raise BenchError(f"the operator exited ({operator.process.returncode})")
            cpu_end = proc_cpu_seconds(operator.process.pid)
            # Writes are counted to the end of the idle window: an Event the operator posts
            # after the last status (they wait behind TaskRun writes) is a write all the same.
            kube_after = read_apiserver_requests(watch_api)
            memory = proc_memory_kib(operator.process.pid)
            others = {"kube-apiserver": info.kube_apiserver.pid, "etcd": info.etcd.pid}
            if self.stack.simulator is not None and self.stack.simulator.poll() is None:
                others["simulator"] = self.stack.simulator.pid
            # The whole machine's share: on 2 cores these compete with the operator.
            others_cpu = {name: round(proc_cpu_seconds(pid), 1) for name, pid in others.items()}
            others_cpu["benchmark"] = round(proc_cpu_seconds(os.getpid()), 1)
            calls = self.control.calls()
            executions = self.control.executions()
            streams = self.control.watch_streams()
        finally:
            observer.stop()
            for api in (watch_api, create_api):
                api.close()  # type: ignore[no-untyped-call]
        marks, latest = observer.snapshot()
        # The raw material, so any figure can be recomputed or looked at differently later.
        state = self.stack.state_dir
        (state / "calls.json").write_text(json.dumps(calls) + "\n")
        timings = {
            name: {"createSent": creation.sent.get(name), "seen": marks.get(name, {})}
            for name in names
        }
        (state / "taskruns.json").write_text(json.dumps(timings) + "\n")
        return self._figures(
            names=names,
            creation=creation,
            marks=marks,
            latest=latest,
            calls=calls,
            executions=executions,
            streams=streams,
            finished_at=finished_at,
            idle_end=idle_end,
            cpu_at_first_create=cpu_at_first_create,
            cpu_at_finish=cpu_at_finish,
            cpu_halfway=cpu_halfway if cpu_halfway is not None else cpu_at_finish,
            cpu_end=cpu_end,
            kube_requests=fig.increase(kube_before, kube_after, resources=("taskruns", "events")),
            kube_after_final=fig.increase(
                kube_at_final, kube_after, resources=("taskruns", "events")
            ),
            memory=memory,
            others_cpu=others_cpu,
            observer=observer,
            ceiling=ceiling,
            machine=machine,
        )

    def _machine_cpu(self, contender_pid: int) -> dict[str, float]:
        """The machine's busy CPU seconds, and those of each process of the run."""
        info = self.stack.info
        assert info is not None
        pids = {
            "contender": contender_pid,
            "kube-apiserver": info.kube_apiserver.pid,
            "etcd": info.etcd.pid,
            "benchmark": os.getpid(),
        }
        if self.stack.simulator is not None:
            pids["simulator"] = self.stack.simulator.pid
        readings = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
        readings["machine"] = machine_busy_seconds()
        readings["time"] = time.time()
        return readings

    def _bodies(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The TaskRuns to create. For the taskRef workload, one task per TaskRun is seeded
        in the simulator first, through its control API (no Ona API call, not timed)."""
        settings, namespace = self.settings, self.stack.namespace
        environments = environment_ids(settings.environments)
        self.environment_of = {
            name: environments[i % len(environments)] for i, name in enumerate(names)
        }
        if settings.workload == "inline":
            return {
                name: taskrun_body(
                    name, namespace, settings.duration, environment_id=self.environment_of[name]
                )
                for name in names
            }
        started = time.monotonic()
        bodies: dict[str, dict[str, Any]] = {}
        for name in names:
            task = self.control.seed_task(
                environment_id=self.environment_of[name],
                reference=name,
                name=name,
                command=command(settings.duration),
            )
            bodies[name] = taskrun_body(name, namespace, settings.duration, str(task["id"]))
        self.log(f"seeded {len(names)} tasks in {time.monotonic() - started:.1f} s")
        return bodies

    def _spare_namespace(self, api: client.ApiClient) -> str:
        """A namespace no contender watches, for the warm-up and the write ceiling."""
        namespace = f"spare-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
        return namespace

    def _spare_taskruns(self, namespace: str, prefix: str, count: int) -> dict[str, Any]:
        return {
            f"{prefix}-{i:05d}": taskrun_body(
                f"{prefix}-{i:05d}", namespace, self.settings.duration, str(uuid.uuid4())
            )
            for i in range(count)
        }

    def _warm_up(self, api: client.ApiClient, namespace: str) -> None:
        """A freshly started kube-apiserver holds its first burst of TaskRun creates for
        about 2 s, once (measured: 30 creates from 16 threads take 2.1 s on a new control
        plane, 0.06 s right after). One untimed create per client thread, in the spare
        namespace, takes that out of the ceiling and of the contender's figures."""
        concurrency = self.settings.concurrency
        creation = create_taskruns(
            api, namespace, self._spare_taskruns(namespace, "warmup", concurrency), concurrency
        )
        if creation.failures:
            raise BenchError(f"warm-up: could not create a TaskRun: {creation.failures[0]}")

    def _write_ceiling(self, api: client.ApiClient, namespace: str, objects: int) -> dict[str, Any]:
        """The API server's raw write rate on this stack, with nothing else running: create
        `objects` taskRef TaskRuns (the workload's size class and validation) in a namespace
        no contender watches, from the same client threads, and time it."""
        settings = self.settings
        bodies = self._spare_taskruns(namespace, "ceiling", objects)
        creation = create_taskruns(api, namespace, bodies, settings.concurrency)
        if creation.failures:
            raise BenchError(
                f"write ceiling: {len(creation.failures)} objects could not be created, e.g. "
                f"{creation.failures[0]}"
            )
        seconds = max(max(creation.done.values()) - min(creation.sent.values()), 1e-6)
        ceiling = {
            "objects": objects,
            "kind": "TaskRun (taskRef) in an unwatched namespace",
            "concurrency": settings.concurrency,
            "seconds": round(seconds, 3),
            "writes_per_second": round(objects / seconds, 1),
            "retries": creation.retries,
        }
        self.log(
            f"write ceiling: {objects} creates in {seconds:.2f} s, "
            f"{ceiling['writes_per_second']} writes/s ({creation.retries} retries)"
        )
        return ceiling

    def _start_contender(self) -> OperatorRun:
        """Start the contender and wait until it has read the (empty) namespace, so the
        clock measures it at work rather than its start-up."""
        if self.settings.contender == "baseline":
            run = start_baseline(self.stack, self.settings.timings())
            line = BASELINE_READY_LINE
        else:
            run = self.stack.start_operator()
            line = SYNCED_LINE
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if line in run.log_path.read_text(errors="replace"):
                return run
            if not run.running:
                raise BenchError(f"the contender exited at start; see {run.log_path}")
            time.sleep(0.2)
        raise BenchError(f"the contender did not start within 90 s; see {run.log_path}")

    def _wait_final(self, observer: Observer, names: list[str], deadline: float) -> float:
        """Until every TaskRun is final or the deadline passes; returns when that was seen."""
        run = self.stack.operator
        assert run is not None
        next_report = time.time() + 10
        while True:
            final = observer.count("final")
            now = time.time()
            if final >= len(names):
                return now
            if now >= deadline:
                self.log(f"deadline: {len(names) - final} TaskRuns are not final")
                return now
            if not run.running:
                raise BenchError(f"the operator exited ({run.process.returncode})")
            if now >= next_report:
                next_report = now + 10
                self.log(
                    f"  started {observer.count('execution')}, final {final} "
                    f"of {len(names)}; operator CPU {proc_cpu_seconds(run.process.pid):.1f} s"
                )
            time.sleep(0.2)

    def _figures(
        self,
        *,
        names: list[str],
        creation: Creation,
        marks: dict[str, dict[str, float]],
        latest: dict[str, dict[str, Any]],
        calls: list[dict[str, Any]],
        executions: list[dict[str, Any]],
        streams: list[dict[str, Any]],
        finished_at: float,
        idle_end: float,
        cpu_at_first_create: float,
        cpu_at_finish: float,
        cpu_halfway: float,
        cpu_end: float,
        kube_requests: dict[str, int],
        kube_after_final: dict[str, int],
        memory: dict[str, int],
        others_cpu: dict[str, float],
        observer: Observer,
        ceiling: dict[str, Any] | None,
        machine: dict[str, Any],
    ) -> dict[str, Any]:
        settings = self.settings
        n = len(names)
        first = min(creation.sent.values())
        created_seconds = max(creation.done.values()) - first

        def mark(name: str, key: str) -> float | None:
            return marks.get(name, {}).get(key)

        succeeded = [name for name in names if mark(name, "SUCCEEDED") is not None]
        final = [name for name in names if mark(name, "final") is not None]
        all_succeeded = len(succeeded) == n
        last_final = max((mark(name, "final") or 0.0) for name in final) if final else 0
        last_success = (
            max((mark(name, "SUCCEEDED") or 0.0) for name in succeeded) if succeeded else 0
        )
        started = [mark(name, "execution") for name in names]
        all_started = None not in started

        # Remote times come from the simulator's own records: millisecond precision, where
        # the TaskRun's status.completedAt and creationTimestamp are whole seconds.
        remote: dict[str, dict[str, Any]] = {
            str(item["execution"]["id"]): item["execution"] for item in executions
        }
        execution_of = {
            name: str((latest.get(name, {}).get("status") or {}).get("taskExecutionId") or "")
            for name in names
        }
        remote_created: dict[str, float | None] = {}
        remote_completed: dict[str, float | None] = {}
        for name, execution_id in execution_of.items():
            meta = (remote.get(execution_id) or {}).get("metadata") or {}
            remote_created[name] = fig.parse_time(str(meta.get("createdAt") or ""))
            remote_completed[name] = fig.parse_time(str(meta.get("completedAt") or ""))
        sent: dict[str, float | None] = {name: creation.sent.get(name) for name in names}
        seen_started = {name: mark(name, "execution") for name in names}
        seen_succeeded = {name: mark(name, "SUCCEEDED") for name in names}
        watched = fig.watched_at(streams, self.environment_of, remote_completed)

        run_calls = [
            c for c in calls if (fig.parse_time(str(c.get("time", ""))) or 0) < finished_at
        ]
        idle_calls = fig.in_window(calls, finished_at, idle_end)
        counts = fig.calls_by_method(run_calls)
        per = fig.per_run(counts, n)
        seqs = [int(c["seq"]) for c in calls if "seq" in c]
        idle_seconds = idle_end - finished_at
        level_counts = _log_levels(self.stack)
        work_cpu = cpu_at_finish - cpu_at_first_create
        return {
            "contender": settings.contender,
            "workload": settings.workload,
            "taskruns": n,
            "duration": settings.duration,
            "poll_interval": settings.poll_interval,
            "operator_env": dict(settings.timings()),
            "namespace": self.stack.namespace,
            "succeeded": len(succeeded),
            "failed": len(final) - len(succeeded),
            "not_final": n - len(final),
            "all_succeeded": all_succeeded,
            "executions_in_simulator": len(executions),
            "creation": {
                "concurrency": settings.concurrency,
                "seconds": round(created_seconds, 3),
                "rate_per_second": round(n / created_seconds, 1) if created_seconds > 0 else None,
                "retries": creation.retries,
            },
            "all_succeeded_seconds": round(last_success - first, 3) if all_succeeded else None,
            "all_final_seconds": round(last_final - first, 3) if len(final) == n else None,
            "runs_per_second": (
                round(n / (last_success - first), 2)
                if all_succeeded and last_success > first
                else None
            ),
            "all_started_seconds": (
                round(max(s for s in started if s is not None) - first, 3) if all_started else None
            ),
            "latency": {
                "start": fig.spread(fig.latencies(sent, seen_started)),
                "start_remote": fig.spread(fig.latencies(sent, remote_created)),
                "mirror": fig.spread(fig.latencies(remote_completed, seen_succeeded)),
                # Split by whether the run's environment had a WatchEvents stream open when
                # its execution completed, or was followed by the batched poll alone.
                "mirror_watched": fig.spread(
                    fig.latencies(remote_completed, seen_succeeded, only=watched)
                ),
                "mirror_polled": fig.spread(
                    fig.latencies(remote_completed, seen_succeeded, only=set(names) - watched)
                ),
                "end_to_end": fig.spread(fig.latencies(sent, seen_succeeded)),
            },
            "api_calls": {
                "total": len(run_calls),
                "by_method": counts,
                "per_taskrun_total": round(len(run_calls) / n, 2),
                "per_taskrun": per,
                "get_task_execution_per_taskrun": per.get("GetTaskExecution", 0.0),
                "list_task_executions_per_taskrun": per.get("ListTaskExecutions", 0.0),
                "log_truncated": bool(seqs) and min(seqs) > 1,
            },
            "idle": {
                "seconds": round(idle_seconds, 1),
                "calls": len(idle_calls),
                "calls_per_minute": round(len(idle_calls) * 60 / idle_seconds, 1),
                "by_method": fig.calls_by_method(idle_calls),
                "operator_cpu_seconds": round(cpu_end - cpu_at_finish, 2),
                "operator_cpu_seconds_second_half": round(cpu_end - cpu_halfway, 2),
            },
            "operator": {
                "peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
                "rss_mib_at_end": round(memory.get("VmRSS", 0) / 1024, 1),
                "cpu_seconds": round(cpu_end, 2),
                "cpu_seconds_until_all_succeeded": round(cpu_at_finish, 2),
                # From the first create sent until every TaskRun was seen final: the work
                # itself, without the start-up before or the idle window after.
                "cpu_seconds_first_create_to_all_final": round(work_cpu, 2),
                "cpu_ms_per_taskrun": round(work_cpu * 1000 / n, 2),
                "log_lines_by_level": level_counts,
            },
            "kube_requests": kube_requests,
            "kube_writes": fig.kube_writes(kube_requests, n),
            # Of those, the writes made once every TaskRun was final (deferred Events).
            "kube_writes_after_all_final": fig.kube_writes(kube_after_final, n)["total"],
            "write_ceiling": ceiling,
            "other_cpu_seconds": others_cpu,
            "machine": machine,
            "watch": {"relists": observer.relists, "errors": observer.errors},
            "environments": settings.environments,
            "watch_streams": fig.stream_figures(
                streams, finished_at, close_seen_within=STREAM_CHECK_SECONDS
            ),
        }


def _machine_figures(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, Any]:
    """From the first create to all final: the machine's busy CPU, the share of the run's
    own processes, and the rest, which is other work on the machine (noise in the figures)."""
    grown = {name: after[name] - before[name] for name in before}
    run = sum(v for name, v in grown.items() if name not in ("machine", "time"))
    return {
        "cores": os.cpu_count(),
        "seconds": round(grown["time"], 1),
        "busy_cpu_seconds": round(grown["machine"], 1),
        "run_cpu_seconds": {
            name: round(v, 1) for name, v in grown.items() if name not in ("machine", "time")
        },
        # Never below 0: the readings are a few milliseconds apart.
        "other_cpu_seconds": round(max(grown["machine"] - run, 0.0), 1),
        "load_average_at_all_final": round(os.getloadavg()[0], 2),
    }


def _log_levels(stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in stack.operators:
        for line in run.log_path.read_text(errors="replace").splitlines():
            # The operator's "date time LEVEL ..." and kopf's "[date time] logger [LEVEL ] ...".
            for word in line.split()[2:4]:
                level = word.strip("[]")
                if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                    counts[level] = counts.get(level, 0) + 1
                    break
    return counts
