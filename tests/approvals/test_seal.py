"""An approval cannot be changed in the database without detection: the approved action is sealed with a keyed MAC
(HMAC-SHA256, a key outside the database) and checked before it runs; a rewritten row is refused and recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import col, func, select

from server.approvals import Approval
from server.approvals.seal import KEY_ENVIRONMENT, ApprovalSeal, SealKeyError
from server.audit.models import AuditRecord
from server.audit.redaction import arguments_digest, canonical_json
from tests.conftest import Harness
from tools.store.models import Refund

pytestmark = pytest.mark.anyio

BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}


async def _request(harness: Harness) -> str:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", BIG_REFUND)
    assert result.structured_content is not None and result.structured_content["status"] == "pending_approval"
    approval_id: str = result.structured_content["approval_id"]
    return approval_id


async def _approve(harness: Harness, approval_id: str) -> Any:
    async with harness.client("supervisor") as client:
        return await client.call_tool(
            "approval_decide", {"approval_id": approval_id, "decision": "approve", "comment": "looks fine"}
        )


async def _rewrite(harness: Harness, approval_id: str, **columns: str) -> None:
    """Raw SQL on the real database, as someone with write access to it (not through the application)."""
    assignments = ", ".join(f"{name} = :{name}" for name in columns)
    async with harness.mandate.db.engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE approvals SET {assignments} WHERE id = :id"),  # noqa: S608 - names from this file only
            {**columns, "id": approval_id},
        )


async def _refunds(harness: Harness) -> int:
    async with harness.mandate.db.session() as session:
        return int((await session.exec(select(func.count()).select_from(Refund))).one())


async def test_rewriting_the_arguments_and_their_digest_in_the_database_is_refused_and_recorded(
    harness: Harness,
) -> None:
    approval_id = await _request(harness)
    forged = {**BIG_REFUND, "amount": "158.00"}
    await _rewrite(harness, approval_id, arguments=canonical_json(forged), arguments_digest=arguments_digest(forged))
    decided = await _approve(harness, approval_id)
    body = decided.structured_content
    assert body["status"] == "failed"
    assert body["outcome"]["code"] == "approval_tampered"
    assert await _refunds(harness) == 0
    async with harness.mandate.db.session() as session:
        query = select(AuditRecord).where(
            AuditRecord.approval_id == approval_id, col(AuditRecord.reason_code) == "approval_tampered"
        )
        record = (await session.exec(query)).one()
    assert record.outcome == "failed"


@pytest.mark.parametrize(
    "column",
    [
        {"requester_scopes": "customers:read orders:read refunds:create refunds:create:large"},
        {"waived_rules": "refund-cap-agent refund-within-refundable"},
        {"expires_at": "2099-01-01 00:00:00.000000"},
        {"tool": "order_cancel"},
    ],
    ids=["scopes", "waived-rules", "expiry", "tool"],
)
async def test_rewriting_any_bound_column_is_detected(harness: Harness, column: dict[str, str]) -> None:
    approval_id = await _request(harness)
    await _rewrite(harness, approval_id, **column)
    decided = await _approve(harness, approval_id)
    assert decided.structured_content["outcome"]["code"] == "approval_tampered", decided.content
    assert await _refunds(harness) == 0


async def test_an_untouched_approval_still_runs(harness: Harness) -> None:
    approval_id = await _request(harness)
    decided = await _approve(harness, approval_id)
    assert decided.structured_content["status"] == "executed", decided.content
    assert await _refunds(harness) == 1


async def test_the_key_lives_outside_the_database_in_a_file_only_its_owner_reads(harness: Harness) -> None:
    approval_id = await _request(harness)
    key_file: Path = harness.mandate.settings.data_dir / "approval-key"
    assert key_file.stat().st_mode & 0o077 == 0  # noqa: ASYNC240 - a test reading a small file
    key = key_file.read_text().strip()  # noqa: ASYNC240
    async with harness.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None and approval.seal is not None and approval.seal.startswith("v1:")
    assert key not in json.dumps(approval.model_dump(mode="json"))


def test_the_key_can_come_from_the_environment_and_a_short_one_is_refused(tmp_path: Path) -> None:
    seal = ApprovalSeal.load(tmp_path, {KEY_ENVIRONMENT: "ab" * 32})
    assert not (tmp_path / "approval-key").exists()
    assert "abab" not in repr(seal)
    with pytest.raises(SealKeyError):
        ApprovalSeal.load(tmp_path, {KEY_ENVIRONMENT: "abcd"})
