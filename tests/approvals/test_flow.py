"""Human approval end to end through MCP clients: request, decide, run exactly once, and every way it must not run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlmodel import col, func, select

from server.approvals import Approval
from server.audit.models import AuditRecord
from server.ledger import LedgerEntry
from tests.conftest import Harness
from tools.store.models import Order, OrderStatus, Refund

pytestmark = pytest.mark.anyio

BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}


async def _call(harness: Harness, agent: str, tool: str, arguments: dict[str, Any], **token: Any) -> Any:
    async with harness.client(agent, **token) as client:
        return await client.call_tool(tool, arguments)


async def _request(harness: Harness, arguments: dict[str, Any] | None = None) -> str:
    result = await _call(harness, "refunds", "refund_create", arguments or BIG_REFUND)
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "pending_approval"
    approval_id: str = result.structured_content["approval_id"]
    return approval_id


async def _decide(harness: Harness, approval_id: str, decision: str = "approve", **token: Any) -> Any:
    arguments = {"approval_id": approval_id, "decision": decision, "comment": "checked with the customer"}
    return await _call(harness, "supervisor", "approval_decide", arguments, **token)


async def _count(harness: Harness, model: Any) -> int:
    async with harness.mandate.db.session() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def _records(harness: Harness, approval_id: str) -> list[AuditRecord]:
    query = select(AuditRecord).where(AuditRecord.approval_id == approval_id).order_by(col(AuditRecord.seq))
    async with harness.mandate.db.session() as session:
        return list((await session.exec(query)).all())


async def test_an_approved_refund_runs_once_as_its_requester_and_the_agent_reads_its_result(harness: Harness) -> None:
    approval_id = await _request(harness)
    assert await _count(harness, Refund) == 0

    decided = await _decide(harness, approval_id)
    assert not decided.is_error, decided.content
    body = decided.structured_content
    assert body["status"] == "executed" and body["decided"]["by_subject"] == "agent:supervisor"
    assert body["outcome"]["succeeded"] and body["outcome"]["result"]["amount"] == "150.00"

    async with harness.mandate.db.session() as session:
        [refund] = (await session.exec(select(Refund))).all()
    assert (refund.amount_minor, refund.created_by.endswith("|refunds-agent|agent:refunds")) == (15000, True)
    async with harness.mandate.db.session() as session:  # the approved amount still counts toward the budgets
        assert (await session.exec(select(LedgerEntry).where(LedgerEntry.tool == "refund_create"))).all()

    status = await _call(harness, "refunds", "approval_status", {"approval_id": approval_id})
    assert not status.is_error
    assert status.structured_content["status"] == "executed"
    assert status.structured_content["outcome"]["result"]["refund_id"] == refund.id

    requested, run, decision, checked = await _records(harness, approval_id)
    assert (checked.tool, checked.subject) == ("approval_status", "agent:refunds")
    assert (requested.decision, requested.outcome, requested.subject) == (
        "approval",
        "pending_approval",
        "agent:refunds",
    )
    assert (run.tool, run.outcome, run.subject, run.transport) == (
        "refund_create",
        "succeeded",
        "agent:refunds",
        "approval",
    )
    assert (decision.tool, decision.outcome, decision.subject) == ("approval_decide", "succeeded", "agent:supervisor")
    assert refund.audit_id == run.id


async def test_a_rejected_approval_does_nothing_and_the_agent_is_told_with_the_comment(harness: Harness) -> None:
    approval_id = await _request(harness)
    decided = await _decide(harness, approval_id, "reject")
    assert not decided.is_error and decided.structured_content["status"] == "rejected"
    status = await _call(harness, "refunds", "approval_status", {"approval_id": approval_id})
    assert status.structured_content["status"] == "rejected"
    assert status.structured_content["comment"] == "checked with the customer"
    assert await _count(harness, Refund) == 0
    async with harness.mandate.db.session() as session:  # the decision itself counts toward the approver's budget
        spent = (await session.exec(select(LedgerEntry).where(LedgerEntry.tool == "refund_create"))).all()
    assert spent == []


async def test_an_expired_approval_cannot_be_approved_and_nothing_happens(harness: Harness) -> None:
    approval_id = await _request(harness)
    later = harness.mandate.enforcer.clock() + timedelta(hours=25)
    harness.mandate.enforcer.clock = lambda: later
    decided = await _decide(harness, approval_id)
    assert decided.is_error and decided.structured_content["code"] == "approval_expired"
    assert await harness.mandate.approvals.expire_due(harness.mandate.db, later) == [approval_id]
    status = await _call(harness, "refunds", "approval_status", {"approval_id": approval_id})
    assert status.structured_content["status"] == "expired"
    assert await _count(harness, Refund) == 0


async def test_the_requester_cannot_approve_its_own_request_even_through_another_client(harness: Harness) -> None:
    approval_id = await _request(harness)
    same_person = await _decide(harness, approval_id, subject="agent:refunds", client_id="another-client")
    assert same_person.is_error and same_person.structured_content["code"] == "self_approval"
    assert await _count(harness, Refund) == 0
    async with harness.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None and approval.status == "pending"


async def test_a_replayed_approval_does_not_refund_twice(harness: Harness) -> None:
    approval_id = await _request(harness)
    assert not (await _decide(harness, approval_id)).is_error
    again = await _decide(harness, approval_id, subject="agent:other-supervisor")
    assert again.is_error and again.structured_content["code"] == "approval_already_decided"
    assert await _count(harness, Refund) == 1


async def test_two_approvers_racing_yield_one_refund(harness: Harness) -> None:
    approval_id = await _request(harness)
    answers: list[Any] = []

    async def approve(subject: str) -> None:
        answers.append(await _decide(harness, approval_id, subject=subject))

    async with anyio.create_task_group() as group:
        for subject in ("human:alice", "human:bob", "human:carol"):
            group.start_soon(approve, subject)
    assert sorted(bool(a.is_error) for a in answers) == [False, True, True]
    assert await _count(harness, Refund) == 1


async def test_an_approval_runs_the_arguments_it_was_bound_to_not_others(harness: Harness) -> None:
    approval_id = await _request(harness)
    async with harness.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
        assert approval is not None
        digest = approval.arguments_digest
    # the same request with other arguments is another approval, never this one
    other_id = await _request(harness, {**BIG_REFUND, "amount": "160.00"})
    assert other_id != approval_id
    # asking again with the same arguments reuses the pending approval instead of queueing a second one
    assert await _request(harness) == approval_id
    # arguments changed in the database after the request no longer match the bound digest: refused when run
    await _tamper_arguments(harness, approval_id, '{"amount":"999.00","currency":"EUR","order_id":"ord_5002"}')
    decided = await _decide(harness, approval_id)
    assert decided.structured_content["status"] == "failed"
    assert decided.structured_content["outcome"]["code"] == "approval_tampered"  # caught by the seal first
    assert await _count(harness, Refund) == 0
    async with harness.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None and approval.arguments_digest == digest


async def _tamper_arguments(harness: Harness, approval_id: str, arguments: str) -> None:
    from sqlalchemy import update

    async def work(session: Any) -> None:
        await session.exec(update(Approval).where(col(Approval.id) == approval_id).values(arguments=arguments))

    await harness.mandate.db.run_in_transaction(work)


async def test_an_action_whose_state_changed_before_approval_fails_cleanly_and_says_why(harness: Harness) -> None:
    approval_id = await _request(harness, {**BIG_REFUND, "amount": "300.00"})
    # meanwhile a senior agent refunds most of the order within its own tier
    done = await _call(harness, "senior", "refund_create", {**BIG_REFUND, "amount": "100.00"})
    assert not done.is_error, done.content
    decided = await _decide(harness, approval_id)
    assert not decided.is_error
    body = decided.structured_content
    assert body["status"] == "failed" and not body["outcome"]["succeeded"]
    assert "left to refund" in body["outcome"]["message"] or "unrefunded" in body["outcome"]["message"]
    async with harness.mandate.db.session() as session:
        refunds = (await session.exec(select(Refund))).all()
        order = await session.get(Order, "ord_5002")
    assert [r.amount_minor for r in refunds] == [10000]
    assert order is not None and order.refunded_minor == 10000 and order.status == OrderStatus.SHIPPED
    status = await _call(harness, "refunds", "approval_status", {"approval_id": approval_id})
    assert status.structured_content["status"] == "failed"


async def test_another_agent_cannot_see_the_status_of_a_request_it_did_not_make(harness: Harness) -> None:
    approval_id = await _request(harness)
    other = await _call(harness, "senior", "approval_status", {"approval_id": approval_id})
    assert other.is_error and other.structured_content["code"] == "not_found"


async def test_only_tokens_with_the_approver_scope_see_the_approver_tools(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        refunds = {t.name for t in (await client.list_tools()).tools}
    async with harness.client("supervisor") as client:
        supervisor = {t.name for t in (await client.list_tools()).tools}
    approver_tools = {"approvals_list", "approval_get", "approval_decide"}
    assert not approver_tools & refunds and "approval_status" in refunds
    assert approver_tools <= supervisor


async def test_the_approver_lists_and_inspects_the_exact_request_and_why_it_needs_approval(harness: Harness) -> None:
    approval_id = await _request(harness)
    listing = await _call(harness, "supervisor", "approvals_list", {})
    [item] = listing.structured_content["items"]
    assert item["approval_id"] == approval_id and item["tool"] == "refund_create"
    assert item["arguments"]["reason"] != BIG_REFUND["reason"]  # free text is redacted in lists
    detail = await _call(harness, "supervisor", "approval_get", {"approval_id": approval_id})
    body = detail.structured_content
    assert body["full_arguments"] == BIG_REFUND
    assert body["rule"] == "refund-per-call-cap" and body["reason_code"] == "cap_exceeded"
    assert "refunds:create" in body["requester_scopes"]


async def test_a_token_without_the_approver_claim_cannot_decide_when_the_claim_is_required(harness: Harness) -> None:
    from server.config import ApprovalSettings

    harness.mandate.approvals.settings = ApprovalSettings(approver_claim="mandate_approver")
    approval_id = await _request(harness)
    agent = await _decide(harness, approval_id, extra_claims={"mandate_approver": False})
    assert agent.is_error and agent.structured_content["code"] == "not_an_approver"
    human = await _decide(harness, approval_id, extra_claims={"mandate_approver": True})
    assert not human.is_error and human.structured_content["status"] == "executed"


async def test_an_approval_of_one_tenant_is_not_found_under_the_same_agents_token_for_another(harness: Harness) -> None:
    async with harness.client("refunds", tenant="acme") as client:
        asked = await client.call_tool("refund_create", BIG_REFUND)
    approval_id = asked.structured_content["approval_id"]
    assert not (await _decide(harness, approval_id)).is_error
    async with harness.client("refunds", tenant="globex") as client:
        foreign = await client.call_tool("approval_status", {"approval_id": approval_id})
        again = await client.call_tool("refund_create", BIG_REFUND)
    assert foreign.is_error and foreign.structured_content["code"] == "not_found"
    assert again.structured_content["code"] == "not_found"  # ord_5002 is acme's: no approval is reused or opened


async def test_an_approval_past_its_expiry_is_listed_as_expired_before_the_sweep_marks_it(harness: Harness) -> None:
    approval_id = await _request(harness)
    later = harness.mandate.enforcer.clock() + timedelta(hours=25)
    harness.mandate.enforcer.clock = lambda: later  # the background sweep has not run
    pending = await _call(harness, "supervisor", "approvals_list", {"status": "pending"})
    expired = await _call(harness, "supervisor", "approvals_list", {"status": "expired"})
    assert pending.structured_content["items"] == []
    assert [(i["approval_id"], i["status"]) for i in expired.structured_content["items"]] == [(approval_id, "expired")]
