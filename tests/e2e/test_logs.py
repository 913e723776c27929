"""End to end: log tails in TaskRun status and the `kubectl ona` plugin, on the local
control plane with the operator as a process and the simulator's streamed logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_argocd_health import health
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    OperatorProcess,
    TaskRuns,
    inline_task,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

FAILING = (
    'make # sim:pending=100ms sim:duration=600ms sim:steps=2 sim:log_lines=3 sim:fail="disk full"'
)
SLOW_FAILING = 'make # sim:pending=100ms sim:duration=1500ms sim:fail="disk full"'
SUCCEEDING = "make # sim:pending=100ms sim:duration=300ms sim:log_lines=2"
# Every logs token the simulator hands out starts so; none may leak anywhere.
LOGS_TOKEN_PREFIX = "sim-logs-"


@pytest.fixture
def sim(e2e_simulator: SimulatorHandle) -> Iterator[SimulatorHandle]:
    """The session's simulator, its log faults and logs token lifetime restored after."""
    yield e2e_simulator
    e2e_simulator.control.clear_log_faults()
    e2e_simulator.control.set_logs_token_ttl(3600)


def _no_secrets(sim: SimulatorHandle, *texts: str) -> None:
    for text in texts:
        assert sim.token not in text
        assert LOGS_TOKEN_PREFIX not in text


def _note(taskruns: TaskRuns, name: str) -> str | None:
    cond = taskruns.condition(name, "Succeeded") or {}
    message = str(cond.get("message", ""))
    return message if "(log tail: " in message else None


def test_failed_run_keeps_the_end_of_its_log(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle
) -> None:
    issued = sim.control.logs_settings()["tokensIssued"]
    taskruns.apply("fails", {"task": inline_task(FAILING), "logs": {"tailLines": 4}})
    taskruns.apply("passes", {"task": inline_task(SUCCEEDING)})
    taskruns.apply(
        "passes-kept", {"task": inline_task(SUCCEEDING), "logs": {"tailOnSuccess": True}}
    )

    status = wait_for(
        lambda: (s := taskruns.status("fails")).get("logTail") and s,
        what="the failed run's logTail",
    )
    log = sim.control.execution_log(status["taskExecutionId"])
    assert status["logTail"] == "\n".join(log[-4:])
    assert status["logTail"].endswith("] error: disk full")
    assert status["phase"] == "FAILED"

    failed = next(e for e in taskruns.wait_events("fails", "Failed") if e["reason"] == "Failed")
    assert "last log lines:" in failed["message"]
    assert failed["message"].endswith("] error: disk full")
    assert len(failed["message"]) <= 1024

    # The Argo CD health check names the last log line.
    state, message = health(taskruns.get("fails"))
    assert state == "Degraded"
    assert message.endswith("; last log line: " + log[-1])

    kept = wait_for(
        lambda: (s := taskruns.status("passes-kept")).get("logTail") and s,
        what="the tail of a successful run that asked for it",
    )
    assert kept["logTail"].endswith("] done")
    plain = taskruns.wait_phase("passes", "SUCCEEDED")
    assert "logTail" not in taskruns.status("passes")
    assert plain["conditions"]

    # Two tails read through one connection in one environment: one cached logs token.
    assert sim.control.logs_settings()["tokensIssued"] == issued + 1

    everything = json.dumps([taskruns.get(n) for n in ("fails", "passes", "passes-kept")])
    _no_secrets(sim, everything, json.dumps(taskruns.events("fails")), operator.log())


def test_a_failing_log_endpoint_never_blocks_the_status(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle
) -> None:
    # (faults, the note it leaves, whether reading takes long enough, with its three
    # retries a second apart, that the final status is seen before the note)
    expectations = [
        ({"error_502": 1}, "the log could not be read (HTTP 502)", True),
        ({"error_401": 1}, "the logs token was refused (HTTP 401)", False),
        ({"drop": 1, "drop_after_lines": 2}, "the log could not be read (no response)", True),
    ]
    for index, (knobs, note, slow) in enumerate(expectations):
        sim.control.set_log_faults(**knobs)
        name = f"broken-log-{index}"
        taskruns.apply(name, {"task": inline_task(FAILING)})
        first: dict[str, Any] = taskruns.wait_condition(name, "Succeeded", "False", "Failed")
        if slow:
            # The final status came first, without waiting for the log.
            assert "(log tail: " not in first["message"]
        message = wait_for(lambda n=name: _note(taskruns, n), what=f"the note on {name}")
        assert message == f"disk full (log tail: {note})"
        assert "logTail" not in taskruns.status(name)
        assert operator.running
    sim.control.clear_log_faults()
    taskruns.apply("log-back", {"task": inline_task(FAILING)})
    wait_for(lambda: taskruns.status("log-back").get("logTail"), what="a tail once the log works")
    _no_secrets(sim, operator.log())


def test_an_expired_logs_token_is_renewed(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle
) -> None:
    sim.control.set_logs_token_ttl(1.0)
    taskruns.apply("first", {"task": inline_task(FAILING)})
    wait_for(lambda: taskruns.status("first").get("logTail"), what="the first tail")
    issued = sim.control.logs_settings()["tokensIssued"]
    sim.control.clear_calls()
    # The cached token is an hour old for the operator, but the simulator's expire in 1 s:
    # this run ends after it did.
    taskruns.apply("second", {"task": inline_task(SLOW_FAILING)})
    wait_for(lambda: taskruns.status("second").get("logTail"), what="the second tail")
    reads = [(c["httpStatus"], c["code"]) for c in sim.control.calls("ReadLog")]
    assert reads == [(401, "expired"), (200, "")]
    assert sim.control.logs_settings()["tokensIssued"] == issued + 1


# ------------------------------------------------------------------ kubectl ona


@dataclass
class Plugin:
    """`kubectl ona` as a user runs it: kubectl finds `kubectl-ona` on PATH, and the
    plugin reads the user's kubeconfig (KUBECONFIG) and Ona token (ONA_API_TOKEN)."""

    control_plane: ControlPlane
    bin_dir: Path
    namespace: str
    base_url: str

    def env(self, token: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ONA_", "KUBE"))}
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(self.control_plane.admin_kubeconfig)
        env["ONA_BASE_URL"] = self.base_url
        if token is not None:
            env["ONA_API_TOKEN"] = token
        return env

    def argv(self, *args: str) -> list[str]:
        return [str(self.control_plane.kubectl), "ona", *args, "-n", self.namespace]

    def run(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env(token),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def plugin(
    control_plane: ControlPlane, namespace: str, sim: SimulatorHandle, tmp_path: Path
) -> Plugin:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl-ona"
    # What the console script does, with this checkout's package (PYTHONPATH is passed on).
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ona_taskrun.cli "$@"\n')
    script.chmod(0o755)
    return Plugin(control_plane, bin_dir, namespace, sim.base_url)


def _remote_phase(sim: SimulatorHandle, execution_id: str) -> str:
    return str(sim.control.execution(execution_id)["execution"]["status"]["phase"])


def test_kubectl_ona_logs_follow_describe(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle, plugin: Plugin
) -> None:
    command = (
        'make # sim:pending=200ms sim:duration=2s sim:steps=2 sim:log_lines=2 sim:fail="disk full"'
    )
    taskruns.apply("watched", {"task": inline_task(command)})
    follower = subprocess.Popen(
        plugin.argv("logs", "watched", "-f"),
        env=plugin.env(sim.token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    arrivals: list[tuple[str, str]] = []  # (line, the execution's phase when it arrived)
    for line in follower.stdout:
        execution_id = taskruns.status("watched")["taskExecutionId"]
        arrivals.append((line.rstrip("\n"), _remote_phase(sim, execution_id)))
    assert follower.wait(timeout=30) == 1
    stderr = follower.stderr.read() if follower.stderr else ""
    execution_id = taskruns.status("watched")["taskExecutionId"]
    log = sim.control.execution_log(execution_id)
    assert [line for line, _ in arrivals] == log
    # Lines were printed as they appeared, not at the end.
    assert arrivals[0][1] == "TASK_EXECUTION_PHASE_RUNNING"
    assert f"execution {execution_id} ended: FAILED: disk full" in stderr

    whole = plugin.run("logs", "watched", token=sim.token)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.splitlines() == log
    step = sim.control.execution(execution_id)["execution"]["spec"]["plan"][1]["steps"][0]
    only = plugin.run("logs", "watched", "--step", step["id"], "--timestamps", token=sim.token)
    assert only.returncode == 0, only.stderr
    expected = [line for line in log if line.startswith(f"[{step['label']}] ")]
    assert [line.split(" ", 1)[1] for line in only.stdout.splitlines()] == expected
    assert all(
        line[:4].isdigit() and "T" in line.split(" ")[0] for line in only.stdout.splitlines()
    )

    # Without a token: the tail the operator kept, and how to get the rest.
    tail = wait_for(lambda: taskruns.status("watched").get("logTail"), what="the log tail")
    kept = plugin.run("logs", "watched")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.rstrip("\n") == tail
    assert "ONA_API_TOKEN" in kept.stderr

    # The Failed Event is posted after the final status write, apart from the tail's write.
    taskruns.wait_events("watched", "Failed")
    described = plugin.run("describe", "watched")
    assert described.returncode == 0, described.stderr
    text = described.stdout
    assert "FAILED" in text
    assert any(line.split()[:3] == ["Succeeded", "False", "Failed"] for line in text.splitlines())
    assert step["label"] in text
    assert f"  {log[-1]}" in text.split("Log Tail:")[1].splitlines()
    assert any(line.split()[:2] == ["Warning", "Failed"] for line in text.splitlines())
    as_json = json.loads(plugin.run("describe", "watched", "-o", "json").stdout)
    assert as_json["taskRun"]["metadata"]["name"] == "watched"
    assert "Failed" in {e["reason"] for e in as_json["events"]}

    # Clear errors.
    wrong = plugin.run("logs", "watched", token="not-a-token")
    assert wrong.returncode == 1
    assert "refused ONA_API_TOKEN" in wrong.stderr
    assert "not-a-token" not in wrong.stderr + wrong.stdout
    missing = plugin.run("describe", "no-such-run")
    assert missing.returncode == 1
    assert '"no-such-run" not found' in missing.stderr
    for output in (follower.args, whole.stdout, whole.stderr, stderr, text, kept.stderr):
        _no_secrets(sim, str(output))


def test_kubectl_ona_rerun_and_stop(
    operator: OperatorProcess, taskruns: TaskRuns, sim: SimulatorHandle, plugin: Plugin
) -> None:
    taskruns.apply("original", {"task": inline_task(SUCCEEDING)})
    taskruns.wait_phase("original", "SUCCEEDED")
    again = plugin.run("rerun", "original", "-f", token=sim.token)
    assert again.returncode == 0, again.stderr
    new_name, *lines = again.stdout.splitlines()
    assert new_name.startswith("original-")
    assert lines[-1].endswith("] done")
    copy = taskruns.get(new_name)
    assert copy["spec"] == taskruns.get("original")["spec"]
    assert (
        taskruns.status(new_name)["taskExecutionId"]
        != taskruns.status("original")["taskExecutionId"]
    )

    taskruns.apply("long", {"task": inline_task("serve # sim:pending=100ms sim:hang")})
    taskruns.wait_phase("long", "RUNNING")
    stopped = plugin.run("stop", "long")
    assert stopped.returncode == 0, stopped.stderr
    assert "stop requested" in stopped.stdout
    assert taskruns.get("long")["spec"]["desiredPhase"] == "STOPPED"
    taskruns.wait_condition("long", "Succeeded", "False", "Stopped")
    assert "already ended" in plugin.run("stop", "long").stderr

    # A rerun of a stopped run runs: desiredPhase is not copied.
    rerun = plugin.run("rerun", "long", "-o", "yaml")
    assert rerun.returncode == 0, rerun.stderr
    created = yaml.safe_load(rerun.stdout)
    assert created["metadata"]["generateName"] == "long-"
    taskruns.wait_phase(created["metadata"]["name"], "RUNNING")
    assert plugin.run("stop", created["metadata"]["name"]).returncode == 0

    # A run that cannot start has no execution to show.
    taskruns.apply(
        "waiting",
        {"task": inline_task(SUCCEEDING), "connectionRef": {"name": "no-such-connection"}},
    )
    taskruns.wait_condition("waiting", "Succeeded", "Unknown", "ConnectionNotFound")
    nothing = plugin.run("logs", "waiting", token=sim.token)
    assert nothing.returncode == 1
    assert "has no execution yet (ConnectionNotFound" in nothing.stderr


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        pytest.param({"tailLines": 101}, "spec.logs.tailLines", id="too-many-lines"),
        pytest.param({"tailLines": -1}, "spec.logs.tailLines", id="negative"),
        pytest.param({"tailOnSuccess": "yes"}, "spec.logs.tailOnSuccess", id="not-a-boolean"),
    ],
)
def test_bad_log_settings_are_rejected_at_apply(
    logs: dict[str, Any], message: str, taskruns: TaskRuns
) -> None:
    result = taskruns.try_apply("bad-logs", {"task": inline_task("echo"), "logs": logs})
    assert result.returncode != 0
    assert message in result.stderr
    assert not taskruns.exists("bad-logs")


def test_log_settings_are_immutable(taskruns: TaskRuns) -> None:
    taskruns.apply("fixed-logs", {"task": inline_task("echo # sim:hang"), "logs": {"tailLines": 5}})
    for edit in ({"logs": {"tailLines": 6}}, {"logs": None}):
        result = taskruns.patch_spec("fixed-logs", edit)
        assert result.returncode != 0
        assert "spec.logs is immutable" in result.stderr
    assert taskruns.get("fixed-logs")["spec"]["logs"] == {"tailLines": 5}
