"""``mandate audit verify`` and values that need JSON escapes: a record whose canonical form escapes quotes,
backslashes or control characters verifies, and one edited in the database is caught, even when the edit is the
original value's own escaped text (what an encoder that forgot an escape would take for the original). On
PostgreSQL the server's fast form escapes the quotes in the text columns and every backslash; a record it does not
match (a quote in a short column, a control character) is hashed again by the server in the form that follows each
column's type, before anything is left to Python; a content column whose type was changed is read through that form
alone (server/audit/levels.py)."""

from __future__ import annotations

import json

import pytest

from server.audit import levels
from server.audit.levels import scan_log
from server.audit.verify import verify_log
from server.storage.database import Database
from tests.audit.support import append_and_integrate, drop_audit_triggers, execute

pytestmark = pytest.mark.anyio

QUOTES_AND_BACKSLASHES = 'C:\\temp\\ "quoted" \\"both\\" / caf\u00e9 \u2028 \x7f \U0001f600'
QUOTED_NAME = 'the "best" client\\'
BACKSLASHES = "C:\\temp\\new\\n"
CONTROL = "line one\nline two\ttab \x1b[2J \x01"


def _escaped(value: str) -> str:
    """The body of ``value``'s canonical JSON string: its quotes and backslashes escaped."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


async def _log(db: Database) -> None:
    """Eight records; leaf 2 holds quotes and backslashes (in its reason and arguments), leaf 3 backslashes alone
    (in its subject), leaf 4 quotes in a short column (its client name), leaf 5 control characters."""
    await append_and_integrate(db, 2, tenant="acme")
    await append_and_integrate(
        db, 1, tenant="acme", reason=QUOTES_AND_BACKSLASHES, arguments=json.dumps({"note": QUOTES_AND_BACKSLASHES})
    )
    await append_and_integrate(db, 1, tenant="acme", subject=BACKSLASHES)
    await append_and_integrate(db, 1, tenant="acme", client_name=QUOTED_NAME)
    await append_and_integrate(db, 1, tenant="acme", reason=CONTROL)
    await append_and_integrate(db, 2, tenant="acme")


async def test_records_whose_values_need_json_escapes_verify(db: Database) -> None:
    await _log(db)
    report = await verify_log(db, batch_size=4)
    assert report.ok, report.first_break
    assert report.records == 8
    if db.is_sqlite:
        return
    # PostgreSQL: the fast form escapes quotes in the text columns and every backslash; the quote in a short column
    # and the control characters match only the second form, which the server then hashes: nothing is left to Python
    assert (await scan_log(db, 8, range_size=4, workers=1)).suspects == []
    fast_only = levels._postgres_summary_query(levels._postgres_json())
    async with db.engine.connect() as connection:
        summaries = [(await connection.exec_driver_sql(fast_only, (start, start + 4))).one() for start in (0, 4)]
    assert sorted(index for summary in summaries for index in summary[5] or ()) == [4, 5]


@pytest.mark.parametrize("column", ["reason", "subject", "client_name"])
async def test_a_value_replaced_by_its_own_escaped_text_is_caught(db: Database, column: str) -> None:
    await _log(db)
    await drop_audit_triggers(db)
    original, index = {
        "reason": (QUOTES_AND_BACKSLASHES, 2),
        "subject": (BACKSLASHES, 3),
        "client_name": (QUOTED_NAME, 4),
    }[column]
    statement = f"UPDATE audit_records SET {column} = :escaped WHERE leaf_index = {index}"  # noqa: S608 - our names
    await execute(db, (statement, {"escaped": _escaped(original)}))
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (index, "altered")


async def test_a_control_character_replaced_by_its_escape_sequence_is_caught(db: Database) -> None:
    await _log(db)
    await drop_audit_triggers(db)
    await execute(
        db, ("UPDATE audit_records SET reason = :escaped WHERE leaf_index = 5", {"escaped": _escaped(CONTROL)})
    )
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (5, "altered")


async def test_an_edited_quote_in_an_escaped_value_is_caught(db: Database) -> None:
    await _log(db)
    await drop_audit_triggers(db)
    await execute(
        db, "UPDATE audit_records SET reason = replace(reason, '\"quoted\"', '''quoted''') WHERE leaf_index = 2"
    )
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (2, "altered")


async def test_a_content_column_retyped_to_pad_its_values_is_caught(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL: char(n) pads what it stores, and its cast to text trims the padding again")
    await _log(db)
    await drop_audit_triggers(db)
    await execute(db, "ALTER TABLE audit_records ALTER COLUMN tenant TYPE char(40)")
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (0, "altered")


async def test_a_required_column_emptied_is_caught(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL: the NOT NULL constraint can be dropped; SQLite's is part of the table")
    await _log(db)
    await drop_audit_triggers(db)
    await execute(
        db,
        "ALTER TABLE audit_records ALTER COLUMN arguments DROP NOT NULL",
        "UPDATE audit_records SET arguments = NULL WHERE leaf_index = 6",
    )
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (6, "altered")
