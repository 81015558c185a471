"""Over real HTTP: /metrics scraped and parsed with the Prometheus parser (and who may scrape it), a principal-wide
rate limit answered with 429 and Retry-After, and a flood of invalid tokens aggregated into a few audit records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from server.config import GuardSettings, MetricsSettings
from tests.live import LiveServer, live_server
from tests.ops.support import BIG_REFUND, REFUND, steady_clock, write_policy

pytestmark = pytest.mark.anyio

AGENT = ("customers:read", "orders:read", "refunds:create")
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _call(name: str, arguments: dict[str, Any]) -> bytes:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    return json.dumps(message).encode()


async def test_metrics_are_scraped_over_http_and_parse_as_prometheus_text(tmp_path: Path, database_url: str) -> None:
    policy = write_policy(
        tmp_path / "p", '[[rate_limits]]\nid = "two"\ntools = ["order_get"]\ncalls = 2\nwindow = "1 hour"\n'
    )
    async with live_server(tmp_path / "data", database_url, policy_path=policy) as live:
        async with live.client(live.harness.token("refunds", scopes=AGENT)) as client:
            assert not (await client.call_tool("refund_create", REFUND)).is_error
            assert (await client.call_tool("refund_create", BIG_REFUND)).structured_content[
                "status"
            ] == "pending_approval"  # type: ignore[index]
            for _ in range(3):
                await client.call_tool("order_get", {"order_id": "ord_5001"})
        async with httpx2.AsyncClient(timeout=30) as http:
            await http.post(
                live.url, content=_call("order_get", {}), headers={**ACCEPT, "Authorization": "Bearer x.y.z"}
            )
            response = await http.get(f"{live.base_url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)
    calls = "mandate_tool_calls_total"
    assert _value(samples, calls, tool="refund_create", decision="allow", reason="ok") == 1.0
    assert _value(samples, calls, tool="refund_create", decision="approval", reason="approval_required") == 1.0
    assert _value(samples, calls, tool="order_get", decision="deny", reason="rate_limited") == 1.0
    latency = "mandate_tool_call_duration_seconds_count"
    assert _value(samples, latency, tool="order_get", decision="allow") == 2.0
    assert _value(samples, "mandate_pending_approvals") == 1.0
    assert _value(samples, "mandate_suspended_principals", kind="client") == 0.0
    assert _value(samples, "mandate_rate_limited_calls_total", limit="two", scope="tool", mode="enforce") == 1.0
    assert _value(samples, "mandate_auth_refusals_total", error="invalid_token") == 1.0
    length = _value(samples, "mandate_audit_log_length")
    assert length is not None and length >= 6
    assert _value(samples, "mandate_database_up") == 1.0
    assert _value(samples, "mandate_effects_in_doubt") == 0.0


async def test_metrics_need_a_credential_when_loopback_is_not_trusted(tmp_path: Path, database_url: str) -> None:
    metrics = MetricsSettings(allow_loopback=False, token="scrape-secret-123")  # type: ignore[arg-type]
    async with live_server(tmp_path / "data", database_url, metrics=metrics) as live:
        url = f"{live.base_url}/metrics"
        async with httpx2.AsyncClient(timeout=30) as http:
            bare = await http.get(url)
            wrong = await http.get(url, headers={"Authorization": "Bearer nope"})
            agent = await http.get(url, headers={"Authorization": f"Bearer {live.harness.token('support')}"})
            scoped = live.harness.token("support", scopes=("metrics:read",))
            monitor = await http.get(url, headers={"Authorization": f"Bearer {scoped}"})
            static = await http.get(url, headers={"Authorization": "Bearer scrape-secret-123"})
    assert bare.status_code == 401 and 'scope="metrics:read"' in bare.headers["www-authenticate"]
    assert wrong.status_code == 401
    assert agent.status_code == 403 and agent.json()["error"] == "insufficient_scope"
    assert monitor.status_code == 200 and "mandate_tool_calls" in monitor.text
    assert static.status_code == 200


async def test_a_principal_wide_limit_answers_429_with_retry_after(tmp_path: Path, database_url: str) -> None:
    policy = write_policy(tmp_path / "p", '[[rate_limits]]\nid = "burst"\ncalls = 2\nwindow = "1 minute"\n')
    async with live_server(tmp_path / "data", database_url, policy_path=policy) as live:
        live.mandate.guards.rates.clock = steady_clock()  # the three calls fall in one window
        token = live.harness.token("refunds", scopes=AGENT)
        headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(timeout=30) as http:
            answers = [
                await http.post(live.url, content=_call("order_get", {"order_id": "ord_5001"}), headers=headers)
                for _ in range(3)
            ]
            listing = await http.post(
                live.url, content=b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}', headers=headers
            )
    assert [a.status_code for a in answers] == [200, 200, 429]
    limited = answers[2]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"] == "rate_limited" and limited.json()["retry_after_seconds"] >= 1
    assert listing.status_code == 200  # listing is not a call: it does not count and is not refused


async def _auth_records(live: LiveServer) -> list[dict[str, Any]]:
    async with live.mandate.db.session() as session:
        connection = await session.connection()
        rows = await connection.execute(text("SELECT * FROM audit_records WHERE kind = 'auth' ORDER BY seq"))
        return [dict(row._mapping) for row in rows]


async def test_a_flood_of_invalid_tokens_is_aggregated_and_does_not_hold_up_writes(
    tmp_path: Path, database_url: str
) -> None:
    guards = GuardSettings(refusal_interval_seconds=3600)
    async with live_server(tmp_path / "data", database_url, guards=guards) as live:
        flood = 200
        bad = {**ACCEPT, "Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig"}
        statuses: list[int] = []

        async with httpx2.AsyncClient(timeout=60) as http:

            async def attacker() -> None:
                for _ in range(flood // 4):
                    statuses.append(
                        (await http.post(live.url, content=_call("order_get", {}), headers=bad)).status_code
                    )

            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(attacker)
                async with live.client(live.harness.token("refunds", scopes=AGENT)) as client:  # meanwhile, a write
                    assert not (await client.call_tool("refund_create", REFUND)).is_error
        assert statuses == [401] * flood
        records = await _auth_records(live)
        assert len(records) == 1  # the first refusal of this (source, error, reason); the rest are counted
        assert live.mandate.guards is not None
        await live.mandate.guards.refusals.flush(everything=True)
        records = await _auth_records(live)
    assert len(records) == 2
    summary = json.loads(records[1]["result_summary"])
    assert summary["aggregated"] is True and summary["count"] == flood - 1
    assert summary["first_audit_id"] == records[0]["id"]
    assert records[1]["reason_code"] == "invalid_token" and records[1]["client_address"] == "127.0.0.1"
