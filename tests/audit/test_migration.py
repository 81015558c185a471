"""A database written by the linear hash chain is upgraded by the migrations (``mandate db upgrade``, and every start
on SQLite): its records keep their chain and become the
first leaves of the Merkle tree, ``verify`` checks both parts, and a legacy record can be proved like any other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import DBAPIError

from server.audit.checkpoint import load_or_create_signing_key, sign_checkpoint, write_checkpoint
from server.audit.receipt import build_receipt, check_receipt
from server.audit.verify import verify_log
from server.config import Settings
from server.storage.database import Database
from server.storage.schema import create_schema
from tests.audit.conftest import Cli
from tests.audit.legacy import append_legacy, create_legacy_schema
from tests.audit.support import append_records, drop_audit_triggers, execute, integrate, rows

pytestmark = pytest.mark.anyio


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """Nothing migrated: these tests start from a database the old code path wrote (``settings`` and ``cli`` too)."""
    return empty_database_url


@pytest.fixture
async def legacy_db(settings: Settings) -> AsyncIterator[Database]:
    """An empty database (no schema) for the old code path to write."""
    database = Database(settings.effective_database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_legacy_chain_becomes_the_first_leaves_and_verifies_with_the_records_after_it(
    legacy_db: Database,
) -> None:
    db = legacy_db
    await create_legacy_schema(db)
    legacy = await append_legacy(db, 6)
    await create_schema(db)  # the upgrade, as `mandate db upgrade` runs it
    await create_schema(db)  # and again: idempotent
    await append_records(db, 3, start=100)
    await integrate(db)
    by_seq = {row["seq"]: row for row in await rows(db)}
    assert [by_seq[seq]["leaf_index"] for seq in range(1, 7)] == list(range(6))  # chain order, first
    assert [by_seq[seq]["hash"] for seq in range(1, 7)] == [values["hash"] for values in legacy]
    assert sorted(seq for seq in by_seq if seq > 6) == [7, 8, 9]  # seq continues after the chain
    report = await verify_log(db)
    assert report.ok, report.first_break
    assert (report.records, report.legacy_records) == (9, 6)


async def test_a_tampered_legacy_record_is_caught_after_the_upgrade(legacy_db: Database) -> None:
    db = legacy_db
    await create_legacy_schema(db)
    legacy = await append_legacy(db, 5)
    await create_schema(db)
    await integrate(db)
    with pytest.raises(DBAPIError, match="only the leaf_index"):
        await execute(db, "UPDATE audit_records SET decision = 'deny' WHERE seq = 3")
    await drop_audit_triggers(db)
    await execute(db, "UPDATE audit_records SET decision = 'deny' WHERE seq = 3")
    report = await verify_log(db)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.record_id, report.first_break.problem) == (
        2,
        legacy[2]["id"],
        "altered",
    )


async def test_a_legacy_record_gets_a_receipt_that_verifies_offline(legacy_db: Database) -> None:
    db = legacy_db
    await create_legacy_schema(db)
    legacy = await append_legacy(db, 4)
    await create_schema(db)
    await append_records(db, 2, start=10)
    key = Ed25519PrivateKey.generate()
    await integrate(db, key=key)
    async with db.engine.connect() as connection:
        receipt = await build_receipt(connection, str(legacy[1]["id"]))
    checked = check_receipt(receipt, key.public_key())
    assert (checked.leaf_index, checked.tree_head.size) == (1, 6)
    assert receipt["record"]["hash"] == legacy[1]["hash"]  # the chain link is part of what the leaf covers


async def test_a_checkpoint_of_the_legacy_chain_still_verifies_against_the_upgraded_log(
    legacy_db: Database, cli: Cli, tmp_path: Path
) -> None:
    db = legacy_db
    await create_legacy_schema(db)
    legacy = await append_legacy(db, 4)
    key, _ = load_or_create_signing_key(tmp_path / "k.pem")
    old = write_checkpoint(
        tmp_path / "chain-checkpoint.json",
        sign_checkpoint(
            key,
            seq=4,
            hash=str(legacy[-1]["hash"]),
            record_id=str(legacy[-1]["id"]),
            record_at=legacy[-1]["at"],
            first_hash=str(legacy[0]["hash"]),
            instance="old",
        ),
    )
    await create_schema(db)
    await integrate(db)
    result = await cli("audit", "verify", "--checkpoint", str(old), "--key", str(tmp_path / "k.pem"))
    assert result.code == 0, result.out
    assert "4 from the legacy chain" in result.out
    assert "the legacy chain reaches the checkpoint at seq 4" in result.out
