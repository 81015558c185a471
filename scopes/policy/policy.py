"""Loading a policy file: TOML -> :class:`PolicyModel` (shape) -> :class:`Policy` (compiled, cross-checked).

Every error names the file, the rule (or budget) and the field, e.g.
``scopes/policy.toml: rule 'refund-per-call-cap' (rules[0]): field limit.JPY: JPY has 0 decimal places``.
The policy's version is the declared ``version`` plus the first 12 hex digits of the file's SHA-256, so two files
that differ never share a version, even when someone forgets to bump it.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from scopes.money import Money
from scopes.policy.conditions import AnyOf, Compare, Condition
from scopes.policy.errors import PolicyError
from scopes.policy.guards import Guards, compile_guards
from scopes.policy.limits import COUNT, QUANTITY, Budget, Limits, Window
from scopes.policy.model import (
    BudgetModel,
    BudgetRuleModel,
    CapRuleModel,
    ConditionModel,
    PathRef,
    PolicyModel,
    RequireRuleModel,
    Tier,
)
from scopes.policy.rules import BudgetRule, CapRule, RequireRule, Rule
from scopes.policy.values import Path, Template, parse_duration

DEFAULT_POLICY = FilePath(__file__).parent.parent / "policy.toml"
_CAP_VARIABLES = frozenset({"amount", "limit", "ceiling", "token_limit"})
_BUDGET_VARIABLES = frozenset({"amount", "limit", "used", "left", "budget"})
_UNION_MEMBERS = frozenset({"str", "int", "bool", "datetime", "PathRef", "ConditionModel"})


@dataclass(frozen=True)
class Policy:
    """A compiled policy: rules sorted by kind and id (file order never changes an answer), indexed by tool."""

    version: str
    source: str
    zone: ZoneInfo
    budgets: Mapping[str, Budget]
    rules: tuple[Rule, ...]
    digest: str
    _by_tool: Mapping[str, tuple[Rule, ...]] = field(repr=False)
    guards: Guards = field(default_factory=Guards)
    """Rate limits, the open-approvals limit and circuit breakers (:mod:`scopes.policy.guards`)."""

    def rules_for(self, tool: str) -> tuple[Rule, ...]:
        return self._by_tool.get(tool, ())

    @property
    def tools(self) -> frozenset[str]:
        return frozenset(self._by_tool)


def load_policy(path: FilePath = DEFAULT_POLICY) -> Policy:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{path}: file not found") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read: {exc.strerror}") from None
    return parse_policy(data, str(path))


def parse_policy(data: bytes, source: str = "<policy>") -> Policy:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    return policy_from_mapping(raw, source, hashlib.sha256(data).hexdigest())


def policy_from_mapping(raw: dict[str, Any], source: str, digest: str) -> Policy:
    """Check and compile a policy already read from TOML; ``digest`` identifies its content in the version."""
    try:
        model = PolicyModel.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(_explain(source, raw, exc)) from None
    return _Compiler(source, model).compile(f"{model.version}+{digest[:12]}", digest)


def where(source: str, rule: tuple[int, str] | None = None, field_name: str | None = None, *, budget: str = "") -> str:
    place = f"rule {rule[1]!r} (rules[{rule[0]}])" if rule else (f"budget {budget!r}" if budget else "")
    parts = [source, *([place] if place else []), *([f"field {field_name}"] if field_name else [])]
    return ": ".join(parts)


def _explain(source: str, raw: dict[str, Any], exc: ValidationError) -> str:
    rules = raw.get("rules")
    problems: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        rule: tuple[int, str] | None = None
        budget = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            index = loc[1]
            entry = rules[index] if isinstance(rules, list) and index < len(rules) else None
            rule_id = str(entry.get("id", "?")) if isinstance(entry, dict) else "?"
            rule = (index, rule_id)
            loc = loc[3:] if len(loc) > 2 and loc[2] in ("cap", "budget", "require") else loc[2:]
        elif len(loc) >= 2 and loc[0] == "budgets":
            budget, loc = str(loc[1]), loc[2:]
        parts = [p for p in loc if not (isinstance(p, str) and (p in _UNION_MEMBERS or "[" in p))]
        name = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in parts).replace(".[", "[") or None
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.setdefault(where(source, rule, name, budget=budget), [])
        if message not in problems[where(source, rule, name, budget=budget)]:
            problems[where(source, rule, name, budget=budget)].append(message)
    return "\n".join(f"{place}: {_join(messages)}" for place, messages in problems.items())


def _join(messages: list[str]) -> str:
    """One line per place; a union's "Input should be a valid X" for every member becomes "expected X or Y"."""
    prefix = "Input should be a valid "
    kinds = [m.removeprefix(prefix).replace("dictionary or instance of PathRef", "{ path = ... }") for m in messages]
    if len(messages) > 1 and all(m.startswith(prefix) for m in messages):
        return f"expected {', '.join(kinds[:-1])} or {kinds[-1]}"
    return " / ".join(messages)


def _minor_table(table: Mapping[str, str]) -> dict[str, int]:
    return {currency: Money.parse(amount, currency).minor for currency, amount in table.items()}


class _Compiler:
    def __init__(self, source: str, model: PolicyModel) -> None:
        self.source = source
        self.model = model
        self.problems: list[str] = []

    def fail(self, message: str, rule: tuple[int, str] | None = None, field_name: str | None = None) -> None:
        self.problems.append(f"{where(self.source, rule, field_name)}: {message}")

    def compile(self, version: str, digest: str) -> Policy:
        budgets = {name: self.budget(name, budget) for name, budget in self.model.budgets.items()}
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        spenders: dict[tuple[str, str], str] = {}
        for index, model in enumerate(self.model.rules):
            at = (index, model.id)
            if model.id in seen:
                self.fail(f"the id is already used by rules[{seen[model.id]}]", at, "id")
            seen.setdefault(model.id, index)
            if isinstance(model, BudgetRuleModel):
                for tool in model.tools:
                    other = spenders.setdefault((tool, model.budget), model.id)
                    if other != model.id:
                        self.fail(f"{tool} already spends from budget {model.budget!r} in rule {other!r}", at, "budget")
            try:
                rules.append(self.rule(at, model, budgets))
            except _Invalid:
                continue
        whole = self.model
        guards, problems = compile_guards(
            whole.rate_limits, whole.breakers, whole.approvals, frozenset(budgets), self.source
        )
        self.problems.extend(problems)
        if self.problems:
            raise PolicyError("\n".join(self.problems))
        ordered = tuple(sorted(rules, key=lambda rule: (_KIND_ORDER[type(rule)], rule.id)))
        by_tool: dict[str, list[Rule]] = {}
        for rule in ordered:
            for tool in sorted(rule.tools):
                by_tool.setdefault(tool, []).append(rule)
        return Policy(
            version=version,
            source=self.source,
            zone=ZoneInfo(self.model.timezone),
            budgets=budgets,
            rules=ordered,
            digest=digest,
            _by_tool={tool: tuple(rules) for tool, rules in by_tool.items()},
            guards=guards,
        )

    def budget(self, name: str, model: BudgetModel) -> Budget:
        base = _minor_table(model.limit) if model.limit is not None else {COUNT: model.count or 0}
        tiers = self.tiers(model.tiers, base, None, f"budget {name!r}")
        per: str | Path = Path.parse(model.per) if "." in model.per else model.per
        disclose = model.disclose if model.disclose is not None else model.per in ("principal", "client")
        window = Window.parse(model.window)
        return Budget(name, model.label or name, per, window, Limits(base, tiers), bool(model.limit), disclose)

    def tiers(
        self, tiers: list[Tier], base: Mapping[str, int], rule: tuple[int, str] | None, owner: str = ""
    ) -> tuple[tuple[str, Mapping[str, int]], ...]:
        compiled: list[tuple[str, Mapping[str, int]]] = []
        for i, tier in enumerate(tiers):
            if tier.max is not None:
                table = {QUANTITY: tier.max}
            else:
                table = _minor_table(tier.limit) if tier.limit is not None else {COUNT: tier.count or 0}
            extra = sorted(set(table) - set(base))
            if extra:
                message = f"names {', '.join(extra)}, which the base limit does not (a tier only raises a limit)"
                if rule is None:
                    self.problems.append(f"{self.source}: {owner}: field tiers[{i}]: {message}")
                else:
                    self.fail(message, rule, f"tiers[{i}]")
            compiled.append((tier.scope, table))
        return tuple(compiled)

    def rule(self, at: tuple[int, str], model: Any, budgets: Mapping[str, Budget]) -> Rule:
        common: dict[str, Any] = {
            "id": model.id,
            "tools": frozenset(model.tools),
            "shadow": model.mode == "shadow",
            "when": tuple(self.condition(c, at, f"when[{i}]") for i, c in enumerate(model.when)),
        }
        if isinstance(model, CapRuleModel):
            base = _minor_table(model.limit) if model.limit is not None else {QUANTITY: model.max or 0}
            tiers = self.tiers(model.tiers, base, at)
            ceiling = (
                {QUANTITY: model.ceiling}
                if isinstance(model.ceiling, int)
                else _minor_table(model.ceiling)
                if model.ceiling is not None
                else None
            )
            if ceiling is not None:
                for currency, limit in base.items():
                    highest = max([limit, *(t[currency] for _, t in tiers if currency in t)])
                    if currency not in ceiling:
                        self.fail(f"has no {currency}, which the limit names", at, "ceiling")
                    elif ceiling[currency] < highest:
                        self.fail(f"{currency} is below the limit it should sit above", at, f"ceiling.{currency}")
            token = model.token_limit
            return CapRule(
                **common,
                message=self.template(model.message, _CAP_VARIABLES, at),
                amount=Path.parse(model.amount),
                limits=Limits(base, tiers),
                above=model.above,
                ceiling=ceiling,
                token_type=token.type if token else None,
                token_field=token.field if token else "max_amount",
            )
        if isinstance(model, BudgetRuleModel):
            budget = budgets.get(model.budget)
            if budget is None:
                known = ", ".join(sorted(budgets)) or "none"
                self.fail(f"unknown budget {model.budget!r}; budgets defined: {known}", at, "budget")
                raise _Invalid
            if budget.is_money and model.amount is None:
                self.fail(f"budget {budget.id!r} counts money; say which amount it spends", at, "amount")
            if not budget.is_money and model.amount is not None:
                self.fail(f"budget {budget.id!r} counts calls; it takes no amount", at, "amount")
            return BudgetRule(
                **common,
                message=self.template(model.message, _BUDGET_VARIABLES, at),
                budget=budget,
                amount=Path.parse(model.amount) if model.amount else None,
                above=model.above,
            )
        assert isinstance(model, RequireRuleModel)
        return RequireRule(
            **common,
            message=self.template(model.message, frozenset(), at),
            require=tuple(self.condition(c, at, f"require[{i}]") for i, c in enumerate(model.require)),
            code=model.code,
            otherwise=model.otherwise,
            hints=tuple(model.would_allow),
        )

    def template(self, text: str | None, variables: frozenset[str], at: tuple[int, str]) -> Template | None:
        if text is None:
            return None
        try:
            return Template.parse(text, variables)
        except ValueError as exc:
            self.fail(str(exc), at, "message")
            return None

    def condition(self, model: ConditionModel, at: tuple[int, str], name: str) -> Condition:
        if model.any is not None:
            return AnyOf(tuple(self.condition(c, at, f"{name}.any[{i}]") for i, c in enumerate(model.any)))
        assert model.path is not None
        op, operand = model.operator
        if op in ("within", "older_than"):
            operand = parse_duration(operand)
        elif op in ("in", "not_in"):
            operand = tuple(operand)
        elif isinstance(operand, PathRef):
            operand = Path.parse(operand.path)
        elif op in ("lt", "le", "gt", "ge") and isinstance(operand, bool):
            self.fail("a yes/no value has no order", at, f"{name}.{op}")
        return Compare(Path.parse(model.path), op, operand)  # type: ignore[arg-type]


_KIND_ORDER: dict[type[Rule], int] = {RequireRule: 0, CapRule: 1, BudgetRule: 2}


class _Invalid(Exception):
    """A rule so broken it cannot be compiled; the reason is already in the compiler's problems."""
