"""What the call path works out once and keeps (a policy's rate limits per tool, a principal's span attributes), and
what it leaves out when it changes nothing (a no-op tracer's span made current), answer as the full work would."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, NoOpTracer, SpanContext, TraceFlags

from scopes.policy.guards import Guards, RateLimit
from server.callpath.record import CallInfo
from server.guards.rate_limits import RateLimiter
from tests.audit.support import rows
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

ORDER = {"order_id": "ord_5001"}


def _limit(limit_id: str, tools: frozenset[str] | None) -> RateLimit:
    return RateLimit(limit_id, "principal", 5, timedelta(minutes=1), tools, shadow=False)


def test_each_policy_gets_its_own_rate_limits_per_tool_however_often_they_are_asked_for() -> None:
    limiter = RateLimiter(db=None, metrics=None, clock=None)  # type: ignore[arg-type]  # lookups only
    wide, refunds = _limit("wide", None), _limit("refunds", frozenset({"refund_create"}))
    first = Guards(rate_limits=(wide, refunds))
    reloaded = Guards(rate_limits=(_limit("other", frozenset({"order_get"})),))
    for _ in range(2):  # the second round answers from the tables
        assert limiter.limits(first, None) == (wide,)
        assert limiter.limits(first, "refund_create") == (wide, refunds)
        assert limiter.limits(first, "refund_create", principal_wide=False) == (refunds,)
        assert limiter.limits(first, "order_get") == (wide,)
        assert limiter.limits(first, "order_get", principal_wide=False) == ()
        assert limiter.limits(reloaded, None) == ()
        assert limiter.limits(reloaded, "refund_create") == ()
        assert limiter.limits(reloaded, "order_get") == reloaded.rate_limits
    assert limiter.limits(Guards(), "refund_create") == ()


async def _call(harness: Harness, agent: str, tool: str, arguments: dict[str, Any], **token: Any) -> None:
    principal = await harness.mandate.verifier.verify(harness.token(agent, **token))
    result = await harness.mandate.enforcer.call_tool(principal, tool, arguments, CallInfo(transport="test"))
    assert not result.is_error, result


async def test_every_call_span_names_its_own_principal_and_tool(harness: Harness) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness.mandate.enforcer.tracer = provider.get_tracer("test")
    await _call(harness, "support", "order_get", ORDER)
    await _call(harness, "support", "order_get", ORDER)
    await _call(harness, "refunds", "orders_list", {"customer_id": "cus_1001"}, tenant="acme")
    await _call(harness, "support", "order_get", ORDER, subject="agent:someone-else")
    named = [
        (span.name, {key: value for key, value in (span.attributes or {}).items() if key != "mandate.reason"})
        for span in exporter.get_finished_spans()
    ]
    support = {
        "mcp.tool.name": "order_get",
        "mandate.principal.client_id": "support-agent",
        "mandate.principal.subject": "agent:support",
        "mandate.decision": "allow",
    }
    assert named == [
        ("tools/call order_get", support),
        ("tools/call order_get", support),
        (
            "tools/call orders_list",
            {
                "mcp.tool.name": "orders_list",
                "mandate.principal.client_id": "refunds-agent",
                "mandate.principal.subject": "agent:refunds",
                "mandate.principal.tenant": "acme",
                "mandate.decision": "allow",
            },
        ),
        ("tools/call order_get", {**support, "mandate.principal.subject": "agent:someone-else"}),
    ]


async def test_with_a_no_op_tracer_the_record_keeps_the_client_trace_id(harness: Harness) -> None:
    harness.mandate.enforcer.tracer = NoOpTracer()
    parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))
    with trace.use_span(NonRecordingSpan(parent)):
        await _call(harness, "support", "order_get", ORDER)
    await _call(harness, "support", "order_get", ORDER)
    traced, untraced = [row["trace_id"] for row in await rows(harness.mandate.db) if row["tool"] == "order_get"]
    assert traced == "0af7651916cd43dd8448eb211c80319c"
    assert untraced is None


async def test_a_span_a_sampler_drops_still_gives_the_record_its_own_trace_id(harness: Harness) -> None:
    harness.mandate.enforcer.tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    await _call(harness, "support", "order_get", ORDER)
    await _call(harness, "support", "order_get", ORDER)
    first, second = [row["trace_id"] for row in await rows(harness.mandate.db) if row["tool"] == "order_get"]
    assert first is not None and second is not None and first != second  # each dropped span starts a trace
