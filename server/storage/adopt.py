"""Adopting a database made before the versioned migrations, when ``create_schema`` built the tables at every start
(docs/database.md, "Databases from before the migrations").

Such a database has Mandate's tables but no ``alembic_version``. Before the baseline revision runs (it creates only
the tables that are missing, and replaces the triggers), the tables are brought to the shape the baseline expects:
a linear-hash-chain ``audit_records`` becomes the Merkle log's (:mod:`server.audit.migration`), nullable columns
added since a table was first created are added, and any other missing column stops the upgrade, naming it
(:mod:`server.storage.drift`). After it, legacy records set aside on SQLite are copied back, and the ledger's rolling
sub-totals are built from its entries. All of it runs in the upgrade's transaction.
"""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from server import ledger
from server.audit import migration
from server.storage.drift import require_current_schema


def _made_before_migrations(sync: Connection) -> bool:
    tables = set(inspect(sync).get_table_names())
    return "audit_records" in tables and "alembic_version" not in tables


async def made_before_migrations(connection: AsyncConnection) -> bool:
    """Whether the database holds Mandate's tables but was never migrated."""
    return await connection.run_sync(_made_before_migrations)


async def prepare(connection: AsyncConnection) -> bool:
    """Bring an old database's tables to the baseline's shape; whether SQLite's legacy records were set aside."""
    if connection.dialect.name == "postgresql":
        await migration.upgrade_postgres(connection)
    set_aside = connection.dialect.name == "sqlite" and await migration.set_aside_sqlite_table(connection)
    await migration.add_missing_columns(connection)
    await connection.run_sync(require_current_schema)  # an older database: one clear error, not a failed INSERT
    return set_aside


async def finish(connection: AsyncConnection, *, set_aside: bool) -> None:
    """After the baseline: the set-aside legacy records back in place, the rolling sub-totals built."""
    if set_aside:
        await migration.copy_sqlite_records(connection)
    await ledger.backfill_window_totals(connection)
