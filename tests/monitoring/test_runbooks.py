"""Every alert links its runbook: a `runbook_url` annotation whose anchor is a section of
docs/operations.md under "## Alerts", as GitHub renders the page's headings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "manifests" / "monitoring" / "rules.yaml"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
VALUES = REPO_ROOT / "charts" / "ona-taskrun-operator" / "values.yaml"
# The page in the repository; the chart's monitoring.runbookBaseUrl defaults to it.
DEFAULT_BASE = "https://github.com/ona-taskrun/ona-taskrun-operator/blob/main/docs/operations.md"


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, anchor) of each heading outside code fences, with GitHub's -1, -2 suffixes
    for repeated anchors."""
    found: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"(#{1,6}) +(.*?) *#* *$", line)
        if fenced or not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.append((len(match.group(1)), f"{anchor}-{count}" if count else anchor))
    return found


def alert_sections(markdown: str) -> set[str]:
    """The anchors of the sections inside "## Alerts" (up to the next level-2 heading)."""
    inside, anchors = False, set()
    for level, anchor in headings(markdown):
        if level <= 2:
            inside = anchor == "alerts"
        elif inside:
            anchors.add(anchor)
    return anchors


def missing_runbooks(rules: list[dict[str, Any]], markdown: str, base: str) -> list[str]:
    """Alerts whose runbook_url is absent, not under `base`, or names no alert section."""
    sections = alert_sections(markdown)
    missing = []
    for rule in rules:
        url = str(rule.get("annotations", {}).get("runbook_url", ""))
        page, _, anchor = url.partition("#")
        if page != base or anchor not in sections:
            missing.append(rule["alert"])
    return missing


def test_every_alert_has_a_runbook_section_in_operations_md() -> None:
    rules = alerts()
    assert len(rules) >= 7
    assert missing_runbooks(rules, OPERATIONS.read_text(), DEFAULT_BASE) == []


def test_each_alert_has_a_section_of_its_own() -> None:
    anchors = [rule["annotations"]["runbook_url"].partition("#")[2] for rule in alerts()]
    assert len(set(anchors)) == len(anchors)
    # Named after the alert, so the link reads as what it is.
    for rule, anchor in zip(alerts(), anchors, strict=True):
        assert anchor == rule["alert"].lower()


def test_a_runbook_without_its_section_is_found() -> None:
    """The check can fail: a page without the section, a section outside "## Alerts",
    another base and no annotation are each caught."""
    rule = {
        "alert": "OnaTaskRunOperatorDown",
        "annotations": {"runbook_url": f"{DEFAULT_BASE}#onataskrunoperatordown"},
    }
    good = "# Operations\n## Alerts\n### OnaTaskRunOperatorDown\ntext\n## Next\n"
    assert missing_runbooks([rule], good, DEFAULT_BASE) == []
    outside = "# Operations\n## Alerts\n## Upgrade\n### OnaTaskRunOperatorDown\n"
    fenced = "## Alerts\n```\n### OnaTaskRunOperatorDown\n```\n"
    for page in ("# Operations\n## Alerts\n### OnaApiUnreachable\n", outside, fenced):
        assert missing_runbooks([rule], page, DEFAULT_BASE) == ["OnaTaskRunOperatorDown"]
    assert missing_runbooks([rule], good, "https://example.com/ops.md") == [
        "OnaTaskRunOperatorDown"
    ]
    assert missing_runbooks([{"alert": "X", "annotations": {}}], good, DEFAULT_BASE) == ["X"]


def test_github_anchors_of_headings() -> None:
    page = "## Uninstall: Helm and `kustomize`\n## Alerts\n## Alerts\n"
    assert [a for _, a in headings(page)] == ["uninstall-helm-and-kustomize", "alerts", "alerts-1"]


def test_the_charts_default_base_is_the_page_in_the_repository() -> None:
    values = yaml.safe_load(VALUES.read_text())
    assert values["monitoring"]["runbookBaseUrl"] == DEFAULT_BASE
