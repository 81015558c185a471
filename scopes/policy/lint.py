"""``mandate policy check``: a valid policy can still name things the server does not have; find them.

Checked against a :class:`Vocabulary` (the tools a server publishes, their arguments, money arguments and facts,
and the scope catalog), given as data so this module needs nothing from the server. Each finding is a warning: a
rule naming a tool another deployment has is not wrong, but a rule reading ``args.amout`` denies every call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from scopes.policy.conditions import AnyOf, Compare, Condition
from scopes.policy.policy import Policy
from scopes.policy.rules import BudgetRule, CapRule, RequireRule, Rule
from scopes.policy.values import Path


@dataclass(frozen=True, slots=True)
class ToolShape:
    """What a policy may refer to for one tool."""

    name: str
    scopes: frozenset[str]
    args: frozenset[str]
    money: Mapping[str, str] = field(default_factory=dict[str, str])
    facts: frozenset[str] | None = None
    """``None``: the tool has no facts loader. ``money_facts``: the facts that are money."""
    money_facts: frozenset[str] = frozenset()
    concealable: bool = False
    """Its facts know how to refuse as "not found" (needed by rules with ``otherwise = "not_found"``)."""
    read_only: bool = False
    """A read-only tool cannot wait for approval (its answers never include a pending approval)."""


@dataclass(frozen=True, slots=True)
class Vocabulary:
    tools: Mapping[str, ToolShape]
    scopes: frozenset[str]


def lint(policy: Policy, vocabulary: Vocabulary) -> list[str]:
    warnings: list[str] = []
    for rule in policy.rules:
        warnings.extend(f"rule {rule.id!r}: {problem}" for problem in _rule_problems(rule, vocabulary))
    for budget in policy.budgets.values():
        warnings.extend(
            f"budget {budget.id!r}: tier scope {scope!r} is not in the scope catalog"
            for scope, _ in budget.limits.tiers
            if scope not in vocabulary.scopes
        )
    for limit in policy.guards.rate_limits:
        warnings.extend(
            f"rate limit {limit.id!r}: names tool {tool!r}, which this server does not publish"
            for tool in sorted(limit.tools or ())
            if tool not in vocabulary.tools
        )
    for breaker in policy.guards.breakers:
        if breaker.shadow:
            warnings.append(f"breaker {breaker.id!r} is in shadow mode: it records and alerts but suspends no one")
    used = {rule.budget.id for rule in policy.rules if isinstance(rule, BudgetRule)}
    warnings.extend(f"budget {name!r} is not used by any rule" for name in sorted(set(policy.budgets) - used))
    warnings.extend(_unlimited_side_effects(policy, vocabulary))
    return warnings


def _unlimited_side_effects(policy: Policy, vocabulary: Vocabulary) -> Iterator[str]:
    """Every tool that changes something and that no enforced cap or budget limits: its scope alone is the limit."""
    limited = {
        tool
        for rule in policy.rules
        if isinstance(rule, CapRule | BudgetRule) and not rule.shadow
        for tool in rule.tools
    }
    for name, shape in sorted(vocabulary.tools.items()):
        if not shape.read_only and name not in limited:
            yield (
                f"tool {name!r} has a side effect and no cap or budget limits it: any token with its scope may call "
                "it without limit (add a cap or budget rule, or accept this knowingly)"
            )


def _rule_problems(rule: Rule, vocabulary: Vocabulary) -> Iterator[str]:
    tiers = rule.limits.tiers if isinstance(rule, CapRule) else ()
    for scope, _ in tiers:
        if scope not in vocabulary.scopes:
            yield f"tier scope {scope!r} is not in the scope catalog"
    for condition in _conditions(rule):
        if (
            isinstance(condition, Compare)
            and condition.op == "contains"
            and condition.path.text == "principal.scopes"
            and isinstance(condition.operand, str)
            and condition.operand not in vocabulary.scopes
        ):
            yield f"scope {condition.operand!r} is not in the scope catalog"
    for tool in sorted(rule.tools):
        shape = vocabulary.tools.get(tool)
        if shape is None:
            yield f"names tool {tool!r}, which this server does not publish"
            continue
        for path in _paths(rule):
            problem = _path_problem(path, shape)
            if problem:
                yield problem
        amount = rule.amount if isinstance(rule, CapRule | BudgetRule) else None
        if isinstance(rule, CapRule) and rule.is_quantity:
            amount = None  # a cap on a plain quantity: any whole-number argument or fact
        if amount is not None and not _is_money(amount, shape):
            yield f"{amount.text} is not money for {tool} (declare it with @tool(money=...)); every call would deny"
        if shape.read_only and _asks_approval(rule):
            yield f"{tool} is read-only and cannot wait for approval; the approval would be a deny"
        if isinstance(rule, RequireRule) and rule.otherwise == "not_found" and not shape.concealable:
            yield f"{tool}'s facts cannot refuse as 'not found'; the refusal would be a generic one"


def _asks_approval(rule: Rule) -> bool:
    if isinstance(rule, RequireRule):
        return rule.otherwise == "approval"
    return rule.above == "approval"


def _is_money(path: Path, shape: ToolShape) -> bool:
    name = path.parts[1] if len(path.parts) > 1 else ""
    return (path.root == "args" and name in shape.money) or (path.root == "facts" and name in shape.money_facts)


def _path_problem(path: Path, shape: ToolShape) -> str | None:
    name = path.parts[1] if len(path.parts) > 1 else ""
    if path.root == "args" and name not in shape.args:
        return f"{path.text}: {shape.name} has no argument {name!r} (it has {', '.join(sorted(shape.args))})"
    if path.root == "facts":
        if shape.facts is None:
            return f"{path.text}: {shape.name} declares no facts loader"
        if name not in shape.facts:
            return f"{path.text}: {shape.name}'s facts have no {name!r} (they have {', '.join(sorted(shape.facts))})"
    return None


def _conditions(rule: Rule) -> Iterator[Condition]:
    pending: list[Condition] = [*rule.when, *(rule.require if isinstance(rule, RequireRule) else ())]
    while pending:
        condition = pending.pop()
        yield condition
        if isinstance(condition, AnyOf):
            pending.extend(condition.conditions)


def _paths(rule: Rule) -> Iterator[Path]:
    for condition in _conditions(rule):
        if isinstance(condition, Compare):
            yield condition.path
            if isinstance(condition.operand, Path):
                yield condition.operand
    if isinstance(rule, CapRule | BudgetRule) and rule.amount is not None:
        yield rule.amount
    if isinstance(rule, BudgetRule) and isinstance(rule.budget.per, Path):
        yield rule.budget.per
    if rule.message is not None:
        yield from rule.message.paths
