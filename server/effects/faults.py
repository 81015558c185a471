"""Named fault points for the crash tests (docs/effects.md, "Crash points"). TEST-ONLY.

A test arms one point by starting a server with ``MANDATE_FAULT_POINT=<name>``; when the call path reaches that
point the process kills itself with ``SIGKILL`` (no cleanup, no ``finally``, exactly like ``kill -9`` or a lost
machine). Unarmed, :func:`reach` does nothing but one dictionary lookup. Never set the variable in production.

Points: ``after_intent_commit`` (txn a committed, provider not called), ``after_provider_call`` (the provider
answered, txn c not written), ``after_provider_find`` (a reconciler learned the outcome, not yet written).
"""

from __future__ import annotations

import os
import signal

VARIABLE = "MANDATE_FAULT_POINT"
POINTS = frozenset({"after_intent_commit", "after_provider_call", "after_provider_find"})


def reach(point: str) -> None:
    """Die here (SIGKILL) if this point is armed; otherwise return at once."""
    if point not in POINTS:  # pragma: no cover - a typo in the code, not in a test
        raise ValueError(f"unknown fault point {point!r}")
    if os.environ.get(VARIABLE) == point:
        os.kill(os.getpid(), signal.SIGKILL)
