"""Audit records of what people do in the console that is not a tool call: signing in and out, forms refused
(a missing or wrong CSRF token), suspending an agent. Tool calls made from the console (deciding an approval,
searching the audit trail) are recorded by the call path itself, with transport ``console``.

The same record as every other invocation (:func:`server.invocation.build_record`, appended to the hash chain by
:func:`server.audit.chain.append`), with kind ``console``, the person's verified identity when there is one, and
the action as ``outcome``. Never a token, a code or a cookie: the arguments recorded are the ones given here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from server.audit import chain
from server.auth.principal import Principal
from server.enforcement import new_audit_id
from server.invocation import CallInfo, Invocation, Outcome, build_record

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
    """Write one ``console`` record in a transaction of its own; its id."""
    audit_id = new_audit_id()
    outcome = Outcome("allow" if allowed else "deny", action, code, reason, summary=dict(details or {}))
    entry = build_record(
        mandate.enforcer.instance, Invocation(principal, info), outcome, audit_id, mandate.enforcer.clock(), kind=KIND
    )

    async def work(session: Any) -> None:
        await chain.append(session, entry)

    await mandate.db.run_in_transaction(work)
    return audit_id
