"""`kubectl ona`: read a TaskRun's log, describe it, run it again, stop it.

Installed as the console script `kubectl-ona`, so kubectl finds it as the plugin `ona`.
It acts with the user's own credentials only: the user's kubeconfig (see `kubeconfig`)
for Kubernetes, and for Ona calls (the log) the user's own `ONA_API_TOKEN`, sent to
`--ona-base-url`, `ONA_BASE_URL` or https://app.ona.com/api. Never the operator's token,
and never a base URL read from the cluster (an OnaConnection's author must not be able to
collect users' tokens). Exit codes: 0 done (for `logs -f`: the run succeeded) or the reader
of the output gone (`| head -1`), 1 an error or (for `-f`) a run that ended other than
SUCCEEDED, 2 a usage error. What comes from the cluster or the remote is printed through
`output` (see `terminal`): never a control sequence a terminal would act on.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import traceback
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import yaml

from .. import __version__
from ..clients.ona import DEFAULT_BASE_URL, OnaClient, OnaError, TaskExecution, Unauthenticated
from ..clients.ona.logs import read_log
from ..rules.terminal import clean
from .kube import GROUP, VERSION, Kube, KubeApiError
from .kubeconfig import KubeconfigError, load
from .output import PROG, OutputClosed, Printer, silence_closed, until_reader_leaves
from .render import controller, describe, is_customrun

POLL_SECONDS: Final = 1.0
# Without -f, a running execution's log is printed until it pauses this long.
SETTLE_SECONDS: Final = 1.0
IDLE_SECONDS: Final = 30.0
# The project's own labels and annotations (the operator's claims, a schedule's marks)
# and kubectl's copy of the manifest are not carried over to a rerun.
_NOT_COPIED: Final = ("automation.ona.com/", "kubectl.kubernetes.io/last-applied-configuration")


class CliError(Exception):
    """Ends the command with a message on stderr and exit code 1."""


# ---------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    # The common flags go on the subcommands too (kubectl users put flags anywhere);
    # SUPPRESS there keeps a value given before the subcommand.
    parent = argparse.ArgumentParser(add_help=False)
    _common_flags(parent, None)
    sub_parent = argparse.ArgumentParser(add_help=False)
    _common_flags(sub_parent, argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[parent],
        description="Read the log of an Ona TaskRun, describe it, run it again or stop it. "
        "Uses your kubeconfig, and your own ONA_API_TOKEN for the log.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    logs = commands.add_parser(
        "logs", parents=[sub_parent], help="print the log of a TaskRun's execution"
    )
    logs.add_argument("name", metavar="NAME")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="follow the log until the execution ends"
    )
    logs.add_argument("--step", metavar="ID", help="only the lines of this step (id or label)")
    logs.add_argument(
        "--timestamps", action="store_true", help="prefix each line with when it was read"
    )

    desc = commands.add_parser(
        "describe", parents=[sub_parent], help="show a TaskRun in detail, with its Events"
    )
    desc.add_argument("name", metavar="NAME")
    _output_flag(desc)

    rerun = commands.add_parser(
        "rerun", parents=[sub_parent], help="create a new TaskRun with the same spec"
    )
    rerun.add_argument("name", metavar="NAME")
    rerun.add_argument("-f", "--follow", action="store_true", help="then follow its log")
    _output_flag(rerun)

    stop = commands.add_parser(
        "stop", parents=[sub_parent], help="stop a TaskRun (spec.desiredPhase: STOPPED)"
    )
    stop.add_argument("name", metavar="NAME")
    _output_flag(stop)
    return parser


def _common_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-n", "--namespace", default=default, help="the TaskRun's namespace")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    parser.add_argument(
        "--ona-base-url",
        default=default,
        help=f"the Ona API base URL (default: $ONA_BASE_URL or {DEFAULT_BASE_URL})",
    )


def _output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=("json", "yaml"), help="print the object instead of a summary"
    )


# ---------------------------------------------------------------------- commands


class Cli:
    def __init__(
        self, args: argparse.Namespace, kube: Kube, namespace: str, printer: Printer
    ) -> None:
        self.args = args
        self.kube = kube
        self.namespace = namespace
        self.printer = printer

    def say(self, text: str) -> None:
        self.printer.lines(text)

    def note(self, text: str) -> None:
        self.printer.note(text)

    def dump(self, obj: Any) -> None:
        self.printer.document(document(obj, self.args.output))

    async def get(self, name: str) -> dict[str, Any]:
        try:
            return await self.kube.get_taskrun(self.namespace, name)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            raise CliError(
                f'taskruns.{GROUP} "{name}" not found in namespace "{self.namespace}"'
            ) from None

    async def run(self) -> int:
        command = self.args.command
        if command == "logs":
            return await self.logs(self.args.name, self.args.follow)
        if command == "describe":
            return await self.describe(self.args.name)
        if command == "rerun":
            return await self.rerun(self.args.name)
        return await self.stop(self.args.name)

    # -- describe / rerun / stop -----------------------------------------------------

    async def describe(self, name: str) -> int:
        obj = await self.get(name)
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        events = await self.kube.events(self.namespace, name, uid)
        if self.args.output:
            self.dump({"taskRun": obj, "events": events})
            return 0
        customrun, unread = await self.parent_customrun(obj)
        now = datetime.now(UTC)
        text = describe(obj, events, now, customrun=customrun, unread=unread)
        self.say(text.rstrip("\n"))
        return 0

    async def parent_customrun(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The Tekton CustomRun controlling this TaskRun, if one does, as the user may read
        it; or why it could not be read."""
        ref = controller(obj)
        if ref is None or not is_customrun(ref):
            return None, ""
        name = str(ref.get("name", ""))
        try:
            found = await self.kube.get_customrun(self.namespace, name)
        except KubeApiError as exc:
            if exc.status == 404:
                return None, f"CustomRun {name} is gone"
            if exc.status == 403:
                return None, f"you may not read CustomRun {name}"
            return None, f"CustomRun {name} could not be read ({exc})"
        if str((found.get("metadata") or {}).get("uid", "")) != str(ref.get("uid", "")):
            return None, f"CustomRun {name} is another one now"
        return found, ""

    async def rerun(self, name: str) -> int:
        obj = await self.get(name)
        body = rerun_manifest(obj, self.namespace)
        created = await self.kube.create_taskrun(self.namespace, body)
        new_name = str(created["metadata"]["name"])
        if self.args.output:
            self.dump(created)
        else:
            self.say(new_name)
        if self.args.follow:
            return await self.logs(new_name, follow=True)
        return 0

    async def stop(self, name: str) -> int:
        obj = await self.get(name)
        status = obj.get("status") or {}
        succeeded = _succeeded(status)
        if succeeded.get("status") in ("True", "False"):
            ended = status.get("phase") or succeeded.get("reason")
            self.note(f"TaskRun {name} has already ended ({ended}); nothing to stop")
            updated = obj
        elif (obj.get("spec") or {}).get("desiredPhase") == "STOPPED":
            self.note(f"TaskRun {name} is already being stopped")
            updated = obj
        else:
            updated = await self.kube.patch_spec(self.namespace, name, {"desiredPhase": "STOPPED"})
            if not self.args.output:
                self.say(f"taskrun.{GROUP}/{name} stop requested")
        if self.args.output:
            self.dump(updated)
        return 0

    # -- logs ------------------------------------------------------------------------

    def ona(self) -> OnaClient | None:
        token = os.environ.get("ONA_API_TOKEN", "").strip()
        if not token:
            return None
        if not token.isascii() or not token.isprintable() or " " in token:
            # It goes into an HTTP header; and a token is never printed, not even a wrong one.
            raise CliError(
                "ONA_API_TOKEN holds spaces, control or non-ASCII characters: "
                "it is not an Ona token"
            )
        base = self.args.ona_base_url or os.environ.get("ONA_BASE_URL") or DEFAULT_BASE_URL
        try:
            return OnaClient(base, token, timeout=30.0)
        except ValueError as exc:
            raise CliError(f"cannot use the Ona API at {base!r}: {exc}") from None

    async def logs(self, name: str, follow: bool) -> int:
        # Only reading: once the reader has left (`| grep -q`), stop at once rather than at
        # the next line, which may be long in coming.
        return await until_reader_leaves(self._logs(name, follow), self.printer.out)

    async def _logs(self, name: str, follow: bool) -> int:
        obj = await self.get(name)
        ona = self.ona()
        if ona is None:
            return self.kept_tail(name, obj)
        async with ona:
            execution_id = await self.execution_of(name, obj, follow)
            try:
                return await self.print_log(ona, execution_id, follow)
            except Unauthenticated as exc:
                if exc.method == "ReadLog":
                    raise CliError(
                        f"the log endpoint refused the logs token: {exc.message}"
                    ) from None
                raise CliError(
                    f"the Ona API refused ONA_API_TOKEN ({exc.method}: {exc.message})"
                ) from None
            except OnaError as exc:
                raise CliError(f"reading the log failed: {exc}") from None

    def kept_tail(self, name: str, obj: Mapping[str, Any]) -> int:
        tail = str((obj.get("status") or {}).get("logTail") or "")
        if tail:
            self.say(tail)
            self.note(
                "ONA_API_TOKEN is not set: these are the last lines the operator kept "
                "(status.logTail). For the whole log, set ONA_API_TOKEN to your own Ona "
                "token (and ONA_BASE_URL if your Ona API is not https://app.ona.com/api)."
            )
            return 0
        raise CliError(
            f"TaskRun {name} has no log tail in its status, and ONA_API_TOKEN is not set: "
            "set it to your own Ona token to read the log"
        )

    async def execution_of(self, name: str, obj: Mapping[str, Any], follow: bool) -> str:
        """The TaskRun's execution id; with -f, wait for its start."""
        waited = False
        while True:
            status = obj.get("status") or {}
            execution_id = str(status.get("taskExecutionId") or "")
            if execution_id:
                return execution_id
            succeeded = _succeeded(status)
            why = f"{succeeded.get('reason', '')}: {succeeded.get('message', '')}".strip(": ")
            if succeeded.get("status") in ("True", "False"):
                raise CliError(f"TaskRun {name} ended without an execution ({why})")
            if not follow:
                raise CliError(
                    f"TaskRun {name} has no execution yet ({why or 'waiting for the operator'})"
                )
            if not waited:
                self.note(f"waiting for TaskRun {name} to start ({why or 'not started yet'})")
                waited = True
            await asyncio.sleep(POLL_SECONDS)
            obj = await self.get(name)

    async def print_log(self, ona: OnaClient, execution_id: str, follow: bool) -> int:
        execution = await ona.get_task_execution(execution_id)
        while not execution.status.log_url:
            if execution.is_final or not follow:
                phase = execution.phase.value.removeprefix("TASK_EXECUTION_PHASE_")
                raise CliError(f"execution {execution_id} has no log ({phase})")
            await asyncio.sleep(POLL_SECONDS)
            execution = await ona.get_task_execution(execution_id)
        prefix = self.step_prefix(execution)
        environment_id = execution.metadata.environment_id
        url = execution.status.log_url

        async def token(renew: bool) -> str:
            return await ona.create_environment_logs_token(environment_id)

        # Following waits for the next line as long as it takes; otherwise a log that
        # stops sending is given up after a while.
        idle = None if follow else IDLE_SECONDS
        lines = read_log(lambda t: ona.open_log(url, t, idle_timeout=idle), token)
        settle = None if follow or execution.is_final else SETTLE_SECONDS
        async with aclosing(lines):
            async for line in _until_quiet(lines, settle):
                if prefix is None or line.startswith(prefix):
                    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                    stamp = f"{now}Z "
                    self.say((stamp if getattr(self.args, "timestamps", False) else "") + line)
        if not follow:
            return 0
        while not execution.is_final:
            execution = await ona.get_task_execution(execution_id)
            if not execution.is_final:
                await asyncio.sleep(POLL_SECONDS)
        phase = execution.phase.value.removeprefix("TASK_EXECUTION_PHASE_")
        ended = f"execution {execution_id} ended: {phase}"
        if execution.status.failure_message:
            ended += f": {execution.status.failure_message}"
        self.note(ended)
        return 0 if phase == "SUCCEEDED" else 1

    def step_prefix(self, execution: TaskExecution) -> str | None:
        wanted = getattr(self.args, "step", None)
        if not wanted:
            return None
        steps = [step for group in execution.spec.plan for step in group.steps]
        for step in steps:
            if wanted in (step.id, step.label):
                return f"[{step.label or step.id}] "
        known = ", ".join(f"{s.id} ({s.label})" for s in steps) or "none"
        raise CliError(f"execution {execution.id} has no step {wanted!r}; its steps: {known}")


def document(obj: Any, output: str) -> str:
    """`obj` as `-o json` or `-o yaml` prints it."""
    # ASCII only: every control character, C1 ones too, is written as an escape, so the
    # document is inert in a terminal and reads back exactly.
    if output == "json":
        return json.dumps(obj, indent=2, ensure_ascii=True)
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=False).rstrip()


def rerun_manifest(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """A new TaskRun with the spec of `obj`, named after it by the API server."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", "taskrun"))
    spec = dict(obj.get("spec") or {})
    spec.pop("desiredPhase", None)  # a stopped run's copy must run
    new_meta: dict[str, Any] = {"generateName": f"{name}-", "namespace": namespace}
    for field in ("labels", "annotations"):
        kept = {k: v for k, v in (meta.get(field) or {}).items() if not k.startswith(_NOT_COPIED)}
        if kept:
            new_meta[field] = kept
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskRun",
        "metadata": new_meta,
        "spec": spec,
    }


def _succeeded(status: Mapping[str, Any]) -> dict[str, Any]:
    for cond in status.get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == "Succeeded":
            return cond
    return {}


async def _until_quiet(lines: AsyncIterator[str], settle: float | None) -> AsyncIterator[str]:
    """The lines, ending early once none came for `settle` seconds (None: never)."""
    iterator = aiter(lines)
    while True:
        try:
            if settle is None:
                line = await anext(iterator)
            else:
                line = await asyncio.wait_for(anext(iterator), settle)
        except (StopAsyncIteration, TimeoutError):
            return
        yield line


# ---------------------------------------------------------------------- entry point


async def _main(args: argparse.Namespace, printer: Printer) -> int:
    target = load(args.kubeconfig, args.context)
    kube = Kube(target.server, verify=target.verify, headers=target.headers)
    try:
        return await Cli(args, kube, args.namespace or target.namespace, printer).run()
    finally:
        await kube.aclose()


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command and return its exit code; `out` stands in for stdout."""
    printer = Printer(out or sys.stdout, sys.stderr)
    try:
        try:
            return _run(argv, printer)
        finally:
            # Flushed here, not at exit, where a reader gone would end in a broken pipe
            # report and exit code 120 (`kubectl ona --help | head -1`).
            printer.out.flush()
    except (OutputClosed, BrokenPipeError):
        silence_closed(printer.out, printer.err)
        return 0


def _run(argv: Sequence[str] | None, printer: Printer) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_main(args, printer))
    except (CliError, KubeconfigError, KubeApiError) as exc:
        return _fail(printer, str(exc))
    except KeyboardInterrupt:
        return 130
    except OutputClosed:
        raise
    except Exception:
        # A bug, not a condition a user meets: its traceback helps a report, but passes
        # through `clean` too, for an exception's text may come from the remote.
        printer.err.write(clean(traceback.format_exc()))
        return 1


def _fail(printer: Printer, message: str) -> int:
    try:
        printer.error(message)
    except OutputClosed:
        silence_closed(printer.err)
    return 1


def console() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # A character the terminal's encoding lacks is shown escaped, not a crash.
            stream.reconfigure(errors="backslashreplace")
    sys.exit(main())
