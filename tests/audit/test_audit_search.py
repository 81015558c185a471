"""The ``audit_search`` tool: agents holding ``audit:read`` search the trail with the export's filters, newest
first, page by page with an opaque cursor; others do not see it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.audit.support import append_records
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def _search(harness: Harness, agent: str = "supervisor", **arguments: Any) -> dict[str, Any]:
    async with harness.client(agent) as client:
        result = await client.call_tool("audit_search", arguments)
    assert result.structured_content is not None
    return result.structured_content if not result.is_error else {"error": result.structured_content}


async def test_only_a_token_with_audit_read_sees_audit_search(harness: Harness) -> None:
    async with harness.client("supervisor") as client:
        assert "audit_search" in [tool.name for tool in (await client.list_tools()).tools]
    async with harness.client("senior") as client:
        assert "audit_search" not in [tool.name for tool in (await client.list_tools()).tools]
        refused = await client.call_tool("audit_search", {})
    assert refused.is_error


async def test_search_filters_by_principal_tool_decision_and_customer(harness: Harness) -> None:
    db = harness.mandate.db
    await append_records(db, 4)
    await append_records(
        db, 2, start=10, tool="refund_create", decision="deny", outcome="refused", customer_id="cus_1002"
    )
    page = await _search(harness, tool="refund_create", decision="deny", customer_id="cus_1002")
    assert [item["seq"] for item in page["items"]] == [6, 5]
    assert page["next_cursor"] is None
    page = await _search(harness, principal="writer1-agent")
    assert {item["client_id"] for item in page["items"]} == {"writer1-agent"}
    page = await _search(harness, since="2025-01-31T09:00:01Z", until="2025-01-31T09:00:03Z")
    assert [item["seq"] for item in page["items"]] == [3, 2]
    assert page["items"][0]["arguments"] == {"customer_id": "cus_1001"}


async def test_search_pages_with_an_opaque_cursor_until_the_last_page(harness: Harness) -> None:
    await append_records(harness.mandate.db, 7)
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        page = await _search(harness, tool="orders_list", limit=3, **({"cursor": cursor} if cursor else {}))
        seen.extend(item["seq"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert not cursor.isdigit()
    assert seen == [7, 6, 5, 4, 3, 2, 1]


async def test_a_cursor_used_with_other_filters_is_refused(harness: Harness) -> None:
    await append_records(harness.mandate.db, 5)
    page = await _search(harness, tool="orders_list", limit=2)
    refused = await _search(harness, tool="refund_create", limit=2, cursor=page["next_cursor"])
    assert refused["error"]["code"] == "invalid_cursor"
    garbage = await _search(harness, cursor="bm90LWEtY3Vyc29y")
    assert garbage["error"]["code"] == "invalid_cursor"


async def test_a_caller_bound_to_a_tenant_sees_only_that_tenant(harness: Harness) -> None:
    db = harness.mandate.db
    await append_records(db, 2, tenant="acme")
    await append_records(db, 2, start=5, tenant="globex")
    async with harness.client("supervisor", tenant="acme") as client:
        result = await client.call_tool("audit_search", {"tool": "orders_list"})
    assert result.structured_content is not None
    assert {item["tenant"] for item in result.structured_content["items"]} == {"acme"}


async def test_each_search_is_itself_recorded(harness: Harness) -> None:
    await _search(harness, tool="refund_create")
    page = await _search(harness, tool="audit_search")
    assert page["items"][0]["arguments"] == {"tool": "refund_create"}
    assert page["items"][0]["client_id"] == "supervisor-agent"
