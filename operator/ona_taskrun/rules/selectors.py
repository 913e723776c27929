"""Kubernetes label selectors: reading them, checking them, and matching labels against them.

This module owns the selector rules used to decide whether a namespace is selected by its
labels. A selector arrives in one of two forms, both read here and nowhere else:

- the object form of CRDs (`matchLabels` and `matchExpressions`), via `from_dict`;
- the string form `kubectl -l` accepts (`team in (a,b),env=prod,!legacy`), via `parse`.

Both produce the same immutable `LabelSelector`, so either can be compared with the other,
and anything malformed is refused with a `SelectorError` naming where and what is wrong.
Matching follows Kubernetes: every requirement must hold, `NotIn` and `DoesNotExist` hold
when the key is absent, and the empty selector selects everything. No I/O happens here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

__all__ = [
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "from_dict",
    "parse",
]


class SelectorError(ValueError):
    """A selector is malformed; the message names where (a field path or setting) and what."""


class Operator(StrEnum):
    """The operators of a label selector; the values are the names CRDs use.

    `=`/`==` and `!=` of the string form are `IN` and `NOT_IN` with a single value, as in
    Kubernetes, so that one selector has one representation whichever form it came from.
    """

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_SET_OPERATORS = frozenset({Operator.IN, Operator.NOT_IN})

# Label syntax, as Kubernetes validates it (IsQualifiedName / IsValidLabelValue).
_NAME_MAX = 63
_PREFIX_MAX = 253
_NAME_RE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_NAME_RULE = "letters, digits, '-', '_' and '.', starting and ending with a letter or digit"


def _key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key, or None if it is."""
    if not key:
        return "label key is empty"
    prefix, slash, name = key.rpartition("/")
    if slash:
        if "/" in prefix:
            return f"label key {key!r} has more than one '/'"
        if not prefix:
            return f"label key {key!r} has an empty prefix before '/'"
        if len(prefix) > _PREFIX_MAX:
            return f"label key {key!r} has a prefix longer than {_PREFIX_MAX} characters"
        if not _DNS_SUBDOMAIN_RE.fullmatch(prefix):
            return (
                f"label key {key!r} has a prefix {prefix!r} that is not a DNS subdomain "
                "(lowercase letters, digits, '-' and '.', each part starting and ending "
                "with a letter or digit)"
            )
        if not name:
            return f"label key {key!r} has an empty name after '/'"
    if len(name) > _NAME_MAX:
        return f"label key {key!r} has a name longer than {_NAME_MAX} characters"
    if not _NAME_RE.fullmatch(name):
        return f"label key {key!r} is invalid: the name must be {_NAME_RULE}"
    return None


def _value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None if it is (the empty value is)."""
    if len(value) > _NAME_MAX:
        return f"label value {value!r} is longer than {_NAME_MAX} characters"
    if value and not _NAME_RE.fullmatch(value):
        return f"label value {value!r} is invalid: it must be empty or {_NAME_RULE}"
    return None


def _arity_problem(operator: Operator, values: frozenset[str]) -> str | None:
    if operator in _SET_OPERATORS and not values:
        return f"operator {operator.value} needs at least one value"
    if operator not in _SET_OPERATORS and values:
        return f"operator {operator.value} takes no values, got {sorted(values)}"
    return None


@dataclass(frozen=True)
class Requirement:
    """One condition on one label key."""

    key: str
    operator: Operator
    values: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # A set or list passed by a caller would make the requirement unhashable and
        # compare unequal to the same requirement parsed from text.
        object.__setattr__(self, "values", frozenset(self.values))
        # `from_dict` and `parse` check all of this first, with field paths in their
        # messages; this is the backstop that keeps a bad Requirement from existing at all.
        problem = (
            _key_problem(self.key)
            or _arity_problem(self.operator, self.values)
            or next(filter(None, map(_value_problem, sorted(self.values))), None)
        )
        if problem:
            raise SelectorError(f"requirement on {self.key!r}: {problem}")

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator is Operator.IN:
            return present and labels[self.key] in self.values
        if self.operator is Operator.NOT_IN:
            return not present or labels[self.key] not in self.values
        if self.operator is Operator.EXISTS:
            return present
        return not present

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        values = sorted(self.values)
        if len(values) == 1:
            op = "=" if self.operator is Operator.IN else "!="
            return f"{self.key}{op}{values[0]}"
        word = "in" if self.operator is Operator.IN else "notin"
        return f"{self.key} {word} ({','.join(values)})"


def _order(req: Requirement) -> tuple[str, str, tuple[str, ...]]:
    return (req.key, req.operator.value, tuple(sorted(req.values)))


@dataclass(frozen=True)
class LabelSelector:
    """All of its requirements must hold; with none, it selects everything.

    The requirements are kept sorted by key (as Kubernetes keeps them) and without
    duplicates, so two selectors that select by the same rules compare equal whatever
    order, or form, they were written in.
    """

    requirements: tuple[Requirement, ...] = ()
    # Selects no namespace at all (a setting left unset where the safe default is none).
    nothing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", tuple(sorted(set(self.requirements), key=_order)))

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls(())

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        return all(req.matches(labels) for req in self.requirements)

    def __str__(self) -> str:
        if self.nothing:
            return "<nothing>"
        if not self.requirements:
            return "<everything>"
        return ",".join(str(req) for req in self.requirements)


# ---------------------------------------------------------------------------------------
# The object form: {"matchLabels": {...}, "matchExpressions": [{key, operator, values}]}


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _describe(value: object) -> str:
    # Unquoted YAML such as `enabled: true` or `tier: 1` arrives as a bool or int; saying
    # so points at the fix (quote it) better than a bare "must be a string".
    return f"{_type_name(value)} {value!r}"


def _check_fields(raw: Mapping[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    for name in raw:
        if name not in allowed:
            raise SelectorError(
                f"{where}: unknown field {name!r} (expected one of {', '.join(allowed)})"
            )


def _operator(raw: object, where: str) -> Operator:
    if not isinstance(raw, str):
        raise SelectorError(f"{where}: must be a string, got {_describe(raw)}")
    try:
        return Operator(raw)
    except ValueError:
        pass
    names = ", ".join(op.value for op in Operator)
    # `in` or `exists` are the spellings of the string form; CRDs want `In`, `Exists`.
    same = [op.value for op in Operator if op.value.lower() == raw.lower()]
    hint = f"; did you mean {same[0]!r}?" if same else ""
    raise SelectorError(f"{where}: {raw!r} is not an operator (expected one of {names}){hint}")


def _expression(raw: object, where: str) -> Requirement:
    if not isinstance(raw, Mapping):
        raise SelectorError(
            f"{where}: must be an object with key, operator and values, got {_type_name(raw)}"
        )
    _check_fields(raw, ("key", "operator", "values"), where)
    if "key" not in raw:
        raise SelectorError(f"{where}: key is missing")
    key = raw["key"]
    if not isinstance(key, str):
        raise SelectorError(f"{where}.key: must be a string, got {_describe(key)}")
    if problem := _key_problem(key):
        raise SelectorError(f"{where}.key: {problem}")
    if "operator" not in raw:
        raise SelectorError(f"{where}: operator is missing")
    operator = _operator(raw["operator"], f"{where}.operator")

    raw_values = raw.get("values")
    if raw_values is None:
        raw_values = []
    # A bare string is a common slip (`values: prod`); iterating it would yield letters.
    if not isinstance(raw_values, list | tuple):
        raise SelectorError(
            f"{where}.values: must be a list of strings, got {_describe(raw_values)}"
        )
    values: list[str] = []
    for j, value in enumerate(raw_values):
        if not isinstance(value, str):
            raise SelectorError(f"{where}.values[{j}]: must be a string, got {_describe(value)}")
        if problem := _value_problem(value):
            raise SelectorError(f"{where}.values[{j}]: {problem}")
        values.append(value)
    if problem := _arity_problem(operator, frozenset(values)):
        raise SelectorError(f"{where}: {problem}")
    return Requirement(key, operator, frozenset(values))


def from_dict(raw: Mapping[str, Any] | None, *, where: str = "namespaceSelector") -> LabelSelector:
    """The selector in CRD object form; None or `{}` selects everything.

    `where` is the field path used in error messages, e.g. `spec.namespaceSelector`.
    """
    if raw is None:
        return LabelSelector.everything()
    if not isinstance(raw, Mapping):
        raise SelectorError(
            f"{where}: must be an object with matchLabels and/or matchExpressions, "
            f"got {_type_name(raw)}"
        )
    _check_fields(raw, ("matchLabels", "matchExpressions"), where)
    requirements: list[Requirement] = []

    match_labels = raw.get("matchLabels")
    if match_labels is not None:
        path = f"{where}.matchLabels"
        if not isinstance(match_labels, Mapping):
            raise SelectorError(
                f"{path}: must be an object of label keys to values, got {_type_name(match_labels)}"
            )
        for key, value in match_labels.items():
            if not isinstance(key, str):
                raise SelectorError(f"{path}: label key must be a string, got {_describe(key)}")
            if problem := _key_problem(key):
                raise SelectorError(f"{path}: {problem}")
            if not isinstance(value, str):
                raise SelectorError(f"{path}.{key}: must be a string, got {_describe(value)}")
            if problem := _value_problem(value):
                raise SelectorError(f"{path}.{key}: {problem}")
            requirements.append(Requirement(key, Operator.IN, frozenset({value})))

    expressions = raw.get("matchExpressions")
    if expressions is not None:
        path = f"{where}.matchExpressions"
        if not isinstance(expressions, list | tuple):
            raise SelectorError(f"{path}: must be a list, got {_type_name(expressions)}")
        for i, expression in enumerate(expressions):
            requirements.append(_expression(expression, f"{path}[{i}]"))

    return LabelSelector(tuple(requirements))


# ---------------------------------------------------------------------------------------
# The string form: `team in (a,b),env=prod,env!=dev,team notin (c),tier,!legacy`

# Characters that end a key or value and stand for themselves. `<` and `>` are here so
# that `tier>1` (valid only for node selectors) is refused as an unsupported operator
# rather than as a strange label key.
_SPECIAL = "!=(),<>"
_TWO_CHAR = ("!=", "==")
_OPERATORS_HELP = "=, ==, !=, in or notin"


def _split_top_level(text: str, where: str) -> list[str]:
    """`text` cut at the commas outside parentheses, after checking the parentheses pair up.

    Checked over the whole text first so that `team in (a,b` is reported as the unclosed
    parenthesis it is, not as a requirement `b` with a stray `)` missing.
    """
    pieces: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char == "(":
            if depth:
                raise SelectorError(f"{where}: {text!r} has a '(' inside parentheses")
            depth = 1
        elif char == ")":
            if not depth:
                raise SelectorError(f"{where}: {text!r} has a ')' without a matching '('")
            depth = 0
        elif char == "," and not depth:
            pieces.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"{where}: {text!r} has an unclosed parenthesis")
    pieces.append(text[start:])
    return pieces


@dataclass(frozen=True)
class _Token:
    text: str
    word: bool  # a key, a value, or `in`/`notin`; otherwise one of the special tokens


def _tokens(piece: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(piece):
        char = piece[i]
        if char.isspace():
            i += 1
        elif piece[i : i + 2] in _TWO_CHAR:
            tokens.append(_Token(piece[i : i + 2], word=False))
            i += 2
        elif char in _SPECIAL:
            tokens.append(_Token(char, word=False))
            i += 1
        else:
            end = i
            while end < len(piece) and not piece[end].isspace() and piece[end] not in _SPECIAL:
                end += 1
            tokens.append(_Token(piece[i:end], word=True))
            i = end
    return tokens


def _value_list(tokens: list[_Token], fail: Callable[[str], NoReturn]) -> list[str]:
    """The values between `(` and `)`: words separated by commas; `(a,,b)` holds ""."""
    if not tokens:
        fail("has no values inside the parentheses")
    values: list[str] = []
    current: str | None = None
    for token in tokens:
        if token.text == ",":
            values.append(current or "")
            current = None
        elif not token.word:
            fail(f"has an unexpected {token.text!r} in its list of values")
        elif current is not None:
            fail(f"needs a ',' between the values {current!r} and {token.text!r}")
        else:
            current = token.text
    values.append(current or "")
    return values


def _requirement(piece: str, where: str) -> Requirement:
    def fail(problem: str) -> NoReturn:
        raise SelectorError(f"{where}: {piece!r} {problem}")

    tokens = _tokens(piece)
    if tokens[0].text == "!":
        if len(tokens) < 2 or not tokens[1].word:
            fail("needs a label key after '!'")
        key = tokens[1].text
        if len(tokens) > 2:
            fail(f"has an unexpected {tokens[2].text!r} after '!{key}' (write just '!key')")
        if problem := _key_problem(key):
            fail(f"has an invalid key: {problem}")
        return Requirement(key, Operator.DOES_NOT_EXIST)
    if not tokens[0].word:
        fail(f"must start with a label key or '!', not {tokens[0].text!r}")
    key = tokens[0].text
    if problem := _key_problem(key):
        fail(f"has an invalid key: {problem}")
    if len(tokens) == 1:
        return Requirement(key, Operator.EXISTS)

    op, rest = tokens[1], tokens[2:]
    values: list[str]
    if op.text in ("=", "==", "!="):
        operator = Operator.NOT_IN if op.text == "!=" else Operator.IN
        if rest and not rest[0].word:
            fail(f"has an unexpected {rest[0].text!r} after {op.text!r}")
        if len(rest) > 1:
            fail(f"has an unexpected {rest[1].text!r} after the value {rest[0].text!r}")
        # `env=` is allowed and means the label is present with the empty value.
        values = [rest[0].text] if rest else [""]
    elif op.word and op.text in ("in", "notin"):
        operator = Operator.IN if op.text == "in" else Operator.NOT_IN
        if not rest or rest[0].text != "(":
            fail(f"needs a parenthesised list of values after {op.text!r}")
        # The parentheses were paired up over the whole text, so a ')' is in `rest`.
        close = next(i for i, token in enumerate(rest) if token.text == ")")
        if close + 1 < len(rest):
            fail(f"has an unexpected {rest[close + 1].text!r} after ')'")
        values = _value_list(rest[1:close], fail)
    else:
        fail(f"has an unknown operator {op.text!r} after {key!r} (expected {_OPERATORS_HELP})")
    for value in values:
        if problem := _value_problem(value):
            fail(f"has an invalid value: {problem}")
    return Requirement(key, operator, frozenset(values))


def parse(text: str, *, where: str = "selector") -> LabelSelector:
    """The selector in the string form of `kubectl -l`; empty or blank text selects everything.

    `where` names the source in error messages, e.g. the environment variable it came from.
    """
    if not text.strip():
        return LabelSelector.everything()
    requirements: list[Requirement] = []
    for piece in _split_top_level(text, where):
        if not piece.strip():
            raise SelectorError(f"{where}: {text!r} has an empty requirement (a stray ',')")
        requirements.append(_requirement(piece.strip(), where))
    return LabelSelector(tuple(requirements))


# The selector that selects every namespace: a default for settings and policies.
EVERYTHING = LabelSelector()
# The selector that selects none: what a setting left unset grants, where granting all
# would be the unsafe default.
NOTHING = LabelSelector(nothing=True)
