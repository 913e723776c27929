"""The `kubectl-ona` console script as a process, as a shell runs it: in pipes closed early,
against hostile text, and in every condition a user meets that is not a bug.

The Kubernetes API and the Ona API are one small stand-in on loopback that answers from
what each test put in it (an HTTP server in a thread: the plugin is another process).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

SCRIPT = Path(sys.executable).parent / "kubectl-ona"
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the package is not installed")

TASKRUNS = "/apis/automation.ona.com/v1alpha1/namespaces/team-a/taskruns"
EVENTS = "/api/v1/namespaces/team-a/events"
ONA = "/gitpod.v1"
TOKEN = "kube-token-1234"
ONA_TOKEN = "ona-token-5678"

# Sequences a hostile task prints: clear the screen, write the clipboard, retitle the
# window, hide text behind a carriage return, an 8-bit CSI, a bell.
EVIL = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;owned\x07\rforged\x9b31m\x07"
# A step label cannot hold a "\r": the log reader splits lines there.
LABEL = "build\x1b]0;owned\x07\x1b[2J\x9b31m"
CONTROLS = {chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} - {"\n", "\t"}


def has_controls(text: str) -> bool:
    return any(ch in CONTROLS for ch in text)


def taskrun(name: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}"},
        "spec": {"taskRef": {"id": "task-1"}},
        "status": status,
    }


def execution(**status: Any) -> dict[str, Any]:
    """A TaskExecution as the Ona API sends it."""
    return {
        "id": "exec-1",
        "metadata": {"environmentId": "env-1"},
        "spec": {"plan": [{"steps": [{"id": "step-1", "label": LABEL}]}]},
        "status": {"phase": "TASK_EXECUTION_PHASE_FAILED", "statusVersion": "5", **status},
    }


def status_error(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "status": "Failure", "code": code, "message": message}


class StandIn(ThreadingHTTPServer):
    """Answers `kubectl ona`'s Kubernetes and Ona requests from what a test put in."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.taskruns: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.kube_refusal: tuple[int, dict[str, Any]] | None = None
        self.hang_up = False
        self.execution: dict[str, Any] = execution()
        self.log: list[str] = []
        self.ona_refusal: tuple[int, dict[str, Any]] | None = None

    def answer(self, method: str, path: str, body: Any) -> tuple[int, str, Any]:
        if path.startswith(ONA):
            return self._ona(path)
        if path.startswith("/log/"):
            return 200, "text/plain", "".join(f"{line}\n" for line in self.log)
        if self.kube_refusal is not None:
            return *self._json(self.kube_refusal[0]), self.kube_refusal[1]
        if path.startswith(EVENTS):
            return 200, "application/json", {"kind": "EventList", "items": self.events}
        name = path.removeprefix(TASKRUNS).strip("/")
        if method == "POST":
            created = {**body, "metadata": {**body["metadata"], "name": f"{EVIL}copy"}}
            return 201, "application/json", created
        if name not in self.taskruns:
            message = f'taskruns.automation.ona.com "{name}" not found'
            return 404, "application/json", status_error(404, message)
        if method == "PATCH":
            self.taskruns[name]["spec"].update(body["spec"])
        return 200, "application/json", self.taskruns[name]

    def _ona(self, path: str) -> tuple[int, str, Any]:
        if self.ona_refusal is not None:
            return *self._json(self.ona_refusal[0]), self.ona_refusal[1]
        if path.endswith("/CreateEnvironmentLogsToken"):
            return 200, "application/json", {"accessToken": "logs-token"}
        return 200, "application/json", {"taskExecution": self.execution}

    @staticmethod
    def _json(status: int) -> tuple[int, str]:
        return status, "application/json"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.server.hang_up:
            self.close_connection = True
            return
        body = json.loads(raw) if raw else None
        status, kind, answer = self.server.answer(self.command, self.path, body)
        data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def write_kubeconfig(path: Path, server: str, user: dict[str, Any] | None = None) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user or {"token": TOKEN}}],
        "contexts": [
            {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}
        ],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(document))
    return path


class Plugin:
    """Runs the console script as a shell would, with this test's kubeconfig."""

    def __init__(self, api: StandIn, tmp_path: Path) -> None:
        self.api = api
        self.home = tmp_path
        self.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)

    def env(self, ona_token: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ONA_", "KUBE"))}
        env.update(HOME=str(self.home), KUBECONFIG=str(self.kubeconfig), ONA_BASE_URL=self.api.url)
        if ona_token is not None:
            env["ONA_API_TOKEN"] = ona_token
        return {**env, **extra}

    def run(
        self, *args: str, ona_token: str | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            env=self.env(ona_token, **extra),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(
        self, *args: str, ona_token: str | None = None, **kwargs: Any
    ) -> subprocess.Popen[str]:
        return subprocess.Popen([str(SCRIPT), *args], env=self.env(ona_token), text=True, **kwargs)


@pytest.fixture
def plugin(api: StandIn, tmp_path: Path) -> Plugin:
    return Plugin(api, tmp_path)


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert "Broken pipe" not in stderr, stderr


# ------------------------------------------------------------------ hostile text


def hostile_failed_run(api: StandIn, name: str = "build") -> None:
    api.taskruns[name] = taskrun(
        name,
        phase=f"FAILED{EVIL}",
        taskExecutionId="exec-1",
        failureMessage=f"disk full{EVIL}",
        logTail=f"[build] ok{EVIL}\n[build] error: disk full{EVIL}",
        steps=[{"id": "step-1", "label": LABEL, "phase": "FAILED"}],
        conditions=[
            {"type": "Succeeded", "status": "False", "reason": "Failed", "message": f"x{EVIL}"}
        ],
    )
    api.events = [
        {"type": "Warning", "reason": f"Failed{EVIL}", "message": f"it failed{EVIL}"},
    ]
    api.execution = execution(
        logUrl=f"{api.url}/log/exec-1", failureMessage=f"disk full{EVIL}\nsecond line"
    )
    api.log = [f"[{LABEL}] line {i}{EVIL}" for i in range(3)]


@pytest.mark.parametrize(
    ("args", "ona_token", "shown"),
    [
        pytest.param(["describe", "build"], None, "disk full", id="describe"),
        pytest.param(["logs", "build"], None, "[build] error: disk full", id="logs kept tail"),
        # The log reader splits lines at "\r" too: the text it would hide shows on a line
        # of its own.
        pytest.param(["logs", "build"], ONA_TOKEN, "[build] line 2\nforged", id="logs"),
        pytest.param(["logs", "build", "-f"], ONA_TOKEN, "line 0", id="logs -f"),
        pytest.param(
            ["logs", "build", "--step", "step-1"], ONA_TOKEN, "[build] line 1", id="--step"
        ),
        pytest.param(["stop", "build"], None, "", id="stop an ended run"),
        pytest.param(["rerun", "build"], None, "forgedcopy", id="rerun"),
    ],
)
def test_hostile_text_reaches_no_terminal(
    plugin: Plugin, args: list[str], ona_token: str | None, shown: str
) -> None:
    hostile_failed_run(plugin.api)
    done = plugin.run(*args, ona_token=ona_token)
    no_traceback(done.stderr)
    assert shown in done.stdout
    assert not has_controls(done.stdout), repr(done.stdout)
    assert not has_controls(done.stderr), repr(done.stderr)
    assert "owned" not in done.stdout + done.stderr
    # Every note or error stays on its own line, "kubectl ona: " or "error: " first.
    for line in done.stderr.splitlines():
        assert line.startswith(("kubectl ona: ", "error: ")), done.stderr


def test_hostile_text_in_errors(plugin: Plugin) -> None:
    hostile_failed_run(plugin.api)
    no_step = plugin.run("logs", "build", "--step", "nope", ona_token=ONA_TOKEN)
    plugin.api.ona_refusal = (401, {"code": "unauthenticated", "message": f"expired{EVIL}"})
    refused_ona = plugin.run("logs", "build", ona_token=ONA_TOKEN)
    plugin.api.kube_refusal = (403, status_error(403, f"forbidden{EVIL}\nsecond line"))
    refused_kube = plugin.run("describe", "build")
    for done, message in (
        (no_step, "has no step 'nope'; its steps: step-1 (build)"),
        (refused_ona, "refused ONA_API_TOKEN (GetTaskExecution: expiredforged)"),
        (refused_kube, "the Kubernetes API answered 403: forbiddenforged second line"),
    ):
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert message in done.stderr
        assert not has_controls(done.stderr), repr(done.stderr)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["describe", "build", "-o", "json"], "describe", id="describe json"),
        pytest.param(["describe", "build", "-o", "yaml"], "describe", id="describe yaml"),
        pytest.param(["stop", "build", "-o", "json"], "taskrun", id="stop json"),
        pytest.param(["rerun", "build", "-o", "yaml"], "rerun", id="rerun yaml"),
    ],
)
def test_machine_output_stays_valid_and_exact(
    plugin: Plugin, args: list[str], expected: str
) -> None:
    """`-o json|yaml` is not cleaned: JSON and YAML escape every control character, so
    the document is inert in a terminal and reads back as the API server sent it."""
    hostile_failed_run(plugin.api)
    original = plugin.api.taskruns["build"]
    done = plugin.run(*args)
    assert done.returncode == 0, done.stderr
    assert not has_controls(done.stdout), repr(done.stdout)
    parsed = json.loads(done.stdout) if "json" in args else yaml.safe_load(done.stdout)
    if expected == "describe":
        assert parsed == {"taskRun": original, "events": plugin.api.events}
    elif expected == "taskrun":
        assert parsed == original
    else:
        assert parsed["metadata"]["name"] == f"{EVIL}copy"
        assert parsed["spec"] == original["spec"]


def test_text_the_terminal_cannot_encode(plugin: Plugin) -> None:
    plugin.api.taskruns["build"] = taskrun("build", logTail="caf\u00e9 \u2713 \u65e5\u672c")
    done = plugin.run("logs", "build", PYTHONIOENCODING="ascii")
    no_traceback(done.stderr)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "caf\\xe9 \\u2713 \\u65e5\\u672c\n"


# ------------------------------------------------------------------ pipes


def long_run(api: StandIn, lines: int = 20000) -> None:
    """A run whose every output is far longer than a pipe holds (64 KiB)."""
    text = [f"[build] output line {i} of {lines}, long enough to fill a pipe" for i in range(lines)]
    api.taskruns["build"] = taskrun(
        "build", phase="FAILED", taskExecutionId="exec-1", logTail="\n".join(text)
    )
    api.events = [{"type": "Normal", "reason": "Started", "message": line} for line in text]
    api.execution = execution(logUrl=f"{api.url}/log/exec-1")
    api.log = text


PIPED = [
    pytest.param(["logs", "build"], ONA_TOKEN, id="logs"),
    pytest.param(["logs", "build", "-f"], ONA_TOKEN, id="logs -f"),
    pytest.param(["logs", "build", "--timestamps"], ONA_TOKEN, id="logs --timestamps"),
    pytest.param(["logs", "build"], None, id="logs kept tail"),
    pytest.param(["describe", "build", "-o", "json"], None, id="describe json"),
    pytest.param(["stop", "build", "-o", "yaml"], None, id="stop yaml"),
    pytest.param(["rerun", "build", "-o", "json"], None, id="rerun json"),
]


@pytest.mark.parametrize(("args", "ona_token"), PIPED)
def test_a_reader_that_stops_after_one_line(
    plugin: Plugin, args: list[str], ona_token: str | None
) -> None:
    """`kubectl ona ... | head -1`: exit code 0, nothing on stderr about the pipe."""
    long_run(plugin.api)
    process = plugin.start(
        *args, ona_token=ona_token, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    code = process.wait(timeout=60)
    stderr = process.stderr.read()
    assert first
    no_traceback(stderr)
    assert code == 0, stderr


@pytest.mark.parametrize(
    ("args", "ona_token"), [*PIPED, pytest.param(["describe", "build"], None, id="describe")]
)
def test_a_reader_gone_before_the_first_line(
    plugin: Plugin, args: list[str], ona_token: str | None
) -> None:
    """`kubectl ona ... | true`: the first write finds no reader."""
    long_run(plugin.api)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = plugin.start(*args, ona_token=ona_token, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    _, stderr = process.communicate(timeout=60)
    no_traceback(stderr)
    assert process.returncode == 0, stderr


def test_following_ends_as_soon_as_the_reader_leaves(plugin: Plugin) -> None:
    """`kubectl ona logs -f NAME | grep -q ready` ends with grep, not at the next line."""
    plugin.api.taskruns["waiting"] = taskrun("waiting")  # no execution yet: -f waits
    process = plugin.start(
        "logs",
        "waiting",
        "-f",
        ona_token=ONA_TOKEN,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    note = process.stderr.readline()
    assert note.startswith("kubectl ona: waiting for TaskRun waiting to start"), note
    process.stdout.close()
    code = process.wait(timeout=15)
    stderr = process.stderr.read()
    no_traceback(stderr)
    assert code == 0, stderr


# ------------------------------------------------------------------ expected errors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_error_line(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    no_traceback(done.stderr)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0]
    assert TOKEN not in done.stderr
    assert ONA_TOKEN not in done.stderr
    assert done.stdout == ""


def test_missing_taskrun(plugin: Plugin) -> None:
    for args in (["describe", "gone"], ["logs", "gone"], ["stop", "gone"], ["rerun", "gone"]):
        one_error_line(plugin.run(*args), 'taskruns.automation.ona.com "gone" not found')


@pytest.mark.parametrize(
    ("status", "message", "phrase"),
    [
        pytest.param(
            403,
            'taskruns.automation.ona.com "build" is forbidden: User "someone" cannot get',
            'answered 403: taskruns.automation.ona.com "build" is forbidden',
            id="no permission",
        ),
        pytest.param(401, "Unauthorized", "answered 401: Unauthorized", id="expired token"),
    ],
)
def test_refused_by_the_kubernetes_api(
    plugin: Plugin, status: int, message: str, phrase: str
) -> None:
    plugin.api.kube_refusal = (status, status_error(status, message))
    for args in (["describe", "build"], ["logs", "build"], ["stop", "build"]):
        one_error_line(plugin.run(*args), phrase)


def test_network_errors_reaching_the_kubernetes_api(plugin: Plugin, tmp_path: Path) -> None:
    plugin.api.hang_up = True
    one_error_line(
        plugin.run("describe", "build"),
        f"cannot reach the Kubernetes API at {plugin.api.url}",
        "closed before an answer",
    )
    port = free_port()
    write_kubeconfig(plugin.kubeconfig, f"http://127.0.0.1:{port}")
    one_error_line(
        plugin.run("logs", "build"),
        f"cannot reach the Kubernetes API at http://127.0.0.1:{port}",
        "Connection refused",
    )


@pytest.mark.parametrize(
    ("refusal", "phrase"),
    [
        pytest.param(
            (401, {"code": "unauthenticated", "message": "token expired"}),
            "the Ona API refused ONA_API_TOKEN (GetTaskExecution: token expired)",
            id="expired Ona token",
        ),
        pytest.param(
            (403, {"code": "permission_denied", "message": "not yours"}),
            "reading the log failed: GetTaskExecution: permission_denied (HTTP 403): not yours",
            id="no permission in Ona",
        ),
        pytest.param(
            (404, {"code": "not_found", "message": "no such execution"}),
            "not_found (HTTP 404): no such execution",
            id="execution gone",
        ),
    ],
)
def test_refused_by_the_ona_api(
    plugin: Plugin, refusal: tuple[int, dict[str, Any]], phrase: str
) -> None:
    plugin.api.taskruns["build"] = taskrun("build", taskExecutionId="exec-1")
    plugin.api.ona_refusal = refusal
    one_error_line(plugin.run("logs", "build", ona_token=ONA_TOKEN), phrase)


def test_ona_api_unreachable_or_token_unusable(plugin: Plugin) -> None:
    plugin.api.taskruns["build"] = taskrun("build", taskExecutionId="exec-1")
    port = free_port()
    unreachable = plugin.run(
        "logs", "build", "--ona-base-url", f"http://127.0.0.1:{port}", ona_token=ONA_TOKEN
    )
    one_error_line(unreachable, "reading the log failed: GetTaskExecution: unavailable")
    not_a_url = plugin.run("logs", "build", "--ona-base-url", "ftp://ona", ona_token=ONA_TOKEN)
    one_error_line(not_a_url, "cannot use the Ona API at 'ftp://ona'")
    for token in ("two\nlines", "tökén", "a b"):
        bad = plugin.run("logs", "build", ona_token=token)
        one_error_line(bad, "ONA_API_TOKEN holds spaces, control or non-ASCII characters")
        assert token not in bad.stderr


def bad_kubeconfigs(folder: Path, server: str) -> list[tuple[list[str], str]]:
    """(flags, what the error says) for kubeconfigs that cannot be used (more, without a
    process, in test_kubectl_plugin)."""

    def config(user: dict[str, Any] | None = None, **cluster: Any) -> str:
        path = write_kubeconfig(folder / f"config-{len(list(folder.iterdir()))}", server, user)
        document = yaml.safe_load(path.read_text())
        document["clusters"][0]["cluster"].update(cluster)
        path.write_text(yaml.safe_dump(document))
        return str(path)

    (folder / "binary").write_bytes(b"\xff\xfe\x00garbage")
    # A credential plugin that fails saying so on several lines, with escape sequences.
    said = f"login expired{EVIL}\nrun: login"
    complaint = f"import sys; sys.stderr.write({said!r}); sys.exit(3)"
    failing = {"exec": {"command": sys.executable, "args": ["-c", complaint]}}
    return [
        (["--kubeconfig", str(folder / "absent")], "does not exist"),
        (["--kubeconfig", str(folder / "binary")], "cannot read kubeconfig"),
        (["--kubeconfig", config(server="https://[::1")], "is not an https:// or http:// URL"),
        (
            ["--kubeconfig", config(server="https://h", **{"certificate-authority-data": "aGk="})],
            "certificate-authority is not a PEM certificate",
        ),
        (
            ["--kubeconfig", config({"token": "two\nlines"})],
            "token holds control or non-ASCII characters",
        ),
        (["--kubeconfig", config(failing)], "exited with 3: login expired forged run: login"),
    ]


def test_unusable_kubeconfigs(plugin: Plugin, tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    for flags, phrase in bad_kubeconfigs(folder, plugin.api.url):
        done = plugin.run("describe", "build", *flags)
        one_error_line(done, phrase)
        assert not has_controls(done.stderr)
    one_error_line(plugin.run("describe", "build", KUBECONFIG=""), "no kubeconfig found")
