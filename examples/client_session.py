"""A Python MCP client session against a running Mandate over streamable HTTP.

    make run                                   # in one terminal
    TOKEN=$(uv run mandate token mint --agent refunds)
    uv run python examples/client_session.py http://127.0.0.1:8000/mcp "$TOKEN"

It lists the tools the token may use, reads a customer's orders, and tries a refund, printing what the server says
(a refusal says why and what would allow it). A token the server refuses (expired, for another server, malformed)
ends the session with one line saying so: ``HTTP 401: token expired ...``, and how to get a new one.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import anyio
import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client


class Refused(Exception):
    """The server answered HTTP 401 or 403: the token is not (or no longer) good enough."""


class RefusalWatch:
    """Remembers the last 401/403 answer: the SDK reports it only as a generic error response."""

    def __init__(self) -> None:
        self.refusal: str | None = None

    async def __call__(self, response: httpx2.Response) -> None:
        if response.status_code in (401, 403):
            challenge = response.headers.get("www-authenticate", "")
            described = re.search(r'error_description="([^"]*)"', challenge)
            reason = described.group(1) if described else response.reason_phrase
            self.refusal = f"HTTP {response.status_code}: {reason}"


async def session(url: str, token: str) -> dict[str, Any]:
    """Run the session; return what it saw, for the test that keeps this example working. Raises ``Refused``
    when the server refuses the token."""
    watch = RefusalWatch()
    try:
        return await _session(url, token, watch)
    except Exception as exc:
        if watch.refusal is not None:
            raise Refused(watch.refusal) from exc
        raise


async def _session(url: str, token: str, watch: RefusalWatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=10, event_hooks={"response": [watch]}
        ) as http,
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
    try:
        anyio.run(session, sys.argv[1], sys.argv[2])
    except Refused as refused:
        sys.exit(f"{refused} (development tokens last 60 minutes: uv run mandate token mint --agent refunds)")
