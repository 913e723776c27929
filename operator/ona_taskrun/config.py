"""The operator's configuration: one place that reads environment variables and flags,
validates them, and fails fast with a message that names the bad setting.

Nothing is read at import time: `load()` is called by the entry point.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from . import __version__
from .observability import heap
from .rules import selectors
from .rules.capacity import NO_LIMITS, InvalidLimits, Limits, parse_limits
from .rules.connection import ONA_ONLY, AllowedUrls, InvalidConnection, check_base_url

DEFAULT_BASE_URL = "https://app.ona.com/api"
DEFAULT_ALLOWED_BASE_URLS = "https://app.ona.com/api,https://app.gitpod.io/api"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Not 8080: the manifests' liveness endpoint (kopf's /healthz) listens there.
DEFAULT_METRICS_PORT = 8081


class ConfigError(ValueError):
    """A setting is missing or invalid; the message says which and why."""


class Secret:
    """A value that must never be printed: its repr and str hide it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Config:
    ona_base_url: str
    # The default connection's token; None: TaskRuns must name a connection.
    token: Secret | None = field(repr=False)
    token_file: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    log_level: str = "INFO"
    log_format: str = "text"
    liveness_endpoint: str | None = None
    request_timeout: float = 10.0
    poll_interval: float = 5.0
    start_settle: float = 15.0
    resync_seconds: float = 60.0
    stop_resend: float = 60.0
    merge_window: float = 1.0
    max_watches: int = 100
    workers: int = 32
    leader_election: bool = False
    lease_namespace: str = "ona-system"
    lease_name: str = "ona-taskrun-operator"
    lease_duration: float = 15.0
    identity: str = ""
    operator_namespace: str = "ona-system"
    default_namespaces: selectors.LabelSelector = selectors.NOTHING
    default_limits: Limits = NO_LIMITS
    connection_recheck: float = 300.0
    secret_resync: float = 60.0
    allowed_base_urls: AllowedUrls = ONA_ONLY
    metrics_enabled: bool = True
    metrics_bind_address: str = "0.0.0.0"
    metrics_port: int = DEFAULT_METRICS_PORT
    retry_backoff_base: float = 10.0
    environment_poll: float = 5.0
    environment_timeout: float = 600.0
    environment_keepalive: float = 300.0
    # Serve Tekton CustomRuns of kind TaskRun (docs/pipelines.md); needs the RBAC of
    # manifests/tekton or the chart's tekton.customTasks.enabled.
    tekton_custom_tasks: bool = False
    debug_heap: int = 0  # frames per traced allocation for /debug/heap; 0: off

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces


ENV_HELP = """\
environment variables (flags win over them):
  ONA_BASE_URL            Ona API base URL (default https://app.ona.com/api)
  ONA_API_TOKEN           Ona token of the default connection (TaskRuns without
                          spec.connectionRef); unset: every TaskRun must name a connection
  ONA_API_TOKEN_FILE      file holding the token (e.g. a mounted Secret); wins over ONA_API_TOKEN;
                          read again after the API refuses the token
  DEFAULT_CONNECTION_NAMESPACE_SELECTOR
                          the namespaces whose TaskRuns may use the default connection:
                          * for all, or a label selector (kubectl -l syntax); unset or
                          empty: none (a fresh install lends its token to no namespace)
  DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS, DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS_PER_NAMESPACE,
  DEFAULT_CONNECTION_REQUESTS_PER_SECOND
                          the default connection's spec.limits (docs/capacity.md): runs
                          started and not final at once, in all and per namespace (unset:
                          no limit), and Ona requests per second (default 100)
  OPERATOR_NAMESPACE      the operator's namespace, where ClusterOnaConnection Secrets live
                          (default ona-system)
  CONNECTION_ALLOWED_BASE_URLS     comma-separated Ona API base URLs a connection's spec.baseUrl
                          may name (its token is sent nowhere else); * allows any; ONA_BASE_URL
                          is always allowed (default https://app.ona.com/api,https://app.gitpod.io/api)
  CONNECTION_RECHECK_SECONDS       seconds between checks of a connection's token (default 300)
  CONNECTION_SECRET_RESYNC_SECONDS seconds between reads of a connection's Secret (default 60)
  WATCH_NAMESPACES        comma-separated namespaces to watch; empty or unset: all
  LOG_LEVEL               DEBUG, INFO, WARNING or ERROR (default INFO)
  LOG_FORMAT              text or json (default text)
  LIVENESS_ENDPOINT       e.g. http://0.0.0.0:8080/healthz
  ONA_REQUEST_TIMEOUT     seconds per Ona API call (default 10)
  ONA_POLL_INTERVAL       seconds between batched status polls (default 5)
  ONA_START_SETTLE        seconds to wait after an unknown StartTask outcome before
                          looking for the execution (default 15, or 1.5 x ONA_REQUEST_TIMEOUT
                          if longer; must exceed the timeout)
  ONA_RESYNC_SECONDS      seconds between looks at a running TaskRun without news (default 60)
  ONA_STOP_RESEND_SECONDS seconds a stop may go untaken (the execution still running) before
                          StopTaskExecution is called again (default 60)
  STATUS_MERGE_WINDOW     seconds a TaskRun's progress (not a claim, an end or trouble) may wait
                          to be written together with what follows (default 1; 0 writes at once)
  ONA_MAX_WATCH_STREAMS   WatchEvents streams (one per environment) per connection; environments
                          past it are followed by batched polling alone (default 100)
  RECONCILE_WORKERS       concurrent reconciles (default 32)
  LEADER_ELECTION         true to elect one active replica through a Lease
  LEASE_NAMESPACE, LEASE_NAME, LEASE_DURATION, POD_NAME (the replica's identity)
  METRICS_ENABLED         false to serve no Prometheus /metrics endpoint (default true)
  METRICS_BIND_ADDRESS    IP address the /metrics endpoint listens on (default 0.0.0.0)
  METRICS_PORT            its port (default 8081; 0: any free port, logged at start)
  RETRY_BACKOFF_BASE_SECONDS       first wait before a TaskRun's next attempt (spec.retries);
                          it doubles per attempt, at most 300 s (default 10)
  ENVIRONMENT_POLL_SECONDS     seconds between looks at an environment a run waits for (default 5)
  ENVIRONMENT_START_TIMEOUT    seconds a run waits for its environment to run (default 600)
  ENVIRONMENT_KEEPALIVE_SECONDS  seconds between activity signals (spec.environment.keepAlive)
                          and looks at a running execution's environment; keep it well below
                          the idle timeout, at least 30 minutes in Ona (default 300)
  TEKTON_CUSTOM_TASKS     true to run Tekton CustomRuns of kind TaskRun as child TaskRuns
                          (docs/pipelines.md; needs RBAC for customruns) (default false)
  ONA_TASKRUN_DEBUG_HEAP  a number of frames (1 to 25) to trace the Python heap and serve
                          /debug/heap to loopback callers on the metrics port; for
                          finding a leak, not for production (default off)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskrun-operator",
        description="Runs Ona automation tasks from Kubernetes TaskRun resources.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ona-base-url", help="Ona API base URL (env ONA_BASE_URL)")
    p.add_argument("--token-file", help="file holding the Ona API token (env ONA_API_TOKEN_FILE)")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        help="a namespace to watch; repeat for several (env WATCH_NAMESPACES)",
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (env LOG_LEVEL)")
    p.add_argument("--log-format", help="text or json (env LOG_FORMAT)")
    p.add_argument("--liveness", help="liveness endpoint URL (env LIVENESS_ENDPOINT)")
    p.add_argument("--leader-election", action="store_true", default=None)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _token_path(env: Mapping[str, str], token_file: str | None) -> str | None:
    return token_file or env.get("ONA_API_TOKEN_FILE", "").strip() or None


def _token(env: Mapping[str, str], token_file: str | None) -> Secret | None:
    path = _token_path(env, token_file)
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the API token file {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"the API token file {path} is empty")
        return Secret(value)
    value = env.get("ONA_API_TOKEN", "").strip()
    # No token: no default connection; TaskRuns must name an OnaConnection.
    return Secret(value) if value else None


def _base_url(raw: str) -> str:
    url, problem = check_base_url(raw)
    if problem == "credentials":
        raise ConfigError("ONA_BASE_URL must not carry credentials; use ONA_API_TOKEN")
    if problem == "scheme":
        raise ConfigError(f"ONA_BASE_URL={raw!r} is not an http(s) URL")
    if problem == "port":
        raise ConfigError(f"ONA_BASE_URL={raw!r} has an invalid port")
    return url


def _bind_address(env: Mapping[str, str]) -> str:
    raw = env.get("METRICS_BIND_ADDRESS", "").strip() or "0.0.0.0"
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(
            f"METRICS_BIND_ADDRESS={raw!r} is not an IP address (e.g. 0.0.0.0, 127.0.0.1, ::)"
        ) from None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name}={raw!r} must be a port number from 0 to 65535")
    return int(raw)


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from flags and environment; raise ConfigError when invalid."""
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)

    base_url = _base_url(args.ona_base_url or env.get("ONA_BASE_URL") or DEFAULT_BASE_URL)
    token = _token(env, args.token_file)

    if args.all_namespaces and args.namespaces:
        raise ConfigError("use either --namespace or --all-namespaces, not both")
    raw_ns = args.namespaces or (
        [] if args.all_namespaces else env.get("WATCH_NAMESPACES", "").split(",")
    )
    namespaces = tuple(dict.fromkeys(n.strip() for n in raw_ns if n.strip()))
    for ns in namespaces:
        if len(ns) > 63 or not _NAMESPACE.fullmatch(ns):
            raise ConfigError(f"namespace {ns!r} is not a valid Kubernetes namespace name")

    log_level = (args.log_level or env.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log level {log_level!r} must be one of {', '.join(LOG_LEVELS)}")
    log_format = (args.log_format or env.get("LOG_FORMAT") or "text").lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log format {log_format!r} must be text or json")

    liveness = args.liveness or env.get("LIVENESS_ENDPOINT") or None
    if liveness and urlparse(liveness).scheme != "http":
        raise ConfigError(f"liveness endpoint {liveness!r} must be an http:// URL")

    request_timeout = _number(env, "ONA_REQUEST_TIMEOUT", 10.0, minimum=0.1)
    start_settle = _number(env, "ONA_START_SETTLE", max(15.0, request_timeout * 1.5), minimum=0)
    if start_settle <= request_timeout:
        raise ConfigError(
            f"ONA_START_SETTLE ({start_settle:g}s) must be longer than ONA_REQUEST_TIMEOUT "
            f"({request_timeout:g}s), or a start still in flight could be missed"
        )

    leader = args.leader_election if args.leader_election is not None else False
    leader = leader or _bool(env, "LEADER_ELECTION")
    operator_namespace = env.get("OPERATOR_NAMESPACE", "").strip() or "ona-system"
    if len(operator_namespace) > 63 or not _NAMESPACE.fullmatch(operator_namespace):
        raise ConfigError(
            f"OPERATOR_NAMESPACE={operator_namespace!r} is not a valid Kubernetes namespace name"
        )
    default_namespaces = _default_namespaces(env)
    default_limits = _default_limits(env)
    try:
        allowed = AllowedUrls.parse(
            env.get("CONNECTION_ALLOWED_BASE_URLS", DEFAULT_ALLOWED_BASE_URLS), always=[base_url]
        )
    except InvalidConnection as exc:
        raise ConfigError(f"CONNECTION_ALLOWED_BASE_URLS: {exc}") from None
    return Config(
        ona_base_url=base_url,
        token=token,
        token_file=_token_path(env, args.token_file) if token is not None else None,
        namespaces=namespaces,
        log_level=log_level,
        log_format=log_format,
        liveness_endpoint=liveness,
        request_timeout=request_timeout,
        poll_interval=_number(env, "ONA_POLL_INTERVAL", 5.0, minimum=0.05),
        start_settle=start_settle,
        resync_seconds=_number(env, "ONA_RESYNC_SECONDS", 60.0, minimum=1),
        stop_resend=_number(env, "ONA_STOP_RESEND_SECONDS", 60.0, minimum=1),
        merge_window=_number(env, "STATUS_MERGE_WINDOW", 1.0, minimum=0),
        max_watches=int(_number(env, "ONA_MAX_WATCH_STREAMS", 100, minimum=0)),
        workers=int(_number(env, "RECONCILE_WORKERS", 32, minimum=1)),
        leader_election=leader,
        lease_namespace=env.get("LEASE_NAMESPACE", "ona-system"),
        lease_name=env.get("LEASE_NAME", "ona-taskrun-operator"),
        lease_duration=_number(env, "LEASE_DURATION", 15.0, minimum=2),
        identity=env.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}",
        operator_namespace=operator_namespace,
        default_namespaces=default_namespaces,
        default_limits=default_limits,
        connection_recheck=_number(env, "CONNECTION_RECHECK_SECONDS", 300.0, minimum=1),
        secret_resync=_number(env, "CONNECTION_SECRET_RESYNC_SECONDS", 60.0, minimum=1),
        allowed_base_urls=allowed,
        metrics_enabled=_bool(env, "METRICS_ENABLED", default=True),
        metrics_bind_address=_bind_address(env),
        metrics_port=_port(env, "METRICS_PORT", DEFAULT_METRICS_PORT),
        retry_backoff_base=_backoff_base(env),
        environment_poll=_number(env, "ENVIRONMENT_POLL_SECONDS", 5.0, minimum=0.1),
        environment_timeout=_number(env, "ENVIRONMENT_START_TIMEOUT", 600.0, minimum=1),
        environment_keepalive=_number(env, "ENVIRONMENT_KEEPALIVE_SECONDS", 300.0, minimum=0.5),
        tekton_custom_tasks=_bool(env, "TEKTON_CUSTOM_TASKS"),
        debug_heap=_debug_heap(env),
    )


def _debug_heap(env: Mapping[str, str]) -> int:
    try:
        return heap.frames_from(env)
    except heap.HeapSettingError as exc:
        raise ConfigError(str(exc)) from None


_LIMIT_SETTINGS = {
    "DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS": "maxConcurrentRuns",
    "DEFAULT_CONNECTION_MAX_CONCURRENT_RUNS_PER_NAMESPACE": "maxConcurrentRunsPerNamespace",
    "DEFAULT_CONNECTION_REQUESTS_PER_SECOND": "requestsPerSecond",
}


def _default_limits(env: Mapping[str, str]) -> Limits:
    """The default connection's spec.limits, as settings (it has no object of its own)."""
    raw: dict[str, int | float] = {}
    for setting, field_name in _LIMIT_SETTINGS.items():
        text = env.get(setting, "").strip()
        if not text:
            continue
        try:
            raw[field_name] = float(text) if field_name == "requestsPerSecond" else int(text)
        except ValueError:
            raise ConfigError(f"{setting}={text!r} is not a number") from None
    try:
        return parse_limits(raw or None, cluster=True)
    except InvalidLimits as exc:
        # The longest field name first: maxConcurrentRuns is a prefix of another.
        named = sorted(_LIMIT_SETTINGS.items(), key=lambda item: -len(item[1]))
        setting = next(s for s, f in named if f in str(exc))
        raise ConfigError(f"{setting}: {str(exc).replace('spec.limits.', '')}") from None


def _default_namespaces(env: Mapping[str, str]) -> selectors.LabelSelector:
    """Which namespaces the operator-level token serves: none unless the installer says
    (`*` for all, written out, or a label selector), so a fresh install lends its token
    to no team by accident."""
    raw = env.get("DEFAULT_CONNECTION_NAMESPACE_SELECTOR", "").strip()
    if not raw:
        return selectors.NOTHING
    if raw == "*":
        return selectors.EVERYTHING
    try:
        return selectors.parse(raw, where="DEFAULT_CONNECTION_NAMESPACE_SELECTOR")
    except selectors.SelectorError as exc:
        raise ConfigError(str(exc)) from None


def _backoff_base(env: Mapping[str, str]) -> float:
    value = _number(env, "RETRY_BACKOFF_BASE_SECONDS", 10.0, minimum=0.1)
    if value > 300:
        raise ConfigError(
            f"RETRY_BACKOFF_BASE_SECONDS={value:g} must be at most 300 (the back-off's cap)"
        )
    return value
