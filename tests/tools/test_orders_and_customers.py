"""Orders and customers: reads, cancellation rules, PII masking, and tenancy that looks exactly like "not found"."""

from __future__ import annotations

import pytest

from tests.conftest import Harness
from tests.mail import change_email
from tools.store.models import Order, OrderStatus

pytestmark = pytest.mark.anyio


async def test_an_order_reads_with_its_lines_and_exact_totals(harness: Harness) -> None:
    async with harness.client("support") as client:
        result = await client.call_tool("order_get", {"order_id": "ord_5001"})
    assert result.structured_content is not None
    order = result.structured_content
    assert (order["total"], order["currency"], order["status"]) == ("158.00", "EUR", "pending")
    assert [(line["sku"], line["quantity"], line["unit_price"]) for line in order["lines"]] == [
        ("SKU-KB-01", 1, "129.00"),
        ("SKU-CB-02", 2, "14.50"),
    ]
    assert order["placed_at"].endswith("+00:00")


async def test_a_pending_order_is_cancelled(harness: Harness) -> None:
    async with harness.client("senior") as client:
        result = await client.call_tool("order_cancel", {"order_id": "ord_5001", "reason": "changed their mind"})
    assert not result.is_error, result.content
    async with harness.mandate.db.session() as session:
        order = await session.get(Order, "ord_5001")
    assert order is not None and order.status == OrderStatus.CANCELLED
    assert order.cancelled_at is not None and order.cancelled_at.tzinfo is not None


async def test_a_shipped_order_cannot_be_cancelled_and_stays_shipped(harness: Harness) -> None:
    async with harness.client("senior") as client:
        result = await client.call_tool("order_cancel", {"order_id": "ord_5002", "reason": "changed their mind"})
    assert result.is_error
    assert result.structured_content is not None
    assert "shipped" in result.structured_content["message"]
    async with harness.mandate.db.session() as session:
        order = await session.get(Order, "ord_5002")
    assert order is not None and order.status == OrderStatus.SHIPPED


async def test_customer_contact_details_are_masked_without_the_pii_scope(harness: Harness) -> None:
    async with harness.client("support") as client:
        masked = await client.call_tool("customer_lookup", {"customer_id": "cus_1001"})
    async with harness.client("senior") as client:
        clear = await client.call_tool("customer_lookup", {"customer_id": "cus_1001"})
    assert masked.structured_content is not None and clear.structured_content is not None
    assert masked.structured_content["email"] == "a***@example.com"
    assert masked.structured_content["pii_masked"] is True
    assert clear.structured_content["email"] == "ada@example.com"


async def test_a_customer_is_found_by_exact_email(harness: Harness) -> None:
    async with harness.client("support") as client:
        result = await client.call_tool("customer_lookup", {"email": "grace@example.com"})
    assert result.structured_content is not None
    assert result.structured_content["id"] == "cus_1002"


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("customer_lookup", {"customer_id": "cus_1004"}),
        ("orders_list", {"customer_id": "cus_1004"}),
        ("order_get", {"order_id": "ord_5007"}),
    ],
)
async def test_another_tenants_record_looks_exactly_like_a_missing_one(
    harness: Harness, tool: str, arguments: dict[str, str]
) -> None:
    # cus_1004 and ord_5007 belong to tenant globex; this agent is bound to tenant acme.
    missing = {key: value[:4] + "9999" for key, value in arguments.items()}
    async with harness.client("support", tenant="acme") as client:
        foreign = await client.call_tool(tool, arguments)
        absent = await client.call_tool(tool, missing)
    assert foreign.is_error and absent.is_error
    assert foreign.structured_content is not None and absent.structured_content is not None
    assert foreign.structured_content["code"] == absent.structured_content["code"] == "not_found"
    assert foreign.structured_content["message"].replace(
        next(iter(arguments.values())), "X"
    ) == absent.structured_content["message"].replace(next(iter(missing.values())), "X")


async def test_an_email_change_is_kept_in_the_history_and_redacted_in_the_audit(harness: Harness) -> None:
    from sqlmodel import select

    from server.audit.models import AuditRecord
    from tools.store.models import AccountChange

    async with harness.client("senior") as client:
        result = await change_email(client, harness.mandate.settings.data_dir, "cus_1003", "alan.turing@example.org")
    assert not result.is_error, result.content
    async with harness.mandate.db.session() as session:
        change = (await session.exec(select(AccountChange))).one()
        record = (await session.exec(select(AccountChange.audit_id))).one()
        audit = (await session.exec(select(AuditRecord).where(AuditRecord.id == record))).one()
    assert (change.old_value, change.new_value) == ("alan@example.org", "alan.turing@example.org")
    assert "alan.turing@example.org" not in audit.arguments


async def test_a_customer_is_found_by_email_in_the_callers_tenant_when_another_tenant_has_the_same_address(
    harness: Harness,
) -> None:
    from datetime import UTC, datetime
    from typing import Any

    from tools.store.models import Customer

    now = datetime.now(UTC)

    async def add(session: Any) -> None:
        session.add(
            Customer(
                id="cus_2001", tenant="globex", name="Pat G", email="pat@example.com", phone="+1 555", created_at=now
            )
        )
        await session.flush()
        session.add(
            Customer(
                id="cus_2002", tenant="acme", name="Pat A", email="pat@example.com", phone="+1 556", created_at=now
            )
        )

    await harness.mandate.db.run_in_transaction(add)
    async with harness.client("support", tenant="acme") as client:
        acme = await client.call_tool("customer_lookup", {"email": "pat@example.com"})
    async with harness.client("support", tenant="initech") as client:
        elsewhere = await client.call_tool("customer_lookup", {"email": "pat@example.com"})
    async with harness.client("support") as client:
        untenanted = await client.call_tool("customer_lookup", {"email": "pat@example.com"})
    assert not acme.is_error and acme.structured_content is not None
    assert acme.structured_content["id"] == "cus_2002"
    assert elsewhere.is_error and elsewhere.structured_content is not None
    assert elsewhere.structured_content["code"] == "not_found"
    assert untenanted.is_error and untenanted.structured_content is not None
    assert untenanted.structured_content["code"] == "ambiguous_email"  # never an arbitrary tenant's customer
