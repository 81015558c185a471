"""The MCP Inspector CLI (a real third-party MCP client) against Mandate, over streamable HTTP and stdio.

Exit codes of `mcp-inspector --cli`: 0 success; 1 other errors (e.g. HTTP 403); 3 authentication required;
5 tool isError or a tool that is not in its tools/list.
"""

from __future__ import annotations

import json

import pytest

from .peers import (
    Inspector,
    MandateInstance,
    contract_tools,
    inspector_call_result,
    inspector_tool_names,
    mandate_executable,
    mcp_call_tool,
    tools_for,
)

pytestmark = [pytest.mark.interop]

SUPPORT_SCOPES = ("customers:read", "orders:read")
REFUNDS_SCOPES = ("customers:read", "orders:read", "refunds:create")


def test_the_inspector_lists_a_different_tool_set_for_the_support_and_the_refunds_agent(
    mandate: MandateInstance, inspector: Inspector, support_token: str, refunds_token: str
) -> None:
    support = inspector_tool_names(inspector.http(mandate.mcp_url, support_token, "--method", "tools/list"))
    refunds = inspector_tool_names(inspector.http(mandate.mcp_url, refunds_token, "--method", "tools/list"))

    assert contract_tools(support) == tools_for(SUPPORT_SCOPES)
    assert contract_tools(refunds) == tools_for(REFUNDS_SCOPES)
    assert "refund_create" not in support
    assert "refund_create" in set(refunds) - set(support)


def test_the_inspector_calls_customer_lookup_and_orders_list_with_a_support_token(
    mandate: MandateInstance, inspector: Inspector, support_token: str
) -> None:
    customer = inspector.http(
        mandate.mcp_url,
        support_token,
        "--method",
        "tools/call",
        "--tool-name",
        "customer_lookup",
        "--tool-args-json",
        '{"customer_id": "cus_1001"}',
    )
    assert "cus_1001" in str(inspector_call_result(customer)), customer.describe()

    orders = inspector.http(
        mandate.mcp_url,
        support_token,
        "--method",
        "tools/call",
        "--tool-name",
        "orders_list",
        "--tool-args-json",
        '{"customer_id": "cus_1001"}',
    )
    assert "ord_" in str(inspector_call_result(orders)), orders.describe()


REFUND_ARGS = {"order_id": "ord_5001", "amount": "1.00", "currency": "EUR", "reason": "interop test"}


def test_the_inspector_cannot_call_refund_create_with_a_support_token_and_the_server_answers_403(
    mandate: MandateInstance, inspector: Inspector, support_token: str
) -> None:
    # The Inspector looks a tool up in its own tools/list before calling it. Mandate does not list refund_create
    # for this token, so the Inspector refuses without sending the call (exit 5, tool_not_found) ...
    refused = inspector.http(
        mandate.mcp_url,
        support_token,
        "--method",
        "tools/call",
        "--tool-name",
        "refund_create",
        "--tool-args-json",
        json.dumps(REFUND_ARGS),
    )
    assert refused.returncode == 5, refused.describe()
    assert "tool_not_found" in refused.stderr, refused.describe()

    # ... and a client that sends it anyway gets HTTP 403 with the scope it lacks.
    response = mcp_call_tool(mandate.mcp_url, support_token, "refund_create", REFUND_ARGS)
    assert response.status == 403, response
    challenge = response.header("WWW-Authenticate") or ""
    assert challenge.lower().startswith("bearer"), challenge
    assert 'error="insufficient_scope"' in challenge, challenge
    assert "refunds:create" in challenge, challenge


def test_the_inspector_refunds_an_order_with_a_refunds_token(
    mandate: MandateInstance, inspector: Inspector, refunds_token: str
) -> None:
    result = inspector.http(
        mandate.mcp_url,
        refunds_token,
        "--method",
        "tools/call",
        "--tool-name",
        "refund_create",
        "--tool-args-json",
        json.dumps(REFUND_ARGS),
    )
    refund = inspector_call_result(result)["structuredContent"]
    assert refund["order_id"] == "ord_5001", result.describe()
    assert refund["amount"] == "1.00", result.describe()
    assert refund["refund_id"].startswith("ref_"), result.describe()


def test_the_inspector_reports_a_refused_refund_as_a_tool_error(
    mandate: MandateInstance, inspector: Inspector, refunds_token: str
) -> None:
    result = inspector.http(
        mandate.mcp_url,
        refunds_token,
        "--method",
        "tools/call",
        "--tool-name",
        "refund_create",
        "--tool-args-json",
        json.dumps({**REFUND_ARGS, "currency": "USD"}),  # ord_5001 was paid in EUR
    )
    assert result.returncode == 5, result.describe()
    assert "tool_is_error" in result.stderr, result.describe()


def test_the_inspector_without_a_token_exits_with_authentication_required(
    mandate: MandateInstance, inspector: Inspector
) -> None:
    result = inspector.http(mandate.mcp_url, None, "--method", "tools/list")
    assert result.returncode == 3, result.describe()


@pytest.mark.parametrize("agent", ["support", "refunds"])
def test_the_inspector_over_stdio_lists_the_same_tools_as_over_http_for_the_same_token(
    mandate: MandateInstance, inspector: Inspector, agent: str
) -> None:
    token = mandate.mint_agent(agent)
    over_http = inspector_tool_names(inspector.http(mandate.mcp_url, token, "--method", "tools/list"))
    over_stdio = inspector_tool_names(
        inspector.stdio(
            {
                "MANDATE_TOKEN": token,
                "MANDATE_DATA_DIR": str(mandate.data_dir),
                "MANDATE_CONFIG": str(mandate.config_path),
            },
            [str(mandate_executable()), "serve", "--transport", "stdio"],
            "--method",
            "tools/list",
        )
    )
    assert sorted(over_stdio) == sorted(over_http)
    assert contract_tools(over_stdio) == tools_for(SUPPORT_SCOPES if agent == "support" else REFUNDS_SCOPES)
