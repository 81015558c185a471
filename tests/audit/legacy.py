"""The audit trail as the linear hash chain wrote it, before the Merkle log: its table, its triggers and its append,
reproduced here so that the migration tests start from a database the old code path wrote.

``seq`` is a plain primary key, ``prev_hash``/``hash`` are required, there is no ``leaf_hash``/``leaf_index``;
``hash = SHA-256(prev_hash || canonical(record without hash))`` and the ``audit_head`` row moves with every
append, under its row lock.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import text

from server.audit.chain import LEGACY_FIELDS, canonical_json, canonical_time, record_values
from server.storage.database import Database
from tests.audit.support import make_record

GENESIS = "0" * 64

_COLUMNS = """
    seq BIGINT NOT NULL PRIMARY KEY, id VARCHAR(40) NOT NULL UNIQUE, at TIMESTAMP NOT NULL,
    instance VARCHAR(100) NOT NULL, kind VARCHAR(20) NOT NULL, subject VARCHAR(400), client_id VARCHAR(400),
    issuer VARCHAR(400), scopes TEXT, token_id VARCHAR(200), tenant VARCHAR(100), actor VARCHAR(400),
    transport VARCHAR(20) NOT NULL, client_address VARCHAR(100), client_name VARCHAR(200),
    client_version VARCHAR(100), origin VARCHAR(400), user_agent VARCHAR(400), tool VARCHAR(100),
    customer_id VARCHAR(40), arguments TEXT NOT NULL,
    arguments_digest VARCHAR(64), decision VARCHAR(20) NOT NULL, reason_code VARCHAR(100), reason TEXT,
    rule_id VARCHAR(200), policy_version VARCHAR(100), outcome VARCHAR(30) NOT NULL, result_summary TEXT NOT NULL,
    latency_us BIGINT NOT NULL, idempotency_key VARCHAR(200), approval_id VARCHAR(40), request_id VARCHAR(100),
    trace_id VARCHAR(32), prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL
"""

_SQLITE = [
    f"CREATE TABLE audit_records ({_COLUMNS})",
    "CREATE INDEX ix_audit_records_at ON audit_records (at)",
    "CREATE TABLE audit_head (id INTEGER NOT NULL PRIMARY KEY, seq BIGINT NOT NULL, hash VARCHAR(64) NOT NULL)",
    """CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
       BEGIN SELECT RAISE(ABORT, 'audit_records is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_records_extend_head BEFORE INSERT ON audit_records
       WHEN NOT EXISTS (SELECT 1 FROM audit_head WHERE id = 1 AND seq + 1 = NEW.seq AND hash = NEW.prev_hash)
       BEGIN SELECT RAISE(ABORT, 'audit_records: a new record must extend the chain head'); END""",
    """CREATE TRIGGER audit_records_move_head AFTER INSERT ON audit_records
       BEGIN UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1; END""",
]

_POSTGRES = [
    f"CREATE TABLE audit_records ({_COLUMNS.replace('TIMESTAMP', 'TIMESTAMP WITH TIME ZONE')})",
    "CREATE INDEX ix_audit_records_at ON audit_records (at)",
    "CREATE TABLE audit_head (id INTEGER NOT NULL PRIMARY KEY, seq BIGINT NOT NULL, hash VARCHAR(64) NOT NULL)",
    """CREATE FUNCTION mandate_audit_extend_head() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE head_seq bigint; head_hash varchar;
    BEGIN
        SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
        IF head_seq IS NULL OR NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
            RAISE EXCEPTION 'audit_records: a new record must extend the chain head';
        END IF;
        UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
        RETURN NEW;
    END $$""",
    """CREATE FUNCTION mandate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit_records is append-only: % refused', TG_OP; END $$""",
    """CREATE TRIGGER audit_records_extend_head BEFORE INSERT ON audit_records
       FOR EACH ROW EXECUTE FUNCTION mandate_audit_extend_head()""",
    """CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
       FOR EACH ROW EXECUTE FUNCTION mandate_audit_append_only()""",
]


async def create_legacy_schema(db: Database) -> None:
    async with db.engine.begin() as connection:
        for statement in _SQLITE if db.is_sqlite else _POSTGRES:
            await connection.execute(text(statement))
        await connection.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": GENESIS})


def legacy_link(values: dict[str, Any]) -> str:
    body = {name: values[name] for name in LEGACY_FIELDS}
    body["at"] = canonical_time(body["at"])
    return hashlib.sha256(str(values["prev_hash"]).encode() + canonical_json(body)).hexdigest()


async def append_legacy(db: Database, count: int) -> list[dict[str, Any]]:
    """Append ``count`` records the old way: read the head under lock, link, insert."""
    written = []
    for index in range(count):
        async with db.engine.begin() as connection:
            lock = "" if db.is_sqlite else " FOR UPDATE"
            query = text(f"SELECT seq, hash FROM audit_head WHERE id = 1{lock}")  # noqa: S608
            head = (await connection.execute(query)).one()
            values = record_values(make_record(index))
            for column in ("leaf_hash", "leaf_index"):
                values.pop(column)
            values.update(seq=int(head[0]) + 1, prev_hash=str(head[1]))
            values["hash"] = legacy_link(values)
            names = ", ".join(values)
            await connection.execute(
                text(f"INSERT INTO audit_records ({names}) VALUES ({', '.join(':' + n for n in values)})"),  # noqa: S608
                values,
            )
            written.append(values)
    return written
