"""Undo (docs/remediation.md): from a misbehaving agent to every effect it made, its state now, and the compensating
action its tool declares; a dry run changes nothing, execution goes through enforcement as a person, and running it
twice compensates once. On the demo store, on SQLite and PostgreSQL, through the in-process MCP client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import func, select

from server.audit.models import AuditRecord
from server.callpath.record import CallInfo
from server.remediation import Item, Target, execute, plan
from tests.conftest import Harness
from tests.mail import change_email
from tests.remediation.conftest import PERSON, RESPONDER, rogue_agent_acts
from tools.audit import effects_of
from tools.store.models import AccountChange, Customer, Order, OrderStatus, Refund, Remediation

pytestmark = pytest.mark.anyio

REASON = "incident 42: agent refunded and changed accounts it should not have"


async def _plan(harness: Harness, target: Target) -> list[Item]:
    mandate = harness.mandate
    return await plan(mandate.db, mandate.catalog, target, effects_of, datetime.now(UTC))


async def _responder(harness: Harness, *, person: bool = True) -> Any:
    token = harness.token(
        scopes=RESPONDER, subject="person:rita", client_id="cli", extra_claims=PERSON if person else None
    )
    return await harness.mandate.verifier.verify(token)


async def _count(harness: Harness, model: type[Any]) -> int:
    async with harness.mandate.db.session() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


def _by_kind(items: list[Item]) -> dict[str, Item]:
    return {item.effect.kind: item for item in items}


async def test_a_dry_run_lists_every_effect_with_its_state_and_compensation_and_changes_nothing(
    harness: Harness,
) -> None:
    await rogue_agent_acts(harness)
    records_before = await _count(harness, AuditRecord)

    items = _by_kind(await _plan(harness, Target(client_id="rogue-agent")))

    assert set(items) == {"account_change", "order_cancellation", "refund"}
    email, cancel, refund = items["account_change"], items["order_cancellation"], items["refund"]
    assert (email.compensation.action, email.compensation.tool) == ("call", "account_email_restore")
    assert "a***@example.net" in email.compensation.state
    assert (cancel.compensation.action, cancel.compensation.tool) == ("call", "order_reopen")
    assert cancel.compensation.state == "the order is cancelled"
    assert (refund.compensation.action, refund.compensation.tool) == ("flag", "refund_follow_up")
    assert "20.00 EUR refunded on order ord_5001" in refund.compensation.state
    assert all(item.cause is not None and item.cause["client_id"] == "rogue-agent" for item in items.values())
    async with harness.mandate.db.session() as session:
        customer = await session.get(Customer, "cus_1001")
        order = await session.get(Order, "ord_5004")
    assert customer is not None and customer.email == "attacker@example.net"
    assert order is not None and order.status == OrderStatus.CANCELLED
    assert await _count(harness, AuditRecord) == records_before
    assert await _count(harness, Remediation) == 0


async def test_executing_as_a_person_undoes_each_effect_through_enforcement_with_lineage(harness: Harness) -> None:
    answers = await rogue_agent_acts(harness)
    async with harness.mandate.db.session() as session:
        original = await session.get(Customer, "cus_1001")
    items = await _plan(harness, Target(client_id="rogue-agent"))
    person = await _responder(harness)

    done = await execute(harness.mandate.enforcer, person, items, reason=REASON, info=CallInfo(transport="cli"))

    assert [result.succeeded for result in done] == [True, True, True], [result.message for result in done]
    async with harness.mandate.db.session() as session:
        customer = await session.get(Customer, "cus_1001")
        order = await session.get(Order, "ord_5004")
        remediations = (await session.exec(select(Remediation))).all()
        records = (
            await session.exec(
                select(AuditRecord).where(AuditRecord.subject == "person:rita", AuditRecord.kind == "call")
            )
        ).all()
        refund = (await session.exec(select(Refund))).one()
    assert customer is not None and customer.email != "attacker@example.net"
    assert original is not None and customer.email.endswith("@example.com")
    assert order is not None and order.status == OrderStatus.PROCESSING
    assert order.cancelled_at is None
    assert refund.id == answers["refund_create"]["refund_id"]  # a refund is flagged, never reversed automatically
    causes = {item.effect.audit_id for item in items}
    assert {r.compensates_audit_id for r in remediations} == causes  # lineage: compensation -> the effect's cause
    assert {r.created_by for r in remediations} == {person.key}
    assert sorted(r.tool for r in records) == ["account_email_restore", "order_reopen", "refund_follow_up"]
    assert {r.outcome for r in records} == {"succeeded"}
    assert {r.audit_id for r in remediations} == {r.id for r in records}


async def test_running_a_remediation_twice_compensates_once(harness: Harness) -> None:
    await rogue_agent_acts(harness)
    person = await _responder(harness)
    first = await execute(
        harness.mandate.enforcer,
        person,
        await _plan(harness, Target(client_id="rogue-agent")),
        reason=REASON,
        info=CallInfo(transport="cli"),
    )
    assert all(result.succeeded for result in first)

    again = await _plan(harness, Target(client_id="rogue-agent"))
    second = await execute(harness.mandate.enforcer, person, again, reason=REASON, info=CallInfo(transport="cli"))

    assert {item.compensation.action for item in again} == {"done"}
    assert all("compensated by rem_" in item.compensation.note for item in again)
    assert second == []
    assert await _count(harness, Remediation) == 3
    change = next(item for item in first if item.item.effect.kind == "account_change")
    async with harness.client_with_token(
        harness.token(scopes=RESPONDER, subject="person:sam", client_id="cli-2", extra_claims=PERSON)
    ) as client:
        direct = await client.call_tool(
            "account_email_restore", {"change_id": change.item.effect.id, "reason": "someone else tries again"}
        )
    assert direct.is_error and direct.structured_content is not None
    assert direct.structured_content["code"] == "already_compensated"
    assert await _count(harness, Remediation) == 3


async def test_an_agent_token_cannot_run_compensations(harness: Harness) -> None:
    await rogue_agent_acts(harness)
    items = await _plan(harness, Target(client_id="rogue-agent"))
    agent = await harness.mandate.verifier.verify(harness.token("senior"))
    unmarked = await _responder(harness, person=False)

    by_agent = await execute(harness.mandate.enforcer, agent, items, reason=REASON, info=CallInfo(transport="cli"))
    by_unmarked = await execute(
        harness.mandate.enforcer, unmarked, items, reason=REASON, info=CallInfo(transport="cli")
    )

    assert {result.code for result in by_agent} == {"insufficient_scope"}
    assert {result.code for result in by_unmarked} == {"not_a_person"}
    assert await _count(harness, Remediation) == 0
    async with harness.mandate.db.session() as session:
        customer = await session.get(Customer, "cus_1001")
    assert customer is not None and customer.email == "attacker@example.net"


async def test_an_address_changed_again_since_is_left_for_a_person(harness: Harness) -> None:
    await rogue_agent_acts(harness)
    async with harness.client("senior", client_id="honest-agent") as client:
        result = await change_email(client, harness.mandate.settings.data_dir, "cus_1001", "real.owner@example.org")
    assert not result.is_error

    email = _by_kind(await _plan(harness, Target(client_id="rogue-agent")))["account_change"]
    done = await execute(
        harness.mandate.enforcer, await _responder(harness), [email], reason=REASON, info=CallInfo(transport="cli")
    )

    assert email.compensation.action == "none"
    assert "changed again since" in email.compensation.state
    assert done == []
    async with harness.mandate.db.session() as session:
        customer = await session.get(Customer, "cus_1001")
        changes = (await session.exec(select(AccountChange))).all()
    assert customer is not None and customer.email == "real.owner@example.org"
    assert len(changes) == 2


async def test_a_remediation_can_start_from_one_approval(harness: Harness) -> None:
    big = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}
    async with harness.client("refunds", client_id="refund-agent") as client:
        pending = await client.call_tool("refund_create", big)
    assert pending.structured_content is not None
    approval_id = pending.structured_content["approval_id"]
    supervisor = harness.token("supervisor", subject="person:sue", extra_claims=PERSON)
    async with harness.client_with_token(supervisor) as client:
        decided = await client.call_tool("approval_decide", {"approval_id": approval_id, "decision": "approve"})
    assert not decided.is_error, decided.content

    items = await _plan(harness, Target(approval_id=approval_id))

    assert [(item.effect.kind, item.compensation.action) for item in items] == [("refund", "flag")]
    assert items[0].cause is not None and items[0].cause["approval_id"] == approval_id


def test_a_target_names_a_principal_or_an_approval() -> None:
    with pytest.raises(ValueError, match="name a client id"):
        Target()
    with pytest.raises(ValueError, match="not both"):
        Target(client_id="a", approval_id="apr_x")
