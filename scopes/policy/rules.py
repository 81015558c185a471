"""The three kinds of rule, compiled: ``cap`` (per call), ``budget`` (cumulative) and ``require`` (preconditions).

Every rule is a constraint: it can only narrow what the token's scopes permit. Each evaluates to ``pass``, ``skip``
(its ``when`` does not hold), ``deny``, ``approval``, ``conceal`` (refuse as "not found") or, when it raises,
``error``. Evaluation reads only its :class:`Context`; the ledger totals it needs are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from scopes.money import Money, MoneyError
from scopes.policy.conditions import Condition, Inputs, all_hold
from scopes.policy.errors import RuleError
from scopes.policy.limits import COUNT, QUANTITY, Budget, Limits, show_units
from scopes.policy.results import LedgerKey, RuleResult, Spend
from scopes.policy.values import Path, Template

Above = Literal["deny", "approval"]


@dataclass(frozen=True, slots=True)
class Context:
    inputs: Inputs
    usage: Mapping[str, int | Money]
    zone: ZoneInfo

    @property
    def now(self) -> datetime:
        return self.inputs.now


@dataclass(frozen=True, slots=True)
class RuleBase:
    id: str
    tools: frozenset[str]
    shadow: bool
    when: tuple[Condition, ...]
    message: Template | None
    passed: RuleResult = field(init=False, repr=False, compare=False)
    """This rule's ``pass`` without a note, built once: it is the same for every call (results are frozen)."""
    skipped: RuleResult = field(init=False, repr=False, compare=False)
    """This rule's ``skip`` (its ``when`` does not hold), built once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", RuleResult(self.id, "pass", "", "", shadow=self.shadow))
        object.__setattr__(self, "skipped", RuleResult(self.id, "skip", shadow=self.shadow))

    def applies(self, ctx: Context) -> bool:
        return not self.when or all_hold(self.when, ctx.inputs)

    def result(self, outcome: Any, code: str, message: str, **extra: Any) -> RuleResult:
        return RuleResult(self.id, outcome, code, message, shadow=self.shadow, **extra)

    def text(self, ctx: Context, default: str, variables: Mapping[str, Any]) -> str:
        if self.message is None:
            return default
        i = ctx.inputs
        return self.message.render(variables, i.args, i.facts, i.caller, i.now)


def _money_at(path: Path, ctx: Context) -> Money:
    value = ctx.inputs.get(path)
    if value is None:
        raise RuleError(f"{path.text} has no value")
    if not isinstance(value, Money):
        raise RuleError(f"{path.text} is not an amount of money")
    return value


@dataclass(frozen=True, slots=True)
class CapRule(RuleBase):
    amount: Path
    limits: Limits
    above: Above
    ceiling: Mapping[str, int] | None
    token_type: str | None
    token_field: str

    @property
    def is_quantity(self) -> bool:
        """A cap on a plain quantity (``max``) rather than on money (``limit``)."""
        return QUANTITY in self.limits.base

    def evaluate(self, ctx: Context) -> RuleResult:
        if self.is_quantity:
            return self._evaluate_quantity(ctx)
        amount = _money_at(self.amount, ctx)
        unit, scopes = amount.currency, ctx.inputs.caller.scopes
        limit = self.limits.limit_for(unit, scopes)
        token_cap = self._token_cap(ctx, unit)
        if amount.minor <= limit and (token_cap is None or amount <= token_cap):
            return self.passed
        # Blocked: only now are the explanations worth building.
        limit_money = Money.from_minor(limit, unit)
        variables = {"amount": amount, "limit": limit_money, "token_limit": token_cap or "-"}
        if token_cap is not None and amount > token_cap:
            message = f"{amount} is above what your access token allows per call ({token_cap})."
            return self.result(
                "deny",
                "token_limit_exceeded",
                self.text(ctx, message, variables),
                would_allow=(f"amounts up to {min(token_cap, limit_money)} per call",),
                details={"token_limit": str(token_cap), "amount": str(amount)},
            )
        tier = self.limits.next_tier(unit, amount.minor, scopes)
        tier_hint = (f"a token with scope {tier[0]} (up to {show_units(tier[1], unit)} per call)",) if tier else ()
        details = {"limit": str(limit_money), "amount": str(amount)}
        if self.above == "approval":
            ceiling = self.ceiling[unit] if self.ceiling is not None and unit in self.ceiling else None
            if self.ceiling is not None and ceiling is None:
                raise RuleError(f"no ceiling for {unit}")
            if ceiling is None or amount.minor <= ceiling:
                message = f"{amount} is above the limit of {limit_money} per call, so a human must approve it."
                return self.result(
                    "approval",
                    "cap_exceeded",
                    self.text(ctx, message, variables),
                    would_allow=(f"needs approval above {limit_money}", *tier_hint),
                    details=details,
                )
            ceiling_money = Money.from_minor(ceiling, unit)
            message = f"{amount} is above the ceiling of {ceiling_money} per call, which no approval can lift."
            return self.result(
                "deny",
                "above_ceiling",
                self.text(ctx, message, {**variables, "ceiling": ceiling_money}),
                would_allow=(f"amounts up to {ceiling_money} per call, with approval above {limit_money}",),
                details={**details, "ceiling": str(ceiling_money)},
            )
        message = f"{amount} is above the limit of {limit_money} per call."
        return self.result(
            "deny",
            "cap_exceeded",
            self.text(ctx, message, variables),
            would_allow=(f"amounts up to {limit_money} per call", *tier_hint),
            details=details,
        )

    def _evaluate_quantity(self, ctx: Context) -> RuleResult:
        value = ctx.inputs.get(self.amount)
        if value is None:
            raise RuleError(f"{self.amount.text} has no value")
        if isinstance(value, bool) or not isinstance(value, int):
            raise RuleError(f"{self.amount.text} is not a whole number")
        scopes = ctx.inputs.caller.scopes
        limit = self.limits.limit_for(QUANTITY, scopes)
        if value <= limit:
            return self.passed
        variables = {"amount": value, "limit": limit, "token_limit": "-"}
        tier = self.limits.next_tier(QUANTITY, value, scopes)
        tier_hint = (f"a token with scope {tier[0]} (up to {tier[1]} per call)",) if tier else ()
        details = {"limit": str(limit), "amount": str(value)}
        if self.above == "approval":
            ceiling = self.ceiling[QUANTITY] if self.ceiling is not None else None
            if ceiling is None or value <= ceiling:
                message = f"{value} is above the limit of {limit} per call, so a human must approve it."
                return self.result(
                    "approval",
                    "cap_exceeded",
                    self.text(ctx, message, variables),
                    would_allow=(f"needs approval above {limit}", *tier_hint),
                    details=details,
                )
            message = f"{value} is above the ceiling of {ceiling} per call, which no approval can lift."
            return self.result(
                "deny",
                "above_ceiling",
                self.text(ctx, message, {**variables, "ceiling": ceiling}),
                would_allow=(f"up to {ceiling} per call, with approval above {limit}",),
                details={**details, "ceiling": str(ceiling)},
            )
        message = f"{value} is above the limit of {limit} per call."
        return self.result(
            "deny",
            "cap_exceeded",
            self.text(ctx, message, variables),
            would_allow=(f"up to {limit} per call", *tier_hint),
            details=details,
        )

    def _token_cap(self, ctx: Context, currency: str) -> Money | None:
        """The lowest RFC 9396 limit in the token for this rule's type and currency; malformed entries raise."""
        if self.token_type is None:
            return None
        entries = [d for d in ctx.inputs.caller.authorization_details if d.get("type") == self.token_type]
        if not entries:
            return None
        caps: list[Money] = []
        limited = False
        for entry in entries:
            value = entry.get(self.token_field)
            if value is None:
                continue
            limited = True
            if not isinstance(value, Mapping) or not isinstance(value.get("value"), str):
                raise RuleError(f"authorization_details {self.token_type}.{self.token_field} is malformed")
            try:
                cap = Money.parse(value["value"], str(value.get("currency")))
            except MoneyError as exc:
                raise RuleError(f"authorization_details {self.token_type}.{self.token_field}: {exc}") from None
            if cap.currency == currency:
                caps.append(cap)
        if not limited:
            return None
        if not caps:
            # The token limits this kind of action but grants nothing in this currency: nothing is allowed.
            return Money.from_minor(0, currency)
        return min(caps, key=lambda money: money.amount)


@dataclass(frozen=True, slots=True)
class BudgetRule(RuleBase):
    budget: Budget
    amount: Path | None
    above: Above

    def ledger_key(self, ctx: Context) -> tuple[LedgerKey, int]:
        """Which total this call adds to, and how much (minor units, or 1 call)."""
        i = ctx.inputs
        if self.amount is not None:
            money = _money_at(self.amount, ctx)
            unit, amount = money.currency, money.minor
        else:
            unit, amount = COUNT, 1
        window, since = self.budget.window.locate(ctx.now, ctx.zone)
        key = self.budget.key_for(i.caller, i.args, i.facts, i.now)
        return LedgerKey(self.budget.id, key, unit, window, since), amount

    def evaluate(self, ctx: Context, located: tuple[LedgerKey, int] | None = None) -> RuleResult:
        """``located``: this call's :meth:`ledger_key`, when the caller has already worked it out for the same
        context (:func:`scopes.policy.decision.prepare`), so it is not worked out twice."""
        ledger, amount = located if located is not None else self.ledger_key(ctx)
        unit = ledger.unit
        limit = self.budget.limits.limit_for(unit, ctx.inputs.caller.scopes)
        used = self._used(ctx, unit)
        window = self.budget.window
        if used + amount <= limit:
            spend = Spend(ledger, amount, None if self.shadow else limit)
            after = show_units(limit - used - amount, unit)
            note = f"{after}{' more' if unit == COUNT else ''} left {window.phrase()} after this call"
            return self.result("pass", "", note, spend=spend)
        left = max(limit - used, 0)
        limit_text, budget = show_units(limit, unit), self.budget
        details = {"budget": budget.id, "limit": limit_text}
        if budget.disclose:
            details.update(used=show_units(used, unit), left=show_units(left, unit))
        resets = window.resets_at(ctx.now, ctx.zone)
        if resets is not None:
            details["resets_at"] = resets.isoformat()
        variables = {
            "amount": show_units(amount, unit),
            "limit": limit_text,
            "used": show_units(used, unit) if budget.disclose else "-",
            "left": show_units(left, unit) if budget.disclose else "-",
            "budget": budget.label,
        }
        if not budget.disclose:
            message = f"This would take {budget.label} above the limit of {limit_text}."
            hint = f"{budget.label} stay within {limit_text}"
        elif unit == COUNT:
            message = f"The limit of {limit} for {budget.label} is reached ({used} so far)."
            hint = f"{left} more {window.phrase()}" if left else f"none left {window.phrase()}"
        else:
            message = (
                f"{show_units(amount, unit)} would take {budget.label} above {limit_text}; "
                f"{show_units(left, unit)} left {window.phrase()}."
            )
            hint = f"{show_units(left, unit)} left {window.phrase()}"
        if resets is not None and budget.disclose:
            hint += f" (resets at midnight {ctx.zone.key}, {resets.isoformat()})"
        would_allow = (hint, "a human's approval") if self.above == "approval" else (hint,)
        return self.result(
            self.above,
            "budget_exceeded",
            self.text(ctx, message, variables),
            would_allow=would_allow,
            details=details,
            # Kept uncapped for a shadow rule (the traffic happened) and for an approval a human may grant.
            spend=Spend(ledger, amount, None) if self.shadow or self.above == "approval" else None,
        )

    def _used(self, ctx: Context, unit: str) -> int:
        if self.budget.id not in ctx.usage:
            raise RuleError(f"no ledger total for budget {self.budget.id}")
        used = ctx.usage[self.budget.id]
        if isinstance(used, Money):
            if used.currency != unit:
                raise RuleError(f"ledger total for {self.budget.id} is in {used.currency}, not {unit}")
            return used.minor
        return used


@dataclass(frozen=True, slots=True)
class RequireRule(RuleBase):
    require: tuple[Condition, ...]
    code: str
    otherwise: Literal["deny", "approval", "not_found"]
    hints: tuple[str, ...]

    def evaluate(self, ctx: Context) -> RuleResult:
        if all_hold(self.require, ctx.inputs):
            return self.passed
        outcome = "conceal" if self.otherwise == "not_found" else self.otherwise
        message = self.text(ctx, f"The policy rule {self.id} does not allow this.", {})
        return self.result(outcome, self.code, message, would_allow=self.hints)


Rule = CapRule | BudgetRule | RequireRule
