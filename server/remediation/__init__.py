"""Undo: from a principal, a time range or one approval to every effect made, its current state in the system of
record, and the compensating action its tool declares (docs/remediation.md).

:mod:`server.remediation.plan` reads (a dry run changes nothing); :mod:`server.remediation.execute` runs the
compensating actions through the same enforcement as any tool call (scope, policy, approval, audit), as the person
whose token asks, each with an idempotency key derived from the effect, so running it twice compensates once.
"""

from server.remediation.execute import Executed, execute
from server.remediation.plan import Item, Target, plan

__all__ = ["Executed", "Item", "Target", "execute", "plan"]
