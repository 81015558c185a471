"""``mandate explain`` (docs/policy.md, "Explaining a decision"): the decision a call would get now, taken by the
same steps as a real call (admission, the facts loader, the ledger totals, the policy) in a transaction that is
always rolled back, so nothing is done and nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from server.auth.principal import Principal
from server.callpath.admit import Rejected, admit
from server.callpath.answers import Refusal
from server.callpath.core import CallPathCore
from server.callpath.decide import Explanation, Gate
from server.toolkit import ToolContext, ToolError


class _RollBack(Exception):
    def __init__(self, gate: Gate) -> None:
        super().__init__("explain rolls back")
        self.gate = gate


async def explain(
    core: CallPathCore,
    principal: Principal,
    name: str,
    arguments: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
) -> Explanation:
    """The decision a call would get, without doing or recording anything (its transaction is rolled back)."""
    admitted = admit(core.catalog, principal, name, dict(arguments or {}))
    if isinstance(admitted, Rejected):
        return Explanation(refusal=admitted.refusal)
    spec = admitted.entry.spec
    at = now or core.clock()

    async def work(session: Any) -> None:
        ctx = ToolContext(principal=principal, session=session, now=at, audit_id="explain", tool_name=spec.name)
        raise _RollBack(await core.gate(admitted, ctx, lock=False))

    try:
        await core.db.run_in_transaction(work)
    except _RollBack as done:
        return Explanation(gate=done.gate)
    except ToolError as exc:
        return Explanation(refusal=Refusal(status="failed", code=exc.code, message=exc.message, details=exc.details))
    raise AssertionError("unreachable: explain always rolls back")  # pragma: no cover
