"""tools/list shows a caller only the tools its scopes allow; tools/call of any other tool runs nothing."""

from __future__ import annotations

import time

import pytest
from sqlmodel import func, select

from server.audit.models import AuditRecord
from tests.conftest import Harness
from tools.store.models import Refund

pytestmark = pytest.mark.anyio


async def _names(harness: Harness, agent: str) -> list[str]:
    async with harness.client(agent) as client:
        return [tool.name for tool in (await client.list_tools()).tools]


async def test_a_support_token_sees_only_the_read_tools(harness: Harness) -> None:
    assert await _names(harness, "support") == ["customer_lookup", "order_get", "orders_list"]


async def test_a_refund_token_also_sees_refund_create_and_the_status_of_its_approvals(harness: Harness) -> None:
    assert await _names(harness, "refunds") == [
        "approval_status",
        "customer_lookup",
        "order_get",
        "orders_list",
        "refund_create",
    ]


async def test_the_large_refund_scope_alone_is_enough_to_see_refund_create(harness: Harness) -> None:
    async with harness.client("nothing", scopes=("refunds:create:large",)) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["approval_status", "refund_create"]


async def test_a_token_without_scopes_sees_no_tools(harness: Harness) -> None:
    assert await _names(harness, "nothing") == []


async def test_calling_a_tool_outside_the_token_scopes_names_the_missing_scope_and_runs_nothing(
    harness: Harness,
) -> None:
    async with harness.client("support") as client:
        result = await client.call_tool(
            "refund_create", {"order_id": "ord_5001", "amount": "1.00", "currency": "EUR", "reason": "damaged"}
        )
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "insufficient_scope"
    assert "refunds:create" in result.structured_content["message"]
    async with harness.mandate.db.session() as session:
        assert (await session.exec(select(func.count()).select_from(Refund))).one() == 0
        record = (await session.exec(select(AuditRecord).where(AuditRecord.tool == "refund_create"))).one()
    assert (record.decision, record.outcome, record.reason_code) == ("deny", "refused", "insufficient_scope")


async def test_listing_is_recorded_with_the_number_of_tools_shown(harness: Harness) -> None:
    await _names(harness, "refunds")
    async with harness.mandate.db.session() as session:
        record = (await session.exec(select(AuditRecord).where(AuditRecord.kind == "list"))).one()
    assert record.client_id == "refunds-agent"
    assert record.result_summary == '{"tools":5}'


async def test_an_expired_token_lists_nothing_and_calls_nothing(harness: Harness) -> None:
    expired = harness.signed(harness.claims("senior", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))
    async with harness.client_with_token(expired) as client:
        assert (await client.list_tools()).tools == []
        result = await client.call_tool("orders_list", {"customer_id": "cus_1001"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "authentication_required"
