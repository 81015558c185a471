"""Conditions: one comparison of a path with a literal or another path, combined with AND (a list) or ``any``.

Comparisons are typed and fail closed: a missing value, money in two currencies, a string compared by order, or a
number compared with a string raise :class:`RuleError` instead of answering ``False``, and the decision function
turns that into a deny recorded as an error. Money literals are decimal strings read in the other side's currency.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from scopes.money import Money, MoneyError
from scopes.policy.errors import RuleError
from scopes.policy.values import Caller, Path

Operator = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains", "present", "within", "older_than"]
ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a condition can read."""

    args: Mapping[str, Any]
    facts: Mapping[str, Any]
    caller: Caller
    now: datetime

    def get(self, path: Path) -> Any:
        return path.resolve(self.args, self.facts, self.caller, self.now)


@dataclass(frozen=True, slots=True)
class Compare:
    path: Path
    op: Operator
    operand: Any
    """A literal, literals (``in``), a :class:`Path`, a ``timedelta`` (``within``) or a bool (``present``)."""

    def holds(self, inputs: Inputs) -> bool:
        value = inputs.get(self.path)
        if self.op == "present":
            return (value is not None) is self.operand
        if value is None:
            raise RuleError(f"{self.path.text} has no value")
        operand = self.operand
        if isinstance(operand, Path):
            operand = inputs.get(operand)
            if operand is None:
                raise RuleError(f"{self.operand.text} has no value")
        if self.op in ("within", "older_than"):
            if not isinstance(value, datetime):
                raise RuleError(f"{self.path.text} is not a time")
            assert isinstance(operand, timedelta)
            age = inputs.now - value
            return age <= operand if self.op == "within" else age > operand
        if self.op == "contains":
            if not isinstance(value, frozenset | set | list | tuple):
                raise RuleError(f"{self.path.text} is not a list")
            return any(_equal(item, operand, self.path) for item in value)  # pyright: ignore[reportUnknownVariableType]
        if self.op in ("in", "not_in"):
            found = any(_equal(value, item, self.path) for item in operand)
            return found if self.op == "in" else not found
        if self.op in ("eq", "ne"):
            same = _equal(value, operand, self.path)
            return same if self.op == "eq" else not same
        left, right = _orderable(value, operand, self.path)
        return ORDERING[self.op](left, right)


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one of the conditions holds. A condition that raises still fails the whole rule (fail closed)."""

    conditions: tuple[Condition, ...]

    def holds(self, inputs: Inputs) -> bool:
        results = [condition.holds(inputs) for condition in self.conditions]
        return any(results)


Condition = Compare | AnyOf


def all_hold(conditions: tuple[Condition, ...], inputs: Inputs) -> bool:
    return all(condition.holds(inputs) for condition in conditions)


def as_money(value: Any, currency: str, where: str) -> Money:
    """A money value: Money itself, or a decimal string read in ``currency``."""
    if isinstance(value, Money):
        if value.currency != currency:
            raise RuleError(f"{where}: cannot compare {value.currency} with {currency}")
        return value
    if isinstance(value, str):
        try:
            return Money.parse(value, currency)
        except MoneyError as exc:
            raise RuleError(f"{where}: {exc}") from None
    raise RuleError(f"{where}: {value!r} is not an amount of money")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | Decimal):
        return "number"
    if isinstance(value, Money):
        return "money"
    if isinstance(value, datetime):
        return "time"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def _equal(left: Any, right: Any, path: Path) -> bool:
    if type(left) is str and type(right) is str:  # the common case (a currency, a status), as the general one says
        return left == right
    if isinstance(left, Money) or isinstance(right, Money):
        money = left if isinstance(left, Money) else right
        other = right if money is left else left
        return as_money(other, money.currency, path.text).amount == money.amount
    if _kind(left) != _kind(right):
        raise RuleError(f"{path.text}: cannot compare {_kind(left)} with {_kind(right)}")
    return bool(left == right)


def _orderable(left: Any, right: Any, path: Path) -> tuple[Any, Any]:
    if isinstance(left, Money):
        return left.amount, as_money(right, left.currency, path.text).amount
    if isinstance(right, Money):
        return as_money(left, right.currency, path.text).amount, right.amount
    kind = _kind(left)
    if kind not in ("number", "time") or _kind(right) != kind:
        raise RuleError(f"{path.text}: cannot order {_kind(left)} against {_kind(right)}")
    return left, right
