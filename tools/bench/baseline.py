"""BENCHMARK BASELINE -- DELIBERATELY UNSAFE -- NOT SHIPPED, NOT FOR USE.

This is the "minimal kopf operator" that `scripts/bench-operator --contender baseline`
measures the real operator against (issue 9). It is what a first attempt at a TaskRun
operator with kopf looks like, and nothing more:

- `kopf.on.create` -> StartTask (CreateTask first for an inline `spec.task`) with the
  operator-level token, then `status.taskExecutionId` and the phase through kopf's patch;
- a kopf timer per TaskRun (every ONA_POLL_INTERVAL seconds, 5 by default) ->
  GetTaskExecution -> the phase and a `Succeeded` condition through kopf's patch, when the
  phase changed; the timer stops once the phase is final;
- no start claim, no finalizer, no Events, no adoption, no statusVersion ordering, no
  connections, no policy, no deletion handling.

It is unsafe on purpose, and the figures it gives are the price of that:

- a StartTask whose answer is lost (timeout, dropped connection, crash) is retried by
  kopf and starts the task a second time;
- a crash between StartTask and the status patch loses the execution: after a restart
  kopf sees the create as not handled and starts the task again;
- a TaskRun deleted while its execution runs leaves the execution running;
- an older GetTaskExecution answer can overwrite a newer phase.

kopf gives every TaskRun with a timer a finalizer of its own (so that it can stop the timer
before the object goes). The baseline removes that, as the issue's table describes ("no
finalizer"); BASELINE_KOPF_FINALIZER=1 keeps kopf's default, one more metadata write per
TaskRun.

Run: `python -m tools.bench.baseline`, with KUBECONFIG (or in-cluster credentials),
ONA_BASE_URL, ONA_API_TOKEN and WATCH_NAMESPACES (comma-separated; all namespaces when
empty); ONA_POLL_INTERVAL (5) and ONA_REQUEST_TIMEOUT (10) are optional. Logging is
`kopf run`'s default (INFO, kopf's full format) with kopf and httpx at WARNING, as the
operator has them. Only `spec.taskRef.id` and `spec.task` TaskRuns are supported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import kopf

GROUP, VERSION, PLURAL = "automation.ona.com", "v1alpha1", "taskruns"
SERVICE = "gitpod.v1.EnvironmentAutomationService"
PHASE_PREFIX = "TASK_EXECUTION_PHASE_"
FINAL_PHASES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
IDENTITY = "ona-taskrun-bench-baseline"
KEEP_FINALIZER_ENV = "BASELINE_KOPF_FINALIZER"
# kopf logs this (at DEBUG) as it starts watching; the benchmark waits for it, so that its
# clock does not include the baseline's start-up.
WATCHING_LOGGER = "kopf._cogs.clients.watching"

log = logging.getLogger("bench-baseline")


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    base_url: str
    token: str
    namespaces: tuple[str, ...]
    interval: float = 5.0
    request_timeout: float = 10.0
    keep_kopf_finalizer: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BaselineConfig:
        missing = [key for key in ("ONA_BASE_URL", "ONA_API_TOKEN") if not env.get(key)]
        if missing:
            raise ValueError(f"set {' and '.join(missing)}")
        return cls(
            base_url=env["ONA_BASE_URL"].rstrip("/"),
            token=env["ONA_API_TOKEN"],
            namespaces=tuple(
                ns.strip() for ns in env.get("WATCH_NAMESPACES", "").split(",") if ns.strip()
            ),
            interval=float(env.get("ONA_POLL_INTERVAL") or 5),
            request_timeout=float(env.get("ONA_REQUEST_TIMEOUT") or 10),
            keep_kopf_finalizer=env.get(KEEP_FINALIZER_ENV, "") == "1",
        )


class Ona:
    """Connect JSON unary calls with the operator-level token, nothing else: no retry, no
    circuit breaker, no redaction."""

    def __init__(self, config: BaselineConfig) -> None:
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            timeout=config.request_timeout,
            headers={"Authorization": f"Bearer {config.token}"},
        )

    async def call(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self._http.post(f"/{SERVICE}/{method}", json=dict(body))
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    async def aclose(self) -> None:
        await self._http.aclose()


def phase_of(execution: Mapping[str, Any]) -> str:
    """The TaskRun phase for a remote execution: its phase without the enum prefix."""
    remote = str((execution.get("status") or {}).get("phase") or "")
    phase = remote.removeprefix(PHASE_PREFIX)
    return "PENDING" if phase in ("", "UNSPECIFIED") else phase


def mirror(execution: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The status fields the baseline writes for an execution: the phase and a `Succeeded`
    condition (True, False once failed or stopped, else Unknown)."""
    phase = phase_of(execution)
    succeeded = {"SUCCEEDED": "True", "FAILED": "False", "STOPPED": "False"}.get(phase, "Unknown")
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "phase": phase,
        "conditions": [
            {
                "type": "Succeeded",
                "status": succeeded,
                "reason": phase.capitalize(),
                "lastTransitionTime": stamp,
            }
        ],
    }


def build_registry(config: BaselineConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    clients: list[Ona] = []

    def ona() -> Ona:
        return clients[0]

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf would post an Event for each handler's log line; the baseline posts none.
        settings.posting.enabled = False
        clients.append(Ona(config))
        log.info(
            "bench baseline (unsafe, not shipped) started: %s, namespaces %s, timer every %s s",
            config.base_url,
            ", ".join(config.namespaces) or "all",
            config.interval,
        )

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of its own has none of kopf's default login handlers.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for client in clients:
            await client.aclose()

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def start(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        task_ref = spec.get("taskRef") or {}
        task_id = str(task_ref.get("id") or "")
        inline = spec.get("task")
        if not task_id and inline:
            task_spec: dict[str, Any] = {"command": inline["command"]}
            if inline.get("env"):
                task_spec["env"] = inline["env"]
            created = await ona().call(
                "CreateTask",
                {
                    "environmentId": inline["environmentId"],
                    "metadata": {
                        "name": inline["name"],
                        "description": inline.get("description", ""),
                    },
                    "spec": task_spec,
                },
            )
            task_id = str(created["task"]["id"])
        if not task_id:
            raise kopf.PermanentError("the baseline runs spec.taskRef.id or spec.task only")
        started = await ona().call("StartTask", {"id": task_id})
        execution = started["taskExecution"]
        patch.status.update(
            {"taskId": task_id, "taskExecutionId": str(execution["id"]), **mirror(execution)}
        )

    def running(status: kopf.Status, **_: Any) -> bool:
        return status.get("phase") not in FINAL_PHASES

    @kopf.timer(
        GROUP, VERSION, PLURAL, id="poll", interval=config.interval, when=running, registry=registry
    )
    async def poll(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
        execution_id = status.get("taskExecutionId")
        if not execution_id:
            return  # not started yet
        got = await ona().call("GetTaskExecution", {"id": execution_id})
        fields = mirror(got["taskExecution"])
        if fields["phase"] != status.get("phase"):
            patch.status.update(fields)

    if not config.keep_kopf_finalizer:
        drop_timer_finalizers(registry)
    return registry


def drop_timer_finalizers(registry: kopf.OperatorRegistry) -> None:
    """kopf marks every timer as needing a finalizer and offers no switch for it; the
    baseline has no finalizer, so its timer is registered again without the mark."""
    spawning = registry._spawning
    spawning._handlers[:] = [
        dataclasses.replace(handler, requires_finalizer=False) for handler in spawning._handlers
    ]


def main() -> int:
    try:
        config = BaselineConfig.from_env(os.environ)
    except ValueError as exc:
        print(f"bench baseline: configuration error: {exc}", file=sys.stderr)
        return 2
    kopf.configure()  # what `kopf run` does by default: INFO, kopf's full format
    # As the operator does (ona_taskrun.observability.logs): kopf and httpx log every handler
    # run and every request at INFO, which would cost the baseline CPU the operator does not
    # spend.
    for name in ("kopf", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger(WATCHING_LOGGER).setLevel(logging.DEBUG)
    kopf.run(
        registry=build_registry(config),
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        identity=IDENTITY,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
