"""Audit records of what people do in the console that is not a tool call: signing in and out, forms refused
(a missing or wrong CSRF token), suspending an agent. Tool calls made from the console (deciding an approval,
searching the audit trail) are recorded by the call path itself, with transport ``console``.

The same record as every other invocation, written by the call path's own recorder
(:meth:`server.callpath.core.CallPathCore.record_alone`), with kind ``console``, the person's verified identity
when there is one, and the action as ``outcome``. Never a token, a code or a cookie: only the details given here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from server.auth.principal import Principal
from server.callpath.record import CallInfo, Invocation, Outcome

if TYPE_CHECKING:
    from server.app import Mandate

KIND = "console"
CLIENT_NAME = "mandate-console"


async def record(
    mandate: Mandate,
    principal: Principal | None,
    info: CallInfo,
    *,
    action: str,
    allowed: bool,
    code: str | None = None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Write one ``console`` record in a transaction of its own (the call path's own recorder); its id."""
    outcome = Outcome("allow" if allowed else "deny", action, code, reason, summary=dict(details or {}))
    return await mandate.enforcer.record_alone(Invocation(principal, info), outcome, kind=KIND)
