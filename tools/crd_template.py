"""Copies the TaskRun spec schema into the TaskRunSchedule CRD as taskRunTemplate.spec.

A schedule's template is checked at `kubectl apply` by the same schema as a TaskRun, so
a typo in it is refused there rather than at the first slot. Rules that compare with an
earlier version (`oldSelf`: TaskRun immutability) are left out: a template may be edited.

    python -m tools.crd_template          # rewrite the schedule CRD in place
    python -m tools.crd_template --check  # exit 1 if it is stale

scripts/sync-monitoring runs the first; tests/deploy checks the copy is current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKRUNS = REPO_ROOT / "crds" / "taskruns.automation.ona.com.yaml"
SCHEDULES = REPO_ROOT / "crds" / "taskrunschedules.automation.ona.com.yaml"
BEGIN = "# BEGIN taskRunTemplate.spec"
END = "# END taskRunTemplate.spec"


def taskrun_spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = (v for v in crd["spec"]["versions"] if v.get("storage"))
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def without_transition_rules(schema: Any) -> Any:
    """The schema with every CEL rule that reads `oldSelf` removed, at any depth."""
    if isinstance(schema, list):
        return [without_transition_rules(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "x-kubernetes-validations":
            kept = [rule for rule in value if "oldSelf" not in str(rule.get("rule", ""))]
            if kept:
                out[key] = kept
        else:
            out[key] = without_transition_rules(value)
    return out


def template_schema(taskrun_crd: dict[str, Any]) -> dict[str, Any]:
    schema = without_transition_rules(taskrun_spec_schema(taskrun_crd))
    assert isinstance(schema, dict)
    schema["description"] = "A TaskRun spec: what each slot runs."
    return schema


def render(schedule_text: str, schema: dict[str, Any]) -> str:
    """The schedule CRD's text with the section between the markers replaced."""
    lines = schedule_text.splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.strip().startswith(BEGIN))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith(END))
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    dumped = yaml.safe_dump({"spec": schema}, sort_keys=False, width=1000, allow_unicode=True)
    body = [f"{indent}{line}\n" for line in dumped.splitlines()]
    return "".join([*lines[: begin + 1], *body, *lines[end:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the copy is current")
    args = parser.parse_args(argv)
    schema = template_schema(yaml.safe_load(TASKRUNS.read_text()))
    current = SCHEDULES.read_text()
    wanted = render(current, schema)
    if args.check:
        if current != wanted:
            print(f"{SCHEDULES.name} is stale: run scripts/sync-monitoring", file=sys.stderr)
            return 1
        return 0
    SCHEDULES.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
