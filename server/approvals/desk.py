"""The approval desk: opening a pending approval, deciding it, and running the approved action exactly once.

When the action runs (docs/approvals.md, "When does the approved action run?"): in the approver's own request, in
the same database transaction as the decision. :meth:`ApprovalDesk.decide` moves the approval out of ``pending``
with a conditional UPDATE (only one racing approver can), then asks the :class:`ActionRunner` (the enforcer) to run
the stored action under the requester's identity inside that transaction: the decision again with the approving
rule waived, the ledger, the effect and its audit record (``approval_id`` set). If the action is refused when it
runs (a condition no longer holds), the runner rolls back to a savepoint, records the failure, and the approval
ends ``failed`` with the reason. The decision, the effect, both audit records and the webhook message commit
together or not at all: a crash leaves the approval ``pending`` and nothing done, never approved-but-unrun or run
twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import mcp_types as types
from sqlmodel.ext.asyncio.session import AsyncSession

from server.approvals import store
from server.approvals.authority import (
    approval_for_approver,
    approval_for_requester,
    is_own_request,
    require_approver,
    require_separation,
)
from server.approvals.models import Approval, ApprovalStatus
from server.approvals.seal import ApprovalSeal
from server.approvals.store import ApprovalRequest
from server.approvals.views import (
    ApprovalDetail,
    ApprovalState,
    ApprovalSummary,
    detail_of,
    effective_status,
    state_of,
    summary_of,
    webhook_data,
)
from server.audit.redaction import redact
from server.auth.principal import Principal
from server.callpath.answers import PendingApproval, Refusal
from server.callpath.pending import PendingAction
from server.config import ApprovalSettings
from server.storage.database import Database
from server.toolkit import NotFound, ToolError
from server.webhooks import Webhooks

STATUS_TOOL = "approval_status"


@dataclass(frozen=True, slots=True)
class Execution:
    """How an approved action ended when it ran: its answer and the audit record of the run."""

    succeeded: bool
    result: types.CallToolResult
    audit_id: str
    code: str | None = None
    message: str | None = None


class ActionRunner(Protocol):
    """Runs an approved action once, under the requester's identity, inside the caller's transaction."""

    async def run_approved(self, session: AsyncSession, approval: Approval, now: datetime) -> Execution:
        """Decide again (the approving rule waived), spend the ledger, run the effect and write its audit record.

        A refusal (a condition that no longer holds, an error of the tool) is returned as an unsuccessful
        :class:`Execution` after rolling back whatever the action did; only an internal failure raises.
        """
        ...


RequesterCheck = Callable[[AsyncSession, Principal], Awaitable[str | None]]
"""Why an approval's requester may not have its action run now (a suspension id), or None."""


class ApprovalDesk:
    """Every approval operation; the tools, the CLI and the enforcer all come through here.

    It takes the enforcer's pending actions (:meth:`request`), and the enforcer is its
    :class:`ActionRunner`. ``sensitive`` names the argument fields of a tool to redact where approvals are shown
    to people who are not approvers (lists, webhooks), as the audit trail does.
    """

    def __init__(
        self,
        settings: ApprovalSettings,
        webhooks: Webhooks,
        runner: ActionRunner,
        sensitive: Callable[[str], frozenset[str]],
        seal: ApprovalSeal,
        console_url: str | None = None,
    ) -> None:
        self.seal = seal
        self.settings = settings
        self.console_url = console_url
        """The web console's base URL (``…/console``): webhooks link to the approval's page there."""
        self.webhooks = webhooks
        self.runner = runner
        self.sensitive = sensitive
        self.requester_check: RequesterCheck | None = None
        """Set by ``open_mandate``: a suspended requester's action cannot be approved (:mod:`server.guards`)."""

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.ttl_seconds)

    # --- the requester's side ---------------------------------------------------------------------------------

    async def open(
        self, session: AsyncSession, requester: Principal, request: ApprovalRequest, now: datetime
    ) -> Approval:
        """The pending approval for a request the decision sent to a human (an open identical one, or a new one)."""
        approval, created = await store.open_request(session, requester, request, now, self.ttl, self.seal)
        if created:
            await self.webhooks.enqueue(session, "approval.created", webhook_data(approval, self.console_url), now)
        return approval

    async def request(self, session: AsyncSession, pending: PendingAction) -> PendingApproval:
        """The enforcer's hook for a decision of ``approval``: store it (in the call's transaction) and answer."""
        decision = pending.decision
        waived = tuple(sorted({r.rule_id for r in decision.results if r.outcome == "approval" and not r.shadow})) or (
            (decision.rule_id,) if decision.rule_id else ()
        )
        request = ApprovalRequest(
            tool=pending.tool,
            arguments=pending.arguments,
            arguments_redacted=redact(pending.arguments, self.sensitive(pending.tool)),
            request_audit_id=pending.audit_id,
            rule_id=decision.rule_id,
            waived_rules=waived,
            reason_code=decision.reason_code,
            reason=decision.reason,
            policy_version=decision.policy_version,
            customer_id=pending.customer_id,
            idempotency_key=pending.idempotency_key,
        )
        approval = await self.open(session, pending.principal, request, pending.requested_at)
        return self.pending_answer(approval, pending.audit_id)

    async def refresh(
        self, session: AsyncSession, requester: Principal, answer: types.CallToolResult, now: datetime
    ) -> types.CallToolResult:
        """A stored answer brought up to date: a pending approval that has since been decided answers with how it
        ended (the action's own result once it ran). Any other answer is returned as it is."""
        content = answer.structured_content or {}
        if content.get("status") != "pending_approval" or not isinstance(content.get("approval_id"), str):
            return answer
        approval = await store.get(session, content["approval_id"])
        if approval is None or not is_own_request(approval, requester):
            return answer
        status = effective_status(approval, now)
        if status in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED) and approval.result:
            return types.CallToolResult.model_validate_json(approval.result)
        if status in (ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED):
            state = state_of(approval, now)
            comment = f" Comment: {state.comment}" if state.comment else ""
            refusal = Refusal(
                status="denied",
                code=f"approval_{status}",
                message=f"{state.message}{comment}",
                rule=approval.rule_id,
                details={"approval_id": approval.id},
                audit_id=approval.decision_audit_id or approval.request_audit_id,
            )
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=refusal.message)],
                structured_content=refusal.model_dump(mode="json", exclude_none=True),
                is_error=True,
            )
        return answer

    @staticmethod
    def pending_answer(approval: Approval, audit_id: str) -> PendingApproval:
        because = f" {approval.reason}" if approval.reason else ""
        return PendingApproval(
            approval_id=approval.id,
            message=f"This action needs a human's approval, so it has not been done yet.{because} "
            f"Approval {approval.id} waits until {approval.expires_at.isoformat()}; once a person approves it, "
            "it runs once, exactly as asked.",
            expires_at=approval.expires_at.isoformat(),
            check_with=f'call {STATUS_TOOL} with {{"approval_id": "{approval.id}"}}',
            rule=approval.rule_id,
            audit_id=audit_id,
        )

    async def state(
        self, session: AsyncSession, requester: Principal, approval_id: str, now: datetime
    ) -> ApprovalState:
        approval = approval_for_requester(await store.get(session, approval_id), approval_id, requester)
        return state_of(approval, now)

    async def load(self, session: AsyncSession, approval_id: str) -> Approval | None:
        return await store.get(session, approval_id)

    # --- the approver's side ----------------------------------------------------------------------------------

    async def listing(
        self,
        session: AsyncSession,
        approver: Principal,
        status: ApprovalStatus | None,
        limit: int,
        now: datetime,
    ) -> Sequence[ApprovalSummary]:
        require_approver(approver, self.settings)
        rows = await store.listing(session, status=status, tenant=approver.tenant, limit=limit, now=now)
        return [summary_of(row, now) for row in rows]

    async def detail(
        self, session: AsyncSession, approver: Principal, approval_id: str, now: datetime
    ) -> ApprovalDetail:
        require_approver(approver, self.settings)
        approval = approval_for_approver(await store.get(session, approval_id), approval_id, approver)
        return detail_of(approval, now)

    async def decide(
        self,
        session: AsyncSession,
        *,
        approver: Principal,
        approval_id: str,
        approve: bool,
        comment: str | None,
        audit_id: str,
        now: datetime,
    ) -> ApprovalDetail:
        """Approve (and run) or reject a pending approval, once; refuse anything else with a reason."""
        require_approver(approver, self.settings)
        approval = approval_for_approver(await store.get(session, approval_id), approval_id, approver)
        require_separation(approval, approver)
        _require_pending(approval, now)
        if approve and self.requester_check is not None:
            stopped = await self.requester_check(session, store.requester_principal(approval))
            if stopped is not None:
                raise ToolError(
                    "requester_suspended",
                    f"The agent that asked for approval {approval_id} is suspended ({stopped}), so its action cannot "
                    "be approved; it stays pending. Reject it, or resume the agent first.",
                    details={"suspension_id": stopped},
                )
        status = ApprovalStatus.EXECUTED if approve else ApprovalStatus.REJECTED
        won = await store.claim_decision(
            session, approval_id, approver=approver, status=status, comment=comment, audit_id=audit_id, now=now
        )
        if not won:  # another approver, replica or expiry got there first
            approval = approval_for_approver(await store.get(session, approval_id), approval_id, approver)
            _require_pending(approval, now)
            raise ToolError("approval_not_pending", f"Approval {approval_id} could not be decided; try again.")
        approval = await _reload(session, approval_id)
        if approve:
            execution = await self.runner.run_approved(session, approval, now)
            await store.record_execution(
                session,
                approval_id,
                succeeded=execution.succeeded,
                result_json=execution.result.model_dump_json(by_alias=True, exclude_none=True),
                audit_id=execution.audit_id,
                code=execution.code,
                message=execution.message,
                now=now,
            )
            approval = await _reload(session, approval_id)
        await self.webhooks.enqueue(session, "approval.decided", webhook_data(approval, self.console_url), now)
        return detail_of(approval, now)

    # --- upkeep -----------------------------------------------------------------------------------------------

    async def expire_due(self, db: Database, now: datetime) -> list[str]:
        """Mark pending approvals past their expiry as expired (with their webhook messages); return their ids."""

        async def work(session: AsyncSession) -> list[str]:
            expired = await store.expire_due(session, now)
            for approval_id in expired:
                approval = await _reload(session, approval_id)
                await self.webhooks.enqueue(session, "approval.expired", webhook_data(approval, self.console_url), now)
            return expired

        return await db.run_in_transaction(work)


async def _reload(session: AsyncSession, approval_id: str) -> Approval:
    approval = await store.get(session, approval_id)
    if approval is None:  # pragma: no cover - the row was read in this transaction
        raise NotFound("approval", approval_id)
    return approval


def _require_pending(approval: Approval, now: datetime) -> None:
    status = effective_status(approval, now)
    if status == ApprovalStatus.PENDING:
        return
    if status == ApprovalStatus.EXPIRED:
        raise ToolError(
            "approval_expired",
            f"Approval {approval.id} expired at {approval.expires_at.isoformat()} and can no longer be decided; "
            "nothing was done.",
            details={"status": status},
        )
    who = f" by {approval.decided_by_subject}" if approval.decided_by_subject else ""
    raise ToolError(
        "approval_already_decided",
        f"Approval {approval.id} was already decided{who} (status {status}); a decision is final.",
        details={"status": status},
    )
