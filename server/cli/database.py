"""``mandate db``: the schema's versioned migrations and the server's restricted PostgreSQL role (docs/database.md).

- ``mandate db upgrade`` migrates the database to the newest revision (run it as the schema's owner; on SQLite every
  start does it anyway). A database made before the migrations is adopted.
- ``mandate db current`` prints the database's revision and the newest one.
- ``mandate db check`` says whether the server can start on it: at the newest revision, tables matching the models,
  every append-only audit trigger present and enabled. Exit status 1 names each problem.
- ``mandate db grant-writer ROLE`` gives an existing PostgreSQL role exactly what the server needs and no more
  (:mod:`server.storage.privileges`); run it again after each upgrade.

Exit status: 0 done, 1 a check found problems, 2 bad input or the database refused.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from server.cli.common import CommandError
from server.config import Settings


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", dest="database_url", help="SQLAlchemy URL, e.g. postgresql://owner@host/db")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory of the SQLite default (default ./data)")


def _refused(exc: Exception, what: str) -> CommandError:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "42501":
        return CommandError(f"{what}: permission denied: run it as the owner of the schema (docs/database.md)")
    return CommandError(f"{what}: {type(exc).__name__}")


async def _upgrade(settings: Settings) -> str:
    from sqlalchemy.exc import DBAPIError

    from server.storage import migrate
    from server.storage.database import Database

    db = Database(settings.effective_database_url)
    try:
        before, after = await migrate.upgrade(db)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":
            raise
        raise _refused(exc, f"cannot upgrade {settings.describe_database()}") from None
    finally:
        await db.dispose()
    if before == after:
        return f"{settings.describe_database()}: already at {migrate.describe(after)}"
    return f"{settings.describe_database()}: upgraded from {migrate.describe(before)} to {migrate.describe(after)}"


def upgrade(args: argparse.Namespace, settings: Settings) -> int:
    print(anyio.run(_upgrade, settings), flush=True)
    return 0


async def _current(settings: Settings) -> tuple[str | None, str]:
    from server.storage import migrate
    from server.storage.database import Database

    db = Database(settings.effective_database_url)
    try:
        return await migrate.current(db), migrate.head_revision()
    finally:
        await db.dispose()


def current(args: argparse.Namespace, settings: Settings) -> int:
    from server.storage import migrate

    found, head = anyio.run(_current, settings)
    print(f"{settings.describe_database()}")
    print(f"  current: {migrate.describe(found)}")
    print(f"  newest:  {migrate.describe(head)}")
    return 0


async def _check(settings: Settings) -> list[str]:
    from server.storage import health, migrate
    from server.storage.database import Database

    db = Database(settings.effective_database_url)
    try:
        found = await migrate.current(db)
        message = migrate.not_at_head_message(found, settings.describe_database())
        if message is not None:
            return [message]
        problems = [
            f"tables differ from the models: {difference}" for difference in await migrate.schema_differences(db)
        ]
        problems.extend(await health.audit_trigger_problems(db))
        return problems
    finally:
        await db.dispose()


def check(args: argparse.Namespace, settings: Settings) -> int:
    from server.storage import migrate

    problems = anyio.run(_check, settings)
    if problems:
        for problem in problems:
            print(f"problem: {problem}", flush=True)
        return 1
    print(f"{settings.describe_database()}: ok, at {migrate.describe(migrate.head_revision())}", flush=True)
    return 0


async def _grant(settings: Settings, role: str) -> Any:
    from sqlalchemy.exc import DBAPIError

    from server.storage.database import Database
    from server.storage.privileges import GrantRefused, grant_writer

    db = Database(settings.effective_database_url)
    try:
        return await grant_writer(db, role)
    except GrantRefused as exc:
        raise CommandError(str(exc)) from None
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":
            raise
        raise _refused(exc, f"cannot grant to {role}") from None
    finally:
        await db.dispose()


def grant_writer(args: argparse.Namespace, settings: Settings) -> int:
    granted = anyio.run(_grant, settings, args.role)
    print(f"{granted.role} may now write to {len(granted.tables)} tables of schema {granted.schema}, and owns none:")
    print("  it cannot ALTER or DROP a table, disable or drop a trigger, or rewrite an audit record")
    if granted.left_out:
        print(f"  not Mandate's, left without privileges: {', '.join(granted.left_out)}")
    for warning in granted.warnings:
        print(f"  warning: {warning}")
    return 1 if granted.warnings else 0


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="migrate the database schema; set up the server's restricted PostgreSQL role")
    commands = db.add_subparsers(dest="db_command", required=True, metavar="SUBCOMMAND")

    up = commands.add_parser("upgrade", help="migrate the database to the newest revision (as the schema's owner)")
    _database_options(up)
    up.set_defaults(handler=upgrade)

    now = commands.add_parser("current", help="print the database's schema revision and the newest one")
    _database_options(now)
    now.set_defaults(handler=current)

    ok = commands.add_parser(
        "check", help="is the database at the newest revision, matching the models, with its audit triggers in force"
    )
    _database_options(ok)
    ok.set_defaults(handler=check)

    grant = commands.add_parser(
        "grant-writer", help="give a PostgreSQL role exactly what the server needs (no ownership, no audit rewrites)"
    )
    grant.add_argument("role", help="an existing role, e.g. mandate_app (CREATE ROLE mandate_app LOGIN PASSWORD ...)")
    _database_options(grant)
    grant.set_defaults(handler=grant_writer)
