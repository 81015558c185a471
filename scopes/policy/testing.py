"""Policy tests as data, in the spirit of Cerbos and OPA policy tests: a security team's suite of cases.

A case gives a principal, a tool, its arguments, the stored state (``facts``), the prior ledger totals and a pinned
clock, and expects a decision (and optionally its reason code, rule, words of its reason, what would allow it, and
which shadow rules would block). ``mandate policy test FILE`` runs a suite and exits non-zero when any case fails.
The format is documented in docs/policy.md; scopes/policy-tests/ holds the suite of the default policy.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scopes.money import Money, MoneyError
from scopes.policy.decision import DecisionRequest, decide, ledger_needs
from scopes.policy.errors import PolicyError
from scopes.policy.guard_testing import GuardCase, run_guard_case
from scopes.policy.limits import COUNT
from scopes.policy.lint import Vocabulary
from scopes.policy.policy import Policy, load_policy
from scopes.policy.results import Decision
from scopes.policy.values import Caller

ArgsPreparer = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
"""Turns a case's arguments into what the decision sees (validated, money as Money); raises ValueError if invalid."""


class _Strict(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True, frozen=True)


class PrincipalSpec(_Strict):
    scopes: list[str] = Field(default_factory=list[str])
    subject: str | None = None
    client_id: str | None = None
    issuer: str = "policy-test"
    tenant: str | None = None
    actor: str | None = None
    claims: dict[str, Any] = Field(default_factory=dict[str, Any])
    authorization_details: list[dict[str, Any]] = Field(default_factory=list[dict[str, Any]])

    def caller(self, name: str) -> Caller:
        return Caller(
            subject=self.subject or f"test:{name}",
            client_id=self.client_id or name,
            issuer=self.issuer,
            scopes=frozenset(self.scopes),
            tenant=self.tenant,
            actor=self.actor,
            claims=self.claims,
            authorization_details=tuple(self.authorization_details),
        )


class Expect(_Strict):
    decision: Literal["allow", "deny", "approval"]
    reason_code: str | None = None
    rule: str | None = None
    reason_contains: list[str] = Field(default_factory=list[str])
    would_allow_contains: list[str] = Field(default_factory=list[str])
    shadow: list[str] | None = None
    """The shadow rules that would have blocked, exactly (``[]``: none)."""
    error: bool | None = None
    not_found: bool | None = None


class Case(_Strict):
    name: Annotated[str, Field(min_length=1)]
    principal: str | PrincipalSpec
    tool: str
    args: dict[str, Any] = Field(default_factory=dict[str, Any])
    facts: str | dict[str, Any] | None = None
    with_facts: dict[str, Any] = Field(default_factory=dict[str, Any])
    """Changes to the named facts set (``facts = "open_order"``)."""
    ledger: dict[str, str | int] = Field(default_factory=dict[str, str | int])
    now: datetime | None = None
    expect: Expect


class SuiteModel(_Strict):
    policy: str | None = None
    """The policy file, relative to this file (default: the policy the command was given)."""
    now: datetime | None = None
    principals: dict[str, PrincipalSpec] = Field(default_factory=dict[str, PrincipalSpec])
    facts: dict[str, dict[str, Any]] = Field(default_factory=dict[str, dict[str, Any]])
    cases: list[Case] = Field(default_factory=list[Case])
    guard_cases: list[GuardCase] = Field(default_factory=list[GuardCase])
    """Rate limits and circuit breakers (:mod:`scopes.policy.guard_testing`)."""

    @model_validator(mode="after")
    def _references(self) -> SuiteModel:
        if not self.cases and not self.guard_cases:
            raise ValueError("a suite needs at least one case ([[cases]] or [[guard_cases]])")
        for guard_case in self.guard_cases:
            if guard_case.principal not in self.principals:
                raise ValueError(f"guard case {guard_case.name!r}: unknown principal {guard_case.principal!r}")
        for case in self.cases:
            if isinstance(case.principal, str) and case.principal not in self.principals:
                raise ValueError(f"case {case.name!r}: unknown principal {case.principal!r}")
            if isinstance(case.facts, str) and case.facts not in self.facts:
                raise ValueError(f"case {case.name!r}: unknown facts set {case.facts!r}")
            when = case.now or self.now
            if when is None or when.tzinfo is None:
                raise ValueError(f"case {case.name!r}: pin the clock with a time zone (now = 2025-06-02T10:00:00Z)")
        return self


@dataclass(frozen=True)
class Suite:
    path: FilePath
    model: SuiteModel

    def policy_path(self) -> FilePath | None:
        return (self.path.parent / self.model.policy).resolve() if self.model.policy else None


@dataclass(frozen=True)
class CaseResult:
    name: str
    problems: list[str] = field(default_factory=list[str])
    decision: Decision | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


def load_suite(path: FilePath) -> Suite:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{path}: file not found") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Suite(path, SuiteModel.model_validate(raw))
    except ValidationError as exc:
        cases = raw.get("cases")
        lines = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = list(error["loc"])
            place = str(path)
            if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
                entry = cases[loc[1]] if isinstance(cases, list) and loc[1] < len(cases) else {}
                name = entry.get("name", "?") if isinstance(entry, dict) else "?"
                place += f": case {name!r} (cases[{loc[1]}])"
                loc = loc[2:]
            where = ".".join(str(p) for p in loc)
            lines.append(f"{place}{': field ' + where if where else ''}: {error['msg'].removeprefix('Value error, ')}")
        raise PolicyError("\n".join(lines)) from None


def plain_args(vocabulary: Vocabulary | None) -> ArgsPreparer:
    """Arguments as given, with the tool's money arguments read as Money (no other validation)."""

    def prepare(tool: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        values = dict(args)
        shape = vocabulary.tools.get(tool) if vocabulary else None
        for amount, currency in shape.money.items() if shape else ():
            if isinstance(values.get(amount), str):
                try:
                    values[amount] = Money.parse(values[amount], str(values.get(currency)))
                except MoneyError as exc:
                    raise ValueError(f"{amount}: {exc}") from None
        return values

    return prepare


def run_suite(
    suite: Suite, policy: Policy | None = None, *, prepare: ArgsPreparer, vocabulary: Vocabulary | None = None
) -> list[CaseResult]:
    """Run every case; ``policy`` defaults to the suite's own ``policy`` file."""
    if policy is None:
        path = suite.policy_path()
        if path is None:
            raise PolicyError(f'{suite.path}: name the policy to test (policy = "../policy.toml")')
        policy = load_policy(path)
    results = [run_case(suite.model, case, policy, prepare, vocabulary) for case in suite.model.cases]
    for guard_case in suite.model.guard_cases:
        caller = suite.model.principals[guard_case.principal].caller(guard_case.principal)
        results.append(CaseResult(guard_case.name, run_guard_case(guard_case, policy.guards, caller)))
    return results


def run_case(
    suite: SuiteModel, case: Case, policy: Policy, prepare: ArgsPreparer, vocabulary: Vocabulary | None
) -> CaseResult:
    try:
        request = _request(suite, case, policy, prepare, vocabulary)
    except (ValueError, MoneyError) as exc:
        return CaseResult(case.name, [f"the case cannot be run: {exc}"])
    decision = decide(policy, request)
    return CaseResult(case.name, _compare(case.expect, decision), decision)


def _request(
    suite: SuiteModel, case: Case, policy: Policy, prepare: ArgsPreparer, vocabulary: Vocabulary | None
) -> DecisionRequest:
    if vocabulary is not None and case.tool not in vocabulary.tools:
        raise ValueError(f"this server publishes no tool {case.tool!r}")
    spec = suite.principals[case.principal] if isinstance(case.principal, str) else case.principal
    name = case.principal if isinstance(case.principal, str) else "inline"
    facts_table = dict(suite.facts[case.facts] if isinstance(case.facts, str) else (case.facts or {}))
    facts_table.update(case.with_facts)
    shape = vocabulary.tools.get(case.tool) if vocabulary else None
    if shape is not None and facts_table:
        unknown = sorted(set(facts_table) - (shape.facts or frozenset()))
        if unknown:
            raise ValueError(f"{case.tool}'s facts have no {', '.join(unknown)}")
    now = case.now or suite.now
    assert now is not None  # checked when the suite was loaded
    request = DecisionRequest(
        tool=case.tool,
        args=prepare(case.tool, case.args),
        caller=spec.caller(name),
        now=now,
        facts={key: _fact(key, value) for key, value in facts_table.items()},
    )
    unknown_budgets = sorted(set(case.ledger) - set(policy.budgets))
    if unknown_budgets:
        raise ValueError(f"the policy has no budget {', '.join(unknown_budgets)}")
    usage: dict[str, int | Money] = {}
    for need in ledger_needs(policy, request):
        given = case.ledger.get(need.budget, 0)
        if need.unit == COUNT:
            if not isinstance(given, int):
                raise ValueError(f"ledger.{need.budget} counts calls: give a whole number")
            usage[need.budget] = given
        else:
            usage[need.budget] = Money.parse(str(given) if given else "0", need.unit)
    return replace(request, usage=usage)


def _fact(name: str, value: Any) -> Any:
    """TOML -> fact: ``{ amount = "1.00", currency = "EUR" }`` is Money; times must carry a time zone."""
    if isinstance(value, dict) and set(value) == {"amount", "currency"}:
        return Money.parse(str(value["amount"]), str(value["currency"]))
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"facts.{name}: give the time zone (2025-06-01T10:00:00Z)")
    return value


def _compare(expect: Expect, decision: Decision) -> list[str]:
    problems: list[str] = []
    got = f"{decision.effect}/{decision.reason_code}" + (f" by {decision.rule_id}" if decision.rule_id else "")
    if decision.effect != expect.decision:
        problems.append(f"expected {expect.decision}, got {got}: {decision.audit_reason or decision.reason}")
        return problems
    if expect.reason_code is not None and decision.reason_code != expect.reason_code:
        problems.append(f"expected reason code {expect.reason_code}, got {got}")
    if expect.rule is not None and decision.rule_id != expect.rule:
        problems.append(f"expected rule {expect.rule}, got {got}")
    for words in expect.reason_contains:
        if words not in decision.reason:
            problems.append(f"the reason does not contain {words!r}: {decision.reason}")
    for words in expect.would_allow_contains:
        if not any(words in hint for hint in decision.would_allow):
            problems.append(f"no would-allow hint contains {words!r}: {list(decision.would_allow)}")
    if expect.shadow is not None:
        shadow = sorted(result.rule_id for result in decision.shadow_blocks)
        if shadow != sorted(expect.shadow):
            problems.append(f"expected shadow rules {sorted(expect.shadow)} to block, got {shadow}")
    if expect.error is not None and decision.error != expect.error:
        problems.append(f"expected error={expect.error}, got {decision.error}: {decision.audit_reason}")
    if expect.not_found is not None and decision.conceal != expect.not_found:
        problems.append(f"expected not_found={expect.not_found}, got {decision.conceal}")
    return problems
