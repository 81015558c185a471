"""refund_create: exact money, strict arguments, one transaction with its audit record, and no effect on refusal."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import func, select

from server.audit.models import AuditRecord
from tests.conftest import Harness
from tools.store.models import Order, Refund

pytestmark = pytest.mark.anyio

VALID = {"order_id": "ord_5001", "amount": "12.50", "currency": "EUR", "reason": "arrived damaged"}


async def _refund_count(harness: Harness) -> int:
    async with harness.mandate.db.session() as session:
        return (await session.exec(select(func.count()).select_from(Refund))).one()


async def test_a_refund_within_the_order_is_stored_with_its_audit_record(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", VALID)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    body = result.structured_content
    assert (body["amount"], body["currency"], body["order_refundable_left"]) == ("12.50", "EUR", "145.50")
    async with harness.mandate.db.session() as session:
        refund = (await session.exec(select(Refund))).one()
        order = await session.get(Order, "ord_5001")
        record = (await session.exec(select(AuditRecord).where(AuditRecord.id == refund.audit_id))).one()
    assert refund.amount_minor == 1250
    assert order is not None and order.refunded_minor == 1250
    assert (record.tool, record.decision, record.outcome) == ("refund_create", "allow", "succeeded")
    assert record.customer_id == "cus_1001"
    assert "arrived damaged" not in record.arguments  # reason is declared sensitive
    assert '"amount":"12.50"' in record.arguments


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 12.5),
        ("amount", 12),
        ("amount", True),
        ("amount", "NaN"),
        ("amount", "Infinity"),
        ("amount", "1e2"),
        ("amount", "12.505"),
        ("amount", "-5.00"),
        ("amount", " 12.50"),
        ("currency", "eur"),
        ("order_id", 5001),
        ("reason", None),
    ],
)
async def test_an_argument_of_the_wrong_kind_is_refused_with_a_clear_error_and_no_effect(
    harness: Harness, field: str, value: Any
) -> None:
    arguments = {**VALID, field: value}
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", arguments)
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] in {"invalid_arguments", "invalid_amount"}
    assert field in result.structured_content["message"] or "amount" in result.structured_content["message"]
    assert await _refund_count(harness) == 0


async def test_an_unknown_field_is_refused(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", {**VALID, "override_cap": True})
    assert result.is_error
    assert result.structured_content is not None
    assert "override_cap" in result.structured_content["message"]
    assert await _refund_count(harness) == 0


async def test_three_decimals_are_refused_for_a_two_decimal_currency_but_zero_decimals_fit_yen(
    harness: Harness,
) -> None:
    async with harness.client("refunds") as client:
        euro = await client.call_tool("refund_create", {**VALID, "amount": "1.001"})
        yen = await client.call_tool(
            "refund_create", {"order_id": "ord_5009", "amount": "0.5", "currency": "JPY", "reason": "late delivery"}
        )
        whole_yen = await client.call_tool(
            "refund_create", {"order_id": "ord_5009", "amount": "800", "currency": "JPY", "reason": "late delivery"}
        )
    assert euro.is_error and yen.is_error
    assert not whole_yen.is_error, whole_yen.content
    assert await _refund_count(harness) == 1


async def test_a_refund_in_another_currency_than_the_order_is_refused(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", {**VALID, "currency": "USD"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "currency_mismatch"
    assert await _refund_count(harness) == 0


async def test_a_refund_cannot_exceed_what_is_left_unrefunded(harness: Harness) -> None:
    # ord_5009: 8800 JPY paid.
    async with harness.client("refunds") as client:
        first = await client.call_tool(
            "refund_create", {"order_id": "ord_5009", "amount": "8000", "currency": "JPY", "reason": "late delivery"}
        )
        second = await client.call_tool(
            "refund_create", {"order_id": "ord_5009", "amount": "801", "currency": "JPY", "reason": "late delivery"}
        )
    assert not first.is_error, first.content
    assert second.is_error
    assert second.structured_content is not None
    assert "800" in second.structured_content["message"]
    assert await _refund_count(harness) == 1


async def test_a_refund_for_an_order_that_does_not_exist_is_not_found(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", {**VALID, "order_id": "ord_9999"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "not_found"


@pytest.mark.parametrize(
    ("amount", "currency", "order_id"),
    [("12.500", "EUR", "ord_5001"), ("1.0000", "USD", "ord_5004"), ("800.0", "JPY", "ord_5009")],
)
async def test_surplus_zero_decimals_are_refused_so_one_amount_has_one_spelling(
    harness: Harness, amount: str, currency: str, order_id: str
) -> None:
    """One amount, one spelling: otherwise "12.500" and "12.50" would be two requests to approvals and idempotency."""
    async with harness.client("refunds") as client:
        result = await client.call_tool(
            "refund_create", {"order_id": order_id, "amount": amount, "currency": currency, "reason": "late delivery"}
        )
    assert result.is_error and result.structured_content is not None
    assert result.structured_content["code"] == "invalid_arguments"
    assert "decimal places" in result.structured_content["message"]
    assert await _refund_count(harness) == 0
