"""End to end: `kubectl ona` in shell pipes and with a task that prints escape sequences,
run through kubectl as a user runs it, on the local control plane with the operator and
the simulator's streamed logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import OperatorProcess, TaskRuns, inline_task
from tests.support.simulator_fixtures import SimulatorHandle

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).parent / "kubectl-ona"
# What a hostile task makes its failure message, and with it its log: clear the screen,
# write the clipboard (OSC 52), retitle the window, an 8-bit CSI, a bell.
EVIL = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;owned\x07\x9b31m\x07"
# Four steps of 1000 lines: far more than a pipe holds (64 KiB).
LONG = f'make # sim:pending=100ms sim:duration=1s sim:steps=2 sim:parallel=2 sim:log_lines=1000 sim:fail="disk full{EVIL}"'  # noqa: E501
ENDLESS = "serve # sim:pending=100ms sim:hang sim:log_lines=5"
CONTROLS = {chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} - {"\n", "\t"}


def has_controls(text: str) -> bool:
    return any(ch in CONTROLS for ch in text)


@dataclass
class Kubectl:
    """`kubectl ona` through kubectl, which finds the installed console script on PATH."""

    control_plane: ControlPlane
    bin_dir: Path
    namespace: str
    sim: SimulatorHandle

    def argv(self, *args: str) -> list[str]:
        return [str(self.control_plane.kubectl), "ona", *args, "-n", self.namespace]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ONA_", "KUBE"))}
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(self.control_plane.admin_kubeconfig)
        env["ONA_BASE_URL"] = self.sim.base_url
        env["ONA_API_TOKEN"] = self.sim.token
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), env=self.env(), capture_output=True, text=True, timeout=60
        )

    def first_line(self, *args: str) -> tuple[str, int, str]:
        """`kubectl ona ARGS | head -1`: the line, the plugin's exit code, its stderr."""
        process = subprocess.Popen(
            self.argv(*args),
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        line = process.stdout.readline()
        process.stdout.close()
        code = process.wait(timeout=30)
        return line, code, process.stderr.read()


@pytest.fixture
def kubectl_ona(
    control_plane: ControlPlane, namespace: str, e2e_simulator: SimulatorHandle, tmp_path: Path
) -> Kubectl:
    if not SCRIPT.exists():
        pytest.skip("the console script kubectl-ona is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl-ona").symlink_to(SCRIPT)
    return Kubectl(control_plane, bin_dir, namespace, e2e_simulator)


def quiet(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert "Broken pipe" not in stderr, stderr


def test_kubectl_ona_in_pipes_closed_early(
    operator: OperatorProcess, taskruns: TaskRuns, kubectl_ona: Kubectl
) -> None:
    taskruns.apply("long", {"task": inline_task(LONG)})
    taskruns.apply("endless", {"task": inline_task(ENDLESS)})
    taskruns.wait_phase("long", "FAILED")
    taskruns.wait_phase("endless", "RUNNING")
    for args in (
        ("logs", "long"),
        ("logs", "long", "--timestamps"),
        ("logs", "long", "-f"),
        ("logs", "endless", "-f"),
        ("describe", "long", "-o", "yaml"),
    ):
        line, code, stderr = kubectl_ona.first_line(*args)
        assert line, args
        quiet(stderr)
        assert code == 0, (args, stderr)


def test_a_hostile_task_cannot_drive_the_terminal(
    operator: OperatorProcess, taskruns: TaskRuns, kubectl_ona: Kubectl
) -> None:
    taskruns.apply("hostile", {"task": inline_task(LONG)})
    taskruns.wait_phase("hostile", "FAILED")
    taskruns.wait_events("hostile", "Failed")

    log = kubectl_ona.run("logs", "hostile")
    assert log.returncode == 0, log.stderr
    assert not has_controls(log.stdout)
    assert "[demo-task (step 2/2) [1/2]] error: disk full\n" in log.stdout
    assert "owned" not in log.stdout

    followed = kubectl_ona.run("logs", "hostile", "-f")
    assert followed.returncode == 1  # the run failed
    assert not has_controls(followed.stdout + followed.stderr)
    assert followed.stderr.rstrip("\n").endswith("ended: FAILED: disk full")

    described = kubectl_ona.run("describe", "hostile")
    assert described.returncode == 0, described.stderr
    assert not has_controls(described.stdout)
    assert "Failure Message: disk full\n" in described.stdout

    # The operator stores the task's text without its control sequences (remote.shown),
    # so machine output shows the same clean text, and kubectl itself shows nothing raw.
    as_json = kubectl_ona.run("describe", "hostile", "-o", "json")
    assert not has_controls(as_json.stdout)
    status = json.loads(as_json.stdout)["taskRun"]["status"]
    assert status["failureMessage"] == "disk full"
    assert not has_controls(json.dumps(taskruns.status("hostile"), ensure_ascii=False))
