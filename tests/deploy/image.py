"""Builds the operator image and runs processes inside it with buildah, for tests.

Every buildah call uses the storage that scripts/build-image uses (vfs driver, optional
ONA_BUILDAH_ROOT). Processes run with chroot isolation, which always shares the host's
network: loopback inside the container is the host's loopback, so an operator in the
image reaches a kube-apiserver and an Ona simulator listening on 127.0.0.1.

    with run_in_image(
        ["--liveness=http://127.0.0.1:8080/healthz"],
        env={"KUBECONFIG": "/etc/ona/kubeconfig", "ONA_BASE_URL": simulator_url},
        mounts={kubeconfig_path: "/etc/ona/kubeconfig"},
    ) as operator:
        ...  # drive TaskRuns with kubectl; operator.output() holds its logs so far
    # leaving the block stops the process (SIGTERM, then SIGKILL) and removes the container
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-image"
IMAGE = os.environ.get("ONA_IMAGE", "localhost/ona-taskrun/operator:dev")

# Paths that `buildah run` itself creates or rewrites in the container's root on every
# run; anything else written there came from the process.
_BUILDAH_RUN_PATHS = (
    "/etc",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run",
    "/run/.containerenv",
)


def buildah(*args: str) -> list[str]:
    """The buildah command line for this project's image storage."""
    command = ["buildah", "--storage-driver", "vfs"]
    root = os.environ.get("ONA_BUILDAH_ROOT")
    if root:
        command += ["--root", root]
    return [*command, *args]


def cannot_build_images() -> str | None:
    """Why images cannot be built on this machine, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "building the image needs Linux"
    if os.geteuid() != 0:
        return "building the image needs root (debootstrap, buildah mount)"
    return None


def build_image(image: str = IMAGE, timeout: float = 1800) -> str:
    """Build (or refresh) the image with scripts/build-image and return its name."""
    result = subprocess.run(
        [str(BUILD_SCRIPT)],
        env={**os.environ, "ONA_IMAGE": image},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"scripts/build-image failed with {result.returncode}:\n{result.stderr[-6000:]}"
        )
    return image


def image_config(image: str = IMAGE) -> dict[str, Any]:
    """The OCI config of a local image (User, Entrypoint, Env, ...)."""
    result = subprocess.run(
        buildah("inspect", "--type", "image", image),
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = json.loads(result.stdout)["OCIv1"]["config"]
    return config


def containers() -> set[str]:
    """Names of the buildah working containers in this storage."""
    result = subprocess.run(
        buildah("containers", "--format", "{{.ContainerName}}"),
        capture_output=True,
        text=True,
        check=True,
    )
    return {line for line in result.stdout.splitlines() if line}


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name (field 2) may hold spaces and parentheses: parse after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> list[int]:
    children = _children()
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def _argv0(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class ImageProcess:
    """A process running inside a buildah container of the image, logging to a file."""

    def __init__(
        self,
        container: str,
        popen: subprocess.Popen[bytes],
        log_path: Path,
        started_at: float,
        mount_targets: Sequence[str] = (),
        mount_copies: Path | None = None,
        owns_log: bool = False,
    ) -> None:
        self.container = container
        self.popen = popen
        self.log_path = log_path
        self._started_at = started_at
        # A bind mount makes buildah create its target and the folders above it.
        self._mount_paths = {
            str(Path(*Path(target).parts[: depth + 1]))
            for target in mount_targets
            for depth in range(1, len(Path(target).parts))
        }
        self._mount_copies = mount_copies
        self._owns_log = owns_log
        self._final_output: str | None = None
        self._removed = False

    @property
    def pid(self) -> int:
        """The pid of the `buildah run` process; the group id of everything it started."""
        return self.popen.pid

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._final_output is not None:
            return self._final_output
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the process to end by itself; its exit status."""
        return self.popen.wait(timeout=timeout)

    def written_paths(self) -> list[str]:
        """Paths in the container's root filesystem that the process created or changed.

        /tmp is left out (the Deployment mounts an emptyDir there), and so is what
        `buildah run` writes itself (hosts, resolv.conf, mount points of `mounts`).
        Empty means the process would run as well on a read-only root filesystem.
        """
        mountpoint = subprocess.run(
            buildah("mount", self.container), capture_output=True, text=True, check=True
        ).stdout.strip()
        try:
            root = Path(mountpoint)
            written = []
            for path in _walk(root):
                relative = "/" + str(path.relative_to(root))
                if relative in _BUILDAH_RUN_PATHS or relative in self._mount_paths:
                    continue
                if relative == "/tmp" or relative.startswith("/tmp/"):
                    continue
                if path.lstat().st_mtime > self._started_at:
                    written.append(relative)
            return written
        finally:
            subprocess.run(buildah("umount", self.container), capture_output=True, check=False)

    def stop(self, timeout: float = 20.0) -> int:
        """Stop the process like a kubelet would and remove the container.

        SIGTERM goes to the processes inside the container only: sent to `buildah run`,
        it would SIGKILL them at once and leave no room for a graceful shutdown. After
        `timeout` seconds everything left in the process group gets SIGKILL. Returns
        the exit status of `buildah run`.
        """
        if self.popen.poll() is None:
            for pid in _descendants(self.popen.pid):
                if "buildah" not in Path(_argv0(pid)).name:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
        # Nothing that `buildah run` started may outlive it.
        deadline = time.monotonic() + timeout
        while _group_alive(self.popen.pid):
            if time.monotonic() > deadline:
                os.killpg(self.popen.pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.05)
        self.remove()
        return self.popen.returncode

    def remove(self) -> None:
        """Remove the container (once the process has ended)."""
        if not self._removed:
            subprocess.run(buildah("rm", self.container), capture_output=True, check=True)
            if self._mount_copies is not None:
                shutil.rmtree(self._mount_copies, ignore_errors=True)
            if self._owns_log:
                # A log file of our own making: keep its text, leave no file behind.
                self._final_output = self.output()
                self.log_path.unlink(missing_ok=True)
            self._removed = True

    def __enter__(self) -> ImageProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _resolve_in_root(root: Path, target: str) -> str:
    """`target` with the image's symlinks followed, as seen inside the container.

    buildah's chroot isolation binds onto the literal path, so a mount at
    /var/run/secrets/... would land beside the /var/run -> /run symlink and stay
    invisible; Kubernetes resolves the symlink, and so does this.
    """
    resolved = PurePosixPath("/")
    pending = list(PurePosixPath(target).parts[1:])
    for _ in range(256):
        if not pending:
            return str(resolved)
        part = pending.pop(0)
        candidate = resolved / part
        host_path = root / str(candidate).lstrip("/")
        if host_path.is_symlink():
            link = PurePosixPath(os.readlink(host_path))
            pending = [*link.parts[1:], *pending] if link.is_absolute() else [*link.parts, *pending]
            if link.is_absolute():
                resolved = PurePosixPath("/")
        elif part == "..":
            resolved = resolved.parent
        else:
            resolved = candidate
    raise ValueError(f"too many symlinks resolving {target} in the image")


def _mount_targets(container: str, mounts: Mapping[str | Path, str]) -> list[str]:
    if not mounts:
        return []
    root = subprocess.run(
        buildah("mount", container), capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        return [_resolve_in_root(Path(root), target) for target in mounts.values()]
    finally:
        subprocess.run(buildah("umount", container), capture_output=True, check=False)


def _readable_copies(sources: Sequence[str | Path], user: str) -> list[Path]:
    """Private copies of `sources` owned by the user the process runs as, mode 0400.

    What a Secret volume with fsGroup gives the operator in a cluster, and what a host
    file of another owner (an admin's 0600 kubeconfig) would not.
    """
    if not sources:
        return []
    folder = Path(tempfile.mkdtemp(prefix="ona-image-mounts-"))
    uid_text, _, gid_text = user.partition(":")
    uid = int(uid_text) if uid_text.isdigit() else -1
    gid = int(gid_text) if gid_text.isdigit() else uid
    copies = []
    for index, source in enumerate(sources):
        copy = folder / f"{index}-{Path(source).name}"
        if Path(source).is_dir():
            shutil.copytree(source, copy)
            paths = [copy, *copy.rglob("*")]
        else:
            shutil.copyfile(source, copy)
            paths = [copy]
        for path in paths:
            os.chown(path, uid, gid)
            path.chmod(0o500 if path.is_dir() else 0o400)
        copies.append(copy)
    return copies


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        if base == root:
            # Kernel file systems, not the image's files.
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev")]
        for name in [*dirnames, *filenames]:
            yield base / name


def run_in_image(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    mounts: Mapping[str | Path, str] | None = None,
    entrypoint: Sequence[str] | None = None,
    user: str | None = None,
    image: str = IMAGE,
    log_path: Path | None = None,
) -> ImageProcess:
    """Start `entrypoint + args` in a new container of `image`, on the host's network.

    entrypoint defaults to the image's own (taskrun-operator), user to the image's
    (65532:65532). mounts maps host paths (files or folders) to container paths: a
    private copy of each, owned by that user and read-only, is bound there (a
    kubeconfig, a token file), as Kubernetes does with a Secret volume. Output goes to
    log_path (by default a temporary file, deleted when the container is removed, its
    text still available from output()), so a chatty process never blocks on a full
    pipe.
    """
    command = list(entrypoint if entrypoint is not None else image_config(image)["Entrypoint"])
    container = subprocess.run(
        buildah("from", "--pull=never", image), capture_output=True, text=True, check=True
    ).stdout.strip()
    copies: list[Path] = []
    try:
        run = ["run", "--isolation", "chroot", "--network", "host"]
        if user is not None:
            run += ["--user", user]
        for name, value in (env or {}).items():
            run += ["--env", f"{name}={value}"]
        targets = _mount_targets(container, mounts or {})
        copies = _readable_copies(
            list((mounts or {}).keys()), user or image_config(image).get("User", "")
        )
        for copy, target in zip(copies, targets, strict=True):
            run += ["--volume", f"{copy}:{target}:ro"]
        owns_log = log_path is None
        if log_path is None:
            handle, log_name = tempfile.mkstemp(prefix="ona-image-", suffix=".log")
            os.close(handle)
            log_path = Path(log_name)
        started_at = time.time()
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                buildah(*run, container, "--", *command, *args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so stop() can reach everything buildah started.
                start_new_session=True,
            )
    except BaseException:
        subprocess.run(buildah("rm", container), capture_output=True, check=False)
        if copies:
            shutil.rmtree(copies[0].parent, ignore_errors=True)
        raise
    return ImageProcess(
        container,
        popen,
        log_path,
        started_at,
        targets,
        copies[0].parent if copies else None,
        owns_log,
    )
