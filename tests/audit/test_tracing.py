"""Every tools/call has an OpenTelemetry span carrying Mandate's decision, and the audit record stores the trace id
of that span, so a record leads to the trace and a trace to the record.

A process can set the global TracerProvider only once, so the SDK provider (with an in-memory exporter) is installed
once per test session and its exporter is cleared for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.audit.support import rows
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def _tracer_provider() -> TracerProvider:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)  # once per process
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    return provider


@pytest.fixture
def spans(_tracer_provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _decision_spans(exporter: InMemorySpanExporter, tool: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.name == f"tools/call {tool}" and span.attributes and "mandate.decision" in span.attributes
    ]


@pytest.mark.parametrize(
    ("agent", "arguments", "decision", "outcome"),
    [
        (
            "refunds",
            {"order_id": "ord_5001", "amount": "5.00", "currency": "EUR", "reason": "damaged"},
            "allow",
            "succeeded",
        ),
        (
            "support",
            {"order_id": "ord_5001", "amount": "5.00", "currency": "EUR", "reason": "damaged"},
            "deny",
            "refused",
        ),
    ],
)
async def test_a_tool_call_span_carries_the_decision_and_its_trace_id_is_in_the_record(
    harness: Harness, spans: InMemorySpanExporter, agent: str, arguments: dict[str, str], decision: str, outcome: str
) -> None:
    async with harness.client(agent) as client:
        await client.call_tool("refund_create", arguments)
    (span,) = _decision_spans(spans, "refund_create")
    assert span.attributes is not None
    assert span.attributes["mandate.decision"] == decision
    assert span.context is not None
    (record,) = [row for row in await rows(harness.mandate.db) if row["tool"] == "refund_create"]
    assert record["outcome"] == outcome
    assert record["trace_id"] == format(span.context.trace_id, "032x")


async def test_the_client_trace_reaches_the_record(harness: Harness, spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test-agent")
    with tracer.start_as_current_span("agent turn") as parent:
        async with harness.client("support") as client:
            await client.call_tool("order_get", {"order_id": "ord_5001"})
    (record,) = [row for row in await rows(harness.mandate.db) if row["tool"] == "order_get"]
    assert record["trace_id"] == format(parent.get_span_context().trace_id, "032x")
