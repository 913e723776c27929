"""`kubectl ona` without a cluster: the kubeconfig it reads, its flags, and `describe`."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ona_taskrun.cli.kubeconfig import KubeconfigError, load
from ona_taskrun.cli.main import build_parser, rerun_manifest
from ona_taskrun.cli.render import age, describe

NOW = dt.datetime(2026, 11, 30, 9, 0, 0, tzinfo=dt.UTC)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def kubeconfig(path: Path, users: dict[str, Any], current: str = "token") -> Path:
    cert, _ = certificate()
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": "https://127.0.0.1:6443",
                    "certificate-authority-data": b64(cert),
                },
            },
            {"name": "plain", "cluster": {"server": "http://127.0.0.1:8080"}},
        ],
        "users": [{"name": name, "user": user} for name, user in users.items()],
        "contexts": [
            {
                "name": name,
                "context": {
                    "cluster": "local" if name != "plain" else "plain",
                    "user": name,
                    **({"namespace": "team-a"} if name == "token" else {}),
                },
            }
            for name in users
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_current_context_with_a_token(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"token": {"token": "abc"}})
    target = load(str(path))
    assert target.server == "https://127.0.0.1:6443"
    assert target.context == "token"
    assert target.namespace == "team-a"
    assert target.headers == {"Authorization": "Bearer abc"}
    assert isinstance(target.verify, ssl.SSLContext)
    assert target.verify.verify_mode == ssl.CERT_REQUIRED


def test_context_flag_token_file_and_client_certificate(tmp_path: Path) -> None:
    cert, key = certificate()
    (tmp_path / "token.txt").write_text("from-file\n")
    (tmp_path / "key.pem").write_bytes(key)
    users = {
        "token": {"token": "abc"},
        "filed": {"tokenFile": "token.txt"},  # relative to the kubeconfig
        "cert": {"client-certificate-data": b64(cert), "client-key": "key.pem"},
        "plain": {"username": "me", "password": "pw"},
    }
    path = kubeconfig(tmp_path / "config", users)
    assert load(str(path), "filed").headers == {"Authorization": "Bearer from-file"}
    assert load(str(path), "filed").namespace == "default"
    with_cert = load(str(path), "cert")
    assert with_cert.headers == {}
    assert isinstance(with_cert.verify, ssl.SSLContext)
    basic = load(str(path), "plain")
    assert basic.verify is False
    assert basic.headers == {"Authorization": "Basic " + b64(b"me:pw")}


def test_exec_credential_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "cred.py"
    credential = {"kind": "ExecCredential", "status": {"token": "exec-token"}}
    plugin.write_text(f"import json\nprint(json.dumps({credential!r}))\n")
    users = {"token": {"exec": {"command": sys.executable, "args": [str(plugin)]}}}
    target = load(str(kubeconfig(tmp_path / "config", users)))
    assert target.headers == {"Authorization": "Bearer exec-token"}

    failing = {"token": {"exec": {"command": sys.executable, "args": ["-c", "exit(3)"]}}}
    with pytest.raises(KubeconfigError, match="exited with 3"):
        load(str(kubeconfig(tmp_path / "bad", failing)))


def test_kubeconfig_env_merges_files_first_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kubeconfig(tmp_path / "a", {"token": {"token": "first"}})
    second = kubeconfig(tmp_path / "b", {"token": {"token": "second"}, "other": {"token": "o"}})
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'missing'}:{second}")
    assert load().headers == {"Authorization": "Bearer first"}
    assert load(context="other").headers == {"Authorization": "Bearer o"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"current-context": ""}, "no current-context"),
        ({"current-context": "nope"}, "context 'nope' is not in the kubeconfig"),
        ({"clusters": []}, "names no cluster with a server"),
        (
            {
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {"server": "https://x", "certificate-authority-data": "%%"},
                    }
                ]
            },
            "not base64",
        ),
    ],
)
def test_unusable_kubeconfigs(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = kubeconfig(tmp_path / "config", {"token": {"token": "abc"}})
    document = {**yaml.safe_load(path.read_text()), **change}
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(KubeconfigError, match=message):
        load(str(path))


def test_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="does not exist"):
        load(str(tmp_path / "nothing"))


def test_a_kubeconfig_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"\xff\xfe\x00 not utf-8")
    with pytest.raises(KubeconfigError, match="cannot read kubeconfig"):
        load(str(path))


@pytest.mark.parametrize(
    "server", ["not a url", "https://[::1", "http://host:port", "ftp://host", "https://"]
)
def test_a_server_that_is_not_a_url(tmp_path: Path, server: str) -> None:
    path = kubeconfig(tmp_path / "config", {"token": {"token": "abc"}})
    document = yaml.safe_load(path.read_text())
    document["clusters"][0]["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(KubeconfigError, match="is not an https:// or http:// URL"):
        load(str(path))


@pytest.mark.parametrize("data", [b"not a certificate", b"\xff\xfe binary"])
def test_a_certificate_authority_that_is_not_one(tmp_path: Path, data: bytes) -> None:
    path = kubeconfig(tmp_path / "config", {"token": {"token": "abc"}})
    document = yaml.safe_load(path.read_text())
    document["clusters"][0]["cluster"]["certificate-authority-data"] = b64(data)
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(KubeconfigError, match="certificate-authority is not a PEM certificate"):
        load(str(path))


@pytest.mark.parametrize("token", ["two\nlines", "carriage\rreturn", "tök\u00e9n"])
def test_a_token_that_cannot_be_a_header(tmp_path: Path, token: str) -> None:
    path = kubeconfig(tmp_path / "config", {"token": {"token": token}})
    with pytest.raises(KubeconfigError, match="token holds control or non-ASCII") as raised:
        load(str(path))
    assert token not in str(raised.value)


def test_a_credential_plugin_without_a_status_object(tmp_path: Path) -> None:
    command = "import json; print(json.dumps({'status': 'nope'}))"
    users = {"token": {"exec": {"command": sys.executable, "args": ["-c", command]}}}
    with pytest.raises(KubeconfigError, match="printed no status object"):
        load(str(kubeconfig(tmp_path / "config", users)))


# ------------------------------------------------------------------ flags


def test_common_flags_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["-n", "ns", "--context", "c", "logs", "run", "-f"])
    after = parser.parse_args(["logs", "run", "-f", "-n", "ns", "--context", "c"])
    for args in (before, after):
        assert (args.namespace, args.context, args.name, args.follow) == ("ns", "c", "run", True)
    assert parser.parse_args(["describe", "x"]).namespace is None
    assert parser.parse_args(["describe", "x", "-o", "json"]).output == "json"


@pytest.mark.parametrize(
    "argv",
    [["describe", "x", "-o", "wide"], ["logs"], ["explode", "x"], ["stop", "x", "-f"]],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


# ------------------------------------------------------------------ describe


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (7199, "119m"),
        (7200, "2h"),
        (200000, "2d"),
    ],
)
def test_age(seconds: int, expected: str) -> None:
    then = (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert age(then, NOW) == expected


def test_age_of_nothing() -> None:
    assert age("", NOW) == "<unknown>"


FAILED_RUN: dict[str, Any] = {
    "metadata": {
        "name": "build",
        "namespace": "team-a",
        "creationTimestamp": "2026-11-30T08:58:00Z",
    },
    "spec": {
        "task": {"environmentId": "env-1", "name": "build", "command": "make"},
        "connectionRef": {"name": "team-a"},
        "timeout": "30m",
    },
    "status": {
        "phase": "FAILED",
        "taskId": "task-1",
        "taskExecutionId": "exec-1",
        "startedAt": "2026-11-30T08:58:10Z",
        "completedAt": "2026-11-30T08:59:25Z",
        "failureMessage": "disk\nfull",
        "logUrl": "https://logs.example/exec-1",
        "logTail": "[build] compiling\n[build] error: disk full",
        "steps": [
            {
                "id": "s1",
                "label": "build",
                "phase": "FAILED",
                "failureMessage": "disk full",
                "output": {"report": "https://r/1"},
            },
        ],
        "attempts": [{"attempt": 1, "phase": "FAILED"}],
        "conditions": [
            {"type": "Succeeded", "status": "False", "reason": "Failed", "message": "disk full"},
            {"type": "Stalled", "status": "True", "reason": "Failed", "message": "disk full"},
        ],
    },
}


def test_describe_lays_out_everything_a_person_needs() -> None:
    events = [
        {
            "type": "Normal",
            "reason": f"Note{i}",
            "message": f"n{i}",
            "lastTimestamp": f"2026-11-30T08:{10 + i:02d}:00Z",
        }
        for i in range(12)
    ] + [
        {
            "type": "Warning",
            "reason": "Failed",
            "message": "execution exec-1 failed: disk full",
            "lastTimestamp": "2026-11-30T08:59:30Z",
        }
    ]
    text = describe(FAILED_RUN, events, NOW)
    lines = text.splitlines()
    assert lines[0] == f"{'Name:':<17}build"
    assert f"{'Namespace:':<17}team-a" in lines
    assert f"{'Phase:':<17}FAILED" in lines
    assert f"{'Succeeded:':<17}False (Failed)" in lines
    assert f"{'Connection:':<17}OnaConnection/team-a" in lines
    assert f"{'Duration:':<17}1m15s" in lines
    assert f"{'Failure Message:':<17}disk full" in lines
    assert f"{'Timeout:':<17}30m" in lines
    assert "  Succeeded  False   Failed  disk full" in lines
    assert "  s1  build  FAILED  disk full" in lines
    assert "  Outputs of build:" in lines
    assert "    report: https://r/1" in lines
    assert "Attempts:" in lines
    tail = lines.index("Log Tail:")
    assert lines[tail + 1 : tail + 3] == ["  [build] compiling", "  [build] error: disk full"]
    event_rows = lines[lines.index("Events:") + 3 :]
    assert len(event_rows) == 10  # the newest ten, oldest first
    assert event_rows[-1].split()[:3] == ["Warning", "Failed", "30s"]
    assert "Note2" not in text


def test_describe_of_a_new_run() -> None:
    text = describe({"metadata": {"name": "new"}, "spec": {"taskRef": {"id": "t"}}}, [], NOW)
    assert f"{'Phase:':<15}<none yet>" in text
    assert f"{'Execution:':<15}<none yet>" in text
    assert f"{'Connection:':<15}<default>" in text
    for section in ("Conditions:", "Steps:", "Log Tail:", "Events:"):
        assert f"{section}\n  <none>" in text
    assert "Attempts:" not in text


def test_describe_shows_a_queued_runs_place_and_a_suspended_run() -> None:
    message = (
        "queued: OnaConnection team/ona allows 2 concurrent runs and 2 are running; position 3"
    )
    queued = {
        "metadata": {"name": "q"},
        "spec": {"taskRef": {"id": "t"}},
        "status": {
            "queuedAt": "2026-11-30T08:58:00Z",
            "conditions": [
                {"type": "Succeeded", "status": "Unknown", "reason": "Queued", "message": message}
            ],
        },
    }
    text = describe(queued, [], NOW)
    assert f"{'Queued:':<15}{message} (since 2026-11-30T08:58:00Z)" in text
    suspended = describe(
        {"metadata": {"name": "s"}, "spec": {"taskRef": {"id": "t"}, "suspend": True}}, [], NOW
    )
    assert f"{'Suspended:':<15}true: not started until spec.suspend is false" in suspended
    assert "Queued:" not in suspended


def test_default_base_url_is_the_clients() -> None:
    from ona_taskrun.cli.main import DEFAULT_BASE_URL
    from ona_taskrun.clients.ona import DEFAULT_BASE_URL as CLIENT_DEFAULT

    assert DEFAULT_BASE_URL == CLIENT_DEFAULT


def test_rerun_manifest_copies_the_spec_but_not_the_projects_marks() -> None:
    original = {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRun",
        "metadata": {
            "name": "nightly",
            "namespace": "team-a",
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {"team": "a", "automation.ona.com/schedule": "nightly"},
            "annotations": {
                "note": "keep",
                "automation.ona.com/start-requested-at": "2026-11-30T08:00:00Z",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
            "ownerReferences": [{"kind": "TaskRunSchedule", "name": "nightly"}],
            "finalizers": ["automation.ona.com/taskrun"],
        },
        "spec": {"taskRef": {"id": "t"}, "desiredPhase": "STOPPED", "logs": {"tailLines": 5}},
        "status": {"phase": "STOPPED"},
    }
    assert rerun_manifest(original, "team-a") == {
        "apiVersion": "automation.ona.com/v1alpha1",
        "kind": "TaskRun",
        "metadata": {
            "generateName": "nightly-",
            "namespace": "team-a",
            "labels": {"team": "a"},
            "annotations": {"note": "keep"},
        },
        "spec": {"taskRef": {"id": "t"}, "logs": {"tailLines": 5}},
    }
