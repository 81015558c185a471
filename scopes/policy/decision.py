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
    ctx = request.context(policy)
    needs: set[LedgerKey] = set()
    for rule in policy.rules_for(request.tool):
        if not isinstance(rule, BudgetRule):
            continue
        try:
            if rule.applies(ctx):
                needs.add(rule.ledger_key(ctx)[0])
        except RuleError:
            continue
    return tuple(sorted(needs, key=lambda k: (k.budget, k.key, k.unit, k.window)))


def decide(policy: Policy, request: DecisionRequest) -> Decision:
    ctx = request.context(policy)
    results = tuple(_waive(_evaluate(rule, ctx), request.approved) for rule in policy.rules_for(request.tool))
    enforced = [result for result in results if not result.shadow]
    for outcome in ("conceal", "deny", "error", "approval"):
        blocking = [result for result in enforced if result.outcome == outcome]
        if blocking:
            return _blocked(policy, results, enforced, blocking[0])
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
        spends=tuple(sorted(spends, key=lambda s: (s.ledger.budget, s.ledger.key, s.ledger.unit, s.ledger.window))),
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
            return RuleResult(rule.id, "skip", shadow=rule.shadow)
        return rule.evaluate(ctx)
    except RuleError as exc:
        return RuleResult(rule.id, "error", POLICY_ERROR, ERROR_MESSAGE, shadow=rule.shadow, internal=str(exc))
    except Exception as exc:  # noqa: BLE001 - a rule that raises anything is a deny (fail closed), never a crash
        internal = f"{type(exc).__name__}: {exc}"
        return RuleResult(rule.id, "error", POLICY_ERROR, ERROR_MESSAGE, shadow=rule.shadow, internal=internal)
