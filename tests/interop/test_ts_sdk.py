"""The official TypeScript MCP SDK client (`ts_client.mjs`) against Mandate over streamable HTTP."""

from __future__ import annotations

import json

import pytest

from .peers import MandateInstance, contract_tools, tools_for, ts_client

pytestmark = [pytest.mark.interop]


def test_the_typescript_sdk_lists_the_support_tools_and_calls_customer_lookup(
    mandate: MandateInstance, support_token: str
) -> None:
    listed = ts_client(mandate.mcp_url, support_token, "list")
    assert listed.returncode == 0, listed.describe()
    assert contract_tools(listed.json()) == tools_for(["customers:read", "orders:read"])

    called = ts_client(mandate.mcp_url, support_token, "call", "customer_lookup", '{"customer_id": "cus_1001"}')
    assert called.returncode == 0, called.describe()
    result = called.json()
    assert result.get("isError") is not True, called.describe()
    assert "cus_1001" in json.dumps(result), called.describe()


def test_the_typescript_sdk_sees_http_403_calling_a_tool_outside_its_scopes(
    mandate: MandateInstance, support_token: str
) -> None:
    refused = ts_client(
        mandate.mcp_url,
        support_token,
        "call",
        "refund_create",
        '{"order_id": "ord_5001", "amount_cents": 100, "reason": "interop test"}',
    )
    assert refused.returncode == 4, refused.describe()
    assert json.loads(refused.stderr.strip().splitlines()[-1])["http_status"] == 403, refused.describe()


def test_the_typescript_sdk_sees_http_401_without_a_token(mandate: MandateInstance) -> None:
    refused = ts_client(mandate.mcp_url, "", "list")
    assert refused.returncode == 3, refused.describe()
    assert json.loads(refused.stderr.strip().splitlines()[-1])["http_status"] == 401, refused.describe()
