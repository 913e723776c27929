"""Starting, recognising and stopping the control plane's processes, and loopback ports.

A process is named by its pid together with its start time (from /proc), so a pid reused by
an unrelated process after a crash is never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    start_ticks: int

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> ProcessRef:
        return cls(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # Field 22 of /proc/PID/stat (starttime) is index 19 after pid and comm are cut off.
    return int(fields[19]) if fields else None


def is_running(ref: ProcessRef) -> bool:
    """True while the very process `ref` names exists and has not exited (zombies count as
    exited: their sockets and files are already closed)."""
    fields = _stat_fields(ref.pid)
    if fields is None:
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == ref.start_ticks


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel signals us when the thread that started us exits. SIGKILL,
    # not SIGTERM: kube-apiserver's graceful shutdown hangs once etcd, dying at the same
    # moment, is gone, and a throwaway control plane has nothing worth shutting down cleanly.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def spawn(
    argv: list[str], log_path: Path, *, tied_to_caller: bool = False, append: bool = False
) -> tuple[subprocess.Popen[bytes], ProcessRef]:
    """Start `argv` detached from the caller's session and terminal, output to `log_path`
    (kept and continued with `append`); with `tied_to_caller`, it is terminated when the
    caller dies."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab" if append else "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C in the shell that ran `up` must not reach it, and it
            # outlives the `up` command.
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_parent if tied_to_caller else None,
        )
    ticks = start_ticks(process.pid)
    if ticks is None:
        process.wait()
        raise RuntimeError(f"{argv[0]} exited at once; see {log_path}")
    return process, ProcessRef(process.pid, ticks)


def stop(ref: ProcessRef, *, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Ask the process to exit, wait until it has, and kill it if it overstays `timeout`."""
    if not is_running(ref):
        _reap(process)
        return
    try:
        os.kill(ref.pid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(process)
        return
    if _wait_gone(ref, process, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(ref.pid, signal.SIGKILL)
    if not _wait_gone(ref, process, 10.0):
        raise RuntimeError(f"process {ref.pid} did not exit after SIGKILL")


def _reap(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        process.poll()


def _wait_gone(ref: ProcessRef, process: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Our own child turns into a zombie until reaped; poll() reaps it.
        _reap(process)
        if not is_running(ref):
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True when nothing listens on the loopback `port`.

    SO_REUSEADDR lets the bind succeed over connections left in TIME_WAIT by a server that has
    exited, while a socket still listening makes it fail.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True
