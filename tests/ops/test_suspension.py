"""Stop: a suspended caller sees no tools, its calls are refused with ``suspended``, its pending approvals cannot
be approved; the security team suspends and resumes through an MCP tool or the CLI, with a reason, both audited."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import select

from server.cli import main
from server.config import Settings
from tests.conftest import Harness
from tests.ops.support import BIG_REFUND, REFUND, audit_rows, body, code, guarded

pytestmark = pytest.mark.anyio

AGENT = ("customers:read", "orders:read", "refunds:create")
SECURITY = ("principals:suspend", "audit:read")
APPROVER = ("approvals:decide", "audit:read", "customers:read", "orders:read")


async def cli(*args: str) -> int:
    """The ``mandate`` command in a worker thread (it runs its own event loop)."""
    import anyio

    return await anyio.to_thread.run_sync(main, list(args))


async def _suspend(harness: Harness, **arguments: Any) -> dict[str, Any]:
    async with harness.client("security", scopes=SECURITY, subject="human:sec", client_id="sec-console") as sec:
        result = await sec.call_tool("principal_suspend", arguments)
    assert not result.is_error, result
    return body(result)


async def _resume(harness: Harness, **arguments: Any) -> dict[str, Any]:
    async with harness.client("security", scopes=SECURITY, subject="human:sec", client_id="sec-console") as sec:
        result = await sec.call_tool("principal_resume", arguments)
    assert not result.is_error, result
    return body(result)


async def test_a_suspended_client_sees_no_tools_and_its_calls_are_refused_as_suspended(harness: Harness) -> None:
    token = harness.token("refunds", scopes=AGENT, client_id="rogue-agent")
    async with harness.client_with_token(token) as agent:
        assert (await agent.list_tools()).tools
        done = await _suspend(harness, kind="client", value="rogue-agent", reason="refund loop in ticket 4711")
        assert done["created"] is True
        assert (await agent.list_tools()).tools == []
        refused = await agent.call_tool("refund_create", REFUND)
        assert code(refused) == "suspended"
        assert body(refused)["details"]["suspension_id"] == done["suspension"]["suspension_id"]
        await _resume(harness, kind="client", value="rogue-agent", reason="fixed the prompt")
        assert not (await agent.call_tool("refund_create", REFUND)).is_error
    async with harness.client("refunds", scopes=AGENT, client_id="other-agent") as other:  # never affected
        assert (await other.list_tools()).tools


@pytest.mark.parametrize(
    ("kind", "value", "token_options"),
    [
        ("subject", "agent:x", {"subject": "agent:x"}),
        ("tenant", "acme", {"tenant": "acme"}),
        ("token", None, {}),
    ],
)
async def test_a_subject_a_tenant_or_a_single_token_can_be_suspended(
    harness: Harness, kind: str, value: str | None, token_options: dict[str, Any]
) -> None:
    token = harness.token("refunds", scopes=AGENT, **token_options)
    principal = await harness.mandate.verifier.verify(token)
    value = value or principal.token_id
    assert value is not None
    await _suspend(harness, kind=kind, value=value, reason="incident 12")
    async with harness.client_with_token(token) as agent:
        assert code(await agent.call_tool("order_get", {"order_id": "ord_5001"})) == "suspended"
    if kind == "token":  # a fresh token of the same agent is another token
        async with harness.client("refunds", scopes=AGENT, **token_options) as fresh:
            assert not (await fresh.call_tool("order_get", {"order_id": "ord_5001"})).is_error


async def test_suspending_and_resuming_need_a_reason_and_the_security_scope(harness: Harness) -> None:
    async with harness.client("security", scopes=SECURITY) as sec:
        no_reason = await sec.call_tool("principal_suspend", {"kind": "client", "value": "x", "reason": ""})
        assert no_reason.is_error and code(no_reason) == "invalid_arguments"
    async with harness.client("refunds", scopes=AGENT) as agent:
        names = {tool.name for tool in (await agent.list_tools()).tools}
        assert "principal_suspend" not in names
    async with harness.mandate.db.session() as session:
        from server.guards.suspension import active

        assert await active(session) == []


async def test_suspension_and_resumption_are_audited_with_who_and_why(harness: Harness) -> None:
    await _suspend(harness, kind="client", value="rogue-agent", reason="refund loop")
    await _resume(harness, kind="client", value="rogue-agent", reason="prompt fixed")
    rows = await audit_rows(harness, "tool IN ('principal_suspend', 'principal_resume')")
    assert [(r["tool"], r["outcome"], r["subject"]) for r in rows] == [
        ("principal_suspend", "succeeded", "human:sec"),
        ("principal_resume", "succeeded", "human:sec"),
    ]
    # Free text is redacted in audit records (it may name people); the suspension row keeps the reasons and
    # names the records of both changes.
    assert json.loads(rows[0]["arguments"])["value"] == "rogue-agent"
    async with harness.mandate.db.session() as session:
        from server.guards.store import Suspension

        row = (await session.exec(select(Suspension))).one()
    assert (row.reason, row.audit_id, row.suspended_by) == ("refund loop", rows[0]["id"], "human:sec via sec-console")
    assert (row.resume_reason, row.resume_audit_id) == ("prompt fixed", rows[1]["id"])


async def test_a_suspended_requesters_pending_approval_cannot_be_approved(harness: Harness) -> None:
    async with harness.client("refunds", scopes=AGENT, client_id="rogue-agent") as agent:
        pending = body(await agent.call_tool("refund_create", BIG_REFUND))
    assert pending["status"] == "pending_approval"
    await _suspend(harness, kind="client", value="rogue-agent", reason="incident")
    decide = {"approval_id": pending["approval_id"], "decision": "approve"}
    async with harness.client("supervisor", scopes=APPROVER) as approver:
        refused = await approver.call_tool("approval_decide", decide)
        assert code(refused) == "requester_suspended"
        still = body(await approver.call_tool("approval_get", {"approval_id": pending["approval_id"]}))
        assert still["status"] == "pending"
        rejected = await approver.call_tool("approval_decide", {**decide, "decision": "reject"})  # rejecting is fine
        assert not rejected.is_error


async def test_when_the_suspension_check_fails_the_call_is_refused(harness: Harness) -> None:
    guards = harness.mandate.guards
    assert guards is not None

    async def broken(_principal: Any) -> None:
        raise RuntimeError("database down")

    guards.suspended = broken  # type: ignore[method-assign]
    async with harness.client("refunds", scopes=AGENT) as agent:
        assert (await agent.list_tools()).tools == []
        assert code(await agent.call_tool("refund_create", REFUND)) == "suspension_check_failed"
    rows = await audit_rows(harness, "tool = 'refund_create'")
    assert rows[-1]["decision"] == "deny" and rows[-1]["reason_code"] == "suspension_check_failed"


async def test_the_cli_suspends_lists_and_resumes_with_an_audit_record(
    settings: Settings, harness: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANDATE_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("MANDATE_DATA_DIR", str(settings.data_dir))
    with pytest.raises(SystemExit) as usage:  # no --reason: a usage error, nothing changes
        await cli("suspend", "client", "rogue-agent", "--by", "alice")
    assert usage.value.code == 2
    assert "--reason" in capsys.readouterr().err
    code_ = await cli("suspend", "client", "rogue-agent", "--reason", "refund loop", "--by", "alice", "--json")
    assert code_ == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["kind"] == "client" and shown[0]["suspended_by"] == "alice"
    assert await cli("suspend", "client", "rogue-agent", "--reason", "again", "--by", "alice") == 1  # already
    async with harness.client("refunds", scopes=AGENT, client_id="rogue-agent") as agent:
        assert code(await agent.call_tool("refund_create", REFUND)) == "suspended"
    assert await cli("suspensions") == 0
    assert "rogue-agent" in capsys.readouterr().out
    assert await cli("resume", "client", "rogue-agent", "--reason", "fixed", "--by", "bob") == 0
    assert await cli("resume", "client", "rogue-agent", "--reason", "fixed", "--by", "bob") == 1  # nothing left
    rows = await audit_rows(harness, "transport = 'cli'")
    assert [(r["tool"], r["client_name"], r["outcome"]) for r in rows] == [
        ("principal_suspend", "alice", "succeeded"),
        ("principal_suspend", "alice", "unchanged"),
        ("principal_resume", "bob", "succeeded"),
        ("principal_resume", "bob", "unchanged"),
    ]


async def test_a_tools_list_changed_notification_reaches_a_live_session(settings: Settings) -> None:
    import anyio
    import mcp_types as types

    received = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(getattr(message, "root", message), types.ToolListChangedNotification):
            received.set()

    async with guarded(settings) as harness:
        from mcp.client import Client

        from server.app import build_server
        from server.stdio import EnvironmentCredentials

        token = harness.token("refunds", scopes=AGENT, client_id="rogue-agent")
        server = build_server(harness.mandate, EnvironmentCredentials(token, harness.mandate.verifier))
        async with Client(server, mode="legacy", message_handler=on_message) as agent, harness.mandate.upkeep():
            assert (await agent.list_tools()).tools
            await _suspend(harness, kind="client", value="rogue-agent", reason="incident")
            with anyio.fail_after(15):
                await received.wait()
            assert (await agent.list_tools()).tools == []
