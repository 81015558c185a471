"""Telling a provider's definite "no" from everything else (docs/effects.md, "In doubt").

Only a definite refusal may release a reservation: :class:`server.toolkit.EffectRefused`, or the payments
provider's ``ProviderRefused`` (an HTTP 4xx other than 409 and 429, :mod:`server.providers.payments`). Anything
else a provider call raises (a timeout, a broken connection, a 5xx, a bug in the tool's call) leaves the effect in
doubt.
"""

from __future__ import annotations

import sys

from server.toolkit import EffectRefused

_PAYMENTS = "server.providers.payments"


def refusal_of(exc: BaseException) -> tuple[str, str] | None:
    """``(code, message)`` when ``exc`` says the provider definitely did not act, else None."""
    if isinstance(exc, EffectRefused):
        return exc.code, exc.message
    payments = sys.modules.get(_PAYMENTS)  # loaded whenever a payments provider exists
    refused = getattr(payments, "ProviderRefused", None)
    if isinstance(refused, type) and isinstance(exc, refused):
        return str(getattr(exc, "code", "provider_refused")), str(getattr(exc, "message", exc))
    return None


def describe(exc: BaseException) -> str:
    """A short, secret-free description of why an outcome is unknown: the exception's kind and message."""
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
