"""Running the versioned migrations (Alembic) on a database, and asking where a database stands (docs/database.md).

- :func:`upgrade` brings a database to the newest revision, in one transaction (PostgreSQL under an advisory lock,
  so two upgrades at once run one after the other; SQLite under its write lock). Run by ``mandate db upgrade`` as
  the schema's owner, and at start on the embedded SQLite file.
- :func:`require_head` is what a PostgreSQL start does instead: it reads the revision and stops, in one line naming
  ``mandate db upgrade``, unless the database is at the newest one, and stops naming ``mandate db grant-writer``
  when the role lacks a privilege the server needs. It creates nothing, so the server can run as a role that owns
  nothing (:mod:`server.storage.privileges`).
- :func:`schema_differences` compares a migrated database with the models (Alembic's ``compare_metadata``).

Alembic is imported inside the functions: ``mandate --help`` and the commands that never touch the schema stay fast.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.storage.database import Database

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
SCHEMA_LOCK_KEY = 4242001
"""``pg_advisory_xact_lock`` key held while a migration runs (the sequencer's keys are 4242015 and 4242016)."""


class SchemaNotAtHead(RuntimeError):
    """The database is not at the schema revision this Mandate needs; the message names the command to run."""


def migration_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the migrations in the package (no ``alembic.ini``), on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migration_config())


def head_revision() -> str:
    """The newest revision this Mandate ships."""
    head = scripts().get_current_head()
    assert head is not None, "the migrations directory has no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (its ``alembic_version`` row), or None for a database never migrated."""
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # One migration at a time (replicas starting together, two operators); released at commit.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


def upgrade_connection(connection: Connection, target: str = "head") -> tuple[str | None, str]:
    """Migrate on ``connection`` (in its transaction, which the caller commits); the revisions before and after."""
    from alembic import command

    _lock(connection)
    before = current_revision(connection)
    if before != head_revision() or target != "head":
        command.upgrade(migration_config(connection), target)
    after = current_revision(connection)
    assert after is not None
    return before, after


async def upgrade(db: Database, target: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``target`` (the newest revision by default), in one transaction; a database made
    before the migrations is adopted first (:mod:`server.storage.adopt`)."""
    from server.storage import adopt

    async with db.engine.begin() as connection:
        await connection.run_sync(_lock)
        if not await adopt.made_before_migrations(connection):
            return await connection.run_sync(upgrade_connection, target)
        set_aside = await adopt.prepare(connection)
        revisions = await connection.run_sync(upgrade_connection, target)
        await adopt.finish(connection, set_aside=set_aside)
        return revisions


async def current(db: Database) -> str | None:
    async with db.engine.connect() as connection:
        return await connection.run_sync(current_revision)


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return scripts().get_revision(revision) is not None
    except CommandError:  # alembic's ResolutionError is a CommandError
        return False


def describe(revision: str | None) -> str:
    """A revision as an operator reads it: its id and first line, or "none" for a database never migrated."""
    if revision is None:
        return "none (never migrated)"
    if not _known(revision):
        return f"{revision} (unknown to this Mandate: made by a newer version?)"
    script = scripts().get_revision(revision)
    assert script is not None
    return f"{revision} ({script.doc.splitlines()[0].rstrip('.:')})"


def not_at_head_message(found: str | None, where: str) -> str | None:
    """Why the database at ``where`` cannot be served by this Mandate, or None when it is at the newest revision."""
    head = head_revision()
    if found == head:
        return None
    if found is not None and not _known(found):
        return (
            f"{where} is at schema revision {found}, which this Mandate does not know (made by a newer version?): "
            f"run the Mandate that migrated it, or a newer one (this one needs {head})"
        )
    return (
        f"{where} is at schema revision {found or 'none'}, this Mandate needs {head}: run `mandate db upgrade` "
        "as the database owner (docs/database.md)"
    )


def _require_head(connection: Connection, where: str) -> None:
    from sqlalchemy.exc import DBAPIError

    try:
        found = current_revision(connection)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise SchemaNotAtHead(
            f"{where}: this role may not read the schema revision (alembic_version): have the owner run "
            "`mandate db grant-writer ROLE` for it (docs/database.md)"
        ) from None
    message = not_at_head_message(found, where)
    if message is not None:
        raise SchemaNotAtHead(message)
    if connection.dialect.name == "postgresql":
        from server.storage.privileges import lacking

        missing = lacking(connection)
        if missing:
            role = connection.execute(text("SELECT current_user")).scalar()
            raise SchemaNotAtHead(
                f"{where}: role {role} lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: have the "
                f"owner run `mandate db grant-writer {role}` (again after each upgrade; docs/database.md)"
            )


async def require_head(db: Database, where: str) -> None:
    """Stop with :class:`SchemaNotAtHead` unless the database is at the newest revision; creates nothing."""
    async with db.engine.connect() as connection:
        await connection.run_sync(_require_head, where)


def _differences(connection: Connection) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from server.storage.metadata import mandate_metadata

    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, mandate_metadata()))


async def schema_differences(db: Database) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the models: empty when they agree."""
    async with db.engine.connect() as connection:
        return await connection.run_sync(_differences)
