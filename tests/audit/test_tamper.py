"""``mandate audit verify`` catches an integrated record edited, deleted, reordered or inserted, a log truncated or
rewritten (against a signed tree head kept elsewhere), a record never integrated, and an effect whose record is
missing or was never integrated: each names the first problem. Tampering goes through raw SQL with the triggers
dropped, as an attacker with owner rights on the database would."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Column, MetaData, String, Table

from server.audit import chain
from server.audit.checkpoint import sign_tree_head, tree_head_from
from server.audit.tree import latest_head
from server.audit.verify import EffectSource, verify_log
from server.storage.database import Database
from tests.audit.conftest import Cli
from tests.audit.support import (
    BASE_TIME,
    append_and_integrate,
    append_records,
    drop_audit_triggers,
    execute,
    integrate,
    make_record,
    rows,
)

pytestmark = pytest.mark.anyio

N = 12


async def _log(db: Database) -> list[dict[str, object]]:
    """N records integrated in three batches (tree heads at 4, 8 and 12), then the triggers dropped."""
    await append_and_integrate(db, N, batches=3)
    await drop_audit_triggers(db)
    return sorted((dict(row) for row in await rows(db)), key=lambda row: int(str(row["leaf_index"])))


async def _signed_head(db: Database, key: Ed25519PrivateKey):  # type: ignore[no-untyped-def]
    async with db.engine.connect() as connection:
        head = await latest_head(connection)
    assert head is not None
    return tree_head_from(sign_tree_head(key, size=head.size, root_hash=head.root_hash, instance="t"), key.public_key())


async def test_an_untouched_log_verifies_with_every_tree_head(db: Database) -> None:
    await append_and_integrate(db, N, batches=3)
    report = await verify_log(db, batch_size=5)
    assert report.ok, report.first_break
    assert (report.records, report.tree_size, report.heads_checked, report.pending) == (N, N, 3, 0)


async def test_an_edited_record_is_named_as_altered(db: Database) -> None:
    log = await _log(db)
    await execute(db, "UPDATE audit_records SET decision = 'deny' WHERE leaf_index = 5")
    report = await verify_log(db, batch_size=3)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.record_id, report.first_break.problem) == (
        5,
        log[5]["id"],
        "altered",
    )


async def test_an_edited_record_with_its_leaf_hash_recomputed_no_longer_matches_the_tree_head(db: Database) -> None:
    log = await _log(db)
    edited = {**log[5], "decision": "deny"}
    new_hash = chain.leaf_hash_of(edited).hex()
    await execute(
        db, ("UPDATE audit_records SET decision = 'deny', leaf_hash = :h WHERE leaf_index = 5", {"h": new_hash})
    )
    report = await verify_log(db)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.leaf_index) == ("tree_mismatch", 4)
    assert "leaves 4 to 7" in report.first_break.detail


async def test_a_deleted_record_names_the_missing_leaf(db: Database) -> None:
    await _log(db)
    await execute(db, "DELETE FROM audit_records WHERE leaf_index = 6")
    report = await verify_log(db)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (6, "missing")


async def test_a_reordered_pair_no_longer_produces_the_tree_head(db: Database) -> None:
    await _log(db)
    await execute(
        db,
        "UPDATE audit_records SET leaf_index = -1 WHERE leaf_index = 9",
        "UPDATE audit_records SET leaf_index = 9 WHERE leaf_index = 10",
        "UPDATE audit_records SET leaf_index = 10 WHERE leaf_index = -1",
    )
    report = await verify_log(db)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.leaf_index) == ("tree_mismatch", 8)


async def test_an_inserted_record_with_the_positions_after_it_renumbered_is_caught(db: Database) -> None:
    await _log(db)
    for index in range(N - 1, 2, -1):
        statement = "UPDATE audit_records SET leaf_index = :new WHERE leaf_index = :old"
        await execute(db, (statement, {"new": index + 1, "old": index}))
    forged = chain.record_values(make_record(77, tool="refund_create"))
    forged.update(seq=1000, leaf_index=3, leaf_hash=chain.leaf_hash_of(forged).hex())
    async with db.engine.begin() as connection:
        await connection.execute(chain.RECORDS.insert().values(forged))
    report = await verify_log(db)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.leaf_index) == ("tree_mismatch", 0)


@pytest.mark.parametrize("leaf_index", [N, N + 5, -7])
async def test_a_record_placed_outside_the_tree_is_named(db: Database, leaf_index: int) -> None:
    from server.audit.query import AuditFilter, fetch_rows, select_records

    await _log(db)
    forged = chain.record_values(make_record(77, tool="refund_create", customer_id="cus_1002"))
    forged.update(seq=1000, leaf_index=leaf_index, leaf_hash=chain.leaf_hash_of(forged).hex())
    async with db.engine.begin() as connection:
        await connection.execute(chain.RECORDS.insert().values(forged))
    async with db.session() as session:
        shown = await fetch_rows(session, select_records(AuditFilter(customer_id="cus_1002")))
    assert [row["id"] for row in shown] == [forged["id"]]
    report = await verify_log(db)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.record_id, report.first_break.problem) == (
        leaf_index,
        forged["id"],
        "beyond_head",
    )


async def test_a_truncated_tail_with_its_tree_heads_removed_is_caught_against_a_signed_tree_head(
    db: Database,
) -> None:
    key = Ed25519PrivateKey.generate()
    await _log(db)
    signed = await _signed_head(db, key)
    await execute(db, "DELETE FROM audit_records WHERE leaf_index >= 8", "DELETE FROM audit_tree_heads WHERE size > 8")
    assert (await verify_log(db)).ok  # the log alone cannot tell a short log from a truncated one
    report = await verify_log(db, anchor=signed)
    assert report.first_break is not None
    assert report.first_break.problem == "truncated"


async def test_a_log_rewritten_from_the_start_is_a_fork_against_a_signed_tree_head(db: Database) -> None:
    key = Ed25519PrivateKey.generate()
    await _log(db)
    signed = await _signed_head(db, key)
    # rewrite one record's content, then rebuild the whole tree around it with the real sequencer
    await execute(
        db,
        "DELETE FROM audit_tree_heads",
        "DELETE FROM audit_tree_nodes",
        "UPDATE audit_records SET leaf_index = NULL",
        "UPDATE audit_records SET decision = 'deny' WHERE seq = 2",
    )
    for row in await rows(db):
        await execute(
            db,
            (
                "UPDATE audit_records SET leaf_hash = :h WHERE seq = :s",
                {"h": chain.leaf_hash_of(row).hex(), "s": row["seq"]},
            ),
        )
    await append_records(db, 2, start=50)
    await integrate(db)
    assert (await verify_log(db)).ok  # self-consistent
    report = await verify_log(db, anchor=signed)
    assert report.first_break is not None
    assert report.first_break.problem == "checkpoint_mismatch"


async def test_a_later_log_extends_a_signed_tree_head_by_a_verified_consistency_proof(db: Database) -> None:
    key = Ed25519PrivateKey.generate()
    await append_and_integrate(db, 5)
    signed = await _signed_head(db, key)
    await append_and_integrate(db, 6)
    report = await verify_log(db, anchor=signed)
    assert report.ok, report.first_break
    assert report.consistency is not None
    assert (report.consistency.old_size, report.consistency.new_size) == (5, 11)
    assert report.consistency.proof_length > 0


async def test_a_record_never_integrated_is_reported_after_the_deadline(db: Database) -> None:
    await append_and_integrate(db, 3)
    (late,) = await append_records(db, 1, start=9)
    soon = BASE_TIME + timedelta(seconds=30)  # the records' times are BASE_TIME + a few seconds
    assert (await verify_log(db, deadline_seconds=60, now=soon)).ok  # the sequencer still has time
    later = BASE_TIME + timedelta(minutes=5)
    report = await verify_log(db, deadline_seconds=60, now=later)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.record_id) == ("not_integrated", late.id)


async def test_an_effect_whose_record_is_missing_or_was_never_integrated_is_reported(db: Database) -> None:
    effects = Table("test_effects", MetaData(), Column("id", String, primary_key=True), Column("audit_id", String))
    async with db.engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)
    source = EffectSource("refund", effects, "id", "audit_id")
    (done,) = await append_and_integrate(db, 1)
    (waiting,) = await append_records(db, 1, start=5)
    async with db.engine.begin() as connection:
        await connection.execute(
            effects.insert(), [{"id": "re_1", "audit_id": done.id}, {"id": "re_2", "audit_id": waiting.id}]
        )
    report = await verify_log(db, effects=[source], now=BASE_TIME + timedelta(seconds=30))
    assert report.ok and report.effects_checked == 2
    later = BASE_TIME + timedelta(minutes=5)
    report = await verify_log(db, effects=[source], now=later, deadline_seconds=60)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.record_id) == ("effect_not_integrated", waiting.id)
    assert "refund re_2" in report.first_break.detail
    await drop_audit_triggers(db)
    await execute(db, ("DELETE FROM audit_records WHERE id = :id", {"id": waiting.id}))
    report = await verify_log(db, effects=[source], now=BASE_TIME + timedelta(seconds=30))
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.record_id) == ("effect_unrecorded", waiting.id)
    assert "refund re_2" in report.first_break.detail


async def test_the_cli_names_the_first_problem_and_exits_1(db: Database, cli: Cli) -> None:
    log = await _log(db)
    await execute(db, "UPDATE audit_records SET decision = 'deny' WHERE leaf_index = 3")
    result = await cli("audit", "verify")
    assert result.code == 1
    assert f"leaf 3 ({log[3]['id']}): altered" in result.out
    assert result.err == ""  # no progress bar when stderr is not a terminal


async def test_the_cli_reports_an_intact_log_and_draws_progress_on_request(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    await append_and_integrate(db, N, batches=2)
    result = await cli("audit", "verify", "--progress", "--batch-size", "4")
    assert result.code == 0, result.out
    assert f"audit log intact: {N} records" in result.out
    assert "verifying [" in result.err
    assert f"{N}/{N} records" in result.err
