"""Least privilege on PostgreSQL (docs/database.md, "Owner and writer"): the owner migrates, the server runs as a
writer role made by ``mandate db grant-writer``. The writer serves refunds end to end (the sequencer integrates
their audit records), and cannot rewrite history: no UPDATE or DELETE of an audit record, no ALTER TABLE, no
disabling or dropping a trigger, no replacing its function. A start on a database that was never migrated refuses
in one line naming ``mandate db upgrade``.

Roles are cluster-wide on the shared server: each test makes its own ``mig_<random>`` role and drops it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from server.audit.verify import verify_log
from server.storage import migrate
from server.storage.database import Database
from server.storage.privileges import GrantRefused, grant_writer
from tests.audit.support import append_and_integrate, rows
from tests.cli.support import mandate
from tests.conftest import POSTGRES_URL
from tests.live import live_server

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not POSTGRES_URL, reason="roles are PostgreSQL's (MANDATE_TEST_DATABASE_URL)"),
]

REFUND = {"order_id": "ord_5001", "amount": "12.50", "currency": "EUR", "reason": "damaged"}


def _libpq(url: str) -> str:
    """The URL for psycopg itself (no SQLAlchemy driver name), keeping the search_path option."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def login_role() -> Iterator[str]:
    """A new LOGIN role with no privileges, dropped afterwards with whatever was granted to it."""
    role = f"mig_{uuid.uuid4().hex[:12]}"
    server = _libpq(POSTGRES_URL)
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f'DROP OWNED BY "{role}"')  # the grants, in this database
            connection.execute(f'DROP ROLE "{role}"')


@dataclass
class Writer:
    role: str
    url: str
    """The test's schema, connecting as the writer."""


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[Writer]:
    """The test's migrated schema and a writer role granted on it by the owner (``mandate db grant-writer``)."""
    with login_role() as role:
        owner = Database(database_url)
        try:
            granted = await grant_writer(owner, role)
        finally:
            await owner.dispose()
        assert granted.warnings == [] and granted.left_out == []
        yield Writer(role, make_url(database_url).set(username=role).render_as_string(hide_password=False))


async def _refusals(writer: Writer, *statements: str) -> list[str]:
    """Run each statement as the writer, in a transaction of its own; the database's refusals (it must refuse)."""
    db = Database(writer.url)
    refusals: list[str] = []
    try:
        for statement in statements:
            try:
                async with db.engine.begin() as connection:
                    await connection.execute(text(statement))
            except DBAPIError as exc:
                refusals.append(str(exc.orig).splitlines()[0])
            else:
                raise AssertionError(f"the writer was allowed: {statement}")
    finally:
        await db.dispose()
    return refusals


@pytest.fixture
async def history(writer: Writer) -> Writer:
    """Audit records the writer appended and its sequencer integrated, through the call path's own functions."""
    db = Database(writer.url)
    try:
        await append_and_integrate(db, 6, batches=2)
        assert (await verify_log(db)).ok
    finally:
        await db.dispose()
    return writer


async def test_the_server_starts_and_serves_a_refund_as_the_restricted_role(writer: Writer, tmp_path: Path) -> None:
    async with live_server(tmp_path / "data", writer.url) as live:
        async with live.client(live.harness.token("refunds")) as client:
            result = await client.call_tool("refund_create", REFUND)
        assert not result.is_error, result.structured_content
        with anyio.fail_after(60):
            while True:  # the sequencer, running as the writer, gives each record its position
                async with live.mandate.db.engine.connect() as connection:
                    pending = (
                        await connection.execute(text("SELECT count(*) FROM audit_records WHERE leaf_index IS NULL"))
                    ).scalar()
                if pending == 0:
                    break
                await anyio.sleep(0.05)
    db = Database(writer.url)
    try:
        async with db.engine.connect() as connection:
            user = (await connection.execute(text("SELECT current_user"))).scalar()
            refunds = (await connection.execute(text("SELECT amount_minor, currency FROM refunds"))).all()
            records = (
                await connection.execute(text("SELECT count(*) FROM audit_records WHERE tool = 'refund_create'"))
            ).scalar()
        report = await verify_log(db)
    finally:
        await db.dispose()
    assert user == writer.role
    assert [tuple(row) for row in refunds] == [(1250, "EUR")]
    assert records == 1
    assert report.ok, report.first_break


async def test_the_restricted_role_cannot_update_an_audit_record(history: Writer) -> None:
    before = await _rows_as_owner(history)
    refusals = await _refusals(
        history,
        "UPDATE audit_records SET decision = 'deny'",
        "UPDATE audit_records SET arguments = '{}', leaf_index = leaf_index",
        "UPDATE audit_tree_heads SET root_hash = repeat('0', 64)",
        "UPDATE audit_tree_nodes SET hash = repeat('0', 64)",
        "UPDATE audit_head SET seq = seq + 1",
    )
    assert all(refusal.startswith("permission denied for table") for refusal in refusals), refusals
    assert await _rows_as_owner(history) == before


async def test_the_restricted_role_cannot_move_an_audit_records_position(history: Writer) -> None:
    [refusal] = await _refusals(history, "UPDATE audit_records SET leaf_index = leaf_index + 100")
    assert "only the leaf_index may be set, once, by the sequencer" in refusal  # the trigger, behind the grant


async def test_the_restricted_role_cannot_delete_an_audit_record(history: Writer) -> None:
    before = await _rows_as_owner(history)
    refusals = await _refusals(
        history,
        "DELETE FROM audit_records",
        "DELETE FROM audit_tree_heads",
        "DELETE FROM audit_tree_nodes",
        "TRUNCATE audit_records",
        "TRUNCATE audit_tree_heads",
    )
    assert all(refusal.startswith("permission denied for table") for refusal in refusals), refusals
    assert await _rows_as_owner(history) == before


async def test_the_restricted_role_cannot_alter_the_audit_table(history: Writer) -> None:
    refusals = await _refusals(
        history,
        "ALTER TABLE audit_records ADD COLUMN forged TEXT",
        "ALTER TABLE audit_records ALTER COLUMN decision DROP NOT NULL",
        "ALTER TABLE audit_records RENAME TO audit_records_old",
        "DROP TABLE audit_records CASCADE",
    )
    assert refusals == ["must be owner of table audit_records"] * 4


async def test_the_restricted_role_cannot_disable_or_drop_a_trigger(history: Writer) -> None:
    refusals = await _refusals(
        history,
        "ALTER TABLE audit_records DISABLE TRIGGER audit_records_set_position_once",
        "ALTER TABLE audit_records DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_records_no_delete ON audit_records",
        "CREATE OR REPLACE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records "
        "FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "SET session_replication_role = replica",  # would skip every ordinary trigger for the session
    )
    assert refusals[:2] == ["must be owner of table audit_records"] * 2
    assert refusals[2] == "must be owner of relation audit_records"
    assert refusals[3] == "permission denied for table audit_records"  # no TRIGGER privilege
    assert refusals[4] == 'permission denied to set parameter "session_replication_role"'


async def test_the_restricted_role_cannot_drop_or_replace_the_trigger_function(history: Writer) -> None:
    refusals = await _refusals(
        history,
        "CREATE OR REPLACE FUNCTION mandate_audit_set_position_once() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NEW; END $$",
        "DROP FUNCTION mandate_audit_append_only() CASCADE",
        "ALTER FUNCTION mandate_audit_append_only() RENAME TO gone",
        "ALTER FUNCTION mandate_audit_append_only() SECURITY DEFINER",
    )
    # replacing needs CREATE in the schema (which it lacks) and ownership; the rest, ownership
    assert refusals[0].startswith("permission denied for schema")
    assert refusals[1:] == ["must be owner of function mandate_audit_append_only"] * 3
    [refusal] = await _refusals(history, "UPDATE audit_records SET leaf_index = NULL")
    assert "only the leaf_index may be set" in refusal  # the function still does its job


async def _rows_as_owner(writer: Writer) -> list[dict[str, object]]:
    db = Database(make_url(writer.url).set(username="postgres").render_as_string(hide_password=False))
    try:
        return list(await rows(db))
    finally:
        await db.dispose()


async def test_the_restricted_role_cannot_run_the_migrations(writer: Writer, empty_database_url: str) -> None:
    db = Database(empty_database_url)  # a second, empty schema the writer may use but not create in
    async with db.engine.begin() as connection:
        schema = (await connection.execute(text("SELECT current_schema()"))).scalar()
        await connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{writer.role}"'))
    await db.dispose()
    url = make_url(empty_database_url).set(username=writer.role).render_as_string(hide_password=False)
    done = mandate("db", "upgrade", "--database-url", url, data_dir=Path("/nonexistent"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "permission denied: run it as the owner of the schema" in done.stderr


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_start_against_an_unmigrated_database_refuses_in_one_line_naming_mandate_db_upgrade(
    empty_database_url: str, tmp_path: Path
) -> None:
    done = mandate("serve", "--dev-issuer", "--port", "0", "--database-url", empty_database_url, data_dir=tmp_path)
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert line.startswith("mandate: database postgresql+psycopg://postgres@127.0.0.1")
    assert f"is at schema revision none, this Mandate needs {migrate.head_revision()}" in line
    assert "run `mandate db upgrade` as the database owner" in line
    assert "serving" not in done.stdout
    tables = _tables_in(empty_database_url)
    assert tables == []  # the refused start created nothing


def _tables_in(url: str) -> list[str]:
    with psycopg.connect(_libpq(url)) as connection:
        rows = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
    return [str(row[0]) for row in rows]


def test_the_writer_is_told_to_ask_for_grants_when_it_cannot_read_the_revision(
    database_url: str, tmp_path: Path
) -> None:
    with login_role() as role:
        schema = make_url(database_url).query["options"]
        assert isinstance(schema, str)
        with psycopg.connect(_libpq(database_url), autocommit=True) as connection:
            connection.execute(f'GRANT USAGE ON SCHEMA "{schema.split("=")[-1]}" TO "{role}"')
        url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
        done = mandate("serve", "--dev-issuer", "--port", "0", "--database-url", url, data_dir=tmp_path)
    assert done.returncode == 2
    assert "this role may not read the schema revision (alembic_version)" in _one_line(done.stderr)
    assert "mandate db grant-writer ROLE" in done.stderr


async def test_grant_writer_refuses_a_superuser_and_the_owner(database_url: str) -> None:
    owner = Database(database_url)
    try:
        with pytest.raises(GrantRefused, match="is a superuser, which no privilege restricts"):
            await grant_writer(owner, "postgres")
        with pytest.raises(GrantRefused, match="does not exist: create it first"):
            await grant_writer(owner, f"mig_{uuid.uuid4().hex[:12]}")
    finally:
        await owner.dispose()


async def test_grant_writer_refuses_a_role_that_belongs_to_the_owner(database_url: str) -> None:
    with login_role() as owner_role, login_role() as member:
        admin = psycopg.connect(_libpq(database_url), autocommit=True)
        with admin:
            schema = str(admin.execute("SELECT current_schema()").fetchone()[0])  # type: ignore[index]
            admin.execute(f'ALTER SCHEMA "{schema}" OWNER TO "{owner_role}"')
            admin.execute(f'GRANT "{owner_role}" TO "{member}"')
        db = Database(database_url)
        try:
            with pytest.raises(GrantRefused, match=f"has the privileges of the owner {owner_role}"):
                await grant_writer(db, member)
        finally:
            await db.dispose()
            with psycopg.connect(_libpq(database_url), autocommit=True) as connection:
                connection.execute(f'ALTER SCHEMA "{schema}" OWNER TO postgres')


def test_mandate_db_grant_writer_says_what_the_role_may_do(database_url: str, tmp_path: Path) -> None:
    with login_role() as role:
        done = mandate("db", "grant-writer", role, "--database-url", database_url, data_dir=tmp_path)
        again = mandate("db", "grant-writer", role, "--database-url", database_url, data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{role} may now write to 23 tables of schema" in done.stdout
    assert "it cannot ALTER or DROP a table, disable or drop a trigger, or rewrite an audit record" in done.stdout
    assert again.stdout == done.stdout  # idempotent


async def test_a_writer_missing_a_privilege_is_told_at_start_which_and_what_to_run(
    writer: Writer, tmp_path: Path
) -> None:
    owner = make_url(writer.url).set(username="postgres").render_as_string(hide_password=False)
    with psycopg.connect(_libpq(owner), autocommit=True) as connection:
        connection.execute(f'REVOKE INSERT ON refunds FROM "{writer.role}"')  # as if a new table had no grant yet
        connection.execute(f'REVOKE UPDATE (leaf_index) ON audit_records FROM "{writer.role}"')
    argv = ("serve", "--dev-issuer", "--port", "0", "--database-url", writer.url)
    done = await anyio.to_thread.run_sync(lambda: mandate(*argv, data_dir=tmp_path))
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert f"role {writer.role} lacks UPDATE on audit_records.leaf_index, INSERT on refunds" in line
    assert f"have the owner run `mandate db grant-writer {writer.role}`" in line
