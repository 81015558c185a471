"""Limits that depend on the caller (tiers), windows that depend on the clock, and budgets' ledger keys.

A tier raises a limit for a caller holding a larger scope; the highest limit among the base and the tiers held
applies. A currency missing from the base table has no limit and is refused (fail closed). A calendar-day window
starts at midnight in the policy's time zone, so "today" is the security team's day, not the server's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scopes.money import Money, minor_units
from scopes.policy.errors import RuleError
from scopes.policy.values import Caller, Path, describe_duration, parse_duration

COUNT = "count"
QUANTITY = "quantity"
"""The unit of a cap on a plain quantity (``kind = "cap"`` with ``max``): points, items, seats."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A base limit per unit (a currency, or ``count``) and the tiers that raise it, in minor units."""

    base: Mapping[str, int]
    tiers: tuple[tuple[str, Mapping[str, int]], ...] = ()

    def limit_for(self, unit: str, scopes: frozenset[str]) -> int:
        if unit not in self.base:
            raise RuleError(f"no limit for {unit}: the policy names {', '.join(sorted(self.base))}")
        best = self.base[unit]
        for scope, table in self.tiers:
            if scope in scopes and unit in table:
                best = max(best, table[unit])
        return best

    def next_tier(self, unit: str, needed: int, scopes: frozenset[str]) -> tuple[str, int] | None:
        """The smallest tier the caller does not hold whose limit would allow ``needed``."""
        options = [
            (table[unit], scope)
            for scope, table in self.tiers
            if scope not in scopes and unit in table and table[unit] >= needed
        ]
        if not options:
            return None
        limit, scope = min(options)
        return scope, limit


_PLAIN = 10**18
"""Below this many minor units, :func:`show_units` formats the integer itself; beyond it, through :class:`Money`."""


def show_units(amount: int, unit: str) -> str:
    """``amount`` minor units as a sentence shows them: ``"12.50 EUR"``, ``"3"`` (a count or quantity).

    Exactly ``str(Money.from_minor(amount, unit))``, without building and validating a :class:`Money` on each call
    (a budget's note and refusal show three or four amounts): whole units, a point and the currency's decimals.
    """
    if unit in (COUNT, QUANTITY):
        return str(amount)
    digits = minor_units(unit)
    if -_PLAIN < amount < _PLAIN:
        if digits == 0:
            return f"{amount} {unit}"
        whole, fraction = divmod(-amount if amount < 0 else amount, 10**digits)
        return f"{'-' if amount < 0 else ''}{whole}.{fraction:0{digits}d} {unit}"
    return str(Money.from_minor(amount, unit))


@dataclass(frozen=True, slots=True)
class Window:
    """A calendar day in the policy's time zone (``rolling is None``) or a rolling span ending now."""

    rolling: timedelta | None
    wording: str = field(init=False, repr=False, compare=False)
    """:meth:`phrase`, worded once (messages and notes repeat it on every call)."""

    def __post_init__(self) -> None:
        wording = "today" if self.rolling is None else f"in the last {describe_duration(self.rolling)}"
        object.__setattr__(self, "wording", wording)

    @classmethod
    def parse(cls, text: str) -> Window:
        return cls(None if text == "day" else parse_duration(text.removeprefix("rolling ")))

    def locate(self, now: datetime, zone: ZoneInfo) -> tuple[str, datetime | None]:
        """The window's id and, for a rolling window, where it starts."""
        if self.rolling is not None:
            return "rolling", now - self.rolling
        return now.astimezone(zone).date().isoformat(), None

    def resets_at(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        if self.rolling is not None:
            return None
        tomorrow = now.astimezone(zone).date() + timedelta(days=1)
        return datetime.combine(tomorrow, time(0), tzinfo=zone)

    def phrase(self) -> str:
        return self.wording


@dataclass(frozen=True, slots=True)
class Budget:
    """A named cumulative cap (compiled from ``[budgets.<id>]``)."""

    id: str
    label: str
    per: str | Path
    window: Window
    limits: Limits
    is_money: bool
    disclose: bool = True
    """Refusals may say how much is used and left (the caller's own budgets)."""

    def key_for(self, caller: Caller, args: Mapping[str, Any], facts: Mapping[str, Any], now: datetime) -> str:
        if isinstance(self.per, Path):
            value = self.per.resolve(args, facts, caller, now)
            if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
                raise RuleError(f"budget {self.id}: {self.per.text} has no value to keep a total for")
            key = str(value)
        elif self.per == "principal":
            key = caller.key
        elif self.per == "client":
            key = caller.client_key
        elif self.per == "tenant":
            if not caller.tenant:
                raise RuleError(f"budget {self.id} is kept per tenant, and the token names no tenant")
            key = caller.tenant
        else:
            key = "*"
        return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()
