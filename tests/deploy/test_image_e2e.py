"""End to end with the shipped image: `taskrun-operator` running inside the container
image built by scripts/build-image, as its non-root user with the operator's RBAC
identity, against the local control plane and the simulator, runs a TaskRun to success."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.deploy.image import build_image, cannot_build_images, run_in_image
from tests.support.cluster_fixtures import ControlPlane
from tests.support.operator_fixtures import TaskRuns, inline_task, wait_for
from tests.support.scrape import scrape
from tests.support.simulator_fixtures import SimulatorProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(cannot_build_images() is not None, reason=str(cannot_build_images())),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_operator_in_the_image_runs_a_taskrun_to_success(
    control_plane: ControlPlane,
    ona_simulator_process: SimulatorProcess,
    namespace: str,
    taskruns: TaskRuns,
    tmp_path: Path,
) -> None:
    image = build_image()
    token_file = tmp_path / "token"
    token_file.write_text(ona_simulator_process.token)
    port, metrics_port = _free_port(), _free_port()
    env = {
        "KUBECONFIG": "/etc/ona/kubeconfig",
        "ONA_BASE_URL": ona_simulator_process.base_url,
        "ONA_API_TOKEN_FILE": "/var/run/secrets/ona/token",
        "WATCH_NAMESPACES": namespace,
        # The installer's decision: the operator-level token serves the watched namespace.
        "DEFAULT_CONNECTION_NAMESPACE_SELECTOR": "*",
        "ONA_POLL_INTERVAL": "0.5",
        "LOG_FORMAT": "json",
        "METRICS_BIND_ADDRESS": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
    }
    mounts = {
        control_plane.operator_kubeconfig: "/etc/ona/kubeconfig",
        token_file: "/var/run/secrets/ona/token",
    }
    with run_in_image(
        [f"--liveness=http://127.0.0.1:{port}/healthz"], env=env, mounts=mounts, image=image
    ) as operator:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, what="the liveness endpoint of the operator in the image")
        taskruns.apply("in-image", {"task": inline_task("make # sim:duration=1s sim:steps=2")})
        status = taskruns.wait_phase("in-image", "SUCCEEDED", timeout=60)
        assert [s["phase"] for s in status["steps"]] == ["SUCCEEDED", "SUCCEEDED"]
        # The image serves /metrics too (prometheus-client is a runtime dependency).
        finished = wait_for(
            lambda: scrape(metrics_port).value(
                "ona_taskrun_taskruns_finished_total", namespace=namespace, reason="Succeeded"
            ),
            what="the finished run in the image's /metrics",
        )
        assert finished == 1
        logs = operator.output()
        assert ona_simulator_process.token not in logs
        assert operator.written_paths() == []
