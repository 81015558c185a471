"""Creating the schema: every SQLModel table the server and the tool catalog declare, the audit chain head, and the
triggers that make the audit trail append-only in the database itself (DESIGN.md section 6).

Tables are created if missing (``metadata.create_all``); there is no released schema yet, so no migrations. When
there is one, Alembic takes over (DESIGN.md section 5).

The audit log's triggers (:mod:`server.audit.triggers`) refuse ``DELETE`` of records and every ``UPDATE`` but the
sequencer's one-time ``leaf_index``; they are re-created on every start. A database written by the linear hash chain
is upgraded first (:mod:`server.audit.migration`).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import SQLModel

import server.approvals.models
import server.console.sessions
import server.effects.models
import server.guards.store
import server.idempotency
import server.liveness
import server.webhooks  # noqa: F401 - these modules declare the server's own tables
from server import ledger
from server.audit import migration, triggers
from server.audit.models import GENESIS_HASH
from server.storage.database import Database
from server.storage.drift import require_current_schema

SQLITE_TRIGGERS = triggers.SQLITE_TRIGGERS
POSTGRES_TRIGGERS = triggers.POSTGRES_TRIGGERS
APPEND_ONLY_MESSAGE = triggers.APPEND_ONLY_MESSAGE


async def create_schema(db: Database) -> None:
    """Create missing tables, the chain head row and the audit triggers; safe to run concurrently from several
    processes and on every start."""
    async with db.engine.begin() as connection:
        if not db.is_sqlite:
            # One process creates the schema at a time; the lock is released at commit.
            await connection.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
            await migration.upgrade_postgres(connection)
        set_aside = db.is_sqlite and await migration.set_aside_sqlite_table(connection)
        await connection.run_sync(require_current_schema)  # an older database: one clear error, not a failed INSERT
        await connection.run_sync(SQLModel.metadata.create_all)
        if set_aside:
            await migration.copy_sqlite_records(connection)
        await migration.add_missing_columns(connection)
        statement = "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :hash) ON CONFLICT (id) DO NOTHING"
        await connection.execute(text(statement), {"hash": GENESIS_HASH})
        await triggers.create_audit_triggers(connection, db.is_sqlite)
        await ledger.backfill_window_totals(connection)  # a database from before the rolling sub-totals
