"""Policy files: validated on load with errors naming the file, the rule and the field; checked against the tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from scopes.policy import DEFAULT_POLICY, PolicyError, load_policy
from scopes.policy.lint import lint
from server.app import load_tool_catalog
from server.config import Settings
from server.policy_runtime import vocabulary_of
from tests.policy.support import policy

CAP = """
    version = "v1"
    [[rules]]
    id = "refund-cap"
    kind = "cap"
    tools = ["refund_create"]
    amount = "args.amount"
    limit = {limit}
"""


@pytest.mark.parametrize(
    ("limit", "field", "problem"),
    [
        ('{ JPY = "100.50" }', "field limit", "JPY has 0 decimal places"),
        ("{ EUR = 100.0 }", "field limit.EUR", "valid string"),
        ('{ EUR = "1,000.00" }', "field limit", "decimal string"),
        ('{ eur = "100.00" }', "field limit.eur", "pattern"),
        ("{}", "field limit", "at least one currency"),
    ],
)
def test_an_invalid_cap_names_the_file_the_rule_and_the_field(limit: str, field: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy(CAP.replace("{limit}", limit), source="scopes/policy.toml")
    message = str(caught.value)
    assert message.startswith(f"scopes/policy.toml: rule 'refund-cap' (rules[0]): {field}"), message
    assert problem in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[[rules]]\nid = "a"\nkind = "budget"\ntools = ["refund_create"]\nbudget = "nope"\namount = "args.amount"',
            "rule 'a' (rules[0]): field budget: unknown budget 'nope'",
        ),
        (
            '[[rules]]\nid = "a"\nkind = "require"\ntools = ["t"]\nrequire = [{ path = "facts.x", eq = 1, ne = 2 }]\n'
            'code = "c"\nmessage = "m"',
            "rule 'a' (rules[0]): field require[0]: a condition has exactly one operator",
        ),
        (
            '[[rules]]\nid = "a"\nkind = "require"\ntools = ["t"]\nrequire = [{ path = "fact.x", eq = 1 }]\n'
            'code = "c"\nmessage = "m"',
            "field require[0].path: 'fact.x' is not a path",
        ),
        (
            '[[rules]]\nid = "a"\nkind = "require"\ntools = ["t"]\nrequire = [{ path = "facts.x", eq = 1 }]\n'
            'code = "c"\nmessage = "m {limit}"',
            "rule 'a' (rules[0]): field message: unknown placeholder {limit}",
        ),
        (
            '[[rules]]\nid = "a"\nkind = "require"\ntools = ["t"]\nrequire = [{ path = "facts.x", eq = 1 }]\n'
            'code = "c"\nmessage = "m"\n[[rules]]\nid = "a"\nkind = "require"\ntools = ["t"]\n'
            'require = [{ path = "facts.x", eq = 1 }]\ncode = "c"\nmessage = "m"',
            "rule 'a' (rules[1]): field id: the id is already used by rules[0]",
        ),
        (
            '[[rules]]\nid = "a"\nkind = "cap"\ntools = ["t"]\namount = "args.amount"\nlimit = { EUR = "100.00" }\n'
            'above = "approval"\nceiling = { EUR = "50.00" }',
            "rule 'a' (rules[0]): field ceiling.EUR: EUR is below the limit",
        ),
        (
            '[[rules]]\nid = "a"\nkind = "cap"\ntools = ["t"]\namount = "args.amount"\nlimit = { EUR = "100.00" }\n'
            'tiers = [{ scope = "x:y", limit = { USD = "1.00" } }]',
            "rule 'a' (rules[0]): field tiers[0]: names USD, which the base limit does not",
        ),
        (
            '[budgets.b]\nper = "principal"\nwindow = "week"\ncount = 3',
            "budget 'b': field window: 'week' is not a window",
        ),
        (
            '[budgets.b]\nper = "principal"\nwindow = "day"\ncount = 3\n[[rules]]\nid = "a"\nkind = "budget"\n'
            'tools = ["t"]\nbudget = "b"\namount = "args.amount"',
            "rule 'a' (rules[0]): field amount: budget 'b' counts calls; it takes no amount",
        ),
        ('timezone = "Europe/Amsterdan"', "field timezone: unknown time zone 'Europe/Amsterdan'"),
        ('[[rules]]\nid = "a"\nkind = "maximum"\ntools = ["t"]', "rule 'a' (rules[0])"),
    ],
)
def test_a_policy_error_says_where_it_is(body: str, expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy(f'version = "v1"\n{body}\n', source="p.toml")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("p.toml: ")


def test_a_missing_file_and_a_broken_file_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.toml: file not found"):
        load_policy(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("version = ")
    with pytest.raises(PolicyError, match=r"broken\.toml: not valid TOML"):
        load_policy(broken)


def test_the_policy_version_names_the_declared_version_and_the_content() -> None:
    one = policy('version = "2025.1"\n')
    other = policy('version = "2025.1"\ndescription = "edited without bumping the version"\n')
    assert one.version.startswith("2025.1+") and other.version.startswith("2025.1+")
    assert one.version != other.version


def test_the_default_policy_is_valid_and_names_only_what_the_server_has(settings: Settings) -> None:
    default = load_policy(DEFAULT_POLICY)
    assert lint(default, vocabulary_of(load_tool_catalog(settings))) == []


def test_the_check_warns_about_unknown_tools_arguments_facts_scopes_and_non_money_amounts(settings: Settings) -> None:
    checked = policy(
        """
        version = "lint"
        [budgets.unused]
        per = "principal"
        window = "day"
        count = 1
        [[rules]]
        id = "typos"
        kind = "cap"
        tools = ["refund_create", "refund_craete"]
        amount = "args.amout"
        limit = { EUR = "1.00" }
        tiers = [{ scope = "refunds:create:huge", limit = { EUR = "2.00" } }]
        when = [
            { path = "facts.refundable", present = true },
            { path = "principal.scopes", contains = "refund:create" },
        ]
        [[rules]]
        id = "no-facts"
        kind = "require"
        tools = ["orders_list"]
        require = [{ path = "facts.status", eq = "pending" }]
        code = "c"
        message = "m"
        otherwise = "not_found"
        [[rules]]
        id = "reads-need-a-human"
        kind = "require"
        tools = ["order_get"]
        require = [{ path = "principal.tenant", present = true }]
        code = "c"
        message = "m"
        otherwise = "approval"
        """
    )
    warnings = lint(checked, vocabulary_of(load_tool_catalog(settings)))
    expected = [
        "rule 'typos': tier scope 'refunds:create:huge' is not in the scope catalog",
        "rule 'typos': scope 'refund:create' is not in the scope catalog",
        "rule 'typos': names tool 'refund_craete', which this server does not publish",
        "rule 'typos': args.amout: refund_create has no argument 'amout'",
        "rule 'typos': facts.refundable: refund_create's facts have no 'refundable'",
        "rule 'typos': args.amout is not money for refund_create",
        "rule 'no-facts': facts.status: orders_list declares no facts loader",
        "rule 'no-facts': orders_list's facts cannot refuse as 'not found'",
        "rule 'reads-need-a-human': order_get is read-only and cannot wait for approval",
        "budget 'unused' is not used by any rule",
    ]
    for fragment in expected:
        assert any(warning.startswith(fragment) for warning in warnings), (fragment, warnings)
