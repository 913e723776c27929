"""Tekton CustomRuns at the edge (`TEKTON_CUSTOM_TASKS=true`): watch events in, one look
per CustomRun out.

A look finds the CustomRun's child TaskRun (the TaskRun watch keeps the newest body of
each child; otherwise one read by its name), reads the template a `customRef` names,
creates the child when there is none (409 AlreadyExists: the name is the idempotency key,
and the TaskRun found under it counts only if `customrun_rules.is_child` says so), asks it
to stop (`spec.desiredPhase: STOPPED`) once the CustomRun is cancelled, and writes the
CustomRun's status with a resourceVersion precondition. Looks run in the reconciler's work
queue, so a standby replica makes none; a child's watch events wake its CustomRun.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..clients.kube import GROUP as TASKRUN_GROUP
from ..clients.kube import PLURAL as TASKRUNS
from ..clients.kube import VERSION as TASKRUN_VERSION
from ..clients.kube import Conflict, Gone, KubeClient, KubeError
from ..observability import logs
from ..rules import customrun as rules
from ..rules.conditions import status_patch
from ..rules.customrun import Child, CustomRun, InvalidCustomRun, Problem

log = logging.getLogger(__name__)
KEY_PREFIX = f"{rules.KIND}:"
# A look at a CustomRun still running, should a wake-up have been missed.
RESYNC_SECONDS = 60.0
# Looking again after a refused create (403, or the API server away).
REFUSED_RETRY = 30.0


def is_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX)


def key_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{KEY_PREFIX}{meta.get('namespace')}/{meta.get('name')}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Made(enum.Enum):
    CREATED = "Created"  # created now
    FOUND = "Found"  # AlreadyExists: the TaskRun under the child's name, read back
    INVALID = "Invalid"  # the API server refused the TaskRun (400, 422)
    REFUSED = "Refused"  # another refusal (403, ...): try again later


@dataclass(frozen=True)
class Creation:
    made: Made
    body: Mapping[str, Any] | None = None
    message: str = ""


@dataclass
class _Seen:
    """The newest body of a CustomRun's child from the TaskRun watch; `gone` once a DELETED
    event came (the body is kept: a child deleted right after it ended, by its
    ttlSecondsAfterFinished, still tells how it ended)."""

    body: Mapping[str, Any]
    gone: bool = False


class CustomRuns:
    """The CustomRuns of ours this operator watches, and their child TaskRuns."""

    def __init__(
        self, enqueue: Callable[[str], None], *, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self.kube: KubeClient | None = None
        self._enqueue = enqueue
        self._clock = clock
        self._bodies: dict[str, dict[str, Any]] = {}
        self._children: dict[str, _Seen] = {}
        self._posting: set[asyncio.Task[None]] = set()  # Events on their way

    # ------------------------------------------------------------------ intake

    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event of a CustomRun; those of other custom task controllers are left
        alone."""
        key = key_of(body)
        if event_type == "DELETED":
            self._bodies.pop(key, None)
            self._children.pop(key, None)
            return
        if not rules.is_ours(body):
            return
        old = self._bodies.get(key)
        if old is not None and _rv(old) >= _rv(body) > 0:
            return
        self._bodies[key] = _slim(body)
        # A status-only change (most often our own write) needs no new look; a cancel
        # (spec.status) changes the generation.
        if old is None or _generation(old) != _generation(body) or _uid(old) != _uid(body):
            self._enqueue(key)

    def observe_taskrun(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event of a TaskRun: keep the newest body of a CustomRun's child (only a
        TaskRun under the name its controlling CustomRun's child has), and wake that
        CustomRun."""
        owner, owner_uid = rules.controller_of(body)
        if not owner_uid:
            return
        meta = body.get("metadata") or {}
        if meta.get("name") != rules.child_name(owner, owner_uid):
            return
        key = f"{KEY_PREFIX}{meta.get('namespace')}/{owner}"
        known = self._bodies.get(key)
        if known is not None and rules.is_done(known.get("status") or {}):
            self._children.pop(key, None)
            return
        seen = self._children.get(key)
        if event_type == "DELETED":
            if seen is not None and _uid(seen.body) == _uid(body):
                seen.gone = True
                self._enqueue(key)
            return
        if seen is not None and _uid(seen.body) == _uid(body) and _rv(seen.body) >= _rv(body):
            return
        self._children[key] = _Seen(_slim(body))
        self._enqueue(key)

    async def stop(self) -> None:
        """Let the Events on their way finish."""
        await asyncio.gather(*self._posting, return_exceptions=True)

    @property
    def remembered(self) -> int:
        return len(self._bodies) + len(self._children)

    # ------------------------------------------------------------------ a look

    async def reconcile(self, key: str) -> float | None:
        """Look at one CustomRun; returns when to look again."""
        body = self._bodies.get(key)
        if body is None or self.kube is None:
            return None
        run = rules.parse(body)
        if run.done:
            self._children.pop(key, None)
            return None
        name = rules.child_name(run.name, run.uid)
        found = await self._child_body(key, run, name)
        recorded_name, recorded_uid = run.recorded_child
        problem: Problem | None = None
        manifest: dict[str, Any] | None = None
        events: list[tuple[str, str, str]] = []
        to_create = found is None and not run.cancelled and not recorded_uid
        if to_create or (found is not None and _uid(found) != recorded_uid):
            # To create the child, or to tell whether a TaskRun under its name is it.
            manifest, problem = await self._manifest(run)
        child: Child | None = None
        again: float | None = RESYNC_SECONDS
        if found is not None:
            child, problem = self._accept(run, found, manifest, name, problem)
        elif recorded_uid and recorded_name == name:
            if not run.cancelled:
                problem = Problem(
                    "False",
                    "TaskRunDeleted",
                    f"its TaskRun {name} was deleted before it ended; a CustomRun starts "
                    "its TaskRun once only",
                )
        elif problem is None and manifest is not None and not run.cancelled:
            creation = await self._create(run, manifest)
            if creation.made is Made.CREATED and creation.body is not None:
                child = rules.parse_child(creation.body)
                self._children[key] = _Seen(_slim(creation.body))
                events.append(("Normal", "Created", f"created TaskRun {child.name}"))
            elif creation.made is Made.FOUND and creation.body is not None:
                child, problem = self._accept(run, creation.body, manifest, name, problem)
            elif creation.made is Made.INVALID:
                problem = Problem(
                    "False", "InvalidTaskRun", f"cannot create TaskRun {name}: {creation.message}"
                )
            else:
                problem = Problem(
                    "Unknown", "CreateRefused", f"cannot create TaskRun {name}: {creation.message}"
                )
                again = REFUSED_RETRY
        if rules.wants_stop(run, child):
            assert child is not None
            child = await self._stop(key, run, child)
            events.append(
                ("Normal", "StopRequested", f"asked TaskRun {name} to stop: {run.cancel_message}")
            )
        status = rules.status(run, child, self._clock(), problem)
        if not await self._write_status(key, body, status):
            return 1.0  # the CustomRun changed meanwhile: its newer version is coming
        verdict = status["conditions"][0]
        if verdict["status"] == "False" and child is None:
            type_ = "Normal" if verdict["reason"] == rules.REASON_CANCELLED else "Warning"
            events.append((type_, verdict["reason"], verdict["message"]))
        self._post(body, events)
        if verdict["status"] in ("True", "False"):
            self._children.pop(key, None)
            return None
        return again

    async def _child_body(self, key: str, run: CustomRun, name: str) -> Mapping[str, Any] | None:
        """The TaskRun under the child's name: as the watch last showed it, else read."""
        assert self.kube is not None
        seen = self._children.get(key)
        if seen is not None and (seen.body.get("metadata") or {}).get("name") == name:
            if not seen.gone:
                return seen.body
            return seen.body if rules.parse_child(seen.body).final else None
        try:
            return await self.kube.get_taskrun(run.namespace, name)
        except Gone:
            return None

    async def _manifest(self, run: CustomRun) -> tuple[dict[str, Any] | None, Problem | None]:
        request = run.request
        if isinstance(request, InvalidCustomRun):
            return None, rules.problem_of(request)
        template = None
        if request.template:
            assert self.kube is not None
            try:
                template = await self.kube.get_taskrun(run.namespace, request.template)
            except Gone:
                template = None
        try:
            return rules.child_manifest(run, template), None
        except InvalidCustomRun as exc:
            return None, rules.problem_of(exc)

    def _accept(
        self,
        run: CustomRun,
        body: Mapping[str, Any],
        manifest: Mapping[str, Any] | None,
        name: str,
        problem: Problem | None,
    ) -> tuple[Child | None, Problem | None]:
        expected = manifest.get("spec") if manifest is not None else None
        if rules.is_child(run, body, expected):
            return rules.parse_child(body), None
        if problem is not None and rules.controller_of(body)[1] == run.uid:
            return None, problem  # ours by its owner, but this CustomRun cannot be run anyway
        return None, Problem(
            "False",
            "TaskRunNameTaken",
            f"TaskRun {name} exists but is not this CustomRun's child (another controller, or "
            "a spec other than the one this CustomRun asks for): it is left alone",
        )

    async def _create(self, run: CustomRun, manifest: Mapping[str, Any]) -> Creation:
        assert self.kube is not None
        name = str(manifest["metadata"]["name"])
        try:
            created = await self.kube.create_object(TASKRUNS, run.namespace, manifest)
        except Conflict:
            try:
                return Creation(Made.FOUND, await self.kube.get_taskrun(run.namespace, name))
            except Gone:
                # Created and deleted again since: the next look tells which.
                return Creation(Made.REFUSED, message="it was deleted as it was created")
        except KubeError as exc:
            message = logs.scrub(_message(exc))
            if exc.status in (400, 422):
                return Creation(Made.INVALID, message=message)
            if exc.status == 0 or exc.status >= 500:
                raise  # the API server is away: the work queue looks again
            return Creation(Made.REFUSED, message=message)
        log.info("%s: created TaskRun %s", run.key, name)
        return Creation(Made.CREATED, created)

    async def _stop(self, key: str, run: CustomRun, child: Child) -> Child:
        """`spec.desiredPhase: STOPPED` on the child (that one only: its uid is the patch's
        precondition); the TaskRun's own rules stop its execution."""
        assert self.kube is not None
        path = f"/apis/{TASKRUN_GROUP}/{TASKRUN_VERSION}/namespaces/{run.namespace}"
        path += f"/{TASKRUNS}/{child.name}"
        patch = {"metadata": {"uid": child.uid}, "spec": {"desiredPhase": "STOPPED"}}
        try:
            updated = await self.kube.merge_patch(path, patch)
        except (Gone, Conflict):
            return child  # gone, or another object now: the next look tells
        log.info("%s: cancelled, asked TaskRun %s to stop", run.key, child.name)
        self._children[key] = _Seen(_slim(updated))
        return rules.parse_child(updated)

    async def _write_status(
        self, key: str, body: dict[str, Any], status: Mapping[str, Any]
    ) -> bool:
        assert self.kube is not None
        patch = status_patch(body.get("status") or {}, status)
        if not patch:
            return True
        meta = body["metadata"]
        path = f"/apis/{rules.GROUP}/{rules.VERSION}/namespaces/{meta['namespace']}"
        path += f"/{rules.PLURAL}/{meta['name']}/status"
        request = {
            "metadata": {"resourceVersion": str(meta.get("resourceVersion", ""))},
            "status": patch,
        }
        try:
            updated = await self.kube.merge_patch(path, request)
        except Conflict:
            return False
        except Gone:
            return True
        updated.setdefault("kind", rules.KIND)
        updated.setdefault("apiVersion", rules.API_VERSION)
        if key in self._bodies and _rv(updated) > _rv(self._bodies[key]):
            self._bodies[key] = updated
        return True

    def _post(self, body: Mapping[str, Any], events: list[tuple[str, str, str]]) -> None:
        if self.kube is None:
            return
        for type_, reason, message in events:
            task = asyncio.get_running_loop().create_task(
                # The message may quote an API answer or a task's text: no token goes out.
                self.kube.post_event(body, type_, reason, logs.scrub(message))
            )
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)


def _slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A child's body without what nothing here reads (managedFields: most of its size)."""
    kept = dict(body)
    meta = kept.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        kept["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return kept


def _message(exc: KubeError) -> str:
    return str(exc).removeprefix(f"Kubernetes API answered {exc.status}: ")


def _rv(body: Mapping[str, Any]) -> int:
    raw = (body.get("metadata") or {}).get("resourceVersion", "")
    return int(raw) if str(raw).isdigit() else 0


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid", ""))


def _generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)
