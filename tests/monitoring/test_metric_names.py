"""The alert rules and the dashboard refer only to metrics that a real operator exports:
every `ona_taskrun_` name in their expressions is declared by a running operator's
/metrics (a labelled counter is declared before its first sample)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.scrape import referenced_names, scrape

pytestmark = pytest.mark.e2e
MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "rules.yaml").read_text())
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("expr", "query", "definition"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads((MONITORING / "dashboard.json").read_text()))
    return found


def test_rules_and_dashboard_use_only_metrics_the_operator_exports(metrics_port: int) -> None:
    exported = scrape(metrics_port).names
    rules, dashboard = rule_expressions(), dashboard_expressions()
    used_by_rules, used_by_dashboard = referenced_names(rules), referenced_names(dashboard)
    assert len(used_by_rules) >= 6
    assert len(used_by_dashboard) >= 15
    assert used_by_rules - exported == set()
    assert used_by_dashboard - exported == set()
    # The process metrics the dashboard shows come from the same endpoint.
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert name in exported
        assert any(name in expr for expr in dashboard)


def test_the_name_check_sees_a_misspelt_metric() -> None:
    exported = {"ona_taskrun_leader", "ona_taskrun_taskruns"}
    used = referenced_names(["sum(ona_taskrun_leaders) == 0", "ona_taskrun_taskruns > 1"])
    assert used - exported == {"ona_taskrun_leaders"}
