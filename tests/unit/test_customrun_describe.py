"""`kubectl ona describe` of a TaskRun that runs for a Tekton CustomRun: its controller,
the CustomRun's outcome, and the PipelineRun and task the CustomRun runs for; what it
says when that CustomRun cannot be read."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from ona_taskrun.cli.kube import KubeApiError
from ona_taskrun.cli.main import Cli
from ona_taskrun.cli.output import Printer
from ona_taskrun.cli.render import describe

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def child(**owner: Any) -> dict[str, Any]:
    ref = {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "name": "greet-first",
        "uid": "cr-uid",
        "controller": True,
        **owner,
    }
    return {
        "metadata": {
            "name": "greet-first-1a2b3c4d",
            "namespace": "team-a",
            "ownerReferences": [ref],
        },
        "spec": {"task": {"environmentId": "e", "name": "greet", "command": "c"}},
        "status": {},
    }


CUSTOMRUN: dict[str, Any] = {
    "metadata": {
        "name": "greet-first",
        "uid": "cr-uid",
        "labels": {"tekton.dev/pipelineRun": "greet", "tekton.dev/pipelineTask": "first"},
        "ownerReferences": [
            {
                "apiVersion": "tekton.dev/v1",
                "kind": "PipelineRun",
                "name": "greet",
                "controller": True,
            }
        ],
    },
    "status": {
        "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}],
    },
}


def field(text: str, label: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{label}:")]
    return line.partition(":")[2].strip()


def test_a_customruns_child_shows_its_customrun_and_pipelinerun() -> None:
    text = describe(child(), [], NOW, customrun=CUSTOMRUN)
    assert field(text, "Controlled By") == "CustomRun/greet-first"
    assert field(text, "Custom Run") == "Unknown (Running)"
    assert field(text, "Pipeline Run") == "greet (task first)"


def test_a_customrun_of_its_own_has_no_pipelinerun() -> None:
    alone = {**CUSTOMRUN, "metadata": {"name": "greet-first", "uid": "cr-uid"}}
    text = describe(child(), [], NOW, customrun=alone)
    assert field(text, "Controlled By") == "CustomRun/greet-first"
    assert "Pipeline Run:" not in text


def test_an_unreadable_customrun_is_said() -> None:
    text = describe(child(), [], NOW, unread="you may not read CustomRun greet-first")
    assert field(text, "Pipeline Run") == "<unknown: you may not read CustomRun greet-first>"


def test_other_controllers_are_shown_and_a_taskrun_of_its_own_shows_none() -> None:
    scheduled = child(apiVersion="automation.ona.com/v1alpha1", kind="TaskRunSchedule", name="n")
    text = describe(scheduled, [], NOW)
    assert field(text, "Controlled By") == "TaskRunSchedule/n"
    assert "Pipeline Run:" not in text
    plain = child()
    del plain["metadata"]["ownerReferences"]
    assert "Controlled By:" not in describe(plain, [], NOW)


def test_a_hostile_pipeline_name_stays_on_its_line_and_inert() -> None:
    hostile = {
        **CUSTOMRUN,
        "metadata": {
            **CUSTOMRUN["metadata"],
            "labels": {"tekton.dev/pipelineTask": "first\n\x1b[2JEvil: yes"},
        },
    }
    text = describe(child(), [], NOW, customrun=hostile)
    assert "\x1b" not in text
    assert not any(line.startswith("Evil:") for line in text.splitlines())


class FakeKube:
    def __init__(self, answer: dict[str, Any] | KubeApiError) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    async def get_customrun(self, namespace: str, name: str) -> dict[str, Any]:
        self.asked.append((namespace, name))
        if isinstance(self.answer, KubeApiError):
            raise self.answer
        return self.answer


def cli(kube: FakeKube) -> Cli:
    printer = Printer(io.StringIO(), io.StringIO())
    return Cli(argparse.Namespace(output=None), kube, "team-a", printer)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "found", "unread"),
    [
        (CUSTOMRUN, True, ""),
        (KubeApiError(403, "forbidden"), False, "you may not read CustomRun greet-first"),
        (KubeApiError(404, "not found"), False, "CustomRun greet-first is gone"),
        (
            {**CUSTOMRUN, "metadata": {**CUSTOMRUN["metadata"], "uid": "other"}},
            False,
            "CustomRun greet-first is another one now",
        ),
    ],
)
async def test_the_cli_reads_the_customrun_in_the_taskruns_namespace(
    answer: dict[str, Any] | KubeApiError, found: bool, unread: str
) -> None:
    kube = FakeKube(answer)
    customrun, said = await cli(kube).parent_customrun(child())
    assert kube.asked == [("team-a", "greet-first")]
    assert (customrun is not None, said) == (found, unread)


async def test_the_cli_reads_nothing_for_a_taskrun_of_no_customrun() -> None:
    kube = FakeKube(CUSTOMRUN)
    scheduled = child(apiVersion="automation.ona.com/v1alpha1", kind="TaskRunSchedule")
    assert await cli(kube).parent_customrun(scheduled) == (None, "")
    assert kube.asked == []
