"""The idempotency store: one owner per key, replay of the stored answer, mismatch, in-progress, leases, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import mcp_types as types
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from server import idempotency
from server.idempotency import Claimed, ClaimLost, InProgress, Mismatch, Replay
from server.storage.database import Database

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
LEASE = timedelta(seconds=60)
ALICE = "https://issuer|agent-1|alice"
BOB = "https://issuer|agent-2|bob"


async def _claim(
    db: Database, *, principal: str = ALICE, tool: str = "refund_create", key: str = "key-00000001",
    digest: str = "a" * 64, now: datetime = NOW,
) -> idempotency.ClaimOutcome:  # fmt: skip
    return await idempotency.claim(
        db, principal_key=principal, tool=tool, key=key, arguments_digest=digest, now=now, ttl=TTL, lease=LEASE
    )


def _answer(text: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content={"refund_id": text}, is_error=False
    )


async def _complete(db: Database, claimed: Claimed, text: str) -> None:
    async def work(session: AsyncSession) -> None:
        await idempotency.complete(session, claimed, _answer(text), "aud_1")

    await db.run_in_transaction(work)


async def test_the_first_claim_owns_the_key_and_then_the_stored_answer_is_replayed(db: Database) -> None:
    first = await _claim(db)
    assert isinstance(first, Claimed)
    await _complete(db, first, "ref_1")
    again = await _claim(db, now=NOW + timedelta(hours=1))
    assert isinstance(again, Replay)
    assert again.result.structured_content == {"refund_id": "ref_1"}
    assert again.audit_id == "aud_1"


async def test_the_same_key_with_other_arguments_is_a_mismatch_whether_finished_or_not(db: Database) -> None:
    first = await _claim(db)
    assert isinstance(await _claim(db, digest="b" * 64), Mismatch)
    assert isinstance(first, Claimed)
    await _complete(db, first, "ref_1")
    assert isinstance(await _claim(db, digest="b" * 64), Mismatch)


async def test_a_duplicate_while_the_first_is_running_is_told_to_retry(db: Database) -> None:
    assert isinstance(await _claim(db), Claimed)
    duplicate = await _claim(db, now=NOW + timedelta(seconds=1))
    assert isinstance(duplicate, InProgress)
    assert 1 <= duplicate.retry_after_seconds <= 5


async def test_keys_belong_to_one_principal_and_one_tool(db: Database) -> None:
    mine = await _claim(db)
    assert isinstance(mine, Claimed)
    await _complete(db, mine, "ref_alice")
    assert isinstance(await _claim(db, principal=BOB), Claimed)  # Bob's key of the same name is his own
    assert isinstance(await _claim(db, tool="order_cancel"), Claimed)


async def test_a_released_claim_lets_a_retry_run_anew(db: Database) -> None:
    first = await _claim(db)
    assert isinstance(first, Claimed)
    await idempotency.release(db, first)
    assert isinstance(await _claim(db, digest="b" * 64), Claimed)


async def test_a_claim_abandoned_past_its_lease_is_taken_over_and_its_late_completion_is_refused(db: Database) -> None:
    stale = await _claim(db)
    assert isinstance(stale, Claimed)
    fresh = await _claim(db, now=NOW + LEASE + timedelta(seconds=1))
    assert isinstance(fresh, Claimed)
    assert fresh.token != stale.token
    with pytest.raises(ClaimLost):
        await _complete(db, stale, "ref_late")
    await _complete(db, fresh, "ref_fresh")
    replay = await _claim(db, now=NOW + LEASE + timedelta(seconds=2))
    assert isinstance(replay, Replay)
    assert replay.result.structured_content == {"refund_id": "ref_fresh"}


async def test_after_the_retention_a_key_is_free_again_and_purge_deletes_it(db: Database) -> None:
    first = await _claim(db)
    assert isinstance(first, Claimed)
    await _complete(db, first, "ref_1")
    assert await idempotency.purge(db, NOW + TTL - timedelta(seconds=1)) == 0
    assert isinstance(await _claim(db, digest="b" * 64, now=NOW + TTL), Claimed)
    assert await idempotency.purge(db, NOW + 2 * TTL) == 1


async def test_of_many_concurrent_claims_of_one_key_exactly_one_owns_it(db: Database) -> None:
    outcomes: list[idempotency.ClaimOutcome] = []

    async def one() -> None:
        outcomes.append(await _claim(db))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(one)
    assert sum(isinstance(outcome, Claimed) for outcome in outcomes) == 1
    assert all(isinstance(outcome, Claimed | InProgress) for outcome in outcomes)
