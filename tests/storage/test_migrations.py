"""The versioned migrations build the schema the models declare, on SQLite and on PostgreSQL; running them again
changes nothing; two at once run one after the other; a SQLite start migrates its file; ``mandate db`` reports it."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from sqlalchemy import inspect, text

from server.app import open_database
from server.audit.models import AuditRecord
from server.audit.triggers import POSTGRES_TRIGGERS, SQLITE_TRIGGERS
from server.config import Settings
from server.storage import migrate
from server.storage.database import Database
from server.storage.health import audit_trigger_problems
from server.storage.metadata import mandate_metadata
from server.storage.privileges import WRITER_PRIVILEGES
from server.storage.schema import create_schema
from tests.cli.support import mandate

pytestmark = pytest.mark.anyio


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_the_migrated_schema_matches_the_models(db: Database) -> None:
    differences = await migrate.schema_differences(db)
    assert differences == [], (
        "the models changed without a migration: add a revision (python -m server.storage.revision 'what changed', "
        f"docs/database.md): {differences}"
    )
    assert await migrate.current(db) == migrate.head_revision()


async def test_sqlite_runs_the_same_migrations_to_the_same_schema(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")  # SQLite whatever backend the suite runs on
    try:
        assert await migrate.upgrade(db) == (None, migrate.head_revision())
        assert await migrate.schema_differences(db) == []
        assert await audit_trigger_problems(db) == []
    finally:
        await db.dispose()


async def test_upgrading_a_database_at_the_newest_revision_changes_nothing(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        head = migrate.head_revision()
        assert await migrate.upgrade(db) == (None, head)
        tables = await _tables(db)
        assert tables == set(mandate_metadata().tables) | {"alembic_version"}
        assert await migrate.upgrade(db) == (head, head)
        await create_schema(db)
        assert await _tables(db) == tables
        async with db.engine.connect() as connection:
            heads = (await connection.execute(text("SELECT count(*) FROM audit_head"))).scalar()
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert (heads, versions) == (1, [head])
        assert await migrate.schema_differences(db) == []
    finally:
        await db.dispose()


async def test_two_upgrades_at_once_both_succeed_and_migrate_once(empty_database_url: str) -> None:
    first, second = Database(empty_database_url), Database(empty_database_url)
    results: list[tuple[str | None, str]] = []
    try:
        async with anyio.create_task_group() as group:
            for db in (first, second):
                group.start_soon(lambda db=db: _collect(db, results))
        head = migrate.head_revision()
        assert sorted(results, key=lambda before_after: before_after[0] is not None) == [(None, head), (head, head)]
    finally:
        await first.dispose()
        await second.dispose()


async def _collect(db: Database, results: list[tuple[str | None, str]]) -> None:
    results.append(await migrate.upgrade(db))


async def test_the_triggers_the_migrations_create_are_exactly_the_ones_the_code_names(db: Database) -> None:
    async with db.engine.connect() as connection:
        if db.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = (
                "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND NOT t.tgisinternal"
            )
        names = set((await connection.execute(text(query))).scalars())
    assert names == set(SQLITE_TRIGGERS if db.is_sqlite else POSTGRES_TRIGGERS)
    assert await audit_trigger_problems(db) == []


async def test_the_position_trigger_guards_every_audit_record_column_but_the_position(db: Database) -> None:
    async with db.engine.connect() as connection:
        if db.is_sqlite:
            query = "SELECT sql FROM sqlite_master WHERE name = 'audit_records_set_position_once'"
        else:
            query = (
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgname = 'audit_records_set_position_once' AND tgrelid = 'audit_records'::regclass"
            )
        definition = str((await connection.execute(text(query))).scalar_one()).lower()
    guarded = re.findall(r"old\.(\w+)", definition)
    unguarded = [name for name in AuditRecord.model_fields if name != "leaf_index" and name not in guarded]
    assert unguarded == [], f"a revision must re-create audit_records_set_position_once with {unguarded}"


def test_the_writer_privileges_name_every_table_the_migrations_create() -> None:
    assert set(WRITER_PRIVILEGES) == set(mandate_metadata().tables) | {"alembic_version"}


async def test_a_start_on_an_empty_sqlite_file_migrates_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", dev_issuer=True)  # the default: DATA_DIR/mandate.db
    db, _catalog = await open_database(settings)
    try:
        assert await migrate.current(db) == migrate.head_revision()
    finally:
        await db.dispose()


def test_mandate_db_upgrade_current_and_check_on_a_new_sqlite_file(tmp_path: Path) -> None:
    head = migrate.head_revision()
    before = mandate("db", "current", data_dir=tmp_path)
    assert before.returncode == 0, before.stderr
    assert "current: none (never migrated)" in before.stdout
    assert f"newest:  {head} (" in before.stdout

    unmigrated = mandate("db", "check", data_dir=tmp_path)
    assert unmigrated.returncode == 1
    assert "run `mandate db upgrade`" in unmigrated.stdout

    upgraded = mandate("db", "upgrade", data_dir=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from none (never migrated) to {head} (" in upgraded.stdout
    again = mandate("db", "upgrade", data_dir=tmp_path)
    assert f"already at {head}" in again.stdout

    checked = mandate("db", "check", data_dir=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"ok, at {head}" in checked.stdout


def test_grant_writer_on_sqlite_says_it_has_no_roles(tmp_path: Path) -> None:
    done = mandate("db", "grant-writer", "mig_anyone", data_dir=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "mandate: SQLite has no roles: the writer role is for PostgreSQL (docs/database.md)"
