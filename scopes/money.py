"""Money as an exact decimal with its currency: never a float.

Amounts cross the wire as decimal strings (``"12.50"``) because a JSON number is a binary float to most parsers.
The number of decimal places allowed is the currency's minor unit from ISO 4217; amounts are stored as integer
minor units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# ISO 4217 minor units for the currencies Mandate accepts. A currency not listed here is refused (fail closed).
MINOR_UNITS: dict[str, int] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "JPY": 0,
    "KRW": 0,
    "BHD": 3,
    "KWD": 3,
}

_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$")


class MoneyError(ValueError):
    """An amount or currency that is not an exact, positive amount in a known currency."""


def minor_units(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise MoneyError(f"unknown currency {currency!r}; accepted: {', '.join(sorted(MINOR_UNITS))}") from None


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An exact amount in one currency."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        digits = minor_units(self.currency)
        if not self.amount.is_finite():
            raise MoneyError("amount must be a finite number")
        exponent = self.amount.as_tuple().exponent
        assert isinstance(exponent, int)
        if -exponent > digits and self.amount != self.amount.quantize(Decimal(1).scaleb(-digits)):
            raise MoneyError(f"{self.currency} has {digits} decimal places; {self.amount} has more")

    @classmethod
    def parse(cls, amount: str, currency: str) -> Money:
        """Parse a decimal string strictly: digits, an optional point and at most the currency's decimals."""
        if not isinstance(amount, str):  # pyright: ignore[reportUnnecessaryIsInstance] - wire data
            raise MoneyError('amount must be a decimal string such as "12.50"')
        if not _AMOUNT.fullmatch(amount):
            raise MoneyError(f'amount must be a decimal string such as "12.50"; got {amount!r}')
        digits = minor_units(currency)
        decimals = len(amount.partition(".")[2])
        if decimals > digits:  # "12.500" EUR too: one amount has one spelling, so its digest is stable
            raise MoneyError(f"{currency} has {digits} decimal places; {amount} has {decimals}")
        try:
            value = Decimal(amount)
        except InvalidOperation:  # pragma: no cover - the pattern already guarantees a decimal
            raise MoneyError(f"amount {amount!r} is not a decimal") from None
        return cls(value, currency)

    @classmethod
    def from_minor(cls, minor: int, currency: str) -> Money:
        """``minor`` units (cents for EUR) of ``currency``; raises :class:`MoneyError` for an unknown currency.

        Built without :meth:`__post_init__`'s checks, which an integer count of minor units always passes (finite, and
        never more decimals than the currency has); the call path builds several of these per call (an order's facts).
        """
        amount = Decimal(minor).scaleb(-minor_units(currency))
        money = object.__new__(cls)
        object.__setattr__(money, "amount", amount)
        object.__setattr__(money, "currency", currency)
        return money

    @property
    def minor(self) -> int:
        """The amount in integer minor units (cents for EUR)."""
        return int(self.amount.scaleb(minor_units(self.currency)).to_integral_exact())

    def __str__(self) -> str:
        return f"{self.formatted} {self.currency}"

    @property
    def formatted(self) -> str:
        digits = minor_units(self.currency)
        return str(self.amount.quantize(Decimal(1).scaleb(-digits)))

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise MoneyError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount
