"""Appends do not serialize and the sequencer integrates every committed record: leaf indices in batches, the
stored tree matching the RFC 9162 definition, proofs from the database equal to proofs from the leaves, and a record
that committed late with a lower insertion key still integrated."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from sqlalchemy import select

from server.audit import chain
from server.audit.merkle import consistency_path, inclusion_path, list_oracle, root_of, verify_inclusion
from server.audit.tree import consistency_proof, heads, inclusion_proof, latest_head
from server.audit.verify import verify_log
from server.storage.database import Database
from tests.audit.support import append_and_integrate, append_records, integrate, make_record, rows

pytestmark = pytest.mark.anyio


async def test_a_record_commits_with_its_leaf_hash_and_no_position_until_the_sequencer_integrates_it(
    db: Database,
) -> None:
    (record,) = await append_records(db, 1)
    (stored,) = await rows(db)
    assert stored["leaf_index"] is None
    assert stored["leaf_hash"] == chain.leaf_hash_of(stored).hex() == record.leaf_hash
    assert stored["prev_hash"] is None and stored["hash"] is None
    (batch,) = await integrate(db)
    assert (batch.old_size, batch.new_size) == (0, 1)
    (stored,) = await rows(db)
    assert stored["leaf_index"] == 0
    assert await integrate(db) == []  # nothing pending: no new tree head


async def test_the_stored_tree_and_its_proofs_equal_the_rfc_definition_for_every_size(db: Database) -> None:
    await append_and_integrate(db, 24, batches=24)  # one tree head per size 1..24
    all_rows = sorted(await rows(db), key=lambda row: row["leaf_index"])
    leaves = [bytes.fromhex(row["leaf_hash"]) for row in all_rows]
    oracle = list_oracle(leaves)
    async with db.engine.connect() as connection:
        stored = await heads(connection)
        assert [head.size for head in stored] == list(range(1, 25))
        for head in stored:
            assert head.root == root_of(leaves[: head.size])
            for index in range(head.size):
                proof = await inclusion_proof(connection, index, head.size)
                assert proof == inclusion_path(index, head.size, oracle)
                verify_inclusion(index, head.size, leaves[index], proof, head.root)
            for old in range(head.size + 1):
                assert await consistency_proof(connection, old, head.size) == consistency_path(old, head.size, oracle)


async def test_a_record_committed_late_with_a_lower_insertion_key_is_still_integrated(db: Database) -> None:
    await append_and_integrate(db, 5)
    # A transaction that took its seq before the integrated ones but committed after them: here, a lower seq
    # arriving after seq 1..5 were integrated (seq 0 is below every key the database handed out).
    late = make_record(99)
    values = chain.record_values(late)
    values["seq"] = 0
    values["leaf_hash"] = chain.leaf_hash_of(values).hex()
    async with db.engine.begin() as connection:
        await connection.execute(chain.RECORDS.insert().values(values))
    await append_records(db, 2, start=10)
    await integrate(db)
    by_seq = {row["seq"]: row for row in await rows(db)}
    assert by_seq[0]["leaf_index"] == 5  # integrated, after the five already in the tree, before the two newer
    assert sorted(row["leaf_index"] for row in by_seq.values()) == list(range(8))
    assert (await verify_log(db)).ok


async def test_postgres_a_transaction_that_commits_after_a_later_one_is_integrated_in_the_next_batch(
    db: Database,
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: transactions cannot overlap")
    slow_started, release = anyio.Event(), anyio.Event()

    async def slow(session: Any) -> None:
        await chain.append(session, make_record(1))
        slow_started.set()
        await release.wait()

    async def fast(session: Any) -> None:
        await chain.append(session, make_record(2))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(db.run_in_transaction, slow)
            await slow_started.wait()
            await db.run_in_transaction(fast)
            await integrate(db)  # sees only the later, committed record
            first = {row["seq"]: row["leaf_index"] for row in await rows(db)}
            assert list(first.values()) == [0]
            release.set()
    await integrate(db)
    placed = {row["seq"]: row["leaf_index"] for row in await rows(db)}
    low, high = sorted(placed)
    assert (placed[high], placed[low]) == (0, 1)  # the lower seq committed last and became the later leaf
    assert (await verify_log(db)).ok


async def test_postgres_an_append_takes_no_lock_another_append_waits_for(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer")
    holding, release = anyio.Event(), anyio.Event()

    async def held_open(session: Any) -> None:
        await chain.append(session, make_record(1))
        holding.set()
        await release.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(db.run_in_transaction, held_open)
            await holding.wait()
            # another call commits its record while the first transaction is still open
            await append_records(db, 3, start=5)
            async with db.engine.connect() as connection:
                count = (await connection.execute(select(chain.RECORDS.c.seq))).all()
            assert len(count) == 3
            release.set()
    assert len(await rows(db)) == 4


async def test_the_latest_tree_head_is_signed_when_the_sequencer_has_the_key(db: Database) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.audit.checkpoint import tree_head_from

    key = Ed25519PrivateKey.generate()
    await append_records(db, 3)
    await integrate(db, key=key)
    async with db.engine.connect() as connection:
        head = await latest_head(connection)
    assert head is not None and head.signed is not None
    import json

    signed = tree_head_from(json.loads(head.signed), key.public_key())
    assert (signed.size, signed.root_hash) == (3, head.root_hash)
