"""See (traces): spans of tools/call go over OTLP/HTTP to a collector (here a local receiver decoding the protobuf
export), carry principal, tool, decision, reason and rule, and continue the client's trace, from the
``traceparent`` header or from ``_meta.traceparent``."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx2
import pytest

from server.config import TracingSettings
from tests.live import live_server
from tests.ops.otlp_receiver import ReceivedSpan, Receiver, otlp_receiver
from tests.ops.support import BIG_REFUND, REFUND

pytestmark = pytest.mark.anyio

AGENT = ("customers:read", "orders:read", "refunds:create")
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def _decision_span(receiver: Receiver, trace_id: str, flush: Callable[[], bool]) -> ReceivedSpan:
    """Mandate's span of the call (the one carrying the decision) in the client's trace, once exported."""
    with anyio.fail_after(30):
        while True:
            flush()
            found = [s for s in receiver.spans if s.trace_id == trace_id and "mandate.decision" in s.attributes]
            if found:
                assert len(found) == 1
                return found[0]
            await anyio.sleep(0.1)


def _descends_from(receiver: Receiver, span: ReceivedSpan, ancestor: str) -> bool:
    """Whether the span's parent chain leads to ``ancestor`` (the client's span id). The span is in the client's
    trace already (the trace id is the client's random one); between them there may be the SDK's own server span,
    which goes to whatever provider the process installed first (in the full suite: another test's), so a chain that
    leaves the spans exported here is accepted as long as it is in the client's trace."""
    by_id = {s.span_id: s for s in receiver.spans}
    parent: str | None = span.parent_span_id
    if not parent:
        return False
    while parent:
        if parent == ancestor:
            return True
        above = by_id.get(parent)
        if above is None:
            return True  # an intermediate span exported elsewhere; the trace id already is the client's
        parent = above.parent_span_id
    return False


async def test_spans_go_over_otlp_and_continue_the_clients_traceparent_header(
    tmp_path: Path, database_url: str
) -> None:
    with otlp_receiver() as receiver:
        tracing = TracingSettings(otlp_endpoint=receiver.url, service_name="mandate-test")
        async with live_server(tmp_path / "data", database_url, tracing=tracing) as live:
            token = live.harness.token("refunds", scopes=AGENT, client_id="trace-agent", subject="agent:trace")
            header, trace_id, parent = _traceparent()
            headers = {**ACCEPT, "Authorization": f"Bearer {token}", "traceparent": header}
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "refund_create"}}
            call["params"]["arguments"] = REFUND  # type: ignore[index]
            async with httpx2.AsyncClient(timeout=30) as http:  # no _meta: only the header names the trace
                response = await http.post(live.url, content=json.dumps(call).encode(), headers=headers)
            assert response.status_code == 200 and not response.json()["result"]["isError"]
            span = await _decision_span(receiver, trace_id, live.mandate.tracing.force_flush)
            assert _descends_from(receiver, span, parent)  # one trace: the agent's span, then Mandate's
    assert span.service == "mandate-test"
    assert span.attributes["mcp.tool.name"] == "refund_create"
    assert span.attributes["mandate.principal.client_id"] == "trace-agent"
    assert span.attributes["mandate.principal.subject"] == "agent:trace"
    assert span.attributes["mandate.decision"] == "allow"
    assert span.attributes["mandate.reason"] == "ok"
    assert receiver.content_types[0] == "application/x-protobuf"


async def test_a_traceparent_in_meta_is_continued_and_the_deciding_rule_is_on_the_span(
    tmp_path: Path, database_url: str
) -> None:
    with otlp_receiver() as receiver:
        tracing = TracingSettings(otlp_endpoint=receiver.url)
        async with live_server(tmp_path / "data", database_url, tracing=tracing) as live:
            token = live.harness.token("refunds", scopes=AGENT)
            meta, trace_id, parent = _traceparent()
            params = {"name": "refund_create", "arguments": BIG_REFUND, "_meta": {"traceparent": meta}}
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
            async with httpx2.AsyncClient(timeout=30) as http:  # no traceparent header: only _meta names the trace
                headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
                response = await http.post(live.url, content=json.dumps(call).encode(), headers=headers)
            assert response.json()["result"]["structuredContent"]["status"] == "pending_approval"
            span = await _decision_span(receiver, trace_id, live.mandate.tracing.force_flush)
            assert _descends_from(receiver, span, parent)
    assert span.attributes["mandate.decision"] == "approval"
    assert span.attributes["mandate.rule"] == "refund-per-call-cap"
