"""`selectors`: Kubernetes label selector semantics for every operator (absent keys included),
the `kubectl -l` string form and the CRD object form, good and bad, each refusal naming
where and what is wrong; `parse(str(sel)) == sel`; the empty selector selects everything."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ona_taskrun.rules.selectors import (
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    from_dict,
    parse,
)

IN, NOT_IN, EXISTS, DOES_NOT_EXIST = (
    Operator.IN,
    Operator.NOT_IN,
    Operator.EXISTS,
    Operator.DOES_NOT_EXIST,
)


def req(key: str, operator: Operator, *values: str) -> Requirement:
    return Requirement(key, operator, frozenset(values))


def sel(*requirements: Requirement) -> LabelSelector:
    return LabelSelector(requirements)


# --- matching ------------------------------------------------------------------------

# (requirement, labels, matches)
REQUIREMENT_MATCHES: list[Any] = [
    pytest.param(req("team", IN, "a", "b"), {"team": "a"}, True, id="in-value-listed"),
    pytest.param(req("team", IN, "a", "b"), {"team": "c"}, False, id="in-value-not-listed"),
    pytest.param(req("team", IN, "a"), {"other": "a"}, False, id="in-key-absent"),
    pytest.param(req("team", IN, ""), {"team": ""}, True, id="in-empty-value-present"),
    pytest.param(req("team", IN, ""), {}, False, id="in-empty-value-key-absent"),
    pytest.param(req("team", NOT_IN, "a", "b"), {"team": "b"}, False, id="notin-value-listed"),
    pytest.param(req("team", NOT_IN, "a", "b"), {"team": "c"}, True, id="notin-value-not-listed"),
    pytest.param(req("team", NOT_IN, "a"), {"other": "a"}, True, id="notin-key-absent"),
    pytest.param(req("team", EXISTS), {"team": "x"}, True, id="exists-present"),
    pytest.param(req("team", EXISTS), {"team": ""}, True, id="exists-present-empty-value"),
    pytest.param(req("team", EXISTS), {"teams": "x"}, False, id="exists-absent"),
    pytest.param(req("team", DOES_NOT_EXIST), {"team": ""}, False, id="doesnotexist-present"),
    pytest.param(req("team", DOES_NOT_EXIST), {"other": "x"}, True, id="doesnotexist-absent"),
    pytest.param(
        req("example.com/team", IN, "a"), {"example.com/team": "a"}, True, id="prefixed-key"
    ),
    pytest.param(
        req("example.com/team", IN, "a"), {"team": "a"}, False, id="prefix-is-part-of-key"
    ),
    pytest.param(req("team", IN, "A"), {"team": "a"}, False, id="values-are-case-sensitive"),
]


@pytest.mark.parametrize(("requirement", "labels", "expected"), REQUIREMENT_MATCHES)
def test_requirement_matches(
    requirement: Requirement, labels: dict[str, str], expected: bool
) -> None:
    assert requirement.matches(labels) is expected
    # A selector of one requirement selects exactly what the requirement does.
    assert sel(requirement).matches(labels) is expected


# (selector text, labels, matches): the string operators, mapped onto the four above.
SELECTOR_MATCHES: list[Any] = [
    pytest.param("env=prod", {"env": "prod"}, True, id="equals"),
    pytest.param("env==prod", {"env": "dev"}, False, id="double-equals-other-value"),
    pytest.param("env=prod", {}, False, id="equals-key-absent"),
    pytest.param("env!=prod", {"env": "prod"}, False, id="not-equals-same-value"),
    pytest.param("env!=prod", {"env": "dev"}, True, id="not-equals-other-value"),
    pytest.param("env!=prod", {}, True, id="not-equals-key-absent"),
    pytest.param("env=", {"env": ""}, True, id="equals-empty-value"),
    pytest.param("env=", {"env": "prod"}, False, id="equals-empty-value-other-value"),
    pytest.param("env=", {}, False, id="equals-empty-value-key-absent"),
    pytest.param("env", {"env": ""}, True, id="bare-key-exists"),
    pytest.param("!env", {"env": "prod"}, False, id="bang-key-present"),
    pytest.param("!env", {}, True, id="bang-key-absent"),
    pytest.param("team in (a,b),env=prod", {"team": "b", "env": "prod"}, True, id="all-hold"),
    pytest.param("team in (a,b),env=prod", {"team": "b", "env": "dev"}, False, id="one-fails"),
    pytest.param("team in (a,b),env=prod", {"env": "prod"}, False, id="one-key-absent"),
    pytest.param("team notin (a),!legacy", {"env": "prod"}, True, id="negations-on-absent-keys"),
    pytest.param("team,team!=a", {"team": "b"}, True, id="two-on-one-key-both-hold"),
    pytest.param("team,team!=a", {"team": "a"}, False, id="two-on-one-key-one-fails"),
]


@pytest.mark.parametrize(("text", "labels", "expected"), SELECTOR_MATCHES)
def test_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse(text).matches(labels) is expected


EVERYTHING_FORMS: list[Any] = [
    pytest.param(lambda: LabelSelector.everything(), id="everything"),
    pytest.param(lambda: LabelSelector(), id="no-requirements"),
    pytest.param(lambda: parse(""), id="parse-empty"),
    pytest.param(lambda: parse(" \t\n "), id="parse-blank"),
    pytest.param(lambda: from_dict(None), id="from-dict-none"),
    pytest.param(lambda: from_dict({}), id="from-dict-empty"),
    pytest.param(
        lambda: from_dict({"matchLabels": {}, "matchExpressions": []}), id="from-dict-empty-parts"
    ),
    pytest.param(
        lambda: from_dict({"matchLabels": None, "matchExpressions": None}), id="from-dict-nulls"
    ),
]


@pytest.mark.parametrize("make", EVERYTHING_FORMS)
@pytest.mark.parametrize(
    "labels",
    [{}, {"team": "a"}, {"kubernetes.io/metadata.name": "default", "env": ""}],
    ids=["no-labels", "one-label", "several-labels"],
)
def test_the_empty_selector_matches_everything(make: Any, labels: dict[str, str]) -> None:
    selector = make()
    assert selector == LabelSelector.everything()
    assert selector.requirements == ()
    assert selector.matches(labels)
    assert str(selector) == "<everything>"


# --- the string form -----------------------------------------------------------------

# (text, the selector it means)
PARSED: list[Any] = [
    pytest.param("env=prod", sel(req("env", IN, "prod")), id="equals"),
    pytest.param("env==prod", sel(req("env", IN, "prod")), id="double-equals"),
    pytest.param("env!=prod", sel(req("env", NOT_IN, "prod")), id="not-equals"),
    pytest.param("env=", sel(req("env", IN, "")), id="equals-empty-value"),
    pytest.param("env!=", sel(req("env", NOT_IN, "")), id="not-equals-empty-value"),
    pytest.param("team in (a,b)", sel(req("team", IN, "a", "b")), id="in"),
    pytest.param("team notin (a,b)", sel(req("team", NOT_IN, "a", "b")), id="notin"),
    pytest.param("team in(a)", sel(req("team", IN, "a")), id="in-without-space-before-paren"),
    pytest.param("team in (a,,b)", sel(req("team", IN, "a", "", "b")), id="in-with-empty-value"),
    pytest.param("team in (a,a)", sel(req("team", IN, "a")), id="in-duplicate-values"),
    pytest.param("team", sel(req("team", EXISTS)), id="exists"),
    pytest.param("!team", sel(req("team", DOES_NOT_EXIST)), id="does-not-exist"),
    pytest.param("! team", sel(req("team", DOES_NOT_EXIST)), id="does-not-exist-spaced"),
    pytest.param(
        "  team  in  ( a , b ) ,env = prod , ! legacy , tier ",
        sel(
            req("team", IN, "a", "b"),
            req("env", IN, "prod"),
            req("legacy", DOES_NOT_EXIST),
            req("tier", EXISTS),
        ),
        id="whitespace-everywhere",
    ),
    pytest.param(
        "team in (a,b),team notin (c,d),env=prod",
        sel(req("team", IN, "a", "b"), req("team", NOT_IN, "c", "d"), req("env", IN, "prod")),
        id="commas-inside-parentheses-do-not-split",
    ),
    pytest.param(
        "example.com/team=a-b_c.d",
        sel(req("example.com/team", IN, "a-b_c.d")),
        id="prefixed-key-and-punctuated-value",
    ),
    pytest.param(
        "kubernetes.io/metadata.name in (default,kube-system)",
        sel(req("kubernetes.io/metadata.name", IN, "default", "kube-system")),
        id="well-known-namespace-label",
    ),
    pytest.param("A_b.c-D=X", sel(req("A_b.c-D", IN, "X")), id="name-allows-upper-and-punctuation"),
    pytest.param("k=" + "v" * 63, sel(req("k", IN, "v" * 63)), id="value-at-63-chars"),
    pytest.param("k" * 63, sel(req("k" * 63, EXISTS)), id="key-name-at-63-chars"),
    pytest.param("in", sel(req("in", EXISTS)), id="key-spelled-like-an-operator"),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse(text: str, expected: LabelSelector) -> None:
    assert parse(text) == expected


def test_order_and_repetition_do_not_change_the_selector() -> None:
    a = parse("env=prod,team in (b,a),!legacy")
    b = parse("!legacy , team in (a,b), env==prod, env=prod")
    assert a == b
    assert hash(a) == hash(b)
    assert str(a) == str(b) == "env=prod,!legacy,team in (a,b)"


# (text, a fragment the message must hold); every message starts with "selector: ".
PARSE_ERRORS: list[Any] = [
    pytest.param("team in (a", "'team in (a' has an unclosed parenthesis", id="unclosed-paren"),
    pytest.param("team in (a,b", "has an unclosed parenthesis", id="unclosed-paren-with-comma"),
    pytest.param("team in a)", "has a ')' without a matching '('", id="unmatched-close-paren"),
    pytest.param("team in ((a))", "has a '(' inside parentheses", id="nested-parens"),
    pytest.param("team in ()", "'team in ()' has no values inside the parentheses", id="in-empty"),
    pytest.param("team notin ( )", "has no values inside the parentheses", id="notin-blank"),
    pytest.param("team in a", "needs a parenthesised list of values after 'in'", id="in-no-parens"),
    pytest.param(
        "team notin", "needs a parenthesised list of values after 'notin'", id="notin-end"
    ),
    pytest.param("team in (a b)", "needs a ',' between the values 'a' and 'b'", id="missing-comma"),
    pytest.param("team in (a=b)", "has an unexpected '=' in its list of values", id="op-in-list"),
    pytest.param("team in (a) x", "has an unexpected 'x' after ')'", id="text-after-list"),
    pytest.param(
        "a=1,,b=2", "'a=1,,b=2' has an empty requirement (a stray ',')", id="double-comma"
    ),
    pytest.param("a=1,", "has an empty requirement", id="trailing-comma"),
    pytest.param(",a=1", "has an empty requirement", id="leading-comma"),
    pytest.param("a=1, ,b=2", "has an empty requirement", id="blank-between-commas"),
    pytest.param("!", "'!' needs a label key after '!'", id="bang-alone"),
    pytest.param("!=a", "'!=a' must start with a label key or '!', not '!='", id="no-key"),
    pytest.param("=a", "must start with a label key or '!', not '='", id="equals-no-key"),
    pytest.param("!a=b", "has an unexpected '=' after '!a'", id="bang-with-operator"),
    pytest.param("!a b", "has an unexpected 'b' after '!a'", id="bang-with-word"),
    pytest.param("a=b=c", "has an unexpected '=' after the value 'b'", id="two-equals"),
    pytest.param("a===b", "has an unexpected '=' after '=='", id="triple-equals"),
    pytest.param("a=b c", "has an unexpected 'c' after the value 'b'", id="space-in-value"),
    pytest.param("a=(b)", "has an unexpected '(' after '='", id="parens-after-equals"),
    pytest.param("a>1", "has an unknown operator '>' after 'a'", id="gt-unsupported"),
    pytest.param("a<1", "has an unknown operator '<'", id="lt-unsupported"),
    pytest.param("a IN (b)", "has an unknown operator 'IN' after 'a'", id="operator-is-lowercase"),
    pytest.param("team foo", "(expected =, ==, !=, in or notin)", id="unknown-word-operator"),
    pytest.param("-team=a", "label key '-team' is invalid", id="key-starts-with-dash"),
    pytest.param("team.=a", "label key 'team.' is invalid", id="key-ends-with-dot"),
    pytest.param("te@m=a", "label key 'te@m' is invalid", id="key-bad-character"),
    pytest.param("k" * 64, "has a name longer than 63 characters", id="key-name-too-long"),
    pytest.param("/team=a", "has an empty prefix before '/'", id="key-empty-prefix"),
    pytest.param("example.com/=a", "has an empty name after '/'", id="key-empty-name"),
    pytest.param("a/b/c", "has more than one '/'", id="key-two-slashes"),
    pytest.param("Example.com/team", "prefix 'Example.com' that is not a DNS subdomain", id="pfx"),
    pytest.param("a..b/team", "that is not a DNS subdomain", id="prefix-empty-dns-label"),
    pytest.param(
        "a" * 254 + "/team", "has a prefix longer than 253 characters", id="prefix-too-long"
    ),
    pytest.param("!-x", "label key '-x' is invalid", id="bad-key-after-bang"),
    pytest.param("k=" + "v" * 64, "is longer than 63 characters", id="value-too-long"),
    pytest.param("k=-v", "label value '-v' is invalid", id="value-starts-with-dash"),
    pytest.param("k in (a,b_)", "label value 'b_' is invalid", id="value-in-list-bad-end"),
    pytest.param("k!=v@", "label value 'v@' is invalid", id="not-equals-bad-value"),
]


@pytest.mark.parametrize(("text", "fragment"), PARSE_ERRORS)
def test_parse_refuses(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith("selector: "), message
    assert fragment in message, message


def test_parse_errors_name_where_the_text_came_from() -> None:
    with pytest.raises(ValueError, match=r"^DEFAULT_CONNECTION_NAMESPACE_SELECTOR: ") as caught:
        parse("env=prod,team in (a", where="DEFAULT_CONNECTION_NAMESPACE_SELECTOR")
    assert isinstance(caught.value, SelectorError)
    assert str(caught.value) == (
        "DEFAULT_CONNECTION_NAMESPACE_SELECTOR: 'env=prod,team in (a' has an unclosed parenthesis"
    )


# --- the object form -----------------------------------------------------------------


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


# (raw, the string form meaning the same)
FROM_DICT: list[Any] = [
    pytest.param({"matchLabels": {"env": "prod"}}, "env=prod", id="match-labels"),
    pytest.param(
        {"matchLabels": {"env": "prod", "example.com/team": "a"}},
        "env=prod,example.com/team=a",
        id="match-labels-several",
    ),
    pytest.param({"matchLabels": {"env": ""}}, "env=", id="match-labels-empty-value"),
    pytest.param(
        {"matchExpressions": [expr("team", "In", "a", "b")]}, "team in (a,b)", id="expr-in"
    ),
    pytest.param(
        {"matchExpressions": [expr("team", "NotIn", "a")]}, "team!=a", id="expr-notin-one-value"
    ),
    pytest.param(
        {"matchExpressions": [{"key": "team", "operator": "Exists"}]}, "team", id="expr-exists"
    ),
    pytest.param(
        {"matchExpressions": [{"key": "team", "operator": "DoesNotExist", "values": []}]},
        "!team",
        id="expr-doesnotexist-empty-values-list",
    ),
    pytest.param(
        {"matchExpressions": [{"key": "team", "operator": "Exists", "values": None}]},
        "team",
        id="expr-exists-null-values",
    ),
    pytest.param(
        {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [
                expr("team", "In", "b", "a"),
                expr("team", "NotIn", "c"),
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        },
        "env=prod,team in (a,b),team!=c,!legacy",
        id="both-parts",
    ),
    pytest.param(
        {"matchExpressions": (expr("team", "In", "a"),)}, "team=a", id="expressions-as-tuple"
    ),
]


@pytest.mark.parametrize(("raw", "text"), FROM_DICT)
def test_from_dict(raw: dict[str, Any], text: str) -> None:
    selector = from_dict(raw)
    assert selector == parse(text)
    assert selector != LabelSelector.everything()


def long_expressions(bad: Any) -> dict[str, Any]:
    # The bad expression is the second one, so the index in the message is checked too.
    return {"matchExpressions": [{"key": "ok", "operator": "Exists"}, bad]}


# (raw, the exact message)
FROM_DICT_ERRORS: list[Any] = [
    pytest.param(
        ["env=prod"],
        "namespaceSelector: must be an object with matchLabels and/or matchExpressions, got list",
        id="not-an-object",
    ),
    pytest.param(
        {"matchlabels": {"env": "prod"}},
        "namespaceSelector: unknown field 'matchlabels' (expected one of matchLabels, "
        "matchExpressions)",
        id="unknown-field",
    ),
    pytest.param(
        {"matchLabels": ["env=prod"]},
        "namespaceSelector.matchLabels: must be an object of label keys to values, got list",
        id="match-labels-not-an-object",
    ),
    pytest.param(
        {"matchLabels": {"env": True}},
        "namespaceSelector.matchLabels.env: must be a string, got bool True",
        id="match-labels-unquoted-yaml-bool",
    ),
    pytest.param(
        {"matchLabels": {"tier": 1}},
        "namespaceSelector.matchLabels.tier: must be a string, got int 1",
        id="match-labels-int-value",
    ),
    pytest.param(
        {"matchLabels": {1: "a"}},
        "namespaceSelector.matchLabels: label key must be a string, got int 1",
        id="match-labels-int-key",
    ),
    pytest.param(
        {"matchLabels": {"team_": "a"}},
        "namespaceSelector.matchLabels: label key 'team_' is invalid: the name must be letters, "
        "digits, '-', '_' and '.', starting and ending with a letter or digit",
        id="match-labels-bad-key",
    ),
    pytest.param(
        {"matchLabels": {"team": "a b"}},
        "namespaceSelector.matchLabels.team: label value 'a b' is invalid: it must be empty or "
        "letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
        id="match-labels-bad-value",
    ),
    pytest.param(
        {"matchLabels": {"team": "v" * 64}},
        f"namespaceSelector.matchLabels.team: label value {'v' * 64!r} is longer than 63 "
        "characters",
        id="match-labels-value-too-long",
    ),
    pytest.param(
        {"matchExpressions": {"key": "team", "operator": "Exists"}},
        "namespaceSelector.matchExpressions: must be a list, got dict",
        id="expressions-not-a-list",
    ),
    pytest.param(
        long_expressions("team"),
        "namespaceSelector.matchExpressions[1]: must be an object with key, operator and values, "
        "got str",
        id="expression-not-an-object",
    ),
    pytest.param(
        long_expressions({"key": "team", "operator": "In"}),
        "namespaceSelector.matchExpressions[1]: operator In needs at least one value",
        id="in-without-values",
    ),
    pytest.param(
        long_expressions(expr("team", "NotIn")),
        "namespaceSelector.matchExpressions[1]: operator NotIn needs at least one value",
        id="notin-with-empty-values",
    ),
    pytest.param(
        long_expressions(expr("team", "Exists", "a")),
        "namespaceSelector.matchExpressions[1]: operator Exists takes no values, got ['a']",
        id="exists-with-values",
    ),
    pytest.param(
        long_expressions(expr("team", "DoesNotExist", "b", "a")),
        "namespaceSelector.matchExpressions[1]: operator DoesNotExist takes no values, "
        "got ['a', 'b']",
        id="doesnotexist-with-values",
    ),
    pytest.param(
        long_expressions(expr("team", "in", "a")),
        "namespaceSelector.matchExpressions[1].operator: 'in' is not an operator (expected one "
        "of In, NotIn, Exists, DoesNotExist); did you mean 'In'?",
        id="operator-wrong-case",
    ),
    pytest.param(
        long_expressions(expr("team", "Gt", "1")),
        "namespaceSelector.matchExpressions[1].operator: 'Gt' is not an operator (expected one "
        "of In, NotIn, Exists, DoesNotExist)",
        id="operator-unknown",
    ),
    pytest.param(
        long_expressions({"key": "team", "operator": None}),
        "namespaceSelector.matchExpressions[1].operator: must be a string, got null None",
        id="operator-null",
    ),
    pytest.param(
        long_expressions({"key": "team"}),
        "namespaceSelector.matchExpressions[1]: operator is missing",
        id="operator-missing",
    ),
    pytest.param(
        long_expressions({"operator": "Exists"}),
        "namespaceSelector.matchExpressions[1]: key is missing",
        id="key-missing",
    ),
    pytest.param(
        long_expressions({"key": 5, "operator": "Exists"}),
        "namespaceSelector.matchExpressions[1].key: must be a string, got int 5",
        id="key-not-a-string",
    ),
    pytest.param(
        long_expressions({"key": "", "operator": "Exists"}),
        "namespaceSelector.matchExpressions[1].key: label key is empty",
        id="key-empty",
    ),
    pytest.param(
        long_expressions({"key": "Team.io/x", "operator": "Exists"}),
        "namespaceSelector.matchExpressions[1].key: label key 'Team.io/x' has a prefix "
        "'Team.io' that is not a DNS subdomain (lowercase letters, digits, '-' and '.', "
        "each part starting and ending with a letter or digit)",
        id="key-bad-prefix",
    ),
    pytest.param(
        long_expressions({"key": "team", "operator": "In", "values": "a"}),
        "namespaceSelector.matchExpressions[1].values: must be a list of strings, got str 'a'",
        id="values-a-bare-string",
    ),
    pytest.param(
        long_expressions({"key": "team", "operator": "In", "values": ["a", 2]}),
        "namespaceSelector.matchExpressions[1].values[1]: must be a string, got int 2",
        id="values-item-not-a-string",
    ),
    pytest.param(
        long_expressions(expr("team", "In", "a", "b!")),
        "namespaceSelector.matchExpressions[1].values[1]: label value 'b!' is invalid: it must "
        "be empty or letters, digits, '-', '_' and '.', starting and ending with a letter or "
        "digit",
        id="values-item-invalid",
    ),
    pytest.param(
        long_expressions({"key": "team", "operator": "Exists", "value": ["a"]}),
        "namespaceSelector.matchExpressions[1]: unknown field 'value' (expected one of key, "
        "operator, values)",
        id="expression-unknown-field",
    ),
]


@pytest.mark.parametrize(("raw", "message"), FROM_DICT_ERRORS)
def test_from_dict_refuses(raw: Any, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        from_dict(raw)
    assert str(caught.value) == message


def test_from_dict_errors_use_the_given_field_path() -> None:
    with pytest.raises(SelectorError) as caught:
        from_dict({"matchExpressions": [expr("team", "In")]}, where="spec.namespaceSelector")
    assert str(caught.value) == (
        "spec.namespaceSelector.matchExpressions[0]: operator In needs at least one value"
    )


# --- rendering and the round trip ----------------------------------------------------

# (selector, its kubectl string form)
RENDERED: list[Any] = [
    pytest.param(sel(req("env", IN, "prod")), "env=prod", id="in-one-value"),
    pytest.param(sel(req("env", NOT_IN, "prod")), "env!=prod", id="notin-one-value"),
    pytest.param(sel(req("team", IN, "b", "a")), "team in (a,b)", id="in-sorted-values"),
    pytest.param(sel(req("team", NOT_IN, "b", "a")), "team notin (a,b)", id="notin-values"),
    pytest.param(sel(req("team", EXISTS)), "team", id="exists"),
    pytest.param(sel(req("team", DOES_NOT_EXIST)), "!team", id="doesnotexist"),
    pytest.param(sel(req("env", IN, "")), "env=", id="in-empty-value"),
    pytest.param(sel(req("team", IN, "", "a")), "team in (,a)", id="in-empty-among-values"),
    pytest.param(
        sel(req("team", IN, "a", "b"), req("env", IN, "prod")),
        "env=prod,team in (a,b)",
        id="sorted-by-key",
    ),
]


@pytest.mark.parametrize(("selector", "text"), RENDERED)
def test_str_is_the_kubectl_form(selector: LabelSelector, text: str) -> None:
    assert str(selector) == text


ROUND_TRIP: list[Any] = [
    pytest.param(parse("env=prod"), id="equals"),
    pytest.param(parse("env!=prod"), id="not-equals"),
    pytest.param(parse("env="), id="empty-value"),
    pytest.param(parse("env!="), id="not-equals-empty-value"),
    pytest.param(parse("team in (a,b,c)"), id="in"),
    pytest.param(parse("team notin (a,b)"), id="notin"),
    pytest.param(parse("team in (,a)"), id="in-with-empty-value"),
    pytest.param(parse("team notin (a,,b)"), id="notin-with-empty-value"),
    pytest.param(parse("team"), id="exists"),
    pytest.param(parse("!team"), id="doesnotexist"),
    pytest.param(
        parse(" team in (b,a), !legacy ,example.com/tier, env==prod, env!=dev "), id="mixed"
    ),
    pytest.param(
        from_dict(
            {
                "matchLabels": {"kubernetes.io/metadata.name": "default"},
                "matchExpressions": [expr("team", "NotIn", "x", "y")],
            }
        ),
        id="from-dict",
    ),
]


@pytest.mark.parametrize("selector", ROUND_TRIP)
def test_round_trip(selector: LabelSelector) -> None:
    text = str(selector)
    assert text != "<everything>"
    assert parse(text) == selector


KEYS = ["a", "team", "env", "example.com/team", "x.y-z/A_b.c", "k" * 63]
VALUES = ["", "a", "b", "prod", "A-1_b.2", "v" * 63]


def random_selector(rng: random.Random) -> LabelSelector:
    requirements: list[Requirement] = []
    for _ in range(rng.randint(1, 4)):
        operator = rng.choice(list(Operator))
        values = rng.sample(VALUES, rng.randint(1, 3)) if operator in (IN, NOT_IN) else []
        requirements.append(Requirement(rng.choice(KEYS), operator, frozenset(values)))
    return LabelSelector(tuple(requirements))


def as_dict(selector: LabelSelector) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": r.key, "operator": r.operator.value, "values": sorted(r.values)}
            for r in selector.requirements
        ]
    }


def test_round_trip_of_generated_selectors_through_both_forms() -> None:
    rng = random.Random(20240611)
    for _ in range(300):
        selector = random_selector(rng)
        assert parse(str(selector)) == selector, str(selector)
        assert from_dict(as_dict(selector)) == selector, str(selector)
        # The same selection, not only the same structure.
        labels = {k: rng.choice(VALUES) for k in rng.sample(KEYS, rng.randint(0, len(KEYS)))}
        assert parse(str(selector)).matches(labels) == selector.matches(labels)


# --- Requirement built directly ------------------------------------------------------

BAD_REQUIREMENTS: list[Any] = [
    pytest.param(("team", IN, frozenset()), "operator In needs at least one value", id="in-empty"),
    pytest.param(("team", NOT_IN, frozenset()), "operator NotIn needs", id="notin-empty"),
    pytest.param(("team", EXISTS, frozenset({"a"})), "operator Exists takes no values", id="ex"),
    pytest.param(("team", DOES_NOT_EXIST, frozenset({"a"})), "takes no values", id="dne"),
    pytest.param(("team_", EXISTS, frozenset()), "label key 'team_' is invalid", id="bad-key"),
    pytest.param(("team", IN, frozenset({"a b"})), "label value 'a b' is invalid", id="bad-value"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_REQUIREMENTS)
def test_a_bad_requirement_cannot_be_built(args: Any, fragment: str) -> None:
    with pytest.raises(SelectorError) as caught:
        Requirement(*args)
    assert str(caught.value).startswith(f"requirement on {args[0]!r}: ")
    assert fragment in str(caught.value)


def test_requirement_values_are_frozen_whatever_was_passed() -> None:
    built = Requirement("team", IN, {"a", "b"})  # type: ignore[arg-type]
    assert isinstance(built.values, frozenset)
    assert built == req("team", IN, "a", "b")
    assert hash(built) == hash(req("team", IN, "a", "b"))
