"""One audit record per invocation whatever its outcome, each complete: when, which instance, who (sub, client_id,
scopes, token id, tenant, actor), from where (transport, MCP client), what (tool, redacted arguments and their
digest), the decision and reason, the outcome and a summary, latency, idempotency key, request id and trace id."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.audit.chain import leaf_hash_of
from server.audit.redaction import REDACTED, arguments_digest
from tests.audit.support import rows
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

REFUND = {"order_id": "ord_5001", "amount": "5.00", "currency": "EUR", "reason": "damaged in transit"}


async def _only(harness: Harness, **match: Any) -> dict[str, Any]:
    found = [row for row in await rows(harness.mandate.db) if all(row[k] == v for k, v in match.items())]
    assert len(found) == 1, found
    return dict(found[0])


async def test_an_allowed_call_is_recorded_with_every_field(harness: Harness) -> None:
    before = datetime.now(UTC)
    token = harness.token("refunds", tenant="acme", extra_claims={"act": {"sub": "user:alice"}})
    async with harness.client_with_token(token) as client:
        result = await client.call_tool("refund_create", {**REFUND, "idempotency_key": "refund-key-0001"})
    assert not result.is_error, result.content
    record = await _only(harness, tool="refund_create")
    assert before - timedelta(seconds=1) <= record["at"] <= datetime.now(UTC)
    assert record["at"].utcoffset() == timedelta(0)
    assert record["instance"] == "test-instance"
    assert (record["kind"], record["decision"], record["outcome"]) == ("call", "allow", "succeeded")
    assert (record["subject"], record["client_id"], record["tenant"], record["actor"]) == (
        "agent:refunds",
        "refunds-agent",
        "acme",
        "user:alice",
    )
    assert record["scopes"] == "customers:read orders:read refunds:create"
    assert record["issuer"] == harness.mandate.settings.dev_issuer_url
    assert record["token_id"]
    assert record["transport"] == "stdio"
    assert record["client_name"] and record["client_version"]
    assert record["customer_id"] == "cus_1001"
    assert json.loads(record["arguments"]) == {**REFUND, "reason": REDACTED}
    assert record["arguments_digest"] == arguments_digest(REFUND)
    assert record["idempotency_key"] == "refund-key-0001"
    summary = json.loads(record["result_summary"])
    assert summary["refund_id"].startswith("ref_") and summary["amount"] == "5.00"
    assert record["latency_us"] > 0
    assert record["request_id"] is not None
    assert record["leaf_hash"] == leaf_hash_of(record).hex()


@pytest.mark.parametrize(
    ("agent", "tool", "arguments", "expected"),
    [
        ("support", "refund_create", REFUND, ("deny", "refused", "insufficient_scope")),
        ("refunds", "refund_create", {**REFUND, "amount": 5}, ("deny", "invalid_arguments", "invalid_arguments")),
        ("support", "order_get", {"order_id": "ord_9999"}, ("allow", "failed", "not_found")),
    ],
    ids=["insufficient-scope", "invalid-arguments", "tool-error"],
)
async def test_every_refused_or_failed_call_is_recorded_with_its_reason(
    harness: Harness, agent: str, tool: str, arguments: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    async with harness.client(agent) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    record = await _only(harness, tool=tool)
    assert (record["decision"], record["outcome"], record["reason_code"]) == expected
    assert record["reason"]
    assert record["client_id"] == f"{agent}-agent"
    assert record["leaf_hash"] == leaf_hash_of(record).hex()


async def test_a_call_with_an_invalid_token_is_recorded_without_a_principal(harness: Harness) -> None:
    expired = harness.signed(harness.claims(exp=int(datetime.now(UTC).timestamp()) - 60))
    async with harness.client_with_token(expired) as client:
        result = await client.call_tool("orders_list", {"customer_id": "cus_1001"})
    assert result.is_error
    record = await _only(harness, kind="auth")
    assert (record["decision"], record["outcome"], record["reason_code"]) == ("deny", "refused", "invalid_token")
    assert (record["subject"], record["client_id"], record["token_id"]) == (None, None, None)
    assert record["tool"] == "orders_list"


async def test_a_listing_is_recorded_as_a_record_of_kind_list(harness: Harness) -> None:
    async with harness.client("support") as client:
        await client.list_tools()
    record = await _only(harness, kind="list")
    assert (record["decision"], record["outcome"], record["tool"]) == ("allow", "listed", None)
    assert json.loads(record["result_summary"]) == {"tools": 3}


async def test_a_call_waiting_for_approval_is_recorded_with_its_approval_id(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", {**REFUND, "amount": "150.00"})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["status"] == "pending_approval"
    record = await _only(harness, tool="refund_create")
    assert (record["decision"], record["outcome"]) == ("approval", "pending_approval")
    assert record["approval_id"] == result.structured_content["approval_id"]
    assert record["rule_id"] and record["policy_version"]
