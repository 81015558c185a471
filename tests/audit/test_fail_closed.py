"""If the audit record cannot be written, nothing happens: the effect is rolled back with it (one transaction), and
a read's result is withheld (the documented choice for read-only tools, docs/audit.md)."""

from __future__ import annotations

import logging

import pytest
from sqlmodel import func, select

from tests.audit.support import make_audit_inserts_fail, rows
from tests.conftest import Harness
from tools.store.models import Order, Refund

pytestmark = pytest.mark.anyio

REFUND = {"order_id": "ord_5001", "amount": "5.00", "currency": "EUR", "reason": "damaged"}


async def test_a_refund_whose_audit_record_cannot_be_written_does_not_happen(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with harness.client("refunds") as client:
        await client.list_tools()
        await make_audit_inserts_fail(harness.mandate.db)
        result = await client.call_tool("refund_create", REFUND)
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "internal_error"
    async with harness.mandate.db.session() as session:
        assert (await session.exec(select(func.count()).select_from(Refund))).one() == 0
        order = await session.get(Order, "ord_5001")
    assert order is not None and order.refunded_minor == 0
    assert all(row["tool"] != "refund_create" for row in await rows(harness.mandate.db))


async def test_a_read_whose_audit_record_cannot_be_written_returns_no_data(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with harness.client("support") as client:
        await client.list_tools()
        await make_audit_inserts_fail(harness.mandate.db)
        result = await client.call_tool("order_get", {"order_id": "ord_5001"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "internal_error"
    assert "ord_5001" not in str(result.content) and "lines" not in result.structured_content
