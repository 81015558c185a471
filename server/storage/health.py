"""What ``mandate db check`` checks beyond the revision: the audit log's append-only triggers are all there and
enabled (docs/audit.md, "What the database refuses"), and the tables match the models (docs/database.md).

A trigger that is missing or disabled was removed by someone with the owner's rights: the database no longer
refuses a rewrite of the log. ``mandate audit verify`` then says whether a record was changed.
"""

from __future__ import annotations

from sqlalchemy import text

from server.audit.triggers import POSTGRES_TRIGGERS, SQLITE_TRIGGERS
from server.storage.database import Database


async def audit_trigger_problems(db: Database) -> list[str]:
    """``name on table: missing`` or ``...: disabled`` for each append-only trigger not in force."""
    async with db.engine.connect() as connection:
        if db.is_sqlite:
            rows = await connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            present = {str(name): "O" for name in rows.scalars()}
            expected = SQLITE_TRIGGERS
        else:
            query = text(
                "SELECT t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND NOT t.tgisinternal"
            )
            present = {str(name): str(enabled) for name, enabled in await connection.execute(query)}
            expected = {name: table for name, (table, _function) in POSTGRES_TRIGGERS.items()}
    problems: list[str] = []
    for name, table in expected.items():
        if name not in present:
            problems.append(f"trigger {name} on {table}: missing")
        elif present[name] == "D":
            problems.append(f"trigger {name} on {table}: disabled")
    return problems
