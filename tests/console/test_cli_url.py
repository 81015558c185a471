"""``mandate approvals ... --url URL``: an approver decides through the server's API with a token, with no database
credentials at all; the server applies the same checks and writes the audit record (transport ``api``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from sqlmodel import col, select

from server.approvals import Approval
from server.audit.models import AuditRecord
from tests.console.helpers import request_refund
from tests.live import LiveServer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def _cli(live: LiveServer, *args: str, token: str) -> tuple[int, str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    # no database this process could open: everything must go through the server
    environment.update(MANDATE_TOKEN=token, MANDATE_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "server.cli", "approvals", *args, "--url", live.base_url],
            cwd=ROOT,
            env=environment,
            check=False,
        )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert "Traceback" not in err and token not in out + err
    return done.returncode, out, err


async def test_an_approver_lists_and_approves_through_the_server_without_database_credentials(
    live: LiveServer,
) -> None:
    approval_id = await request_refund(live.harness)
    token = live.harness.token("supervisor", subject="human:alice")
    code, out, _ = await _cli(live, "list", "--json", token=token)
    assert code == 0 and [i["approval_id"] for i in json.loads(out)["items"]] == [approval_id]
    code, out, _ = await _cli(live, "approve", approval_id, "--comment", "checked", token=token)
    assert code == 0 and f"approval:   {approval_id}  (executed)" in out
    async with live.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
        records = (await session.exec(select(AuditRecord).order_by(col(AuditRecord.seq)))).all()
    assert approval is not None and approval.status == "executed" and approval.decided_by_subject == "human:alice"
    decide = [r for r in records if r.tool == "approval_decide"]
    assert [(r.transport, r.subject, r.outcome) for r in decide] == [("api", "human:alice", "succeeded")]


async def test_the_requester_is_refused_through_the_api_as_everywhere_else(live: LiveServer) -> None:
    approval_id = await request_refund(live.harness)
    token = live.harness.token("supervisor", subject="agent:refunds")
    code, _, err = await _cli(live, "approve", approval_id, token=token)
    assert code == 1 and "mandate: refused (self_approval)" in err
    async with httpx2.AsyncClient() as http:
        answer = await http.post(
            f"{live.base_url}/api/approvals/{approval_id}/decision",
            json={"decision": "approve"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 403 and answer.json()["code"] == "self_approval"


async def test_an_agent_token_or_no_token_gets_no_approvals_from_the_api(live: LiveServer) -> None:
    await request_refund(live.harness)
    async with httpx2.AsyncClient() as http:
        bare = await http.get(f"{live.base_url}/api/approvals")
        assert bare.status_code == 401 and "resource_metadata=" in bare.headers["www-authenticate"]
        agent = live.harness.token("refunds")
        scoped = await http.get(f"{live.base_url}/api/approvals", headers={"Authorization": f"Bearer {agent}"})
        assert scoped.status_code == 403 and scoped.json()["code"] == "insufficient_scope"
    code, _, err = await _cli(live, "list", token="not-a-jwt")
    assert code == 2 and "the access token was refused" in err
