"""The bearer guard reads every header it needs in one pass and keeps the SDK's user per verified principal: the
request still sees the first ``Authorization``, ``Origin`` and ``User-Agent`` and the last ``traceparent``, and each
principal its own user."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.server.auth.middleware.auth_context import auth_context_var
from opentelemetry import trace

from server.http.bearer import BearerGuard
from server.request_context import current_origin, current_principal
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
FIRST_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
LAST_TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Seen:
    """The inner app: what one request looked like once through the guard."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        origin = current_origin.get()
        assert origin is not None
        self.requests.append(
            {
                "user": scope["user"],
                "auth_context": auth_context_var.get(),
                "principal": current_principal.get(),
                "origin": origin.origin,
                "user_agent": origin.user_agent,
                "trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x"),
            }
        )


async def _through(guard: BearerGuard, headers: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers, "client": ("127.0.0.1", 1)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Any) -> None:
        raise AssertionError(f"the guard answered itself: {message}")

    await guard(scope, receive, send)


def _guard(harness: Harness, app: Seen) -> BearerGuard:
    mandate = harness.mandate
    return BearerGuard(
        app,
        verifier=mandate.verifier,
        catalog=mandate.catalog,
        resource_metadata_url="http://127.0.0.1/.well-known/oauth-protected-resource/mcp",
        record_refusal=mandate.enforcer.record_refusal,
        guards=mandate.guards,
    )


async def test_the_first_origin_user_agent_and_token_count_and_the_last_traceparent(harness: Harness) -> None:
    seen = Seen()
    guard = _guard(harness, seen)
    headers = [
        (b"traceparent", FIRST_TRACE.encode()),
        (b"origin", b"https://first.example"),
        (b"authorization", f"Bearer {harness.token('support')}".encode()),
        (b"user-agent", b"first-agent/1"),
        (b"origin", b"https://second.example"),
        (b"authorization", f"Bearer {harness.token('refunds')}".encode()),
        (b"user-agent", b"second-agent/2"),
        (b"traceparent", LAST_TRACE.encode()),
    ]
    await _through(guard, headers)
    (request,) = seen.requests
    assert request["origin"] == "https://first.example"
    assert request["user_agent"] == "first-agent/1"
    assert request["principal"].subject == "agent:support"
    assert request["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_without_a_traceparent_the_request_continues_no_trace(harness: Harness) -> None:
    seen = Seen()
    await _through(_guard(harness, seen), [(b"authorization", f"Bearer {harness.token('support')}".encode())])
    (request,) = seen.requests
    assert request["trace_id"] == "0" * 32
    assert request["origin"] is None and request["user_agent"] is None


async def test_each_principal_gets_its_own_sdk_user_and_one_principal_keeps_its_own(harness: Harness) -> None:
    seen = Seen()
    guard = _guard(harness, seen)
    support, refunds = harness.token("support"), harness.token("refunds")
    for token in (support, refunds, support):
        await _through(guard, [(b"authorization", f"Bearer {token}".encode())])
    first, other, again = seen.requests
    assert first["user"] is again["user"]  # the verifier's cached principal: its user is kept
    assert first["auth_context"] is first["user"] and other["auth_context"] is other["user"]
    assert first["user"].access_token.client_id == "support-agent"
    assert other["user"].access_token.client_id == "refunds-agent"
    assert first["user"].access_token.subject == "agent:support"
    assert other["user"].access_token.subject == "agent:refunds"
    assert sorted(other["user"].scopes) == sorted(other["principal"].scopes)
    assert first["user"].access_token.token != support  # a digest, never the credential
