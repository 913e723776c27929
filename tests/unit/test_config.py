"""`config.load`: defaults, every setting read from the environment and flags, and a
clear refusal naming the bad setting, without ever printing the token. The console
script is run once as a user would, to see the exit code and the message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ona_taskrun import config
from ona_taskrun.config import ConfigError

TOKEN = "ona_pat_Zx9s3cr3tT0k3n"
BASE = {"ONA_API_TOKEN": TOKEN}


def load(*argv: str, **env: str) -> config.Config:
    return config.load(list(argv), {**BASE, **env})


def test_defaults() -> None:
    cfg = config.load([], {"ONA_API_TOKEN": TOKEN, "POD_NAME": "operator-0"})

    assert cfg.ona_base_url == "https://app.ona.com/api"
    assert cfg.token is not None
    assert cfg.token.reveal() == TOKEN
    assert cfg.namespaces == ()
    assert cfg.all_namespaces is True
    assert (cfg.log_level, cfg.log_format, cfg.liveness_endpoint) == ("INFO", "text", None)
    assert (cfg.request_timeout, cfg.poll_interval, cfg.start_settle) == (10.0, 5.0, 15.0)
    assert (cfg.resync_seconds, cfg.workers) == (60.0, 32)
    assert cfg.leader_election is False
    assert (cfg.lease_namespace, cfg.lease_name, cfg.lease_duration) == (
        "ona-system",
        "ona-taskrun-operator",
        15.0,
    )
    assert cfg.identity == "operator-0"
    assert not hasattr(cfg, "crash_point")  # a harness setting, not the operator's
    # Metrics on, on a port apart from the manifests' liveness endpoint (8080).
    assert (cfg.metrics_enabled, cfg.metrics_bind_address, cfg.metrics_port) == (
        True,
        "0.0.0.0",
        8081,
    )


def test_identity_without_pod_name_is_unique_to_the_process() -> None:
    cfg = load()
    assert cfg.identity.endswith(f"-{os.getpid()}")


# (argv, env, Config attribute, expected value)
ACCEPTED: list[Any] = [
    pytest.param(
        [],
        {"ONA_BASE_URL": "http://127.0.0.1:8080/api/"},
        "ona_base_url",
        "http://127.0.0.1:8080/api",
        id="base-url-trailing-slash-dropped",
    ),
    pytest.param(
        ["--ona-base-url", "https://ona.example/api"],
        {"ONA_BASE_URL": "https://other/api"},
        "ona_base_url",
        "https://ona.example/api",
        id="base-url-flag-wins",
    ),
    pytest.param(
        [],
        {"WATCH_NAMESPACES": " team-a, team-b,,team-a "},
        "namespaces",
        ("team-a", "team-b"),
        id="watch-namespaces-list",
    ),
    pytest.param([], {"WATCH_NAMESPACES": ""}, "namespaces", (), id="watch-namespaces-empty-all"),
    pytest.param(
        ["-n", "team-a", "--namespace", "team-b"],
        {"WATCH_NAMESPACES": "other"},
        "namespaces",
        ("team-a", "team-b"),
        id="namespace-flags-repeated-win",
    ),
    pytest.param(
        ["-A"],
        {"WATCH_NAMESPACES": "team-a"},
        "namespaces",
        (),
        id="all-namespaces-flag-wins",
    ),
    pytest.param([], {"LOG_LEVEL": "debug"}, "log_level", "DEBUG", id="log-level-any-case"),
    pytest.param(
        ["--log-level", "error"],
        {"LOG_LEVEL": "debug"},
        "log_level",
        "ERROR",
        id="log-level-flag-wins",
    ),
    pytest.param([], {"LOG_FORMAT": "JSON"}, "log_format", "json", id="log-format-json"),
    pytest.param(
        [],
        {"LIVENESS_ENDPOINT": "http://0.0.0.0:8080/healthz"},
        "liveness_endpoint",
        "http://0.0.0.0:8080/healthz",
        id="liveness",
    ),
    pytest.param(
        [],
        {"ONA_REQUEST_TIMEOUT": "20"},
        "start_settle",
        30.0,
        id="settle-default-follows-a-longer-timeout",
    ),
    pytest.param(
        [],
        {"ONA_START_SETTLE": "11"},
        "start_settle",
        11.0,
        id="settle-just-above-timeout",
    ),
    pytest.param([], {"ONA_POLL_INTERVAL": "0.5"}, "poll_interval", 0.5, id="poll-interval"),
    pytest.param([], {"ONA_RESYNC_SECONDS": "30"}, "resync_seconds", 30.0, id="resync"),
    pytest.param([], {"ONA_STOP_RESEND_SECONDS": "5"}, "stop_resend", 5.0, id="stop-resend"),
    pytest.param([], {"RECONCILE_WORKERS": "3"}, "workers", 3, id="workers"),
    pytest.param([], {"LEADER_ELECTION": "true"}, "leader_election", True, id="leader-true"),
    pytest.param([], {"LEADER_ELECTION": "Yes"}, "leader_election", True, id="leader-yes"),
    pytest.param([], {"LEADER_ELECTION": "0"}, "leader_election", False, id="leader-0"),
    pytest.param(["--leader-election"], {}, "leader_election", True, id="leader-flag"),
    pytest.param([], {"LEASE_DURATION": "30"}, "lease_duration", 30.0, id="lease-duration"),
    pytest.param([], {"METRICS_ENABLED": "false"}, "metrics_enabled", False, id="metrics-off"),
    pytest.param([], {"METRICS_ENABLED": "TRUE"}, "metrics_enabled", True, id="metrics-on"),
    pytest.param([], {"METRICS_PORT": "9100"}, "metrics_port", 9100, id="metrics-port"),
    pytest.param([], {"METRICS_PORT": "0"}, "metrics_port", 0, id="metrics-any-free-port"),
    pytest.param(
        [],
        {"METRICS_BIND_ADDRESS": "127.0.0.1"},
        "metrics_bind_address",
        "127.0.0.1",
        id="metrics-loopback",
    ),
    pytest.param(
        [], {"METRICS_BIND_ADDRESS": " :: "}, "metrics_bind_address", "::", id="metrics-ipv6-any"
    ),
    pytest.param([], {}, "retry_backoff_base", 10.0, id="retry-backoff-default"),
    pytest.param(
        [], {"RETRY_BACKOFF_BASE_SECONDS": "0.5"}, "retry_backoff_base", 0.5, id="retry-backoff"
    ),
]


@pytest.mark.parametrize(("argv", "env", "attr", "value"), ACCEPTED)
def test_accepted(argv: list[str], env: dict[str, str], attr: str, value: Any) -> None:
    cfg = load(*argv, **env)
    assert getattr(cfg, attr) == value


# ------------------------------------------------------------------------ token


def test_token_file_wins_over_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file-token\n", encoding="utf-8")
    cfg = load(ONA_API_TOKEN_FILE=str(path))
    assert cfg.token.reveal() == "from-file-token"


def test_token_file_flag_wins_over_env_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("token-a", encoding="utf-8")
    (tmp_path / "b").write_text("token-b", encoding="utf-8")
    cfg = load("--token-file", str(tmp_path / "b"), ONA_API_TOKEN_FILE=str(tmp_path / "a"))
    assert cfg.token.reveal() == "token-b"


@pytest.mark.parametrize("text", ["", "  \n", "\n\n"])
def test_empty_token_file_names_the_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "token"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(ONA_API_TOKEN_FILE=str(path))
    assert str(caught.value) == f"the API token file {path} is empty"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_token_file_names_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "token"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(ConfigError) as caught:
        load(ONA_API_TOKEN_FILE=str(path))
    assert str(caught.value).startswith(f"cannot read the API token file {path}: ")
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("env", [{}, {"ONA_API_TOKEN": ""}, {"ONA_API_TOKEN": "   "}])
def test_no_token_means_no_default_connection(env: dict[str, str]) -> None:
    # A multi-team install may give the operator no token of its own: every TaskRun
    # then names a connection, and one that does not waits with NoDefaultConnection.
    cfg = config.load([], env)
    assert cfg.token is None
    assert cfg.token_file is None


def test_token_file_is_kept_for_rereading_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN, encoding="utf-8")
    assert load(ONA_API_TOKEN_FILE=str(path)).token_file == str(path)
    assert load().token_file is None


def test_connection_settings() -> None:
    cfg = load(
        OPERATOR_NAMESPACE="platform",
        DEFAULT_CONNECTION_NAMESPACE_SELECTOR="team in (a,b),!restricted",
        CONNECTION_RECHECK_SECONDS="120",
        CONNECTION_SECRET_RESYNC_SECONDS="15",
    )
    assert cfg.operator_namespace == "platform"
    assert cfg.default_namespaces.matches({"team": "a"})
    assert not cfg.default_namespaces.matches({"team": "a", "restricted": "yes"})
    assert not cfg.default_namespaces.matches({"team": "c"})
    assert (cfg.connection_recheck, cfg.secret_resync) == (120.0, 15.0)
    defaults = load()
    assert defaults.operator_namespace == "ona-system"
    assert (defaults.connection_recheck, defaults.secret_resync) == (300.0, 60.0)


@pytest.mark.parametrize("unset", [None, "", "   "])
def test_a_fresh_install_lends_the_operator_token_to_no_namespace(unset: str | None) -> None:
    env = {} if unset is None else {"DEFAULT_CONNECTION_NAMESPACE_SELECTOR": unset}
    cfg = load(**env)
    assert not cfg.default_namespaces.matches({})
    assert not cfg.default_namespaces.matches({"kubernetes.io/metadata.name": "default"})


def test_all_namespaces_must_be_written_out() -> None:
    cfg = load(DEFAULT_CONNECTION_NAMESPACE_SELECTOR="*")
    assert cfg.default_namespaces.matches({})
    assert cfg.default_namespaces.matches({"team": "x"})


def test_connections_may_name_only_allowed_base_urls_and_the_operators_own() -> None:
    cfg = load(ONA_BASE_URL="http://127.0.0.1:8080")
    assert cfg.allowed_base_urls.allows("https://app.ona.com/api")
    assert cfg.allowed_base_urls.allows("https://app.gitpod.io/api")
    assert cfg.allowed_base_urls.allows("http://127.0.0.1:8080")
    assert not cfg.allowed_base_urls.allows("https://collector.example.com/api")
    anything = load(CONNECTION_ALLOWED_BASE_URLS="*")
    assert anything.allowed_base_urls.allows("https://collector.example.com/api")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"CONNECTION_ALLOWED_BASE_URLS": "https://ok.example,ftp://x"},
            "CONNECTION_ALLOWED_BASE_URLS: allowed base URL 'ftp://x'",
            id="bad-allowed-url",
        ),
        pytest.param(
            {"DEFAULT_CONNECTION_NAMESPACE_SELECTOR": "team in (a"},
            "DEFAULT_CONNECTION_NAMESPACE_SELECTOR",
            id="bad-selector",
        ),
        pytest.param({"OPERATOR_NAMESPACE": "Not_A_Namespace"}, "OPERATOR_NAMESPACE", id="bad-ns"),
        pytest.param({"CONNECTION_RECHECK_SECONDS": "0"}, "CONNECTION_RECHECK_SECONDS", id="zero"),
    ],
)
def test_bad_connection_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**env)
    assert message in str(caught.value)


def test_token_is_hidden_in_every_rendering(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN, encoding="utf-8")
    for cfg in (load(), config.load([], {"ONA_API_TOKEN_FILE": str(path)})):
        assert cfg.token is not None
        assert cfg.token.reveal() == TOKEN
        for text in (repr(cfg), str(cfg), repr(cfg.token), str(cfg.token), f"{cfg.token}"):
            assert TOKEN not in text


# ---------------------------------------------------------------------- refusals

# (argv, env on top of a valid token, exact message or a fragment it must hold)
REFUSED: list[Any] = [
    pytest.param(
        [],
        {"ONA_BASE_URL": "app.ona.com/api"},
        "ONA_BASE_URL='app.ona.com/api' is not an http(s) URL",
        id="base-url-no-scheme",
    ),
    pytest.param(
        [],
        {"ONA_BASE_URL": "ftp://app.ona.com/api"},
        "ONA_BASE_URL='ftp://app.ona.com/api' is not an http(s) URL",
        id="base-url-ftp",
    ),
    pytest.param(
        [],
        {"ONA_BASE_URL": "https://"},
        "ONA_BASE_URL='https://' is not an http(s) URL",
        id="base-url-no-host",
    ),
    pytest.param(
        ["--ona-base-url", "localhost:8080"],
        {},
        "ONA_BASE_URL='localhost:8080' is not an http(s) URL",
        id="base-url-flag-no-scheme",
    ),
    pytest.param(
        [],
        {"ONA_BASE_URL": "https://user:hunter2@app.ona.com/api"},
        "ONA_BASE_URL must not carry credentials; use ONA_API_TOKEN",
        id="base-url-credentials",
    ),
    pytest.param(
        [],
        {"ONA_BASE_URL": "https://hunter2@app.ona.com/api"},
        "ONA_BASE_URL must not carry credentials; use ONA_API_TOKEN",
        id="base-url-username",
    ),
    pytest.param(
        [],
        {"ONA_BASE_URL": "https://app.ona.com:port/api"},
        "ONA_BASE_URL",
        id="base-url-bad-port",
    ),
    pytest.param(
        ["-n", "team-a", "-A"],
        {},
        "use either --namespace or --all-namespaces, not both",
        id="namespace-and-all-namespaces",
    ),
    pytest.param(
        [],
        {"WATCH_NAMESPACES": "team-a,Team-B"},
        "namespace 'Team-B' is not a valid Kubernetes namespace name",
        id="namespace-upper-case",
    ),
    pytest.param(
        ["-n", "team_a"],
        {},
        "namespace 'team_a' is not a valid Kubernetes namespace name",
        id="namespace-underscore",
    ),
    pytest.param(
        [],
        {"WATCH_NAMESPACES": "team.a"},
        "namespace 'team.a' is not a valid Kubernetes namespace name",
        id="namespace-dot",
    ),
    pytest.param(
        [],
        {"WATCH_NAMESPACES": "a" * 64},
        "is not a valid Kubernetes namespace name",
        id="namespace-64-chars",
    ),
    pytest.param(
        [],
        {"WATCH_NAMESPACES": "-team"},
        "namespace '-team' is not a valid Kubernetes namespace name",
        id="namespace-leading-dash",
    ),
    pytest.param(
        [],
        {"WATCH_NAMESPACES": "team-"},
        "namespace 'team-' is not a valid Kubernetes namespace name",
        id="namespace-trailing-dash",
    ),
    pytest.param(
        [],
        {"WATCH_NAMESPACES": "équipe"},
        "namespace 'équipe' is not a valid Kubernetes namespace name",
        id="namespace-non-ascii",
    ),
    pytest.param(
        [],
        {"LOG_LEVEL": "trace"},
        "log level 'TRACE' must be one of DEBUG, INFO, WARNING, ERROR",
        id="log-level",
    ),
    pytest.param(
        ["--log-level", "verbose"],
        {},
        "log level 'VERBOSE' must be one of",
        id="log-level-flag",
    ),
    pytest.param(
        [], {"LOG_FORMAT": "xml"}, "log format 'xml' must be text or json", id="log-format"
    ),
    pytest.param(
        [],
        {"LIVENESS_ENDPOINT": "https://0.0.0.0:8080/healthz"},
        "liveness endpoint 'https://0.0.0.0:8080/healthz' must be an http:// URL",
        id="liveness-https",
    ),
    pytest.param(
        [],
        {"ONA_REQUEST_TIMEOUT": "ten"},
        "ONA_REQUEST_TIMEOUT='ten' is not a number",
        id="timeout-not-a-number",
    ),
    pytest.param(
        [],
        {"ONA_REQUEST_TIMEOUT": "0"},
        "ONA_REQUEST_TIMEOUT='0' must be at least 0.1",
        id="timeout-zero",
    ),
    pytest.param(
        [],
        {"ONA_POLL_INTERVAL": "-1"},
        "ONA_POLL_INTERVAL='-1' must be at least 0.05",
        id="poll-negative",
    ),
    pytest.param(
        [],
        {"RECONCILE_WORKERS": "0"},
        "RECONCILE_WORKERS='0' must be at least 1",
        id="workers-zero",
    ),
    pytest.param(
        [],
        {"RECONCILE_WORKERS": "many"},
        "RECONCILE_WORKERS='many' is not a number",
        id="workers-not-a-number",
    ),
    pytest.param(
        [],
        {"LEASE_DURATION": "1"},
        "LEASE_DURATION='1' must be at least 2",
        id="lease-too-short",
    ),
    pytest.param(
        [],
        {"ONA_RESYNC_SECONDS": "0.5"},
        "ONA_RESYNC_SECONDS='0.5' must be at least 1",
        id="resync-too-short",
    ),
    pytest.param(
        [],
        {"ONA_STOP_RESEND_SECONDS": "0"},
        "ONA_STOP_RESEND_SECONDS='0' must be at least 1",
        id="stop-resend-too-short",
    ),
    pytest.param(
        [],
        {"ONA_POLL_INTERVAL": "nan"},
        "ONA_POLL_INTERVAL",
        id="poll-nan",
    ),
    pytest.param(
        [],
        {"ONA_POLL_INTERVAL": "inf"},
        "ONA_POLL_INTERVAL",
        id="poll-inf",
    ),
    pytest.param(
        [],
        {"RECONCILE_WORKERS": "inf"},
        "RECONCILE_WORKERS",
        id="workers-inf",
    ),
    pytest.param(
        [],
        {"LEADER_ELECTION": "maybe"},
        "LEADER_ELECTION='maybe' must be true or false",
        id="leader-election",
    ),
    pytest.param(
        [],
        {"ONA_START_SETTLE": "10"},
        "ONA_START_SETTLE (10s) must be longer than ONA_REQUEST_TIMEOUT (10s), "
        "or a start still in flight could be missed",
        id="settle-equal-to-timeout",
    ),
    pytest.param(
        [],
        {"ONA_START_SETTLE": "5", "ONA_REQUEST_TIMEOUT": "8"},
        "ONA_START_SETTLE (5s) must be longer than ONA_REQUEST_TIMEOUT (8s)",
        id="settle-shorter-than-timeout",
    ),
    pytest.param(
        [],
        {"ONA_BASE_URL": f"ftp://operator:{TOKEN}@app.ona.com/api"},
        "ONA_BASE_URL",
        id="base-url-bad-scheme-with-token-inside",
    ),
    pytest.param(
        [],
        {"METRICS_PORT": "80a"},
        "METRICS_PORT='80a' must be a port number from 0 to 65535",
        id="metrics-port-not-a-number",
    ),
    pytest.param(
        [],
        {"METRICS_PORT": "70000"},
        "METRICS_PORT='70000' must be a port number from 0 to 65535",
        id="metrics-port-too-high",
    ),
    pytest.param(
        [],
        {"METRICS_BIND_ADDRESS": "metrics.local"},
        "METRICS_BIND_ADDRESS='metrics.local' is not an IP address",
        id="metrics-bind-address-a-name",
    ),
    pytest.param(
        [],
        {"METRICS_ENABLED": "maybe"},
        "METRICS_ENABLED='maybe' must be true or false",
        id="metrics-enabled-not-a-boolean",
    ),
    pytest.param(
        [],
        {"RETRY_BACKOFF_BASE_SECONDS": "0"},
        "RETRY_BACKOFF_BASE_SECONDS='0' must be at least 0.1",
        id="retry-backoff-zero",
    ),
    pytest.param(
        [],
        {"RETRY_BACKOFF_BASE_SECONDS": "600"},
        "RETRY_BACKOFF_BASE_SECONDS=600 must be at most 300",
        id="retry-backoff-past-the-cap",
    ),
]


@pytest.mark.parametrize(("argv", "env", "message"), REFUSED)
def test_refused(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(*argv, **env)
    text = str(caught.value)
    assert message in text
    assert TOKEN not in text
    assert "hunter2" not in text
    assert TOKEN not in repr(caught.value)


# ---------------------------------------------------------------- console script

SCRIPT = Path(sys.executable).parent / "taskrun-operator"


def test_console_script_refuses_bad_settings_and_documents_them(tmp_path: Path) -> None:
    base = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:  # a source tree put before the installed package
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    missing = tmp_path / "no-such-token"
    runs = {
        "bad-level": (
            [str(SCRIPT)],
            {**base, "ONA_API_TOKEN": TOKEN, "LOG_LEVEL": "LOUD"},
        ),
        "missing-file": ([str(SCRIPT)], {**base, "ONA_API_TOKEN_FILE": str(missing)}),
        "help": ([str(SCRIPT), "--help"], base),
    }
    # Started together: each start imports kopf, and the unit tier must stay fast.
    procs = {
        name: subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, (argv, env) in runs.items()
    }
    out: dict[str, tuple[int, str, str]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        out[name] = (proc.returncode, stdout, stderr)

    code, stdout, stderr = out["bad-level"]
    assert code == 2
    assert (
        "taskrun-operator: configuration error: log level 'LOUD' must be one of "
        "DEBUG, INFO, WARNING, ERROR"
    ) in stderr
    assert TOKEN not in stdout + stderr
    assert "Traceback" not in stderr

    code, _, stderr = out["missing-file"]
    assert code == 2
    assert f"cannot read the API token file {missing}" in stderr

    code, stdout, _ = out["help"]
    assert code == 0
    assert "ONA_BASE_URL" in stdout
    assert "ONA_API_TOKEN_FILE" in stdout
    assert "METRICS_PORT" in stdout
    assert "usage: taskrun-operator" in stdout


def test_the_default_connections_limits_are_settings() -> None:
    cfg = config.load(
        [],
        {
            **BASE,
            "DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS": "50",
            "DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS_PER_NAMESPACE": "10",
            "DEFAULT_CONNECTION_REQUESTS_PER_SECOND": "2.5",
        },
    )
    assert (cfg.default_limits.max_concurrent, cfg.default_limits.max_per_namespace) == (50, 10)
    assert cfg.default_limits.requests_per_second == 2.5
    assert not config.load([], BASE).default_limits.limited


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS", "0", "must be from 1 to 100000"),
        ("DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS", "many", "'many' is not a number"),
        ("DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS_PER_NAMESPACE", "-1", "must be from 1"),
        ("DEFAULT_CONNECTION_REQUESTS_PER_SECOND", "0", "must be above 0"),
    ],
)
def test_bad_default_limits_name_their_setting(setting: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{setting}\W.*{message}"):
        config.load([], {**BASE, setting: value})
