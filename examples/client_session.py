"""A Python MCP client session against a running Mandate over streamable HTTP.

    make run                                   # in one terminal
    TOKEN=$(uv run mandate token mint --agent refunds)
    uv run python examples/client_session.py http://127.0.0.1:8000/mcp "$TOKEN"

It lists the tools the token may use, reads a customer's orders, and tries a refund, printing what the server says
(a refusal says why and what would allow it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client


async def session(url: str, token: str) -> dict[str, Any]:
    """Run the session; return what it saw, for the test that keeps this example working."""
    seen: dict[str, Any] = {}
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        tools = [tool.name for tool in (await client.list_tools()).tools]
        print("tools:", ", ".join(tools))
        orders = await client.call_tool("orders_list", {"customer_id": "cus_1001"})
        print("orders of cus_1001:", json.dumps(orders.structured_content, indent=2))
        seen["tools"], seen["orders"] = tools, orders.structured_content
        if "refund_create" in tools:
            refund = await client.call_tool(
                "refund_create",
                {"order_id": "ord_5001", "amount": "9.99", "currency": "EUR", "reason": "late delivery"},
            )
            print("refund:", "REFUSED" if refund.is_error else "done", json.dumps(refund.structured_content, indent=2))
            seen["refund"] = refund.structured_content
    return seen


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} MCP_URL TOKEN")
    anyio.run(session, sys.argv[1], sys.argv[2])
