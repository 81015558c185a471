"""The schema at start and for tools: migrate (the owner's job) or check (the server's, on PostgreSQL).

The schema comes from the versioned migrations (:mod:`server.storage.migrations`, run by :mod:`server.storage.migrate`;
docs/database.md), which create every table, the audit chain head and the triggers that make the audit trail
append-only in the database itself (DESIGN.md section 6; docs/audit.md, "What the database refuses").

- :func:`create_schema` migrates to the newest revision: ``mandate db upgrade``, the tests' and benchmarks' fresh
  databases, and every start on SQLite.
- :func:`open_schema` is what a start does. On PostgreSQL it only checks that the database is at the newest revision
  and stops in one line naming ``mandate db upgrade`` when it is not: the server creates and replaces nothing, so it
  can run as a role that owns nothing and cannot drop or disable the triggers (:mod:`server.storage.privileges`). On
  the embedded SQLite file, whose owner is whoever runs the process, it migrates, so ``mandate dev`` stays one
  command.
"""

from __future__ import annotations

from server.audit import triggers
from server.storage import migrate
from server.storage.database import Database


async def create_schema(db: Database) -> None:
    """Bring the database to the newest revision (creating it from nothing, or adopting one made before the
    migrations); safe to run concurrently from several processes and again and again."""
    await migrate.upgrade(db)


async def open_schema(db: Database, where: str) -> None:
    """SQLite: migrate. PostgreSQL: stop with :class:`server.storage.migrate.SchemaNotAtHead` unless the database is
    at the newest revision (``where`` names it in the message, password hidden)."""
    if db.is_sqlite:
        await migrate.upgrade(db)
        return
    await migrate.require_head(db, where)


SQLITE_TRIGGERS = triggers.SQLITE_TRIGGERS
POSTGRES_TRIGGERS = triggers.POSTGRES_TRIGGERS
APPEND_ONLY_MESSAGE = triggers.APPEND_ONLY_MESSAGE
