"""A database made before the versioned migrations that lacks columns the code writes: say so, in one sentence.

Before the migrations, ``metadata.create_all`` created missing tables at every start but never altered existing
ones. Adopting such a database (:mod:`server.storage.adopt`) adds the columns known to have been added since; any
other missing column stops ``mandate db upgrade`` here, naming the columns, instead of failing at the first INSERT
with a driver's message.
"""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel


class SchemaOutOfDate(RuntimeError):
    """The database's tables lack columns this version of Mandate needs."""


def missing_columns(connection: Connection) -> list[str]:
    """``table.column`` for every column the metadata declares and the database's existing table lacks."""
    inspector = inspect(connection)
    existing_tables = set(inspector.get_table_names())
    missing: list[str] = []
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(f"{table.name}.{column.name}" for column in table.columns if column.name not in have)
    return missing


def require_current_schema(connection: Connection) -> None:
    missing = missing_columns(connection)
    if missing:
        raise SchemaOutOfDate(
            f"the database was made by an older Mandate and lacks {', '.join(missing)}, which no migration adds; "
            "start from a new database (for the development store: move DATA_DIR/mandate.db aside)"
        )
