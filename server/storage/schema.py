"""Creating the schema: every SQLModel table the server and the tool catalog declare, the audit chain head, and the
triggers that make the audit trail append-only in the database itself (DESIGN.md section 6).

Tables are created if missing (``metadata.create_all``); there is no released schema yet, so no migrations. When
there is one, Alembic takes over (DESIGN.md section 5).

The triggers refuse ``UPDATE`` and ``DELETE`` of audit records (and ``TRUNCATE`` on PostgreSQL, which skips row
triggers), refuse deleting the chain head or moving it backwards, and keep the chain linear: a new record must sit
at the head's next position and link to the head's hash, and inserting it moves the head to it. They are created
idempotently (``CREATE TRIGGER IF NOT EXISTS`` on SQLite, ``CREATE OR REPLACE`` on PostgreSQL), so every start
re-creates any that were dropped. They stop mistakes and anyone who can only write rows; someone who can drop
triggers can still rewrite the table, which is what the hash chain and the signed checkpoints are for.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

import server.approvals.models
import server.console.sessions
import server.effects.models
import server.guards.store
import server.idempotency
import server.liveness
import server.webhooks  # noqa: F401 - these modules declare the server's own tables
from server import ledger
from server.audit.models import GENESIS_HASH
from server.storage.database import Database
from server.storage.drift import require_current_schema

APPEND_ONLY_MESSAGE = "audit_records is append-only"

SQLITE_TRIGGERS: dict[str, str] = {
    "audit_records_no_update": f"""
        CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: UPDATE refused'); END""",
    "audit_records_no_delete": f"""
        CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: DELETE refused'); END""",
    "audit_records_extend_head": """
        CREATE TRIGGER IF NOT EXISTS audit_records_extend_head BEFORE INSERT ON audit_records
        WHEN NOT EXISTS (
            SELECT 1 FROM audit_head WHERE id = 1 AND seq + 1 = NEW.seq AND hash = NEW.prev_hash
        )
        BEGIN SELECT RAISE(ABORT, 'audit_records: a new record must extend the chain head'); END""",
    "audit_records_move_head": """
        CREATE TRIGGER IF NOT EXISTS audit_records_move_head AFTER INSERT ON audit_records
        BEGIN UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1; END""",
    "audit_head_no_delete": """
        CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON audit_head
        BEGIN SELECT RAISE(ABORT, 'audit_head cannot be deleted'); END""",
    "audit_head_forward_only": """
        CREATE TRIGGER IF NOT EXISTS audit_head_forward_only BEFORE UPDATE ON audit_head
        WHEN NEW.seq <= OLD.seq OR NEW.id <> OLD.id
        BEGIN SELECT RAISE(ABORT, 'audit_head only moves forward'); END""",
}

_POSTGRES_FUNCTIONS = (
    """
    CREATE OR REPLACE FUNCTION mandate_audit_extend_head() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        head_seq bigint;
        head_hash varchar;
    BEGIN
        SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
        IF head_seq IS NULL OR NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
            RAISE EXCEPTION 'audit_records: a new record must extend the chain head' USING ERRCODE = '23514';
        END IF;
        UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
        RETURN NEW;
    END $$""",
    f"""
    CREATE OR REPLACE FUNCTION mandate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}: % refused', TG_OP USING ERRCODE = '42501';
    END $$""",
    """
    CREATE OR REPLACE FUNCTION mandate_audit_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'UPDATE' OR NEW.seq <= OLD.seq OR NEW.id <> OLD.id THEN
            RAISE EXCEPTION 'audit_head only moves forward: % refused', TG_OP USING ERRCODE = '42501';
        END IF;
        RETURN NEW;
    END $$""",
)

POSTGRES_TRIGGERS: dict[str, str] = {
    "audit_records_extend_head": """
        CREATE OR REPLACE TRIGGER audit_records_extend_head BEFORE INSERT ON audit_records
        FOR EACH ROW EXECUTE FUNCTION mandate_audit_extend_head()""",
    "audit_records_append_only": """
        CREATE OR REPLACE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION mandate_audit_append_only()""",
    "audit_records_no_truncate": """
        CREATE OR REPLACE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
        FOR EACH STATEMENT EXECUTE FUNCTION mandate_audit_append_only()""",
    "audit_head_guard": """
        CREATE OR REPLACE TRIGGER audit_head_guard BEFORE UPDATE OR DELETE ON audit_head
        FOR EACH ROW EXECUTE FUNCTION mandate_audit_head_guard()""",
    "audit_head_no_truncate": """
        CREATE OR REPLACE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
        FOR EACH STATEMENT EXECUTE FUNCTION mandate_audit_append_only()""",
}


async def _create_audit_triggers(connection: AsyncConnection, is_sqlite: bool) -> None:
    if is_sqlite:
        for statement in SQLITE_TRIGGERS.values():
            await connection.execute(text(statement))
        return
    for statement in (*_POSTGRES_FUNCTIONS, *POSTGRES_TRIGGERS.values()):
        await connection.execute(text(statement))


async def create_schema(db: Database) -> None:
    """Create missing tables, the chain head row and the audit triggers; safe to run concurrently from several
    processes and on every start."""
    async with db.engine.begin() as connection:
        if not db.is_sqlite:
            # One process creates the schema at a time; the lock is released at commit.
            await connection.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
        await connection.run_sync(require_current_schema)  # an older database: one clear error, not a failed INSERT
        await connection.run_sync(SQLModel.metadata.create_all)
        statement = "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :hash) ON CONFLICT (id) DO NOTHING"
        await connection.execute(text(statement), {"hash": GENESIS_HASH})
        await _create_audit_triggers(connection, db.is_sqlite)
        await ledger.backfill_window_totals(connection)  # a database from before the rolling sub-totals
