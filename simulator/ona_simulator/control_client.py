"""Clients of the simulator's control API, for tests and scripts: sync and async twins.

Both take the control URL (`RunningSimulator.control_url`, or the base URL followed by
`/_simulator`). Fault knobs are the control API's own names: `latency_ms`, `error_429`,
`error_500`, `error_503`, `drop`, `lost_response`, `lost_response_mode`, `hang_ms`,
`retry_after_s` and `count`. The rate limit's fields are those of `rate_limit_body`.
"""

from __future__ import annotations

from typing import Any, cast

import httpx

JSON = dict[str, Any]


class SimulatorControlError(Exception):
    """The control API refused a request; the message is its answer."""


def _task_body(
    *,
    task_id: str | None,
    environment_id: str | None,
    reference: str,
    name: str,
    command: str,
    description: str,
    creator_id: str | None,
    spec: JSON | None,
) -> JSON:
    body: JSON = {
        "reference": reference,
        "name": name,
        "command": command,
        "description": description,
    }
    for key, value in (
        ("id", task_id),
        ("environmentId", environment_id),
        ("creatorId", creator_id),
        ("spec", spec),
    ):
        if value is not None:
            body[key] = value
    return body


def _phase_body(phase: str, failure_message: str | None) -> JSON:
    body: JSON = {"phase": phase}
    if failure_message is not None:
        body["failureMessage"] = failure_message
    return body


def rate_limit_body(
    requests_per_second: float,
    *,
    burst: int | None = None,
    scope: str = "global",
    retry_after: str | int = "computed",
    answer: str = "connect",
    methods: list[str] | None = None,
) -> JSON:
    """The body of `PUT /_simulator/rate-limit`: `scope` "global" or "token",
    `retry_after` "computed", "none" or seconds, `answer` "connect" or "bare", `methods`
    the methods limited (None: all); `burst` defaults to the rate, rounded up."""
    body: JSON = {
        "requestsPerSecond": requests_per_second,
        "scope": scope,
        "retryAfter": retry_after,
        "answer": answer,
    }
    if burst is not None:
        body["burst"] = burst
    if methods is not None:
        body["methods"] = methods
    return body


def _decode(response: httpx.Response) -> JSON:
    if response.status_code >= 400:
        raise SimulatorControlError(
            f"{response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code}: {response.text}"
        )
    return cast(JSON, response.json())


class SimulatorControl:
    """Synchronous client of the control API."""

    def __init__(self, control_url: str, *, timeout: float = 10.0) -> None:
        self.control_url = control_url.rstrip("/")
        self._http = httpx.Client(base_url=self.control_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self, method: str, path: str, body: JSON | None = None, params: dict[str, str] | None = None
    ) -> JSON:
        return _decode(self._http.request(method, path, json=body, params=params))

    def health(self) -> JSON:
        return self._call("GET", "/health")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def seed_task(
        self,
        *,
        task_id: str | None = None,
        environment_id: str | None = None,
        reference: str = "",
        name: str = "",
        command: str = "",
        description: str = "",
        creator_id: str | None = None,
        spec: JSON | None = None,
    ) -> JSON:
        """Create a task directly; returns the Task message as GetTask would show it."""
        body = _task_body(
            task_id=task_id,
            environment_id=environment_id,
            reference=reference,
            name=name,
            command=command,
            description=description,
            creator_id=creator_id,
            spec=spec,
        )
        return cast(JSON, self._call("POST", "/tasks", body)["task"])

    def tasks(self) -> list[JSON]:
        return cast(list[JSON], self._call("GET", "/tasks")["tasks"])

    def set_phase(self, execution_id: str, phase: str, failure_message: str | None = None) -> JSON:
        return self._call(
            "POST", f"/executions/{execution_id}/phase", _phase_body(phase, failure_message)
        )

    def replay(self, execution_id: str, status_version: int | str) -> JSON:
        body = {"statusVersion": str(status_version)}
        return self._call("POST", f"/executions/{execution_id}/replay", body)

    def clear_replay(self, execution_id: str) -> JSON:
        return self._call("DELETE", f"/executions/{execution_id}/replay")

    def calls(self, method: str | None = None) -> list[JSON]:
        params = {"method": method} if method else {}
        return cast(list[JSON], self._call("GET", "/calls", params=params)["calls"])

    def clear_calls(self) -> None:
        self._call("DELETE", "/calls")

    def executions(self) -> list[JSON]:
        """Every execution with full state: `execution`, `served`, `statusVersions`, ..."""
        return cast(list[JSON], self._call("GET", "/executions")["executions"])

    def execution(self, execution_id: str) -> JSON:
        return self._call("GET", f"/executions/{execution_id}")

    def add_token(self, token: str, read_only: bool = False, subject_id: str | None = None) -> str:
        body: JSON = {"token": token, "readOnly": read_only}
        if subject_id is not None:
            body["subjectId"] = subject_id
        return str(self._call("POST", "/tokens", body)["subjectId"])

    def subject_of(self, token: str) -> str:
        return str(self._call("POST", "/tokens/lookup", {"token": token})["subjectId"])

    def revoke_token(self, token: str) -> None:
        self._call("POST", "/tokens/revoke", {"token": token})

    def set_faults(self, method: str, **knobs: Any) -> JSON:
        return self._call("PUT", f"/faults/{method}", knobs)

    def faults(self) -> JSON:
        return self._call("GET", "/faults")

    def clear_faults(self, method: str | None = None) -> None:
        self._call("DELETE", f"/faults/{method}" if method else "/faults")

    def set_unimplemented(self, method: str) -> list[str]:
        """Make `method` (`service/method`) answer `unimplemented`; the methods switched off."""
        return cast(list[str], self._call("POST", "/unimplemented", {"method": method})["methods"])

    def unimplemented(self) -> list[str]:
        return cast(list[str], self._call("GET", "/unimplemented")["methods"])

    def clear_unimplemented(self, method: str | None = None) -> list[str]:
        """Serve `method` again, or every method when None."""
        body = {"method": method} if method else None
        return cast(list[str], self._call("DELETE", "/unimplemented", body)["methods"])

    def seed(self, seed: int) -> None:
        self._call("POST", "/seed", {"seed": seed})

    def disconnect_watchers(self) -> int:
        return int(self._call("POST", "/watchers/disconnect")["closed"])

    def watch_streams(self) -> list[JSON]:
        """WatchEvents streams, open and recently ended: environmentId, openedAt, closedAt."""
        return list(self._call("GET", "/watchers")["streams"])

    def execution_log(self, execution_id: str) -> list[str]:
        """The lines the execution has printed so far."""
        return list(self._call("GET", f"/logs/{execution_id}")["lines"])

    def set_logs_token_ttl(self, seconds: float) -> JSON:
        return self._call("PUT", "/log-settings", {"tokenTtlSeconds": seconds})

    def logs_settings(self) -> JSON:
        return self._call("GET", "/log-settings")

    def set_rate_limit(self, requests_per_second: float, **fields: Any) -> JSON:
        """Limit the API's calls (fields: see `rate_limit_body`); returns the limit's state."""
        return self._call("PUT", "/rate-limit", rate_limit_body(requests_per_second, **fields))

    def rate_limit(self) -> JSON:
        """`{rule, admitted, refused}`: the limit (null when off) and the calls it counted."""
        return self._call("GET", "/rate-limit")

    def clear_rate_limit(self) -> None:
        self._call("DELETE", "/rate-limit")

    def set_log_faults(self, **knobs: Any) -> JSON:
        """Faults of the log endpoint: error_502, error_401, drop, drop_after_lines, count."""
        return self._call("PUT", "/log-faults", knobs)

    def clear_log_faults(self) -> None:
        self._call("DELETE", "/log-faults")

    def seed_project(self, **fields: Any) -> JSON:
        """A project (`id`, `name`, `createDelay`, `startDelay`, `stopDelay`, `deleteDelay`,
        `idleTimeout`, `failOnStart`); returns it."""
        return cast(JSON, self._call("POST", "/projects", fields)["project"])

    def seed_environment(self, **fields: Any) -> JSON:
        """An environment (`id`, `projectId`, `name`, `phase`, `creatorId` and the timing
        fields of a project); returns the Environment message."""
        return cast(JSON, self._call("POST", "/environments", fields)["environment"])

    def environments(self) -> list[JSON]:
        return cast(list[JSON], self._call("GET", "/environments")["environments"])

    def environment(self, environment_id: str) -> JSON:
        return self._call("GET", f"/environments/{environment_id}")

    def set_environment_phase(
        self, environment_id: str, phase: str, failure_message: str | None = None
    ) -> JSON:
        body = _phase_body(phase, failure_message)
        return self._call("POST", f"/environments/{environment_id}/phase", body)


class AsyncSimulatorControl:
    """Asynchronous twin of `SimulatorControl`, for tests that run in an event loop."""

    def __init__(self, control_url: str, *, timeout: float = 10.0) -> None:
        self.control_url = control_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.control_url, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSimulatorControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _call(
        self, method: str, path: str, body: JSON | None = None, params: dict[str, str] | None = None
    ) -> JSON:
        return _decode(await self._http.request(method, path, json=body, params=params))

    async def health(self) -> JSON:
        return await self._call("GET", "/health")

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def seed_task(
        self,
        *,
        task_id: str | None = None,
        environment_id: str | None = None,
        reference: str = "",
        name: str = "",
        command: str = "",
        description: str = "",
        creator_id: str | None = None,
        spec: JSON | None = None,
    ) -> JSON:
        body = _task_body(
            task_id=task_id,
            environment_id=environment_id,
            reference=reference,
            name=name,
            command=command,
            description=description,
            creator_id=creator_id,
            spec=spec,
        )
        return cast(JSON, (await self._call("POST", "/tasks", body))["task"])

    async def tasks(self) -> list[JSON]:
        return cast(list[JSON], (await self._call("GET", "/tasks"))["tasks"])

    async def set_phase(
        self, execution_id: str, phase: str, failure_message: str | None = None
    ) -> JSON:
        return await self._call(
            "POST", f"/executions/{execution_id}/phase", _phase_body(phase, failure_message)
        )

    async def replay(self, execution_id: str, status_version: int | str) -> JSON:
        body = {"statusVersion": str(status_version)}
        return await self._call("POST", f"/executions/{execution_id}/replay", body)

    async def clear_replay(self, execution_id: str) -> JSON:
        return await self._call("DELETE", f"/executions/{execution_id}/replay")

    async def calls(self, method: str | None = None) -> list[JSON]:
        params = {"method": method} if method else {}
        return cast(list[JSON], (await self._call("GET", "/calls", params=params))["calls"])

    async def clear_calls(self) -> None:
        await self._call("DELETE", "/calls")

    async def executions(self) -> list[JSON]:
        return cast(list[JSON], (await self._call("GET", "/executions"))["executions"])

    async def execution(self, execution_id: str) -> JSON:
        return await self._call("GET", f"/executions/{execution_id}")

    async def add_token(
        self, token: str, read_only: bool = False, subject_id: str | None = None
    ) -> str:
        body: JSON = {"token": token, "readOnly": read_only}
        if subject_id is not None:
            body["subjectId"] = subject_id
        return str((await self._call("POST", "/tokens", body))["subjectId"])

    async def subject_of(self, token: str) -> str:
        return str((await self._call("POST", "/tokens/lookup", {"token": token}))["subjectId"])

    async def revoke_token(self, token: str) -> None:
        await self._call("POST", "/tokens/revoke", {"token": token})

    async def set_faults(self, method: str, **knobs: Any) -> JSON:
        return await self._call("PUT", f"/faults/{method}", knobs)

    async def faults(self) -> JSON:
        return await self._call("GET", "/faults")

    async def clear_faults(self, method: str | None = None) -> None:
        await self._call("DELETE", f"/faults/{method}" if method else "/faults")

    async def set_unimplemented(self, method: str) -> list[str]:
        answer = await self._call("POST", "/unimplemented", {"method": method})
        return cast(list[str], answer["methods"])

    async def unimplemented(self) -> list[str]:
        return cast(list[str], (await self._call("GET", "/unimplemented"))["methods"])

    async def clear_unimplemented(self, method: str | None = None) -> list[str]:
        body = {"method": method} if method else None
        answer = await self._call("DELETE", "/unimplemented", body)
        return cast(list[str], answer["methods"])

    async def seed(self, seed: int) -> None:
        await self._call("POST", "/seed", {"seed": seed})

    async def disconnect_watchers(self) -> int:
        return int((await self._call("POST", "/watchers/disconnect"))["closed"])

    async def execution_log(self, execution_id: str) -> list[str]:
        return list((await self._call("GET", f"/logs/{execution_id}"))["lines"])

    async def set_logs_token_ttl(self, seconds: float) -> JSON:
        return await self._call("PUT", "/log-settings", {"tokenTtlSeconds": seconds})

    async def logs_settings(self) -> JSON:
        return await self._call("GET", "/log-settings")

    async def set_rate_limit(self, requests_per_second: float, **fields: Any) -> JSON:
        body = rate_limit_body(requests_per_second, **fields)
        return await self._call("PUT", "/rate-limit", body)

    async def rate_limit(self) -> JSON:
        return await self._call("GET", "/rate-limit")

    async def clear_rate_limit(self) -> None:
        await self._call("DELETE", "/rate-limit")

    async def set_log_faults(self, **knobs: Any) -> JSON:
        return await self._call("PUT", "/log-faults", knobs)

    async def clear_log_faults(self) -> None:
        await self._call("DELETE", "/log-faults")

    async def seed_project(self, **fields: Any) -> JSON:
        return cast(JSON, (await self._call("POST", "/projects", fields))["project"])

    async def seed_environment(self, **fields: Any) -> JSON:
        return cast(JSON, (await self._call("POST", "/environments", fields))["environment"])

    async def environments(self) -> list[JSON]:
        return cast(list[JSON], (await self._call("GET", "/environments"))["environments"])

    async def environment(self, environment_id: str) -> JSON:
        return await self._call("GET", f"/environments/{environment_id}")

    async def set_environment_phase(
        self, environment_id: str, phase: str, failure_message: str | None = None
    ) -> JSON:
        body = _phase_body(phase, failure_message)
        return await self._call("POST", f"/environments/{environment_id}/phase", body)
