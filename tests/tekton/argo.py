"""What Argo Workflows does with a `resource` template's conditions, for the recipe in
docs/pipelines.md, without Argo: its executor parses `successCondition` and
`failureCondition` as Kubernetes label selectors and evaluates each requirement against
the object's JSON, a requirement's key being a gjson path (`status.phase`); the step
fails as soon as any failure requirement holds, and succeeds once every success
requirement does (workflow/executor/resource.go, `matchConditions`). Outputs by `jsonPath`
are read by `kubectl get NAME -o jsonpath=...`, which the tests run as they are.

Only what label-selector syntax allows is taken: `key`, `!key`, `key = v`, `key == v`,
`key != v`, `key in (v, ...)`, `key notin (v, ...)`, `key gt N`, `key lt N`, with keys and
values checked as the selector parser checks them, so a condition Argo would refuse is
refused here too. Paths are gjson's simple form: dot-separated keys, a number indexing an
array.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|[^\s=!(),]+)")
_TAG = re.compile(r"\{\{(.*?)\}\}")


class ConditionError(ValueError):
    """A condition Argo's parser (Kubernetes' label selector parser) would refuse."""


class Op(enum.Enum):
    EXISTS = "exists"
    NOT_EXISTS = "!"
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    GT = "gt"
    LT = "lt"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()


def _key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.fullmatch(prefix)):
        raise ConditionError(f"key {key!r}: its prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        raise ConditionError(
            f"key {key!r}: a name of at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return key


def _value(value: str) -> str:
    if len(value) > 63 or not _VALUE.fullmatch(value):
        raise ConditionError(f"value {value!r} is not a valid label value")
    return value


def parse(condition: str) -> list[Requirement]:
    """The requirements of a condition; ConditionError when the selector parser would
    refuse it."""
    tokens = _TOKEN.findall(condition)
    if "".join(tokens).replace(" ", "") != condition.replace(" ", "").replace("\t", ""):
        raise ConditionError(f"cannot read {condition!r}")
    requirements: list[Requirement] = []
    pos = 0

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ConditionError(f"{condition!r} ends too soon")
        pos += 1
        return str(tokens[pos - 1])

    while pos < len(tokens):
        token = take()
        if token == "!":
            requirements.append(Requirement(_key(take()), Op.NOT_EXISTS))
        else:
            key = _key(token)
            if pos >= len(tokens) or tokens[pos] == ",":
                requirements.append(Requirement(key, Op.EXISTS))
            else:
                op_text = take()
                if op_text in ("=", "=="):
                    requirements.append(Requirement(key, Op.EQUALS, (_value(take()),)))
                elif op_text == "!=":
                    requirements.append(Requirement(key, Op.NOT_EQUALS, (_value(take()),)))
                elif op_text in ("in", "notin"):
                    if take() != "(":
                        raise ConditionError(f"{op_text} needs a list in parentheses")
                    values: list[str] = []
                    while True:
                        item = take()
                        if item == ")" and not values:
                            break
                        values.append(_value(item))
                        after = take()
                        if after == ")":
                            break
                        if after != ",":
                            raise ConditionError(f"expected ',' or ')' after {item!r}")
                    if not values:
                        raise ConditionError(f"{op_text} needs at least one value")
                    op = Op.IN if op_text == "in" else Op.NOT_IN
                    requirements.append(Requirement(key, op, tuple(values)))
                elif op_text in ("gt", "lt"):
                    number = take()
                    if not re.fullmatch(r"-?\d+", number):
                        raise ConditionError(f"{op_text} needs a whole number, not {number!r}")
                    op = Op.GT if op_text == "gt" else Op.LT
                    requirements.append(Requirement(key, op, (number,)))
                else:
                    raise ConditionError(f"unknown operator {op_text!r}")
        if pos < len(tokens):
            if take() != ",":
                raise ConditionError(f"requirements are separated by commas: {condition!r}")
            if pos >= len(tokens):
                raise ConditionError(f"{condition!r} ends with a comma")
    return requirements


_MISSING = object()


def lookup(obj: Any, path: str) -> Any:
    """gjson's `Get` for a simple path; `_MISSING` when nothing is there."""
    current = obj
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, Sequence) and not isinstance(current, str) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def _text(value: Any) -> str:
    """gjson's `Result.String()`: a string as it is, null as empty, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def matches(requirement: Requirement, obj: Any) -> bool:
    """Kubernetes' `Requirement.Matches`, with the object's JSON for labels."""
    value = lookup(obj, requirement.key)
    has = value is not _MISSING
    op = requirement.op
    if op is Op.EXISTS:
        return has
    if op is Op.NOT_EXISTS:
        return not has
    if op in (Op.EQUALS, Op.IN):
        return has and _text(value) in requirement.values
    if op in (Op.NOT_EQUALS, Op.NOT_IN):
        return not has or _text(value) not in requirement.values
    if not has:
        return False
    try:
        found = int(_text(value))
    except ValueError:
        return False
    bound = int(requirement.values[0])
    return found > bound if op is Op.GT else found < bound


class Verdict(enum.Enum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    WAITING = "Waiting"


def evaluate(success: str, failure: str, obj: Any) -> Verdict:
    """What Argo's executor makes of the object: failed if any failure requirement holds,
    succeeded if every success requirement does, else it looks again later."""
    if any(matches(r, obj) for r in parse(failure)):
        return Verdict.FAILED
    if all(matches(r, obj) for r in parse(success)):
        return Verdict.SUCCEEDED
    return Verdict.WAITING


def render(manifest: str, parameters: Mapping[str, str]) -> str:
    """The manifest with the template tags it uses replaced as Argo would:
    `{{inputs.parameters.NAME}}` by the text, `{{=toJson(inputs.parameters.NAME)}}` by its
    JSON string. Any other tag fails, so a recipe that starts using one is noticed."""

    def replace(match: re.Match[str]) -> str:
        tag = match.group(1).strip()
        plain = re.fullmatch(r"inputs\.parameters\.([A-Za-z0-9_-]+)", tag)
        if plain:
            return parameters[plain.group(1)]
        as_json = re.fullmatch(r"=toJson\(inputs\.parameters\.([A-Za-z0-9_]+)\)", tag)
        if as_json:
            return json.dumps(parameters[as_json.group(1)])
        raise ValueError(f"the recipe uses a template tag this test does not know: {tag!r}")

    return _TAG.sub(replace, manifest)


def yaml_blocks(markdown: str) -> list[str]:
    """The fenced ```yaml blocks of a Markdown page, indented or not."""
    blocks: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"(\s*)```yaml\s*", lines[i])
        if fence is None:
            i += 1
            continue
        indent = len(fence.group(1))
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        blocks.append("\n".join(body) + "\n")
        i += 1
    return blocks
