"""The TaskRunSchedule CRD's taskRunTemplate.spec is the TaskRun spec schema, so a
template is checked at `kubectl apply` exactly as a TaskRun would be; only the rules that
compare with an earlier version (immutability) are left out, since a template may be
edited. scripts/sync-monitoring writes the copy; this fails when it is stale."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from tools import crd_template


def _schedule_template_spec() -> dict[str, Any]:
    crd = yaml.safe_load(crd_template.SCHEDULES.read_text())
    (version,) = crd["spec"]["versions"]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    spec: dict[str, Any] = props["taskRunTemplate"]["properties"]["spec"]
    return spec


def test_the_template_schema_is_the_taskrun_spec_schema() -> None:
    assert crd_template.main(["--check"]) == 0, "run scripts/sync-monitoring"
    taskrun = crd_template.taskrun_spec_schema(yaml.safe_load(crd_template.TASKRUNS.read_text()))
    template = _schedule_template_spec()
    assert template["properties"] == crd_template.without_transition_rules(taskrun["properties"])
    assert template["properties"].keys() >= {"task", "taskRef", "timeout", "deletionPolicy"}


def test_rules_reading_oldself_are_left_out_and_the_others_kept() -> None:
    rules = [r["rule"] for r in _schedule_template_spec()["x-kubernetes-validations"]]
    assert "has(self.task) != has(self.taskRef)" in rules
    assert not [r for r in rules if "oldSelf" in r]


def test_a_stale_copy_is_found() -> None:
    taskrun = yaml.safe_load(crd_template.TASKRUNS.read_text())
    changed = copy.deepcopy(taskrun)
    spec = crd_template.taskrun_spec_schema(changed)
    spec["properties"]["newField"] = {"type": "string"}
    current = crd_template.SCHEDULES.read_text()
    assert crd_template.render(current, crd_template.template_schema(changed)) != current
    assert crd_template.render(current, crd_template.template_schema(taskrun)) == current
