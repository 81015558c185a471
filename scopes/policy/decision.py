"""The decision function: a policy, a call and the stored state it needs -> allow / deny / approval, explained.

Deterministic and free of I/O: everything is passed in (arguments, facts read by the tool's facts loader, the
caller, the clock and the ledger totals), so the same inputs always give the same decision and reason. Fail closed:
a rule that raises is a deny recorded as an error. Rules are combined like Cedar's forbid-over-permit (the token's
scopes are the permit; every rule can only narrow it): ``conceal`` > ``deny`` > ``error`` > ``approval`` >
``allow``. Among rules with the same outcome the one reported is the first by (kind, id): preconditions
(``require``) before per-call caps before budgets, because "wrong currency" explains more than "over budget".
Rules are evaluated in that order too, so the order of rules in the file never changes the answer.

Two steps, because cumulative caps need totals the caller must read (and lock) first:
:func:`ledger_needs` says which totals a call needs, and :func:`decide` takes them in ``DecisionRequest.usage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from scopes.money import Money
from scopes.policy.conditions import Inputs
from scopes.policy.errors import RuleError
from scopes.policy.policy import Policy
from scopes.policy.results import POLICY_ERROR, Decision, Effect, LedgerKey, RuleResult
from scopes.policy.rules import BudgetRule, Context, Rule
from scopes.policy.values import Caller

ERROR_MESSAGE = (
    "This action was refused because a policy rule could not be evaluated (the policy fails closed); nothing was "
    "done. The security team can see why in the audit trail."
)


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One call as the policy sees it. ``args`` are validated, with money fields as :class:`Money`."""

    tool: str
    args: Mapping[str, Any]
    caller: Caller
    now: datetime
    facts: Mapping[str, Any] = field(default_factory=dict[str, Any])
    usage: Mapping[str, int | Money] = field(default_factory=dict[str, int | Money])
    """The ledger total of each budget this call spends from (see :func:`ledger_needs`), keyed by budget id."""
    approved: frozenset[str] = frozenset()
    """Rules whose ``approval`` a human has granted for exactly this call: they pass (a budget then spends above
    its cap, uncapped). Their ``deny`` outcomes (a ceiling) still deny. For running an approved action."""

    def context(self, policy: Policy) -> Context:
        if self.now.tzinfo is None:
            raise ValueError("DecisionRequest.now must be timezone-aware")
        return Context(Inputs(self.args, self.facts, self.caller, self.now), self.usage, policy.zone)


def ledger_needs(policy: Policy, request: DecisionRequest) -> tuple[LedgerKey, ...]:
    """The totals :func:`decide` will need for this call, sorted (lock them in this order to avoid deadlocks).

    A budget whose key or amount cannot be worked out is left out; :func:`decide` reports that rule as an error.
    """
    return prepare(policy, request).needs


def decide(policy: Policy, request: DecisionRequest) -> Decision:
    return _decide(policy, request.tool, request.context(policy), request.approved, None)


_Located = tuple[LedgerKey, int] | RuleError | bool
"""What :func:`prepare` found for one budget rule: its ledger key and amount, the ``RuleError`` its ``when`` or its
key raised, or ``False`` (its ``when`` does not hold)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One call's policy work before its ledger totals are read: the totals it needs, and for each budget rule
    whether it applies and which total it adds to, kept so that :meth:`decide` does not work them out again.

    ``prepare(policy, request).decide(usage)`` is exactly ``decide(policy, replace(request, usage=usage))`` after
    ``ledger_needs(policy, request)``: a rule's ``when`` and ledger key read only the call's inputs and the policy's
    time zone, never the totals, so they are the same both times.
    """

    policy: Policy
    request: DecisionRequest
    needs: tuple[LedgerKey, ...]
    inputs: Inputs
    located: Mapping[str, _Located]

    def decide(self, usage: Mapping[str, int | Money]) -> Decision:
        """The decision, given the totals of :attr:`needs` (keyed by budget id, as ``DecisionRequest.usage``)."""
        ctx = Context(self.inputs, usage, self.policy.zone)
        return _decide(self.policy, self.request.tool, ctx, self.request.approved, self.located)


def prepare(policy: Policy, request: DecisionRequest) -> Prepared:
    """:func:`ledger_needs`, keeping what it worked out for :meth:`Prepared.decide`."""
    ctx = request.context(policy)
    needs: set[LedgerKey] = set()
    located: dict[str, _Located] = {}
    for rule in policy.rules_for(request.tool):
        if not isinstance(rule, BudgetRule):
            continue
        try:
            if not rule.applies(ctx):
                located[rule.id] = False
                continue
            key = rule.ledger_key(ctx)
        except RuleError as exc:
            located[rule.id] = exc
            continue
        located[rule.id] = key
        needs.add(key[0])
    ordered = tuple(sorted(needs, key=lambda k: (k.budget, k.key, k.unit, k.window)))
    return Prepared(policy, request, ordered, ctx.inputs, located)


_BLOCKING = {"conceal": 0, "deny": 1, "error": 2, "approval": 3}
"""The order in which outcomes win (Cedar's forbid-over-permit)."""


def _decide(
    policy: Policy, tool: str, ctx: Context, approved: frozenset[str], located: Mapping[str, _Located] | None
) -> Decision:
    results = tuple(
        _evaluate(rule, ctx) if located is None or not isinstance(rule, BudgetRule) else _spend(rule, ctx, located)
        for rule in policy.rules_for(tool)
    )
    if approved:
        results = tuple(_waive(result, approved) for result in results)
    enforced = [result for result in results if not result.shadow]
    primary: RuleResult | None = None
    rank = len(_BLOCKING)
    for result in enforced:
        this = _BLOCKING.get(result.outcome, rank)
        if this < rank:
            primary, rank = result, this
    if primary is not None:
        return _blocked(policy, results, enforced, primary)
    notes = [
        f"{result.rule_id}: {result.message}" for result in enforced if result.outcome == "pass" and result.message
    ]
    spends = tuple(result.spend for result in results if result.spend is not None)
    reason = "Allowed" + (f" ({'; '.join(notes)})." if notes else ": no rule limits this call.")
    return Decision(
        effect="allow",
        reason_code="allowed",
        reason=reason,
        policy_version=policy.version,
        spends=tuple(sorted(spends, key=lambda s: (s.ledger.budget, s.ledger.key, s.ledger.unit, s.ledger.window)))
        if len(spends) > 1
        else spends,
        results=results,
    )


def _blocked(
    policy: Policy, results: tuple[RuleResult, ...], enforced: list[RuleResult], primary: RuleResult
) -> Decision:
    if primary.outcome == "conceal":
        return Decision(
            effect="deny",
            reason_code=primary.code,
            reason=primary.message,
            policy_version=policy.version,
            rule_id=primary.rule_id,
            conceal=True,
            results=results,
        )
    effect: Effect = "approval" if primary.outcome == "approval" else "deny"
    same = ("deny", "error") if effect == "deny" else ("approval",)
    would_allow: list[str] = []
    for result in enforced:
        if result.outcome in same:
            would_allow.extend(hint for hint in result.would_allow if hint not in would_allow)
    if primary.outcome == "error":
        return Decision(
            effect="deny",
            reason_code=POLICY_ERROR,
            reason=ERROR_MESSAGE,
            policy_version=policy.version,
            rule_id=primary.rule_id,
            error=True,
            results=results,
            audit_reason=f"rule {primary.rule_id} could not be evaluated: {primary.internal}",
        )
    return Decision(
        effect=effect,
        reason_code=primary.code,
        reason=primary.message,
        policy_version=policy.version,
        rule_id=primary.rule_id,
        would_allow=tuple(would_allow),
        details=primary.details,
        results=results,
    )


def _waive(result: RuleResult, approved: frozenset[str]) -> RuleResult:
    if result.outcome != "approval" or result.rule_id not in approved:
        return result
    spend = replace(result.spend, cap=None) if result.spend is not None else None
    return replace(result, outcome="pass", message=f"approved by a human: {result.message}", spend=spend)


def _evaluate(rule: Rule, ctx: Context) -> RuleResult:
    try:
        if not rule.applies(ctx):
            return rule.skipped
        return rule.evaluate(ctx)
    except RuleError as exc:
        return _error(rule, str(exc))
    except Exception as exc:  # noqa: BLE001 - a rule that raises anything is a deny (fail closed), never a crash
        return _error(rule, f"{type(exc).__name__}: {exc}")


def _spend(rule: BudgetRule, ctx: Context, located: Mapping[str, _Located]) -> RuleResult:
    """:func:`_evaluate` for a budget rule whose ``when`` and ledger key :func:`prepare` already worked out."""
    found = located.get(rule.id)
    if found is None:  # pragma: no cover - prepare() saw every budget rule of the tool
        return _evaluate(rule, ctx)
    if found is False:
        return rule.skipped
    if isinstance(found, RuleError):
        return _error(rule, str(found))
    assert not isinstance(found, bool)
    try:
        return rule.evaluate(ctx, found)
    except RuleError as exc:
        return _error(rule, str(exc))
    except Exception as exc:  # noqa: BLE001 - as in _evaluate: fail closed, never a crash
        return _error(rule, f"{type(exc).__name__}: {exc}")


def _error(rule: Rule, internal: str) -> RuleResult:
    return RuleResult(rule.id, "error", POLICY_ERROR, ERROR_MESSAGE, shadow=rule.shadow, internal=internal)
