"""A rolling upgrade of the operator during running TaskRuns loses and duplicates nothing
(docs/operations.md, "Is a rollout during runs safe?").

The previous operator (tests/upgrade/previous.py: its `operator/` as of an older commit,
run from the current virtualenv with PYTHONPATH pointing there) leads through a Lease and
starts several TaskRuns. The current operator starts beside it as a standby, as a
Deployment's RollingUpdate starts the new pod; then the old one gets SIGTERM, as the old
pod does, while runs are running. Every run must end SUCCEEDED with exactly one execution
in the simulator, the one its status names.

From 9c4abb2 (signed start claims, as today), TaskRuns are also created just before the
SIGTERM, so starts are in flight at the handover. From 0.1.0 they are not: its start
claims are unsigned and today's operator does not believe them, so a start in flight at
the handover (StartTask called, its execution id not yet written) is made again. The
upgrade notes and docs/operations.md say to upgrade from 0.1.0 with no start in flight;
the test does as they say.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import (
    OperatorFactory,
    OperatorProcess,
    TaskRuns,
    inline_task,
    wait_for,
)
from tests.support.simulator_fixtures import SimulatorHandle
from tests.upgrade.previous import BEFORE_RESTRUCTURE, RELEASE_0_1_0, extract

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE_DURATION = "4"


def executions_of_task(sim: SimulatorHandle, task_id: str) -> list[dict[str, Any]]:
    found = []
    for item in sim.control.executions():
        execution = item.get("execution", item)
        if execution["metadata"]["taskId"] == task_id:
            found.append(execution)
    return found


@dataclass(frozen=True)
class Previous:
    commit: str
    code: Path  # its operator/ folder, holding the package ona_taskrun
    signs_claims: bool


@pytest.fixture(
    params=[
        pytest.param(BEFORE_RESTRUCTURE, id="from-9c4abb2"),
        pytest.param(RELEASE_0_1_0, id="from-0.1.0"),
    ]
)
def previous(request: pytest.FixtureRequest, tmp_path: Path) -> Previous:
    """The previous version's code."""
    commit: str = request.param
    root = extract(commit, ["operator"], tmp_path / commit) / "operator"
    # It is the flat layout of before the restructure: the test runs that code, not ours.
    assert (root / "ona_taskrun" / "reconciler.py").is_file()
    assert not (root / "ona_taskrun" / "controller").exists()
    return Previous(commit, root, signs_claims=(root / "ona_taskrun" / "claims.py").is_file())


def test_a_rolling_upgrade_during_runs_loses_and_duplicates_nothing(
    operator_factory: OperatorFactory,
    namespace: str,
    taskruns: TaskRuns,
    e2e_simulator: SimulatorHandle,
    control_plane: ControlPlane,
    previous: Previous,
) -> None:
    lease = f"upgrade-{uuid.uuid4().hex[:8]}"

    def replica(name: str, *, old: bool) -> OperatorProcess:
        env = {
            "LEADER_ELECTION": "true",
            "LEASE_NAME": lease,
            "LEASE_DURATION": LEASE_DURATION,
            "POD_NAME": name,
        }
        proc = operator_factory(namespace, extra_env=env, start=False)
        if old:
            proc.argv = [sys.executable, "-m", "ona_taskrun"]
            proc.env["PYTHONPATH"] = str(previous.code)
            if previous.commit == RELEASE_0_1_0:
                # 0.1.0 lent its token to every namespace when this was unset, and knew
                # no "*" (CHANGELOG.md, upgrade notes).
                del proc.env["DEFAULT_CONNECTION_NAMESPACE_SELECTOR"]
        return proc.start()

    def holder() -> str:
        result = control_plane.kubectl_run(
            "-n", "ona-system", "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}",
            check=False,
        )  # fmt: skip
        return result.stdout.strip()

    old = replica("old", old=True)
    # PYTHONPATH wins over the editable install: the old process imports the old package.
    imported = subprocess.run(
        [*old.argv[:1], "-c", "import ona_taskrun.reconciler as m; print(m.__file__)"],
        env=old.env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert imported.startswith(str(previous.code)), imported
    wait_for(lambda: holder() == "old", timeout=60, what="the previous operator to lead")

    # Runs under way when the upgrade happens: two hang until the test ends them (so the
    # new operator must see their end), two end by themselves, maybe during the handover.
    hanging = [f"hanging-{i}" for i in range(2)]
    timed = [f"timed-{i}" for i in range(2)]
    for name in hanging:
        taskruns.apply(name, {"task": inline_task("make # sim:hang", name=name)})
    for i, name in enumerate(timed):
        command = f"make # sim:duration={4 + 2 * i}s sim:steps=2"
        taskruns.apply(name, {"task": inline_task(command, name=name)})
    started = {name: taskruns.wait_phase(name, "RUNNING", timeout=60) for name in hanging + timed}

    # The new pod starts beside the old one and waits: the Lease is held.
    new = replica("new", old=False)
    wait_for(lambda: new.log(), timeout=30, what="the new operator's first log line")
    assert new.running
    assert holder() == "old"

    # Runs whose start is being made at the moment the old pod is told to stop.
    starting = [f"starting-{i}" for i in range(2)] if previous.signs_claims else []
    for name in starting:
        taskruns.apply(name, {"task": inline_task("make # sim:duration=2s", name=name)})
    stopped_at = time.monotonic()
    old.stop()  # SIGTERM, as the kubelet stops the old pod
    assert not old.running
    wait_for(lambda: holder() == "new", timeout=60, what="the new operator to take the Lease")
    print(f"handover: the new operator led {time.monotonic() - stopped_at:.1f}s after SIGTERM")

    # Only now do the hanging executions end: their end can only be seen by the new one.
    for name in hanging:
        assert taskruns.status(name)["phase"] == "RUNNING", name
        e2e_simulator.control.set_phase(started[name]["taskExecutionId"], "SUCCEEDED")

    for name in [*hanging, *timed, *starting]:
        status = taskruns.wait_phase(name, "SUCCEEDED", timeout=120)
        executions = executions_of_task(e2e_simulator, status["taskId"])
        assert [e["id"] for e in executions] == [status["taskExecutionId"]], name
        if name in started:
            # The execution the old operator started is the one the run ended with.
            assert status["taskExecutionId"] == started[name]["taskExecutionId"], name
        else:
            assert [s["phase"] for s in status["steps"]] == ["SUCCEEDED"], name
    for name in timed:
        assert [s["phase"] for s in taskruns.status(name)["steps"]] == ["SUCCEEDED"] * 2
    assert new.running
