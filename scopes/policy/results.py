"""What evaluating a policy produces: one result per rule, the ledger spends an allowed call makes, the decision.

All of it is plain frozen data, so a decision can be recorded, compared in tests and printed by ``mandate explain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Effect = Literal["allow", "deny", "approval"]
Outcome = Literal["pass", "skip", "deny", "approval", "conceal", "error"]
POLICY_ERROR = "policy_error"


@dataclass(frozen=True, slots=True, order=True)
class LedgerKey:
    """One running total: a budget, whose it is (``key``), its unit (a currency or ``count``) and its window.

    ``window`` is the calendar day in the policy's time zone (``2025-06-02``) or ``rolling``; for a rolling window
    ``since`` is where it starts, and the total is the sum of the entries after it.
    """

    budget: str
    key: str
    unit: str
    window: str
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Spend:
    """What an allowed call adds to a total. ``cap`` is the limit the total must stay within (``None``: shadow)."""

    ledger: LedgerKey
    amount: int
    """Minor units of the currency (cents), or 1 for a count budget."""
    cap: int | None


@dataclass(frozen=True, slots=True)
class RuleResult:
    """How one rule judged the call. ``message`` is for the caller; ``internal`` adds what only the audit may see."""

    rule_id: str
    outcome: Outcome
    code: str = ""
    message: str = ""
    would_allow: tuple[str, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict[str, str])
    shadow: bool = False
    spend: Spend | None = None
    internal: str | None = None

    @property
    def blocks(self) -> bool:
        return self.outcome in ("deny", "approval", "conceal", "error")


@dataclass(frozen=True, slots=True)
class Decision:
    """allow / deny / approval, with the reason code, the rule, the policy version and what would allow it."""

    effect: Effect
    reason_code: str
    reason: str
    policy_version: str
    rule_id: str | None = None
    would_allow: tuple[str, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict[str, str])
    error: bool = False
    """The deny came from a rule that could not be evaluated (fail closed); record it as an error."""
    conceal: bool = False
    """Refuse exactly as if the record did not exist."""
    spends: tuple[Spend, ...] = ()
    """What to add to the ledger, in the same transaction as the effect, when the call is allowed."""
    results: tuple[RuleResult, ...] = ()
    audit_reason: str | None = None
    """The reason as the audit trail records it (for an error: the error itself, which the caller never sees)."""

    @property
    def shadow_blocks(self) -> tuple[RuleResult, ...]:
        """Shadow rules that would have blocked this call had they been enforced."""
        return tuple(result for result in self.results if result.shadow and result.blocks)

    @property
    def errors(self) -> tuple[RuleResult, ...]:
        return tuple(result for result in self.results if result.outcome == "error")
