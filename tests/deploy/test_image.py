"""The operator image: built from scratch here, non-root, and runnable read-only."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.deploy.image import (
    build_image,
    cannot_build_images,
    containers,
    image_config,
    run_in_image,
)

pytestmark = [
    pytest.mark.slow,
    # A cold build makes the Debian base first: minutes, not seconds.
    pytest.mark.timeout(1800),
    pytest.mark.skipif(cannot_build_images() is not None, reason=str(cannot_build_images())),
]


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


def test_image_runs_the_operator_as_a_non_root_user(image: str) -> None:
    config = image_config(image)
    user = config.get("User", "")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER must be numeric for runAsNonRoot to check it: {user!r}"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    assert config["Entrypoint"] == ["taskrun-operator"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]


def test_operator_help_documents_its_environment_and_writes_nothing(image: str) -> None:
    with run_in_image(["--help"], image=image, user="65532:65532") as operator:
        status = operator.wait(timeout=120)
        output = operator.output()
        assert status == 0, output
        assert "ONA_BASE_URL" in output
        assert operator.written_paths() == []
    assert operator.container not in containers()


def test_written_paths_sees_writes_outside_tmp(image: str) -> None:
    # The check above is only worth something if it notices a write.
    script = "import os; os.makedirs('/opt/venv/cache'); open('/tmp/scratch', 'w').close()"
    with run_in_image(["-c", script], entrypoint=["python3"], user="0:0", image=image) as writer:
        assert writer.wait(timeout=60) == 0, writer.output()
        assert writer.written_paths() == ["/opt/venv", "/opt/venv/cache"]
    assert writer.container not in containers()


def test_runtime_user_has_a_name(image: str) -> None:
    # kopf names its peering identity after getpass.getuser(), which fails for a UID
    # without a passwd entry.
    script = "import getpass, os; print(getpass.getuser(), os.path.expanduser('~'))"
    with run_in_image(["-c", script], entrypoint=["python3"], image=image) as probe:
        assert probe.wait(timeout=60) == 0, probe.output()
        assert probe.output().split() == ["nonroot", "/tmp"]
    assert probe.container not in containers()


def test_image_has_no_compiler(image: str) -> None:
    with run_in_image(
        ["-c", "import shutil; print([c for c in ('gcc', 'cc', 'make') if shutil.which(c)])"],
        entrypoint=["python3"],
        image=image,
    ) as probe:
        assert probe.wait(timeout=60) == 0, probe.output()
        assert probe.output().strip() == "[]"
    assert probe.container not in containers()


PROBE = """
import os, signal, socket, sys, time
def stop(signum, frame):
    print("stopping on SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open("/etc/ona/kubeconfig") as mounted:
    first_line = mounted.readline().strip()
with open("/var/run/secrets/ona/token") as mounted:
    token = mounted.read()
connection = socket.create_connection(("127.0.0.1", int(os.environ["PROBE_PORT"])))
connection.sendall(f"{os.getuid()}:{os.getgid()} {first_line} {token}\\n".encode())
print("connected", flush=True)
time.sleep(3600)
"""


def test_run_in_image_reaches_host_loopback_and_stops_cleanly(image: str, tmp_path: Path) -> None:
    # Owner-only files of root, as an admin kubeconfig is: the process must still read
    # them, as the operator reads its Secret volume in a cluster.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    kubeconfig.chmod(0o600)
    token = tmp_path / "token"
    token.write_text("probe-token")
    token.chmod(0o600)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        port = server.getsockname()[1]
        process = run_in_image(
            ["-c", PROBE],
            entrypoint=["python3"],
            env={"PROBE_PORT": str(port)},
            # /var/run is a symlink to /run in the image, as the Deployment's mount path
            # meets it.
            mounts={kubeconfig: "/etc/ona/kubeconfig", token: "/var/run/secrets/ona/token"},
            image=image,
        )
        with process:
            connection, _ = server.accept()
            with connection, connection.makefile() as received:
                assert received.readline() == "65532:65532 apiVersion: v1 probe-token\n"
            assert process.popen.poll() is None, "the process should still be running"
            assert process.container in containers()
        assert process.popen.returncode is not None
        assert process.container not in containers()
        assert "stopping on SIGTERM" in process.output(), process.output()
        # Nothing buildah started outlives it.
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
