"""``mandate audit verify`` and a column no writer leaves null, emptied by a database owner (the constraint dropped,
the triggers too): the record is reported as altered, by leaf, record and column, instead of stopping the command,
on both engines; an unintegrated record whose time was emptied still counts as overdue, for itself and its effect;
``show``, ``tail`` and ``export`` still print the record (its hash shown not to match)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Column, MetaData, String, Table

from server.audit.chain import LEAF_FIELDS, RECORDS
from server.audit.verify import EffectSource, verify_log
from server.storage.database import Database
from tests.audit.support import (
    BASE_TIME,
    append_and_integrate,
    append_records,
    drop_audit_triggers,
    drop_not_null,
    execute,
)

pytestmark = pytest.mark.anyio

REQUIRED = [name for name in LEAF_FIELDS if not RECORDS.c[name].nullable]


def test_the_required_columns_include_the_time_and_every_other_not_null_column() -> None:
    assert {"at", "id", "instance", "kind", "transport", "arguments", "decision", "outcome"} <= set(REQUIRED)
    assert {"result_summary", "latency_us"} <= set(REQUIRED)


@pytest.mark.parametrize("column", REQUIRED)
async def test_a_required_column_set_to_null_is_reported_as_altered_naming_the_record_and_the_column(
    db: Database, column: str
) -> None:
    log = await append_and_integrate(db, 8, batches=2)
    await drop_audit_triggers(db)
    await drop_not_null(db, column)
    await execute(db, f"UPDATE audit_records SET {column} = NULL WHERE leaf_index = 5")  # noqa: S608 - our names
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    brk = report.first_break
    assert (brk.leaf_index, brk.problem) == (5, "altered")
    assert f"its {column} is null" in brk.detail
    assert brk.record_id == (None if column == "id" else log[5].id)
    assert f"seq {log[5].seq}" in brk.detail
    assert report.records == 5  # the leaves before it were verified


async def test_two_columns_set_to_null_are_both_named(db: Database) -> None:
    await append_and_integrate(db, 4)
    await drop_audit_triggers(db)
    await drop_not_null(db, "at")
    if not db.is_sqlite:
        await drop_not_null(db, "outcome")
    await execute(db, "UPDATE audit_records SET at = NULL, outcome = NULL WHERE leaf_index = 0")
    report = await verify_log(db)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (0, "altered")
    assert "its at, outcome are null" in report.first_break.detail


async def test_the_cli_reports_a_null_time_and_exits_1(db: Database, cli) -> None:  # type: ignore[no-untyped-def]
    log = await append_and_integrate(db, 3)
    await drop_audit_triggers(db)
    await drop_not_null(db, "at")
    await execute(db, "UPDATE audit_records SET at = NULL WHERE leaf_index = 1")
    result = await cli("audit", "verify")
    assert result.code == 1
    assert f"leaf 1 ({log[1].id}): altered: its at is null" in result.out


async def test_show_tail_and_export_print_a_record_whose_time_and_latency_were_emptied(
    db: Database,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    log = await append_and_integrate(db, 3)
    await drop_audit_triggers(db)
    await drop_not_null(db, "at")
    if not db.is_sqlite:
        await drop_not_null(db, "latency_us")
    await execute(db, "UPDATE audit_records SET at = NULL, latency_us = NULL WHERE leaf_index = 1")
    shown = await cli("audit", "show", log[1].id)
    assert shown.code == 0, shown.out
    assert "LEAF HASH DOES NOT MATCH CONTENT" in shown.out
    tail = await cli("audit", "tail", "-n", "3")
    assert tail.code == 0
    assert any(line.startswith(f"#{log[1].seq} - ") and line.endswith(log[1].id) for line in tail.out.splitlines())
    exported = await cli("audit", "export", "--format", "jsonl")
    assert exported.code == 0
    assert '"at":null' in exported.out


async def test_an_unintegrated_record_whose_time_was_emptied_is_overdue_for_itself_and_its_effect(
    db: Database,
) -> None:
    effects = Table("test_effects", MetaData(), Column("id", String, primary_key=True), Column("audit_id", String))
    async with db.engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)
    await append_and_integrate(db, 2)
    (waiting,) = await append_records(db, 1, start=5)
    async with db.engine.begin() as connection:
        await connection.execute(effects.insert(), [{"id": "re_1", "audit_id": waiting.id}])
    await drop_audit_triggers(db)
    await drop_not_null(db, "at")
    await execute(db, ("UPDATE audit_records SET at = NULL WHERE id = :id", {"id": waiting.id}))
    soon = BASE_TIME + timedelta(seconds=30)  # before the deadline for a record with its time
    report = await verify_log(db, now=soon)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.record_id) == ("not_integrated", waiting.id)
    assert "its at is null" in report.first_break.detail
    report = await verify_log(db, effects=[EffectSource("refund", effects, "id", "audit_id")], now=soon)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.record_id) == ("effect_not_integrated", waiting.id)
    assert "refund re_1" in report.first_break.detail
