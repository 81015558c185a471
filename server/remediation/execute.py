"""Running a remediation plan: each compensating action is an ordinary tool call by the person who asks.

The call goes through :meth:`server.callpath.Enforcer.call_tool` with the person's verified principal, so scopes
(``remediation:execute``), the policy, approvals and the audit trail apply exactly as to an agent's call. Each call
carries an idempotency key derived from the effect (its kind, id and cause record), so a retry of the same run
replays the first answer; and each compensating tool refuses an effect that already has its remediation row, so a
second run, by anyone, compensates nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.auth.principal import Principal
from server.callpath.enforcer import Enforcer
from server.callpath.record import CallInfo
from server.remediation.plan import Item

RUNNABLE = ("call", "flag")


@dataclass(frozen=True, slots=True)
class Executed:
    """What running one item's compensation did."""

    item: Item
    succeeded: bool
    code: str | None
    message: str | None
    audit_id: str | None
    result: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.item.as_dict(),
            "executed": {
                "succeeded": self.succeeded,
                "code": self.code,
                "message": self.message,
                "audit_id": self.audit_id,
                "result": self.result,
            },
        }


def idempotency_key(item: Item) -> str:
    """One key per effect: ``remediate-`` and a digest of the effect's kind, id and cause record."""
    effect = item.effect
    digest = hashlib.sha256(f"{effect.kind}\x1f{effect.id}\x1f{effect.audit_id}".encode()).hexdigest()[:32]
    return f"remediate-{digest}"


async def execute(
    enforcer: Enforcer, principal: Principal, items: Sequence[Item], *, reason: str, info: CallInfo
) -> list[Executed]:
    """Run the compensation of every runnable item (``call`` and ``flag``), in order; the others are skipped."""
    done: list[Executed] = []
    for item in items:
        compensation = item.compensation
        if compensation.action not in RUNNABLE or compensation.tool is None:
            continue
        arguments = {**compensation.arguments, "reason": reason, "idempotency_key": idempotency_key(item)}
        result = await enforcer.call_tool(principal, compensation.tool, arguments, info)
        body = dict(result.structured_content or {})
        failed = bool(result.is_error) or body.get("status") == "pending_approval"
        done.append(
            Executed(
                item=item,
                succeeded=not failed,
                code=body.get("code") if failed else None,
                message=body.get("message") if failed else None,
                audit_id=body.get("audit_id"),
                result=body,
            )
        )
    return done
