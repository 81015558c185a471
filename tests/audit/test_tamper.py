"""Tampering with the database directly (triggers dropped first, as an owner of the database could) is caught by
verification, which names the first bad record; a truncated tail is caught against a signed checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.audit import chain
from server.audit.checkpoint import load_or_create_signing_key, read_checkpoint, sign_checkpoint, write_checkpoint
from server.audit.verify import Anchor, verify_chain
from server.storage.database import Database
from tests.audit.conftest import Cli
from tests.audit.support import append_records, drop_audit_triggers, execute, make_record, rows

pytestmark = pytest.mark.anyio

N = 10


async def _chain(db: Database) -> list[dict[str, object]]:
    await append_records(db, N)
    await drop_audit_triggers(db)
    return [dict(row) for row in await rows(db)]


async def test_an_untouched_chain_verifies(db: Database) -> None:
    await append_records(db, N)
    report = await verify_chain(db, batch_size=3)
    assert report.ok, report.first_break
    assert (report.records, report.last_seq, report.head_seq) == (N, N, N)


async def test_a_flipped_byte_names_the_altered_record(db: Database) -> None:
    original = await _chain(db)
    arguments = str(original[4]["arguments"])
    flipped = arguments[:5] + chr(ord(arguments[5]) ^ 1) + arguments[6:]
    await execute(db, ("UPDATE audit_records SET arguments = :a WHERE seq = 5", {"a": flipped}))
    report = await verify_chain(db, batch_size=3)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.record_id, report.first_break.problem) == (
        5,
        original[4]["id"],
        "altered",
    )


async def test_a_deleted_record_names_the_missing_position(db: Database) -> None:
    original = await _chain(db)
    await execute(db, "DELETE FROM audit_records WHERE seq = 4")
    report = await verify_chain(db)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (4, "missing")
    assert str(original[4]["id"]) in report.first_break.detail  # the record after the gap is named too


async def test_a_reordered_pair_names_the_first_of_the_two_positions(db: Database) -> None:
    original = await _chain(db)
    await execute(
        db,
        "UPDATE audit_records SET seq = -1 WHERE seq = 6",
        "UPDATE audit_records SET seq = 6 WHERE seq = 7",
        "UPDATE audit_records SET seq = 7 WHERE seq = -1",
    )
    report = await verify_chain(db)
    assert report.first_break is not None
    # position 6 now holds what was record 7
    assert (report.first_break.seq, report.first_break.record_id) == (6, original[6]["id"])
    assert report.first_break.problem == "altered"


async def test_an_inserted_record_with_a_forged_hash_is_named(db: Database) -> None:
    original = await _chain(db)
    forged = make_record(99, tool="refund_create", customer_id="cus_1002")
    forged.seq, forged.prev_hash = 4, str(original[2]["hash"])
    forged.hash = chain.link_hash(forged)  # a careful forger: a valid link to the record before
    await execute(
        db,
        "UPDATE audit_records SET seq = -seq WHERE seq >= 4",
        "UPDATE audit_records SET seq = 1 - seq WHERE seq < 0",
        "UPDATE audit_head SET seq = seq + 1",
    )
    async with db.engine.begin() as connection:
        await connection.execute(chain.RECORDS.insert().values(chain.record_values(forged)))
    report = await verify_chain(db)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.record_id, report.first_break.problem) == (
        4,
        forged.id,
        "inserted",
    )


async def test_a_record_written_past_the_head_is_named(db: Database) -> None:
    original = await _chain(db)
    extra = make_record(50)
    extra.seq, extra.prev_hash = N + 1, str(original[-1]["hash"])
    extra.hash = chain.link_hash(extra)
    async with db.engine.begin() as connection:
        await connection.execute(chain.RECORDS.insert().values(chain.record_values(extra)))
    report = await verify_chain(db)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.record_id, report.first_break.problem) == (
        N + 1,
        extra.id,
        "beyond_head",
    )


async def test_a_self_consistent_replacement_is_named_through_the_next_link(db: Database) -> None:
    original = await _chain(db)
    replacement = dict(original[2], arguments='{"customer_id":"cus_1002"}')
    replacement["hash"] = chain.row_hash(replacement)
    await execute(
        db,
        (
            "UPDATE audit_records SET arguments = :a, hash = :h WHERE seq = 3",
            {"a": replacement["arguments"], "h": replacement["hash"]},
        ),
    )
    report = await verify_chain(db)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.record_id, report.first_break.problem) == (
        3,
        original[2]["id"],
        "replaced",
    )


async def test_a_tail_deleted_without_fixing_the_head_is_missing(db: Database) -> None:
    await _chain(db)
    await execute(db, "DELETE FROM audit_records WHERE seq > 7")
    report = await verify_chain(db)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (8, "missing")


async def _checkpoint(db: Database, tmp_path: Path) -> Path:
    key, _ = load_or_create_signing_key(tmp_path / "keys" / "checkpoint.pem")
    all_rows = await rows(db)
    document = sign_checkpoint(
        key,
        seq=int(all_rows[-1]["seq"]),
        hash=str(all_rows[-1]["hash"]),
        record_id=str(all_rows[-1]["id"]),
        record_at=None,
        first_hash=str(all_rows[0]["hash"]),
        instance="test",
    )
    return write_checkpoint(tmp_path / "checkpoint.json", document)


async def test_a_truncated_tail_with_a_fixed_head_is_caught_only_against_a_checkpoint(
    db: Database, tmp_path: Path
) -> None:
    await append_records(db, N)
    path = await _checkpoint(db, tmp_path)
    await drop_audit_triggers(db)
    kept = (await rows(db))[6]
    await execute(
        db,
        "DELETE FROM audit_records WHERE seq > 7",
        ("UPDATE audit_head SET seq = 7, hash = :h", {"h": kept["hash"]}),
    )
    assert (await verify_chain(db)).ok  # the chain alone cannot tell a short chain from a truncated one
    key, _ = load_or_create_signing_key(tmp_path / "keys" / "checkpoint.pem")
    checkpoint = read_checkpoint(path, key.public_key())
    report = await verify_chain(db, anchor=Anchor(checkpoint.seq, checkpoint.hash))
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (8, "truncated")


async def test_a_chain_rewritten_end_to_end_is_caught_against_a_checkpoint(db: Database, tmp_path: Path) -> None:
    await append_records(db, N)
    path = await _checkpoint(db, tmp_path)
    await drop_audit_triggers(db)
    # the forger rewrites record 2 and recomputes every hash after it, and the head
    all_rows = await rows(db)
    prev = str(all_rows[0]["hash"])
    statements: list[str | tuple[str, dict[str, object]]] = []
    for row in all_rows[1:]:
        changed = dict(row, prev_hash=prev)
        if row["seq"] == 2:
            changed["customer_id"] = "cus_1005"
        changed["hash"] = chain.row_hash(changed)
        statements.append(
            (
                "UPDATE audit_records SET prev_hash = :p, hash = :h, customer_id = :c WHERE seq = :s",
                {"p": prev, "h": changed["hash"], "c": changed["customer_id"], "s": row["seq"]},
            )
        )
        prev = str(changed["hash"])
    statements.append(("UPDATE audit_head SET hash = :h", {"h": prev}))
    await execute(db, *statements)
    assert (await verify_chain(db)).ok
    key, _ = load_or_create_signing_key(tmp_path / "keys" / "checkpoint.pem")
    checkpoint = read_checkpoint(path, key.public_key())
    report = await verify_chain(db, anchor=Anchor(checkpoint.seq, checkpoint.hash))
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (N, "checkpoint_mismatch")


async def test_the_cli_names_the_first_bad_record_and_exits_1(db: Database, cli: Cli) -> None:
    original = await _chain(db)
    await execute(db, "UPDATE audit_records SET decision = 'deny' WHERE seq = 3")
    result = await cli("audit", "verify")
    assert result.code == 1
    assert f"seq 3 ({original[2]['id']}): altered" in result.out
    assert result.err == ""  # no progress bar when stderr is not a terminal


async def test_the_cli_reports_an_intact_chain_and_draws_progress_on_request(db: Database, cli: Cli) -> None:
    await append_records(db, N)
    result = await cli("audit", "verify", "--progress", "--batch-size", "4")
    assert result.code == 0, result.out
    assert f"audit chain intact: {N} records" in result.out
    assert "verifying [" in result.err
    assert f"{N}/{N} records" in result.err


@pytest.mark.parametrize("seq", [0, -7])
async def test_a_record_written_below_the_first_position_is_named_though_readers_would_show_it(
    db: Database, seq: int
) -> None:
    from server.audit.query import AuditFilter, fetch_rows, select_records

    await append_records(db, 5)
    await drop_audit_triggers(db)
    forged = make_record(77, tool="refund_create", customer_id="cus_1002", subject="agent:someone-else")
    forged.seq, forged.prev_hash = seq, "0" * 64
    forged.hash = chain.link_hash(forged)
    async with db.engine.begin() as connection:
        await connection.execute(chain.RECORDS.insert().values(chain.record_values(forged)))
    async with db.session() as session:
        shown = await fetch_rows(session, select_records(AuditFilter(customer_id="cus_1002")))
    assert [row["id"] for row in shown] == [forged.id]
    report = await verify_chain(db)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.record_id, report.first_break.problem) == (
        seq,
        forged.id,
        "before_start",
    )
