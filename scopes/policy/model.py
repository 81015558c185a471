"""The policy file's shape, as pydantic models: what a security team writes in ``scopes/policy.toml``.

Validation is strict (no coercion: ``100.0`` is not an amount, ``"3"`` is not a count) and every field is checked
where it is declared, so an error names its place: ``rules[2].limit.JPY``. Cross-references (a rule naming a budget)
are checked when the file is compiled, in :mod:`scopes.policy.policy`. The language is documented in docs/policy.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from scopes.money import Money, MoneyError
from scopes.policy.guards import ApprovalLimitsModel, BreakerModel, RateLimitModel
from scopes.policy.values import Path, parse_duration


def _path(text: str) -> str:
    Path.parse(text)
    return text


def _duration(text: str) -> str:
    parse_duration(text)
    return text


def _window(text: str) -> str:
    if text != "day" and not (text.startswith("rolling ") and parse_duration(text.removeprefix("rolling "))):
        raise ValueError(f"{text!r} is not a window; write 'day' (a calendar day) or 'rolling 30 days'")
    return text


def _money_table(table: dict[str, str]) -> dict[str, str]:
    if not table:
        raise ValueError("name at least one currency")
    for currency, amount in table.items():
        try:
            Money.parse(amount, currency)
        except MoneyError as exc:
            raise ValueError(f"{currency}: {exc}") from None
    return table


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Amsterdam'") from None
    return name


PathText = Annotated[str, AfterValidator(_path)]
DurationText = Annotated[str, AfterValidator(_duration)]
MoneyTable = Annotated[
    dict[Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")], str], AfterValidator(_money_table)
]
RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]
BudgetId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ToolName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ScopeText = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]*(:[a-z0-9_.-]+)*$", max_length=100)]
Scalar = str | int | bool | datetime


class _Strict(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class PathRef(_Strict):
    """``{ path = "facts.currency" }``: compare with another value of the input instead of a literal."""

    path: PathText


Operand = Scalar | PathRef
OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains", "present", "within", "older_than")


class ConditionModel(_Strict):
    """``{ path = "facts.status", in = ["pending", "processing"] }``, or ``{ any = [ ... ] }``."""

    path: PathText | None = None
    eq: Operand | None = None
    ne: Operand | None = None
    lt: Operand | None = None
    le: Operand | None = None
    gt: Operand | None = None
    ge: Operand | None = None
    in_: Annotated[list[Scalar], Field(min_length=1)] | None = Field(default=None, alias="in")
    not_in: Annotated[list[Scalar], Field(min_length=1)] | None = None
    contains: Scalar | None = None
    present: bool | None = None
    within: DurationText | None = None
    older_than: DurationText | None = None
    any: Annotated[list[ConditionModel], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> ConditionModel:
        given = [name for name in OPERATORS if getattr(self, "in_" if name == "in" else name) is not None]
        if self.any is not None:
            if given or self.path is not None:
                raise ValueError("a condition with 'any' has nothing else")
            return self
        if self.path is None:
            raise ValueError("a condition needs 'path' (or 'any')")
        if len(given) != 1:
            raise ValueError(f"a condition has exactly one operator of {', '.join(OPERATORS)}; found {given or 'none'}")
        return self

    @property
    def operator(self) -> tuple[str, Any]:
        for name in OPERATORS:
            value = getattr(self, "in_" if name == "in" else name)
            if value is not None:
                return name, value
        raise AssertionError("validated to have one operator")  # pragma: no cover


class _RuleBase(_Strict):
    id: RuleId
    tools: Annotated[list[ToolName], Field(min_length=1)]
    description: str = ""
    mode: Literal["enforce", "shadow"] = "enforce"
    """``shadow``: evaluated and recorded with every decision, but never blocks (try a new limit on live traffic)."""
    when: list[ConditionModel] = Field(default_factory=list[ConditionModel])
    """The rule applies only when all of these hold."""
    message: str | None = None


class Tier(_Strict):
    """A larger scope raises the limit: a caller holding ``scope`` gets ``limit`` (the highest tier held wins)."""

    scope: ScopeText
    limit: MoneyTable | None = None
    count: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None
    """For a cap on a plain quantity (``max``): the raised maximum."""


class TokenLimit(_Strict):
    """RFC 9396 ``authorization_details`` in the token that cap this rule's amount: entries of ``type`` with a
    ``field`` such as ``max_amount = {value = "50.00", currency = "EUR"}``. The lower of token and policy applies."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "max_amount"


class CapRuleModel(_RuleBase):
    """A per-call cap on an amount of money, per currency (``limit``), or on a plain quantity such as points or
    items (``max``, a whole number), with tiers, approval above it and a hard ceiling."""

    kind: Literal["cap"]
    amount: PathText
    limit: MoneyTable | None = None
    max: Annotated[int, Field(ge=0)] | None = None
    """A cap on a plain quantity (an integer argument or fact): the largest value allowed per call."""
    tiers: list[Tier] = Field(default_factory=list[Tier])
    above: Literal["deny", "approval"] = "deny"
    ceiling: MoneyTable | Annotated[int, Field(ge=0)] | None = None
    """With ``above = "approval"``: amounts above the ceiling are denied outright (a number for a ``max`` cap)."""
    token_limit: TokenLimit | None = None

    @model_validator(mode="after")
    def _coherent(self) -> CapRuleModel:
        if (self.limit is None) == (self.max is None):
            raise ValueError("a cap has exactly one of 'limit' (money per currency) or 'max' (a plain quantity)")
        if self.ceiling is not None and self.above != "approval":
            raise ValueError("'ceiling' only makes sense with above = \"approval\"")
        if self.max is not None:
            if self.ceiling is not None and not isinstance(self.ceiling, int):
                raise ValueError("a 'max' cap's ceiling is a number")
            if self.token_limit is not None:
                raise ValueError("'token_limit' caps money; a 'max' cap takes none")
            for tier in self.tiers:
                if tier.max is None or tier.limit is not None or tier.count is not None:
                    raise ValueError(f"tier {tier.scope}: a 'max' cap's tier gives 'max' (a number)")
            return self
        if isinstance(self.ceiling, int):
            raise ValueError("a money cap's ceiling is a table of amounts")
        for tier in self.tiers:
            if tier.limit is None or tier.count is not None or tier.max is not None:
                raise ValueError(f"tier {tier.scope}: a cap's tier gives 'limit' (a table of amounts)")
        return self


class BudgetRuleModel(_RuleBase):
    """Spend from a named budget: a cumulative cap over a window, shared by every rule that names the budget."""

    kind: Literal["budget"]
    budget: BudgetId
    amount: PathText | None = None
    """The money to spend (money budgets); count budgets spend 1 per call and take no amount."""
    above: Literal["deny", "approval"] = "deny"


class RequireRuleModel(_RuleBase):
    """A precondition (state, ownership): when ``require`` does not hold, ``otherwise`` happens."""

    kind: Literal["require"]
    require: Annotated[list[ConditionModel], Field(min_length=1)]
    code: Code
    message: str  # pyright: ignore[reportIncompatibleVariableOverride] - required here
    otherwise: Literal["deny", "approval", "not_found"] = "deny"
    """``not_found``: refuse exactly as if the record did not exist, revealing nothing (ownership, tenancy)."""
    would_allow: list[Annotated[str, StringConstraints(min_length=1, max_length=300)]] = Field(
        default_factory=list[str]
    )


RuleModel = Annotated[CapRuleModel | BudgetRuleModel | RequireRuleModel, Field(discriminator="kind")]


class BudgetModel(_Strict):
    """A cumulative cap, named once and spent by the rules that reference it (from one tool or several)."""

    label: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    """How messages name it: "refunds by this agent today"."""
    description: str = ""
    per: Literal["principal", "client", "tenant", "global"] | PathText
    """Whose budget: the calling ``principal`` (issuer, client and subject), the ``client``, the ``tenant``,
    ``global``, or a path such as ``facts.customer_id``."""
    window: Annotated[str, AfterValidator(_window)]
    limit: MoneyTable | None = None
    count: Annotated[int, Field(ge=0)] | None = None
    tiers: list[Tier] = Field(default_factory=list[Tier])
    disclose: bool | None = None
    """Whether refusals say how much is used and left. Default: only for the caller's own budgets (``principal``,
    ``client``); a customer's or a tenant's totals are not the caller's to see."""

    @model_validator(mode="after")
    def _money_or_count(self) -> BudgetModel:
        if (self.limit is None) == (self.count is None):
            raise ValueError("a budget has exactly one of 'limit' (money per currency) or 'count' (calls)")
        for tier in self.tiers:
            if tier.max is not None:
                raise ValueError(f"tier {tier.scope}: 'max' is for caps; a budget's tier gives 'limit' or 'count'")
            if (tier.limit is None) != (self.limit is None) or (tier.count is None) != (self.count is None):
                raise ValueError(f"tier {tier.scope}: give the same kind of limit as the budget (limit or count)")
        return self


class PolicyModel(_Strict):
    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,59}$")]
    description: str = ""
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    """Where a calendar day starts and ends for ``window = "day"`` budgets."""
    budgets: dict[BudgetId, BudgetModel] = Field(default_factory=dict[str, BudgetModel])
    rules: list[RuleModel] = Field(default_factory=list[CapRuleModel | BudgetRuleModel | RequireRuleModel])
    rate_limits: list[RateLimitModel] = Field(default_factory=list[RateLimitModel])
    """Calls per window per principal, client or tenant (:mod:`scopes.policy.guards`)."""
    approvals: ApprovalLimitsModel = Field(default_factory=ApprovalLimitsModel)
    breakers: list[BreakerModel] = Field(default_factory=list[BreakerModel])
    """Circuit breakers: suspend an agent automatically when it passes a threshold (:mod:`scopes.policy.guards`)."""
