"""``mandate approvals list|show|approve|reject`` as an operator runs it: a separate process on the same database,
authenticated by the approver's token from the environment or a file, with exit status 0 done, 1 refused, 2 usage."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import update
from sqlmodel import col, select

from server.approvals import Approval
from server.audit.models import AuditRecord
from tests.conftest import Harness
from tests.live import bound_socket
from tools.store.models import Refund

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}
COMMENT = "customer called, parcel lost"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def said(self) -> list[str]:
        """The command's own messages on stderr (the rest is INFO logging of the server parts it opened)."""
        return [line for line in self.err.splitlines() if line.startswith("mandate: ")]

    @property
    def clean(self) -> bool:
        """Nothing said, warned or failed on stderr."""
        return not self.said and not any(" WARNING " in line or " ERROR " in line for line in self.err.splitlines())


async def _cli(harness: Harness, *args: str, token: str | None = None, env: dict[str, str] | None = None) -> Run:
    """``mandate approvals ARGS`` in a process of its own, configured for the test's database and dev issuer."""
    settings = harness.mandate.settings
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    environment.update(
        MANDATE_DATA_DIR=str(settings.data_dir),
        MANDATE_DATABASE_URL=settings.effective_database_url,
        MANDATE_DEV_ISSUER="1",
        MANDATE_PORT=str(settings.port),
    )
    if token is not None:
        environment["MANDATE_TOKEN"] = token
    environment.update(env or {})
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "server.cli", "approvals", *args], cwd=ROOT, env=environment, check=False
        )
    run = Run(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert "Traceback" not in run.err, run.err
    for secret in (environment.get("MANDATE_TOKEN", "").strip(), *_token_file_contents(args)):
        if secret:  # the token, or its signature alone, never appears in what the command prints
            assert secret not in run.out + run.err
            assert secret.rsplit(".", 1)[-1] not in run.out + run.err
    return run


def _token_file_contents(args: tuple[str, ...]) -> list[str]:
    if "--token-file" not in args:
        return []
    path = Path(args[args.index("--token-file") + 1])
    return [path.read_text().strip()] if path.exists() else []


async def _request(harness: Harness, arguments: dict[str, Any] | None = None) -> str:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", arguments or BIG_REFUND)
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "pending_approval"
    approval_id: str = result.structured_content["approval_id"]
    return approval_id


async def _approval(harness: Harness, approval_id: str) -> Approval:
    async with harness.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None
    return approval


async def _refunds(harness: Harness) -> list[Refund]:
    async with harness.mandate.db.session() as session:
        return list((await session.exec(select(Refund))).all())


def _supervisor(harness: Harness, subject: str = "human:alice") -> str:
    return harness.token("supervisor", subject=subject)


async def test_list_shows_the_pending_approval_as_a_table_and_as_json(harness: Harness) -> None:
    approval_id = await _request(harness)
    reason = (await _approval(harness, approval_id)).reason
    assert reason

    table = await _cli(harness, "list", token=_supervisor(harness))
    assert table.code == 0 and table.clean
    header, row, *rest = table.out.splitlines()
    assert header.split() == ["APPROVAL", "STATUS", "TOOL", "REQUESTER", "CUSTOMER", "EXPIRES", "REASON"]
    assert rest == []
    assert row.split()[:5] == [approval_id, "pending", "refund_create", "agent:refunds", "cus_1001"]
    assert row.endswith(f"  {reason}")
    assert BIG_REFUND["reason"] not in table.out  # the customer's free text is not in lists

    listed = await _cli(harness, "list", "--json", token=_supervisor(harness))
    assert listed.code == 0
    [item] = listed.json()["items"]
    assert (item["approval_id"], item["status"], item["tool"]) == (approval_id, "pending", "refund_create")
    assert (item["requester"]["subject"], item["customer_id"], item["reason"]) == ("agent:refunds", "cus_1001", reason)
    assert item["arguments"]["amount"] == "150.00" and item["arguments"]["order_id"] == "ord_5002"
    assert BIG_REFUND["reason"] not in listed.out


async def test_show_prints_the_exact_arguments_and_why_the_action_needs_approval(harness: Harness) -> None:
    approval_id = await _request(harness)
    approval = await _approval(harness, approval_id)

    shown = await _cli(harness, "show", approval_id, token=_supervisor(harness))
    assert shown.code == 0 and shown.clean
    lines = shown.out.splitlines()
    assert lines[0] == f"approval:   {approval_id}  (pending)"
    assert "tool:       refund_create" in lines
    assert f"arguments:  {json.dumps(BIG_REFUND, sort_keys=True)}" in lines
    assert f"digest:     {approval.arguments_digest}" in lines
    assert "requester:  agent:refunds via refunds-agent" in lines
    assert f"why:        {approval.reason} [rule refund-per-call-cap]" in lines
    assert not any(line.startswith(("decided:", "outcome:")) for line in lines)

    as_json = await _cli(harness, "show", approval_id, "--json", token=_supervisor(harness))
    body = as_json.json()
    assert as_json.code == 0
    assert body["full_arguments"] == BIG_REFUND
    assert (body["rule"], body["reason_code"]) == ("refund-per-call-cap", "cap_exceeded")
    assert body["reason"] == approval.reason


async def test_approve_runs_the_refund_once_and_a_second_approve_is_refused_as_already_decided(
    harness: Harness,
) -> None:
    approval_id = await _request(harness)

    approved = await _cli(harness, "approve", approval_id, "--comment", COMMENT, token=_supervisor(harness))
    assert approved.code == 0 and approved.clean
    lines = approved.out.splitlines()
    assert lines[0] == f"approval:   {approval_id}  (executed)"
    assert any(line.startswith("decided:    by human:alice at ") and line.endswith(f": {COMMENT}") for line in lines)
    assert "outcome:    succeeded" in lines
    [refund] = await _refunds(harness)
    assert refund.amount_minor == 15000 and refund.created_by.endswith("|refunds-agent|agent:refunds")
    assert any(line == f"result:     {json.dumps(_result_of(lines), sort_keys=True)}" for line in lines)
    assert _result_of(lines)["refund_id"] == refund.id

    approval = await _approval(harness, approval_id)
    assert (approval.status, approval.decided_by_subject, approval.decision_comment) == (
        "executed",
        "human:alice",
        COMMENT,
    )
    query = select(AuditRecord).where(AuditRecord.approval_id == approval_id).order_by(col(AuditRecord.seq))
    async with harness.mandate.db.session() as session:
        records = list((await session.exec(query)).all())
    decision = next(r for r in records if r.tool == "approval_decide")
    assert (decision.transport, decision.subject, decision.outcome) == ("cli", "human:alice", "succeeded")
    run = next(r for r in records if r.tool == "refund_create" and r.outcome == "succeeded")
    assert (run.subject, refund.audit_id) == ("agent:refunds", run.id)

    again = await _cli(harness, "approve", approval_id, token=_supervisor(harness, "human:bob"))
    assert again.code == 1 and again.out == ""
    [said] = again.said
    assert said.startswith("mandate: refused (approval_already_decided): ") and "by human:alice" in said
    as_json = await _cli(harness, "approve", approval_id, "--json", token=_supervisor(harness))
    assert as_json.code == 1 and as_json.json()["code"] == "approval_already_decided"
    assert len(await _refunds(harness)) == 1
    async with harness.mandate.db.session() as session:
        decisions = list((await session.exec(query.where(AuditRecord.tool == "approval_decide"))).all())
    assert [(r.transport, r.subject, r.outcome) for r in decisions] == [
        ("cli", "human:alice", "succeeded"),
        ("cli", "human:bob", decisions[1].outcome),
        ("cli", "human:alice", decisions[2].outcome),
    ]
    assert decisions[1].outcome != "succeeded" and decisions[1].reason_code == "approval_already_decided"


def _result_of(lines: list[str]) -> dict[str, Any]:
    [line] = [line for line in lines if line.startswith("result:     ")]
    result: dict[str, Any] = json.loads(line.removeprefix("result:     "))
    return result


async def test_reject_decides_only_the_approval_named_and_nothing_is_refunded(harness: Harness) -> None:
    kept = await _request(harness)
    rejected = await _request(harness, {**BIG_REFUND, "amount": "160.00"})
    assert kept != rejected

    done = await _cli(harness, "reject", rejected, "--comment", "not covered", token=_supervisor(harness))
    assert done.code == 0 and done.clean
    lines = done.out.splitlines()
    assert lines[0] == f"approval:   {rejected}  (rejected)"
    assert any(line.startswith("decided:    by human:alice") and line.endswith(": not covered") for line in lines)
    assert not any(line.startswith("outcome:") for line in lines)
    assert await _refunds(harness) == []

    pending = (await _cli(harness, "list", "--json", token=_supervisor(harness))).json()["items"]
    assert [item["approval_id"] for item in pending] == [kept]
    every = (await _cli(harness, "list", "--status", "any", "--json", token=_supervisor(harness))).json()["items"]
    assert {item["approval_id"]: item["status"] for item in every} == {kept: "pending", rejected: "rejected"}
    async with harness.client("refunds") as client:
        status = await client.call_tool("approval_status", {"approval_id": rejected})
    assert (status.structured_content["status"], status.structured_content["comment"]) == ("rejected", "not covered")


@pytest.mark.parametrize(
    ("token_of", "code"),
    [
        (lambda h: h.token("refunds"), "insufficient_scope"),
        (
            lambda h: h.token(
                "refunds",
                scopes=("refunds:create", "approvals:decide"),
                client_id="another-client",
                extra_claims={"mandate_approver": True},  # even marked as an approver, it is still the requester
            ),
            "self_approval",
        ),
    ],
    ids=["the requester lacks the approver scope", "the requester given the scope is still the requester"],
)
async def test_the_requesters_own_token_is_refused_with_exit_1_and_nothing_runs(
    harness: Harness, token_of: Any, code: str
) -> None:
    approval_id = await _request(harness)
    refused = await _cli(harness, "approve", approval_id, "--comment", "fine by me", token=token_of(harness))
    assert refused.code == 1 and refused.out == ""
    [said] = refused.said
    assert said.startswith(f"mandate: refused ({code}): ")
    assert (await _approval(harness, approval_id)).status == "pending"
    assert await _refunds(harness) == []


async def test_a_token_file_authenticates_like_the_environment_variable(harness: Harness, tmp_path: Path) -> None:
    approval_id = await _request(harness)
    token_file = tmp_path / "approver.token"
    token_file.write_text(_supervisor(harness) + "\n")
    listed = await _cli(harness, "list", "--json", "--token-file", str(token_file))
    assert listed.code == 0
    assert [item["approval_id"] for item in listed.json()["items"]] == [approval_id]


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (("list",), {}, "an approver's access token is needed: set MANDATE_TOKEN or use --token-file"),
        (("list",), {"MANDATE_TOKEN": "  "}, "an approver's access token is needed: set MANDATE_TOKEN"),
        (("list", "--token-file", "/nonexistent/approver.token"), {}, "cannot read the token file"),
    ],
    ids=["no variable", "a blank variable", "a missing token file"],
)
async def test_without_a_token_the_command_exits_2_with_one_clear_line(
    harness: Harness, args: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    run = await _cli(harness, *args, env=env)
    assert (run.code, run.out) == (2, "")
    assert run.err.startswith("mandate: ") and said in run.err
    assert len(run.err.strip().splitlines()) == 1  # one line: it stops before opening anything


@pytest.mark.parametrize(
    ("claims", "said"),
    [
        ({"aud": "https://elsewhere.example/mcp"}, "audience does not name this server"),
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 720}, "token expired"),
        (None, "token is malformed"),
    ],
    ids=["for another server", "expired", "not a JWT"],
)
async def test_an_invalid_token_is_refused_without_being_printed_and_nothing_is_decided(
    harness: Harness, claims: dict[str, Any] | None, said: str
) -> None:
    approval_id = await _request(harness)
    token = "not-a-jwt"
    if claims is not None:
        token = harness.signed(harness.claims("supervisor", sub="human:mallory", **claims))
    refused = await _cli(harness, "approve", approval_id, token=token)
    assert refused.code == 2 and refused.out == ""
    assert refused.said == [f"mandate: the access token was refused: {said}"]
    assert (await _approval(harness, approval_id)).status == "pending"
    assert await _refunds(harness) == []


async def test_an_approval_past_its_expiry_cannot_be_approved_from_the_command_line(harness: Harness) -> None:
    approval_id = await _request(harness)
    past = harness.mandate.enforcer.clock() - timedelta(seconds=1)

    async def expire(session: Any) -> None:
        await session.exec(update(Approval).where(col(Approval.id) == approval_id).values(expires_at=past))

    await harness.mandate.db.run_in_transaction(expire)
    refused = await _cli(harness, "approve", approval_id, "--json", token=_supervisor(harness))
    assert refused.code == 1
    assert refused.json()["code"] == "approval_expired"
    assert await _refunds(harness) == []


async def test_an_unreachable_database_is_one_clear_line_and_exit_2_not_a_traceback(harness: Harness) -> None:
    closed = bound_socket()  # bound but never listening, so connections are refused
    try:
        url = f"postgresql://postgres@127.0.0.1:{closed.getsockname()[1]}/mandate"
        run = await _cli(harness, "list", token=_supervisor(harness), env={"MANDATE_DATABASE_URL": url})
    finally:
        closed.close()
    assert run.code == 2
    [said] = run.said
    assert "127.0.0.1" in said and "cannot open the database" in said
