"""Client-chosen values never make an invocation unrecordable, and a failure to record never leaks database text.

On PostgreSQL a too-long value or a NUL byte is refused by the database; a caller could otherwise probe tools beyond
its scopes (over stdio, with no HTTP guard in front) and leave no trace, and read SQL in the error it got back.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from sqlmodel import col, select

from server.audit.models import AuditRecord
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def _records(harness: Harness) -> list[AuditRecord]:
    async with harness.mandate.db.session() as session:
        return list((await session.exec(select(AuditRecord).order_by(col(AuditRecord.seq)))).all())


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("customer_lookup", {"customer_id": "cus_" + "1" * 60}),
        ("t" * 150, {}),
        ("order_get\u0000", {}),
        ("order_cancel", {"order_id": "ord_5001", "reason": "probe", "customer_id": "c" * 41}),
    ],
    ids=["long-customer-id", "long-tool-name", "nul-in-tool-name", "scope-probe-with-long-customer-id"],
)
async def test_every_refused_call_is_recorded_whatever_the_client_put_in_it(
    harness: Harness, tool: str, arguments: dict[str, Any]
) -> None:
    before = len(await _records(harness))
    async with harness.client("support") as client:
        if harness.mandate.catalog.get(tool) is None:
            with pytest.raises(MCPError) as raised:  # MCP "Tools": an unknown tool is a protocol error
                await client.call_tool(tool, arguments)
            assert raised.value.error.code == -32602
        else:
            assert (await client.call_tool(tool, arguments)).is_error
    after = await _records(harness)
    assert len(after) == before + 1
    record = after[-1]
    assert record.outcome in ("invalid_arguments", "refused")
    assert record.tool is not None and len(record.tool) <= 100 and "\x00" not in record.tool
    assert record.customer_id is None or len(record.customer_id) <= 40


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [("order_get", {"order_id": "ord_5001"}), ("refund_create", {"order_id": 5})],
    ids=["allowed-call", "invalid-arguments"],
)
async def test_a_call_that_cannot_be_recorded_is_refused_without_database_text(
    harness: Harness, tool: str, arguments: dict[str, Any]
) -> None:
    await harness.mandate.db.dispose()
    harness.mandate.db.engine.pool._creator = _refuse_to_connect  # type: ignore[attr-defined] # every connection fails
    async with harness.client("support") as client:
        try:
            result = await client.call_tool(tool, arguments)
            listed = await client.list_tools()
        except MCPError as exc:  # pragma: no cover - the defect this test guards against
            pytest.fail(f"the client got a protocol error carrying: {exc}")
    assert listed.tools == []  # nothing is shown unrecorded
    assert result.is_error and result.structured_content is not None
    # the database is unreachable: a retryable answer, still a refusal (server.callpath.outage)
    assert result.structured_content["code"] == "database_unavailable"
    assert result.structured_content["details"]["retryable"] is True
    text = str(result.content) + str(result.structured_content)
    for leak in ("INSERT", "SELECT", "sqlite", "psycopg", "Traceback", "connection"):
        assert leak not in text


def _refuse_to_connect() -> Any:
    raise OSError("the database cannot be reached")


async def test_an_unknown_tool_is_a_protocol_error_without_database_text_even_when_nothing_can_be_recorded(
    harness: Harness,
) -> None:
    await harness.mandate.db.dispose()
    harness.mandate.db.engine.pool._creator = _refuse_to_connect  # type: ignore[attr-defined] # every connection fails
    async with harness.client("support") as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("no_such_tool", {})
    assert (raised.value.error.code, raised.value.error.message) == (-32602, "Unknown tool: no_such_tool")
