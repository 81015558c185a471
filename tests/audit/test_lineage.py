"""Lineage: from a refund, a cancelled order or an email change to the record that caused it, its principal, its
approval and its trace; from a client to everything it did in a time range, so its actions can be remediated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import select

from server.audit.lineage import trail_of
from tests.audit.conftest import Cli
from tests.audit.support import append_records, rows
from tests.conftest import Harness
from tests.mail import change_email
from tools import audit as store
from tools.store.models import AccountChange, Refund

pytestmark = pytest.mark.anyio

REFUND = {"order_id": "ord_5001", "amount": "3.00", "currency": "EUR", "reason": "damaged"}


async def _act(harness: Harness) -> None:
    async with harness.client("senior") as client:
        for name, arguments in (
            ("refund_create", REFUND),
            ("order_cancel", {"order_id": "ord_5006", "reason": "customer changed their mind"}),
            ("orders_list", {"customer_id": "cus_1001"}),
        ):
            result = await client.call_tool(name, arguments)
            assert not result.is_error, (name, result.content)
            if name == "order_cancel":
                changed = await change_email(
                    client, harness.mandate.settings.data_dir, "cus_1003", "alan.t@example.org"
                )
                assert not changed.is_error, changed.content
    async with harness.client("refunds") as client:
        assert not (await client.call_tool("refund_create", {**REFUND, "amount": "1.00"})).is_error


async def _lineage(cli: Cli, *argv: str) -> Any:
    result = await cli("audit", "lineage", *argv, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


async def test_a_refund_leads_to_its_record_principal_and_trace(harness: Harness, cli: Cli) -> None:
    await _act(harness)
    async with harness.mandate.db.session() as session:
        refund = (await session.exec(select(Refund).where(Refund.amount_minor == 300))).one()
    (trail,) = await _lineage(cli, "--refund", refund.id)
    assert trail["effect"]["kind"] == "refund" and trail["effect"]["amount"] == "3.00"
    assert trail["cause"]["id"] == refund.audit_id
    assert (trail["cause"]["tool"], trail["cause"]["outcome"]) == ("refund_create", "succeeded")
    assert trail["principal"]["client_id"] == "senior-agent"
    assert trail["principal"]["token_id"]
    assert trail["approval"] == []
    assert trail["trace_id"] == trail["cause"]["trace_id"]


async def test_a_cancelled_order_leads_to_the_cancel_record(harness: Harness, cli: Cli) -> None:
    await _act(harness)
    (trail,) = await _lineage(cli, "--order", "ord_5006")
    assert trail["effect"]["kind"] == "order_cancellation"
    assert (trail["cause"]["tool"], trail["cause"]["arguments"]["order_id"]) == ("order_cancel", "ord_5006")
    assert trail["principal"]["subject"] == "agent:senior"


async def test_an_order_leads_to_its_refunds_too(harness: Harness, cli: Cli) -> None:
    await _act(harness)
    trails = await _lineage(cli, "--order", "ord_5001")
    assert sorted(t["effect"]["amount"] for t in trails) == ["1.00", "3.00"]
    assert {t["principal"]["client_id"] for t in trails} == {"senior-agent", "refunds-agent"}
    text = await cli("audit", "lineage", "--order", "ord_5001")
    assert "caused by  #" in text.out and "approval   none" in text.out


async def test_an_email_change_leads_to_its_record(harness: Harness, cli: Cli) -> None:
    await _act(harness)
    async with harness.mandate.db.session() as session:
        change = (await session.exec(select(AccountChange))).one()
    (trail,) = await _lineage(cli, "--account-change", change.id)
    assert trail["cause"]["id"] == change.audit_id
    assert trail["cause"]["tool"] == "account_email_confirm"  # the change happened when the code was confirmed
    assert trail["cause"]["arguments"]["code"] == "[redacted]"


async def test_a_client_leads_to_everything_it_did_and_the_effects_to_remediate(harness: Harness, cli: Cli) -> None:
    await _act(harness)
    report = await _lineage(cli, "--client-id", "senior-agent", "--since", "1h")
    kinds = [trail["effect"]["kind"] for trail in report["effects"]]
    assert kinds == ["refund", "order_cancellation", "account_change"]
    assert {record["client_id"] for record in report["records"]} == {"senior-agent"}
    assert any(record["tool"] == "orders_list" for record in report["records"])
    assert (await _lineage(cli, "--client-id", "senior-agent", "--until", "1h"))["records"] == []
    text = await cli("audit", "lineage", "--sub", "agent:refunds")
    assert "effects (to remediate):" in text.out and "refund ref_" in text.out


async def test_an_approved_action_leads_to_the_records_of_its_approval(harness: Harness) -> None:
    db = harness.mandate.db
    (requested,) = await append_records(db, 1, tool="refund_create", decision="approval", outcome="pending_approval")
    approval_id = requested.id
    await append_records(db, 1, start=1, tool="approval_decide", approval_id=approval_id, client_id="supervisor-agent")
    (executed,) = await append_records(db, 1, start=2, tool="refund_create", approval_id=approval_id)
    effect = store.Effect("refund", "ref_x", executed.id, "refund ref_x")
    async with db.session() as session:
        trail = await trail_of(session, effect)
    assert trail.cause is not None and trail.cause["id"] == executed.id
    assert [row["tool"] for row in trail.approval] == ["approval_decide"]
    assert trail.as_dict()["approval"][0]["approval_id"] == approval_id
    assert len(await rows(db)) == 3


async def test_an_unknown_effect_is_a_clear_error(harness: Harness, cli: Cli) -> None:
    result = await cli("audit", "lineage", "--refund", "ref_nope")
    assert result.code == 2 and "no such refund" in result.err
